"""Trust in what a search returns (issue 23): hits equal an exact search after any sequence of
updates, deletions and merges; damage to a vector file or its sketch is an error or is repaired,
never a wrong hit with exit 0; an index whose every file was deleted stays usable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeModel, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_segments import WORDS, corpus, exact_top, state
from typer.testing import CliRunner

from semsearch import Index
from semsearch.errors import IndexCorruptError
from semsearch.store import IndexReader
from semsearch.vectors import hnsw, hnsw_search, segments
from semsearch.vectors.hnswfile import HEADER, _Mapped


def swap_labels(path: Path, a: int, b: int, *, sketch: bool = False) -> None:
    """Swap the labels of slots *a* and *b* in a vector file (or in its sketch's label list)."""
    data = bytearray(path.read_bytes())
    if sketch:
        from semsearch.vectors.sketch import HEAD

        _magic, dim, _words, _count = HEAD.unpack_from(data, 0)
        at = HEAD.size + 4 * dim
        spots = [at + 8 * a, at + 8 * b]
    else:
        mapped = _Mapped(path, None)
        spots = [HEADER.size + s * mapped.per_element + mapped.label_off for s in (a, b)]
        del mapped
    first, second = bytes(data[spots[0] : spots[0] + 8]), bytes(data[spots[1] : spots[1] + 8])
    data[spots[0] : spots[0] + 8], data[spots[1] : spots[1] + 8] = second, first
    path.write_bytes(bytes(data))


def query_vector(model: FakeModel, text: str) -> np.ndarray:
    return np.asarray(model.embedder_instance.embed_queries([text])[0], dtype=np.float32)


@pytest.fixture
def built(tmp_path: Path, fake_model: FakeModel) -> tuple[Path, Path, Index]:
    docs = tmp_path / "docs"
    corpus(docs, 40, chunks_each=3)
    index = Index.create(tmp_path / ".semsearch", provider=fake_model)
    index.update([docs])
    return docs, tmp_path / ".semsearch", index


def test_swapped_labels_in_a_vector_file_are_an_error_then_repaired(built, fake_model: FakeModel) -> None:
    _docs, index_dir, index = built
    index.close()
    base = index_dir / state(index_dir)["vector_file"]
    q = "harbour lantern glacier"
    top = index.search(q, mode="semantic", k=1)[0].chunk.id
    index.close()
    mapped = _Mapped(base, None)
    labels = [
        int.from_bytes(mapped.map[HEADER.size + s * mapped.per_element + mapped.label_off :][:8], "little")
        for s in range(mapped.n)
    ]
    del mapped
    slot = labels.index(top)
    swap_labels(base, slot, (slot + 7) % len(labels))

    # A query that would return the swapped chunk is an error, never that chunk with another's score.
    with pytest.raises(IndexCorruptError) as caught:
        index.search(q, mode="semantic", k=3)
    assert "\n" not in str(caught.value) and "Index.update()" in str(caught.value)
    index.close()
    assert any(base.name in p for p in index.status(verify=True).problems)

    # A plain update (nothing changed on disk) repairs it from the stored vectors.
    embedded = fake_model.embedder_instance.documents_embedded
    summary = index.update()
    assert summary.repaired and base.name in summary.repaired[0]
    assert fake_model.embedder_instance.documents_embedded == embedded
    assert index.status(verify=True).problems == []
    got = [h.chunk.id for h in index.search(q, mode="semantic", k=5, distinct_places=False)]
    assert sorted(got) == exact_top(index_dir, query_vector(fake_model, q), 5) and got[0] == top
    index.close()


def test_a_merge_never_carries_damage_into_a_new_base(built, fake_model: FakeModel, monkeypatch) -> None:
    """Damage the base, recompute its checksum in the state (as a merge of the damaged file
    once did): --verify still finds it by comparing with the database; a merge checks its base
    first and builds the new one from the stored vectors."""
    docs, index_dir, index = built
    index.close()
    st_before = state(index_dir)
    base = index_dir / st_before["vector_file"]
    swap_labels(base, 3, 11)
    from semsearch import files

    with IndexReader(index_dir) as reader:
        db = reader.db_path
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("UPDATE state SET value = ? WHERE key = 'vector_sha256'", (files.sha256_file(base),))
    conn.commit()
    conn.close()
    problems = index.status(verify=True).problems
    assert problems and all("\n" not in p for p in problems) and base.name in problems[0], problems

    monkeypatch.setattr(segments, "MERGE_SHARE", 0.0)  # the next update merges
    write(docs / "f002.md", "# File 2\n\nThe zeppelin.\n")
    summary = index.update()
    assert summary.merged or summary.repaired
    assert index.status(verify=True).problems == []
    for q in ("zeppelin pylon", "harbour lantern", "file7 part1"):
        got = sorted(h.chunk.id for h in index.search(q, mode="semantic", k=5, distinct_places=False))
        assert got == exact_top(index_dir, query_vector(fake_model, q), 5)
    index.close()


def test_a_sketch_with_swapped_labels_changes_no_answer(tmp_path: Path, fake_model: FakeModel, monkeypatch) -> None:
    monkeypatch.setattr(hnsw, "EXACT_SLOTS", 0)  # searched as a big index is
    monkeypatch.setattr(hnsw_search, "EXACT_ALWAYS", 0)
    monkeypatch.setattr(hnsw, "_scoped_way", lambda within, total, ef, sketch: "sketch" if sketch else "exact")
    monkeypatch.setattr(hnsw_search, "RERANK_MIN", 20)
    docs = tmp_path / "docs"
    corpus(docs, 40, chunks_each=3)
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        index.update([docs])
    asked = [("harbour lantern", ["f00*"]), ("glacier orchard", ["f01*", "f02*"]), ("copper pylon", ["*5.md"])]

    def answers() -> list[list[tuple[int, float]]]:
        with Index.open(tmp_path / ".semsearch", provider=fake_model) as index:
            return [[(h.chunk.id, round(h.score, 5)) for h in index.search(q, k=4, mode="semantic", globs=g)] for q, g in asked]

    before = answers()
    sketch = tmp_path / ".semsearch" / state(tmp_path / ".semsearch")["vector_sketch"]
    for a in range(0, 100, 2):
        swap_labels(sketch, a, a + 1, sketch=True)
    assert answers() == before
    with Index.open(tmp_path / ".semsearch", provider=fake_model) as index:
        assert any(sketch.name in p for p in index.status(verify=True).problems)
        index.update()  # the damaged sketch is written again
        assert index.status(verify=True).problems == []


def test_deleting_every_file_leaves_an_empty_index_that_works(tmp_path: Path, fake_cli: FakeModel, monkeypatch) -> None:
    from semsearch.cli import app

    notes = tmp_path / "notes"
    write(notes / "a.txt", "Kingfishers dive for fish.\n")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["index", "notes", "-q"]).exit_code == 0
    (notes / "a.txt").unlink()
    for args in (["index", "-q"], ["index", "-q"], ["index", "-q", "--rebuild"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["query", "kingfisher"])
    assert result.exit_code == 1 and result.stdout == ""
    result = runner.invoke(app, ["status", "--verify"])
    assert result.exit_code == 0, result.output
    vector_files = {p.name for p in (tmp_path / ".semsearch").glob("vectors-*")}
    assert vector_files == {state(tmp_path / ".semsearch")["vector_file"], state(tmp_path / ".semsearch")["vector_sketch"]}
    write(notes / "b.txt", "Herons wade in the shallows.\n")
    assert runner.invoke(app, ["index", "-q"]).exit_code == 0
    assert runner.invoke(app, ["query", "heron", "-l"]).stdout.strip() == "notes/b.txt"


# -- sequences of updates, deletions and merges, against exact search -------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "edit", "delete", "update", "update_nomerge", "merge"]),
        st.integers(0, 30),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, share=st.sampled_from([0.0, 0.05, 0.5]))
