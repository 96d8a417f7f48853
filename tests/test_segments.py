"""Vector segments: an update writes a delta and tombstones, never the base; merges; readers."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeModel, check_fts, write

from semsearch import Index
from semsearch.store import FORMAT_VERSION, IndexReader
from semsearch.store.database import decode_vectors
from semsearch.vectors import segments

WORDS = ["harbour", "lantern", "glacier", "orchard", "meadow", "canyon", "thunder", "violin", "pepper", "marble", "falcon", "saddle", "quartz", "lagoon", "ember", "willow", "copper", "pylon", "riddle", "tundra", "bramble", "cobalt", "fresco", "gondola"]


def corpus(root: Path, files: int, chunks_each: int = 1) -> None:
    rng = np.random.default_rng(len(str(root)) + files)
    for i in range(files):
        paras = [" ".join(rng.choice(WORDS, 40)) + f" file{i} part{j}." for j in range(chunks_each)]
        write(root / f"f{i:03d}.md", f"# File {i}\n\n" + "\n\n".join(paras) + "\n")


def live(index_dir: Path) -> int:
    with IndexReader(index_dir) as reader:
        return reader.vector_count


def _chunks(index_dir: Path, name: str) -> int:
    """Live chunks of the file called *name*."""
    with IndexReader(index_dir) as reader:
        g = reader.generation
        return reader.conn.execute(
            "SELECT count(*) FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.display LIKE ? "
            "AND c.gen_added <= ? AND (c.gen_removed IS NULL OR c.gen_removed > ?)",
            (f"%{name}", g, g),
        ).fetchone()[0]


def state(index_dir: Path) -> dict[str, str]:
    with IndexReader(index_dir) as reader:
        return dict(reader.vector_state)


def generation_of(index_dir: Path) -> int:
    with IndexReader(index_dir) as reader:
        return reader.generation


def segment_files(index_dir: Path) -> set[str]:
    """The vector files in *index_dir* (each with its sketch beside it)."""
    found = {p.name for p in index_dir.glob("vectors-*")}
    vector_files = {name for name in found if not name.endswith(".sketch")}
    assert found == vector_files | {f"{name}.sketch" for name in vector_files if name.endswith(".hnsw")}
    return vector_files


def exact_top(index_dir: Path, query: np.ndarray, k: int) -> list[int]:
    """The true top *k* of the live chunks, from the vectors the database keeps."""
    with IndexReader(index_dir) as reader:
        rows = reader.conn.execute(
            "SELECT id, vector FROM chunks WHERE gen_added <= ? AND (gen_removed IS NULL OR gen_removed > ?)",
            (reader.generation, reader.generation),
        ).fetchall()
    ids = np.array([r[0] for r in rows])
    vecs = decode_vectors([r[1] for r in rows], query.shape[0])
    order = np.argsort(-(vecs @ query), kind="stable")[:k]
    return sorted(int(i) for i in ids[order])


@pytest.fixture
def built(tmp_path: Path, fake_model: FakeModel) -> tuple[Path, Path, Index]:
    docs = tmp_path / "docs"
    corpus(docs, 60, chunks_each=3)
    index = Index.create(tmp_path / ".semsearch", provider=fake_model)
    index.update([docs])
    return docs, tmp_path / ".semsearch", index


def test_an_edit_writes_a_delta_and_tombstones_and_leaves_the_base_alone(built) -> None:
    docs, index_dir, index = built
    before = state(index_dir)
    base = index_dir / before["vector_file"]
    base_stat = base.stat()
    total, old = live(index_dir), _chunks(index_dir, "f007.md")
    write(docs / "f007.md", "# File 7\n\nA saxophone quartet rehearsed in the lighthouse.\n")
    summary = index.update()
    after = state(index_dir)
    assert summary.indexed == 1 and after["vector_file"] == before["vector_file"]
    assert (base.stat().st_ino, base.stat().st_mtime_ns) == (base_stat.st_ino, base_stat.st_mtime_ns)
    deltas = json.loads(after[segments.DELTAS_KEY])
    assert len(deltas) == 1 and deltas[0]["vector_count"] == "1"
    assert int(after[segments.TOMBSTONES_KEY]) == old  # the old version's chunks
    assert segment_files(index_dir) == {before["vector_file"], deltas[0]["vector_file"]}
    # The new text is found, the old is gone, even when every chunk is asked for.
    hits = index.search("saxophone quartet lighthouse", mode="semantic", k=5)
    assert hits[0].chunk.path.name == "f007.md"
    everything = index.search("harbour lantern glacier", mode="semantic", k=500, distinct_places=False)
    assert len(everything) == total - old + 1
    assert not [h for h in everything if h.chunk.path.name == "f007.md" and "saxophone" not in h.chunk.text]
    info = index.status(verify=True)
    assert (info.vector_segments, info.vector_tombstones, info.problems) == (2, old, [])
    check_fts(index_dir)
    index.close()


def test_deleting_files_writes_no_vector_file(built) -> None:
    docs, index_dir, index = built
    files_before, total = segment_files(index_dir), live(index_dir)
    gone = sum(_chunks(index_dir, f"f{i:03d}.md") for i in range(3))  # under a tenth of the chunks
    for i in range(3):
        (docs / f"f{i:03d}.md").unlink()
    summary = index.update()
    assert summary.removed == 3 and segment_files(index_dir) == files_before
    assert int(state(index_dir)[segments.TOMBSTONES_KEY]) == gone
    hits = index.search("harbour lantern glacier", mode="semantic", k=500, distinct_places=False)
    assert len(hits) == total - gone and all(h.chunk.path.name >= "f003.md" for h in hits)
    assert index.status(verify=True).problems == []
    index.close()


def test_searches_across_segments_match_an_exact_search(built, fake_model: FakeModel) -> None:
    docs, index_dir, index = built
    for i in range(4):  # four updates: four deltas (each under the merge share)
        write(docs / f"new{i}.md", f"# New {i}\n\n" + " ".join(WORDS[i : i + 12]) + f" fresh note {i}.\n")
        (docs / f"f{i:03d}.md").unlink()
        index.update()
    assert len(json.loads(state(index_dir)[segments.DELTAS_KEY])) == 4
    embed = fake_model.embedder().embed_queries
    for words in ("harbour lantern", "fresh note", "quartz lagoon ember", "violin pepper marble"):
        query = embed([words])[0]
        hits = index.search(words, mode="semantic", k=10, distinct_places=False)
        assert sorted(h.chunk.id for h in hits) == exact_top(index_dir, query, 10), words
    index.close()


def test_deltas_past_a_share_of_the_base_are_merged_into_it(built, monkeypatch: pytest.MonkeyPatch) -> None:
    docs, index_dir, index = built
    monkeypatch.setattr(segments, "MAX_DELTAS", 3)
    old_base, total = state(index_dir)["vector_file"], live(index_dir)
    edited = sum(_chunks(index_dir, f"f{i:03d}.md") for i in range(4))
    reports = []
    for i in range(4):
        write(docs / f"f{i:03d}.md", f"# File {i}\n\nEdition {i} of the pylon riddle.\n")
        reports.append(index.update())
    after = state(index_dir)
    assert segments.DELTAS_KEY not in after and after[segments.TOMBSTONES_KEY] == "0"
    assert after["vector_file"] != old_base and segment_files(index_dir) == {after["vector_file"]}
    with IndexReader(index_dir) as reader:
        assert reader.conn.execute("SELECT count(*) FROM vector_tombstones").fetchone()[0] == 0
    hits = index.search("edition pylon riddle", mode="semantic", k=4)
    assert {h.chunk.path.name for h in hits} == {"f000.md", "f001.md", "f002.md", "f003.md"}
    assert index.status(verify=True).problems == []
    assert index.status().chunks == total - edited + 4
    index.close()


def test_a_merge_left_due_runs_when_asked(built, monkeypatch: pytest.MonkeyPatch) -> None:
    """update(merge=False) commits the change as a delta and leaves the merge due; merge() runs
    it later (what the watcher does once the folders are quiet), and only when one is due."""
    docs, index_dir, index = built
    monkeypatch.setattr(segments, "MERGE_SHARE", 0.0)  # every update makes a merge due
    assert index.merge() is False  # nothing to merge yet
    old_base, generation = state(index_dir)["vector_file"], generation_of(index_dir)
    write(docs / "f005.md", "# File 5\n\nThe zeppelin.\n")
    summary = index.update(merge=False)
    assert summary.indexed == 1 and summary.merge_due and not summary.merged
    after = state(index_dir)
    assert after["vector_file"] == old_base and json.loads(after[segments.DELTAS_KEY])
    assert generation_of(index_dir) == generation + 1
    hits_before = [(h.chunk.id, h.score) for h in index.search("zeppelin pylon", mode="semantic", k=5)]
    assert index.merge() is True
    merged = state(index_dir)
    assert segments.DELTAS_KEY not in merged and merged[segments.TOMBSTONES_KEY] == "0"
    assert merged["vector_file"] != old_base and segment_files(index_dir) == {merged["vector_file"]}
    assert generation_of(index_dir) == generation + 2  # a generation of its own, no chunk changed
    hits_after = [(h.chunk.id, h.score) for h in index.search("zeppelin pylon", mode="semantic", k=5)]
    assert [i for i, _ in hits_after] == [i for i, _ in hits_before]
    assert [s for _, s in hits_after] == pytest.approx([s for _, s in hits_before])
    assert index.status(verify=True).problems == []
    monkeypatch.setattr(segments, "MERGE_SHARE", 0.10)
    assert index.merge() is False and generation_of(index_dir) == generation + 2  # none due now
    index.close()


def test_a_merge_never_publishes_an_unfinished_update(built, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch.store import IndexLock, IndexWriter, read_manifest

    docs, index_dir, index = built
    monkeypatch.setattr(segments, "MERGE_SHARE", 0.0)
    write(docs / "f005.md", "# File 5\n\nThe zeppelin.\n")
    assert index.update(merge=False).merge_due
    index.close()
    generation = generation_of(index_dir)
    with IndexLock(index_dir, 0.0):
        writer = IndexWriter(index_dir, read_manifest(index_dir), new_build=False)
        try:
            # A killed update's durable progress: a file's removal committed, not yet published.
            rows = writer.conn.execute("SELECT id, path FROM files WHERE gen_removed IS NULL").fetchall()
            (file_id,) = [i for i, path in rows if os.fsdecode(path).endswith("f006.md")]
            writer.remove_file(file_id)
            writer.commit()
            assert writer.merge_segments() is False
        finally:
            writer.close()
    assert generation_of(index_dir) == generation
    assert index.search("zeppelin", mode="lexical", k=1)[0].chunk.path.name == "f005.md"
    assert "f006.md" in {h.chunk.path.name for h in index.search("file6", mode="lexical", k=3)}
    index.close()


def test_a_merge_follows_the_change_as_a_generation_of_its_own(built, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from semsearch.store import IndexWriter

    docs, index_dir, index = built
    monkeypatch.setattr(segments, "MERGE_SHARE", 0.0)  # every update merges
    real_write_base = IndexWriter._write_base
    seen: list[tuple[int, str]] = []  # (generation readers see, text found) when the merge starts

    def full_disk(self: IndexWriter, layout: segments.Layout, live: int, rebuild: bool, progress: object) -> object:
        with Index.open(index_dir, provider=index._provider_override) as other:
            hits = other.search("xylograph", mode="lexical", k=1)
            seen.append((generation_of(index_dir), hits[0].chunk.path.name if hits else ""))
        raise OSError(errno.ENOSPC, "No space left on device")

    before = state(index_dir)
    generation = generation_of(index_dir)
    write(docs / "f005.md", "# File 5\n\nThe quartz lagoon xylograph.\n")
    monkeypatch.setattr(IndexWriter, "_write_base", full_disk)
    events: list[str] = []
    index.update(on_event=lambda e: events.append(e.message) if e.kind == "warning" else None)
    # The merge began once the change was committed and visible; it failed, and said so.
    assert seen == [(generation + 1, "f005.md")]
    assert any("merging the vector segments failed" in m and "next update" in m for m in events), events
    after = state(index_dir)
    assert after["vector_file"] == before["vector_file"] and json.loads(after[segments.DELTAS_KEY])
    assert index.status(verify=True).problems == []
    # The next update merges (and makes a generation for it: two in all).
    monkeypatch.setattr(IndexWriter, "_write_base", real_write_base)
    write(docs / "f006.md", "# File 6\n\nThe cobalt fresco.\n")
    index.update()
    merged = state(index_dir)
    assert segments.DELTAS_KEY not in merged and merged["vector_file"] != before["vector_file"]
    assert generation_of(index_dir) == generation + 3
    assert [h.chunk.path.name for h in index.search("The quartz lagoon xylograph.", mode="semantic", k=1)] == ["f005.md"]
    assert index.status(verify=True).problems == []
    index.close()


def test_a_reader_keeps_its_snapshot_while_a_merge_deletes_its_files(built, monkeypatch: pytest.MonkeyPatch) -> None:
    docs, index_dir, index = built
    write(docs / "f001.md", "# File 1\n\nThe cobalt gondola drifted.\n")
    index.update()  # a delta
    reader = IndexReader(index_dir)
    old_files = segment_files(index_dir)
    monkeypatch.setattr(segments, "MERGE_SHARE", 0.0)  # the next update merges
    write(docs / "f002.md", "# File 2\n\nThe fresco saddle creaked.\n")
    index.update()
    assert not (old_files & segment_files(index_dir))  # every file of the reader's snapshot is gone
    query = index._open_searcher().embedder().embed_queries(["cobalt gondola drifted"])[0]
    try:
        hits = reader.vector_search(query, 3)
        assert hits and reader.fetch_chunks([hits[0][0]])[hits[0][0]].path.name == "f001.md"
    finally:
        reader.close()
    index.close()


def test_concurrent_searches_during_updates_see_whole_generations(built) -> None:
    docs, index_dir, index = built
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        with Index.open(index_dir, provider=index._provider_override) as other:
            while not stop.is_set():
                try:
                    hits = other.search("harbour lantern glacier", mode="semantic", k=500)
                    assert len({h.chunk.id for h in hits}) == len(hits)
                    other.close()  # the next search opens the newest generation
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return

    thread = threading.Thread(target=search)
    thread.start()
    try:
        for i in range(8):
            write(docs / f"f{i:03d}.md", f"# File {i}\n\nRevision {i}.\n")
            index.update()
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    index.close()


def test_an_index_from_before_segments_is_read_and_then_updated(built) -> None:
    docs, index_dir, index = built
    index.close()
    with IndexReader(index_dir) as reader:
        db = reader.db_path
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE vector_tombstones")
    conn.execute("DELETE FROM state WHERE key IN (?, ?, ?)", ("vector_base_gen", "vector_tombstones", "vector_base_count"))
    conn.commit()
    conn.close()
    manifest = index_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format_version": 3}))  # as the previous release wrote it
    assert index.search("harbour lantern", mode="semantic", k=3)  # read as one base, no tombstones
    write(docs / "f005.md", "# File 5\n\nThe zeppelin.\n")  # a word no other file holds
    assert index.update().indexed == 1
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION  # older versions now refuse it
    assert index.search("zeppelin", mode="semantic", k=1)[0].chunk.path.name == "f005.md"
    assert index.status(verify=True).problems == []
    index.close()


@pytest.mark.parametrize("named", [False, True])
def test_an_index_from_before_sketches_gets_them_at_its_next_update(built, named: bool) -> None:
    """Its state names no sketch (written before sketches), or names one an older version's
    update deleted (it keeps only the vector files it knows): the next update writes it."""
    docs, index_dir, index = built
    index.close()
    name = state(index_dir)["vector_file"]
    (index_dir / f"{name}.sketch").unlink()
    if not named:
        with IndexReader(index_dir) as reader:
            db = reader.db_path
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM state WHERE key IN ('vector_sketch', 'vector_sketch_sha256')")
        conn.commit()
        conn.close()
    assert index.search("harbour lantern", mode="semantic", k=3, globs=["f00*"])  # read without one
    write(docs / "f005.md", "# File 5\n\nThe zeppelin.\n")
    assert index.update().indexed == 1
    after = state(index_dir)
    assert after["vector_file"] == name and after["vector_sketch"] == f"{name}.sketch"  # the base kept
    assert segment_files(index_dir) == {name, json.loads(after[segments.DELTAS_KEY])[0]["vector_file"]}
    assert index.status(verify=True).problems == []
    assert index.search("zeppelin", mode="semantic", k=1, globs=["f00*"])[0].chunk.path.name == "f005.md"
    index.close()


def test_duplicates_are_found_across_segments(built) -> None:
    docs, index_dir, index = built
    text = "# Copy\n\nA lagoon of copper ember and willow, told twice over in two files.\n"
    write(docs / "copy-a.md", text)
    index.update()
    write(docs / "copy-b.md", text)
    index.update()
    assert len(json.loads(state(index_dir)[segments.DELTAS_KEY])) == 2
    found = index.duplicates(min_score=0.99)
    assert {frozenset((pair.a.name, pair.b.name)) for pair in found.files} >= {frozenset({"copy-a.md", "copy-b.md"})}
    index.close()


def test_the_kept_segments_are_checked_and_repaired_by_an_update(built, fake_model: FakeModel) -> None:
    """A damaged segment is found by the next update and every vector file is written again
    from the vectors the database keeps: nothing is embedded again, nothing is lost."""
    docs, index_dir, index = built
    write(docs / "f003.md", "# File 3\n\nMarble falcon.\n")
    index.update()
    delta = json.loads(state(index_dir)[segments.DELTAS_KEY])[0]["vector_file"]
    os.truncate(index_dir / delta, 100)
    write(docs / "f004.md", "# File 4\n\nQuartz saddle.\n")
    embedded = fake_model.embedder_instance.documents_embedded
    summary = index.update()
    assert summary.indexed == 1 and summary.repaired and delta in summary.repaired[0]
    assert fake_model.embedder_instance.documents_embedded - embedded == 1  # only the edited file's chunk
    assert index.status(verify=True).problems == []
    query = fake_model.embedder_instance.embed_queries(["marble falcon quartz"])[0]
    assert sorted(h.chunk.id for h in index.search("marble falcon quartz", mode="semantic", k=5, distinct_places=False)) == exact_top(
        index_dir, query, 5
    )
    assert index.update().repaired == []  # sound now: nothing more to repair
    index.close()


def test_check_links_catches_a_neighbour_id_past_the_graph(tmp_path: Path) -> None:
    import hnswlib

    from semsearch.errors import IndexCorruptError
    from semsearch.vectors.hnsw import check_links

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3000, 16)).astype(np.float32)
    graph = hnswlib.Index(space="cosine", dim=16)
    graph.init_index(max_elements=3000, M=8, ef_construction=50, random_seed=1)
    graph.add_items(vecs, np.arange(3000))
    path = tmp_path / "g.hnsw"
    graph.save_index(str(path))
    check_links(path, 16)  # a sound file passes
    data = bytearray(path.read_bytes())
    per_element = 4 + 4 * 16 + 16 * 4 + 8  # links (maxM0 = 2M = 16), vector, label
    header = 96
    for element in (0, 1234, 2999):
        broken = bytearray(data)
        at = header + element * per_element + 4  # the first neighbour id of the bottom layer
        broken[at : at + 4] = (3000 + 7).to_bytes(4, "little")
        path.write_bytes(bytes(broken))
        with pytest.raises(IndexCorruptError, match="past the graph"):
            check_links(path, 16)
    # An upper layer's list: the last element with one, its first id made too large.
    path.write_bytes(bytes(data))
    pos, last = header + 3000 * per_element, None
    for _ in range(3000):
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size:
            last = pos
        pos += 4 + size
    assert last is not None
    broken = bytearray(data)
    broken[last + 8 : last + 12] = (10**6).to_bytes(4, "little")
    path.write_bytes(bytes(broken))
    with pytest.raises(IndexCorruptError, match="upper-layer"):
        check_links(path, 16)


def test_a_copied_index_is_checked_whole_once_not_by_every_update(
    tmp_path: Path, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy (a backup restored, a folder moved across disks) gives every vector file a new
    inode: the next update checks them whole, against the database's vectors too, and stamps
    the sound ones anew, so the update after it trusts them again."""
    import shutil

    from semsearch.store import segment_writer

    corpus(tmp_path / "docs", 30)
    with Index.create(tmp_path / "first" / ".semsearch", provider=fake_model) as index:
        index.update([tmp_path / "docs"])
    copy = tmp_path / "copy" / ".semsearch"
    shutil.copytree(tmp_path / "first" / ".semsearch", copy)
    compared: list[str] = []
    real = segment_writer.unlike_database

    def counting(conn, generation, engine, path, dim, gone):  # type: ignore[no-untyped-def]
        compared.append(path.name)
        return real(conn, generation, engine, path, dim, gone)

    monkeypatch.setattr(segment_writer, "unlike_database", counting)
    for n in range(2):
        write(tmp_path / "docs" / f"new{n}.txt", f"a new note number {n} about lanterns\n")
        with Index.open(copy, provider=fake_model) as index:
            summary = index.update()
        assert summary.indexed == 1
        assert bool(compared) == (n == 0), compared  # the first update after the copy only
        compared.clear()
    with Index.open(copy, provider=fake_model) as index:
        assert index.status(verify=True).problems == []