def test_any_sequence_of_updates_and_merges_gives_the_exact_top_k(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]], share: float
) -> None:
    root = tmp_path_factory.mktemp("seq")
    docs = root / "docs"
    corpus(docs, 12, chunks_each=2)
    model = FakeModel()
    index = Index.create(root / ".semsearch", provider=model)
    index.update([docs])
    old_share = segments.MERGE_SHARE
    segments.MERGE_SHARE = share
    try:
        for op, which, seed in ops:
            path = docs / f"g{which:03d}.md"
            rng = np.random.default_rng(seed)
            if op in ("add", "edit"):
                # Some passages far from every other (one word of their own): a merge's outliers.
                words = [f"solo{seed}"] if seed % 3 == 0 else list(rng.choice(WORDS, 30))
                write(path, f"# G {which}\n\n" + " ".join(words) + f" g{which}.\n")
            elif op == "delete":
                for victim in sorted(docs.glob("*.md"))[which % 5 :: 7]:
                    victim.unlink()
            elif op == "update":
                index.update()
            elif op == "update_nomerge":
                index.update(merge=False)
            else:
                index.merge()
            if op in ("update", "update_nomerge", "merge"):
                for text in ("harbour lantern", f"solo{seed}", "copper pylon riddle", "g3"):
                    got = [(h.chunk.id, h.score) for h in index.search(text, mode="semantic", k=5, distinct_places=False)]
                    want = exact_top(root / ".semsearch", query_vector(model, text), 5)
                    assert sorted(i for i, _ in got) == want, (op, text)
                    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        index.update()
        assert index.status(verify=True).problems == []
        files_on_disk = {p.name for p in (root / ".semsearch").glob("vectors-*")}
        with IndexReader(root / ".semsearch") as reader:
            named = set(reader.layout.files())
        assert files_on_disk == named
        assert json.loads(state(root / ".semsearch").get(segments.DELTAS_KEY, "[]")) is not None
    finally:
        segments.MERGE_SHARE = old_share
        index.close()
        os.sync()


def _isolate(path: Path, slot: int) -> None:
    """Cut every bottom-layer link to *slot* in a saved graph (as hnswlib's heuristic can)."""
    data = bytearray(path.read_bytes())
    mapped = _Mapped(path, None)
    n, per, maxm0 = mapped.n, mapped.per_element, mapped.maxm0
    del mapped
    for element in range(n):
        at = HEADER.size + element * per
        count = int.from_bytes(data[at : at + 2], "little")
        links = [int.from_bytes(data[at + 4 + 4 * i : at + 8 + 4 * i], "little") for i in range(count)]
        if slot in links:
            links.remove(slot)
            data[at : at + 2] = len(links).to_bytes(2, "little")
            for i in range(maxm0):
                value = links[i] if i < len(links) else 0
                data[at + 4 + 4 * i : at + 8 + 4 * i] = value.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_elements_a_graph_cannot_reach_are_found_all_the_same(tmp_path: Path, monkeypatch) -> None:
    from semsearch import files
    from semsearch.vectors.hnswfile import unreachable

    monkeypatch.setattr(hnsw, "EXACT_SLOTS", 0)  # every graph searched as a big one is
    rng = np.random.default_rng(5)
    data = rng.standard_normal((800, 16)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    made = hnsw.BACKEND.create(16, 800, {})
    made.add(np.arange(800, dtype=np.int64) + 1, data)
    state = made.save(tmp_path, "v.hnsw")
    assert hnsw.ORPHANS_KEY not in state and len(unreachable(tmp_path / "v.hnsw", 16)) == 0
    mapped = _Mapped(tmp_path / "v.hnsw", None)
    upper = mapped.upper_lists()
    enter = mapped.enter
    del mapped
    slot = next(s for s in range(800) if s not in upper and s != enter)
    _isolate(tmp_path / "v.hnsw", slot)
    state["vector_sha256"] = files.sha256_file(tmp_path / "v.hnsw")
    assert unreachable(tmp_path / "v.hnsw", 16).tolist() == [slot]
    # --verify names a graph whose unreachable elements its state does not list.
    with pytest.raises(IndexCorruptError, match="cannot be reached"):
        hnsw.BACKEND.verify(tmp_path / "v.hnsw", state, 16)
    from semsearch.vectors.hnswfile import MappedGraph

    label = int(MappedGraph(tmp_path / "v.hnsw", 16).labels[slot])
    for listed in (False, True):
        if listed:
            state[hnsw.ORPHANS_KEY] = str(slot)
            hnsw.BACKEND.verify(tmp_path / "v.hnsw", state, 16)  # listed: sound
        opened = hnsw.BACKEND.open(tmp_path / "v.hnsw", state, 16, {})
        found = [found_label for found_label, _ in opened.search(data[label - 1], 3)]
        assert (label in found) is listed
        assert (found[0] == label) is listed
