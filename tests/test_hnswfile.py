"""The mapped graph search: hnswlib's own files, searched without loading them."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np
import pytest
from conftest import FakeModel
from test_segments import corpus

from semsearch import Index
from semsearch.errors import IndexCorruptError
from semsearch.vectors import Subset, hnsw, hnsw_search
from semsearch.vectors.hnswfile import HEADER, MappedGraph
from semsearch.vectors.sketch import Sketch

DIM = 32


def vectors(n: int, seed: int) -> np.ndarray:
    """Points in clusters (as embeddings are), normalized."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    points = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIM))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def saved_graph(tmp_path: Path, n: int = 5000, *, deleted: tuple[int, ...] = ()) -> tuple[Path, np.ndarray]:
    data = vectors(n, 7)
    graph = hnswlib.Index(space="cosine", dim=DIM)
    graph.init_index(max_elements=n, M=16, ef_construction=100, random_seed=100)
    graph.add_items(data, np.arange(n) * 3 + 5)  # labels are not slots
    for label in deleted:
        graph.mark_deleted(label)
    path = tmp_path / "g.hnsw"
    graph.save_index(str(path))
    return path, data


def loaded(path: Path, ef: int) -> hnswlib.Index:
    graph = hnswlib.Index(space="cosine", dim=DIM)
    graph.load_index(str(path))
    graph.set_ef(ef)
    return graph


def test_mapped_search_gives_hnswlib_answers(tmp_path: Path) -> None:
    path, data = saved_graph(tmp_path)
    mapped = MappedGraph(path, DIM)
    graph = loaded(path, 48)
    queries = vectors(200, 11)
    labels, distances = graph.knn_query(queries, k=10)
    same, recall, hnswlib_recall = 0.0, 0.0, 0.0
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10] * 3 + 5
    for q, want, want_dist, truth in zip(queries, labels, distances, exact, strict=True):
        got = mapped.search(q, 10, 48)
        assert len(got) == 10
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        scores = dict(got)
        for label, dist in zip(want, want_dist, strict=True):
            if int(label) in scores:  # the same cosine, to float32 rounding
                assert scores[int(label)] == pytest.approx(1.0 - float(dist), abs=1e-6)
        same += len(set(scores) & {int(x) for x in want}) / 10
        recall += len(set(scores) & set(truth.tolist())) / 10
        hnswlib_recall += len({int(x) for x in want} & set(truth.tolist())) / 10
    assert same / len(queries) >= 0.99  # the same algorithm: differences are ties and rounding
    assert recall >= hnswlib_recall - 0.005 * len(queries)


def test_mapped_search_skips_deleted_and_disallowed(tmp_path: Path) -> None:
    gone = tuple(int(x) * 3 + 5 for x in range(0, 5000, 7))
    path, _ = saved_graph(tmp_path, deleted=gone)
    mapped = MappedGraph(path, DIM)
    for q in vectors(30, 12):
        got = [label for label, _ in mapped.search(q, 10, 32)]
        assert len(got) == 10 and not set(got) & set(gone)
        odd = mapped.search(q, 10, 32, allowed=lambda labels: labels % 2 == 1)
        assert len(odd) == 10 and all(label % 2 == 1 for label, _ in odd)
    assert mapped.search(vectors(1, 1)[0], 5, 32, allowed=lambda labels: labels < 0) == []


def test_damaged_links_raise_instead_of_crashing(tmp_path: Path) -> None:
    path, _ = saved_graph(tmp_path, n=2000)
    data = bytearray(path.read_bytes())
    per_element = 4 + 4 * 32 + DIM * 4 + 8
    broken = bytearray(data)
    for element in range(2000):  # every bottom-layer list's first neighbour: past the graph
        at = HEADER.size + element * per_element + 4
        broken[at : at + 4] = (2000 + element).to_bytes(4, "little")
    path.write_bytes(bytes(broken))
    with pytest.raises(IndexCorruptError, match="past the graph"):
        MappedGraph(path, DIM).search(vectors(1, 3)[0], 10, 32)
    broken = bytearray(data)
    for element in range(2000):  # link counts beyond maxM0
        at = HEADER.size + element * per_element
        broken[at : at + 2] = (500).to_bytes(2, "little")
    path.write_bytes(bytes(broken))
    with pytest.raises(IndexCorruptError, match="link count"):
        MappedGraph(path, DIM).search(vectors(1, 3)[0], 10, 32)
    path.write_bytes(bytes(data[:-10]))  # the upper layers cut short
    with pytest.raises(IndexCorruptError, match="upper layers"):
        MappedGraph(path, DIM).search(vectors(1, 3)[0], 10, 32)
    path.write_bytes(bytes(data[: HEADER.size + 100 * per_element]))  # records missing
    with pytest.raises(IndexCorruptError, match="does not fit"):
        MappedGraph(path, DIM)


def test_a_big_saved_graph_answers_first_searches_unloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hnsw, "LOAD_BYTES", 0)  # every saved graph counts as big
    monkeypatch.setattr(hnsw, "EXACT_SLOTS", 0)  # and is searched through its graph
    n = 3000
    data = vectors(n, 5)
    made = hnsw.BACKEND.create(DIM, n, {})
    made.add(np.arange(n, dtype=np.int64) + 1, data)
    state = made.save(tmp_path, "v.hnsw")
    opened = hnsw.BACKEND.open(tmp_path / "v.hnsw", state, DIM, {})
    reference = loaded(tmp_path / "v.hnsw", 128)
    opened.remove([1, 2, 3])  # tombstones, before any search
    queries = np.concatenate([data[:3], vectors(hnsw.MAPPED_SEARCHES, 9)])
    for q in queries[: hnsw.MAPPED_SEARCHES - 1]:
        got = opened.search(q, 10)
        assert opened._index is None  # answered from the map
        assert not {1, 2, 3} & {label for label, _ in got} and len(got) == 10
        labels, _ = reference.knn_query(q, k=13)
        expected = [int(x) for x in labels[0] if x not in (1, 2, 3)][:10]
        assert len(set(expected) & {label for label, _ in got}) >= 9
    monkeypatch.setattr(hnsw_search, "EXACT_ALWAYS", 0)
    monkeypatch.setattr(hnsw_search, "GRAPH_US", 0.0)  # scoped searches by the graph, filtered
    within = Subset(np.arange(1, n, 2, dtype=np.int64), n)
    scoped = opened.search(queries[-1], 10, within=within)
    assert len(scoped) == 10 and all(label % 2 == 1 for label, _ in scoped)
    assert opened._index is None
    # By hnswlib now: the same hits with the same cosines, to the bit (scored in one fixed order).
    assert opened.search(queries[-1], 10, within=within) == scoped
    assert opened._index is not None  # the search after MAPPED_SEARCHES loaded the graph
    assert not {1, 2, 3} & {label for label, _ in opened.search(data[0], 10)}


def test_an_index_searched_unloaded_gives_the_loaded_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus(tmp_path / "docs", 60, chunks_each=2)
    with Index.create(tmp_path / "docs" / ".semsearch", provider=FakeModel()) as index:
        index.update([tmp_path / "docs"])
    asked = ["harbour lantern", "glacier orchard meadow", "file7 part1", "copper pylon riddle"]

    def answers() -> list[list[tuple[str, float]]]:
        with Index.open(tmp_path / "docs" / ".semsearch", provider=FakeModel()) as index:
            return [[(str(h.chunk.path), round(h.score, 5)) for h in index.search(q, k=5)] for q in asked]

    monkeypatch.setattr(hnsw, "EXACT_SLOTS", 0)  # searched through the graph, as big ones are
    monkeypatch.setattr(hnsw, "LOAD_BYTES", 1 << 40)  # loaded
    whole = answers()
    monkeypatch.setattr(hnsw, "LOAD_BYTES", 0)
    assert answers() == whole


def test_bigger_graphs_are_searched_wider() -> None:
    # Never under the floor (issue 23: 0.968 at ef 128 on hard vectors at 20,000), wider past it.
    floor = hnsw.SEARCH_EF_FLOOR
    assert hnsw.search_ef(128, 1_000) == floor and hnsw.search_ef(128, hnsw.EF_SIZE) == floor
    assert hnsw.search_ef(512, 1_000) == 512  # a recorded ef above it is kept
    assert hnsw.search_ef(128, 10 * hnsw.EF_SIZE) == 256
    widths = [hnsw.search_ef(128, n) for n in (150_000, 300_000, 600_000, 1_000_000, 3_000_000)]
    assert widths == sorted(widths) and floor <= widths[0] < widths[-1]


def test_a_search_explores_as_wide_as_its_whole_graph_asks() -> None:
    big = hnsw.HnswIndex(None, 10 * hnsw.EF_SIZE, replace_deleted=True, ef_search=128)
    assert big._asked(10, None, None) == (10, 10, 256)
    assert big._asked(10, 300, None) == (10, 300, 300)
    # Filtered, it holds as many candidates in scope (never more than the scope holds).
    wide = Subset(np.arange(0, 10 * hnsw.EF_SIZE, 2, dtype=np.int64), 10 * hnsw.EF_SIZE)
    assert big._asked(10, None, wide) == (10, 10, 256)
    assert big._asked(10, None, Subset(np.arange(40, dtype=np.int64), 10 * hnsw.EF_SIZE)) == (10, 10, 40)


def test_a_scoped_search_takes_the_cheaper_way() -> None:
    total = 1_000_000
    ef = hnsw.search_ef(128, total)
    folders = Subset(np.arange(600_000, 700_000, dtype=np.int64), total)  # 10 %: one run
    files = Subset((np.arange(0, total, 500)[:, None] + np.arange(10)).ravel(), total)  # 2 %: runs of 10
    spread = Subset((np.arange(0, total, 100)[:, None] + np.arange(10)).ravel(), total)  # 10 %: runs of 10
    half = Subset(np.arange(0, total, 2, dtype=np.int64), total)  # 50 %: runs of one
    assert folders.runs == 1 and files.runs == total // 500 and half.runs == total // 2
    for sketched in (False, True):
        assert hnsw._scoped_way(Subset(np.arange(0, 4096, 2, dtype=np.int64), total), total, ef, sketched) == "exact"
        assert hnsw._scoped_way(half, total, ef, sketched) == "graph"  # the graph past a third
    # Without a sketch, files are read exactly up to a few %, past that the graph (as wide
    # folders are); with one, the nearest sketches of files anywhere are read.
    assert hnsw._scoped_way(files, total, ef, False) == "exact"
    assert hnsw._scoped_way(folders, total, ef, False) == "exact"
    for scope in (files, spread, folders):
        assert hnsw._scoped_way(scope, total, ef, True) == "sketch"


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors in tight clusters of a low-dimensional subspace (as sentence embeddings are)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 24)))[0].T
    centres = rng.standard_normal((200, dim))
    points = centres[rng.integers(0, 200, n)] + 1.5 * rng.standard_normal((n, 24)) @ basis
    points += 0.3 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def sketched_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], np.ndarray]:
    """A saved 384-dimensional graph of 20,000 vectors (labels are not slots) and its sketch;
    40 more points of the same clusters are the queries (``data[20_000:]``)."""
    folder = tmp_path_factory.mktemp("sketched")
    drawn = clustered(20_040, 384, 3)
    made = hnsw.BACKEND.create(384, 20_000, {})
    made.add(np.arange(20_000, dtype=np.int64) * 2 + 7, drawn[:20_000])
    made.remove([7, 9])
    return folder, made.save(folder, "v.hnsw"), drawn


def test_a_saved_graph_has_a_sketch_of_its_labels_and_signs(sketched_file) -> None:
    folder, state, _ = sketched_file
    assert state["vector_sketch"] == "v.hnsw.sketch" and (folder / "v.hnsw.sketch").is_file()
    made = Sketch(folder / "v.hnsw.sketch", 384, int(state["vector_slots"]))
    mapped = MappedGraph(folder / "v.hnsw", 384)
    assert np.array_equal(made.labels, mapped.labels.astype(np.int64))
    assert np.array_equal(mapped.slot_of(made.labels), MappedGraph(folder / "v.hnsw", 384).slot_of())
    signs = np.unpackbits(made.columns.T.copy().view(np.uint8), axis=1)[:, :384].astype(bool)
    assert np.array_equal(signs, mapped.vectors > made.mean)
    assert abs(float(signs.mean()) - 0.5) < 0.05  # centred: a bit splits the vectors about evenly
    hnsw.BACKEND.verify(folder / "v.hnsw", state, 384, sketch_file=folder / "v.hnsw.sketch")


def test_a_sketched_search_finds_the_exact_neighbours_in_scope(sketched_file, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, state, drawn = sketched_file
    data, queries = drawn[:20_000], drawn[20_000:]
    opened = hnsw.BACKEND.open(folder / "v.hnsw", state, 384, {}, sketch_file=folder / "v.hnsw.sketch")
    labels = np.arange(len(data), dtype=np.int64) * 2 + 7
    # Every fifth run of ten (files spread over the index): 4,000 vectors, 2 of them removed.
    inside = (np.arange(len(data)) // 10) % 5 == 0
    inside[:2] = False  # the removed ones are not live: a subset never names them
    within = Subset(labels[inside], len(data) - 2)
    monkeypatch.setattr(hnsw, "_scoped_way", lambda *_args: "sketch")
    monkeypatch.setattr(hnsw_search, "RERANK_MIN", 200)  # 5 % of this scope scored exactly
    found = []
    for q in queries:
        got = opened.search(q, 10, within=within)
        assert len(got) == 10 and all(inside[(label - 7) // 2] for label, _ in got)
        scores = data[inside] @ q
        truth = set(labels[inside][np.argsort(-scores)[:10]].tolist())
        found.append(len(truth & {label for label, _ in got}) / 10)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert opened._index is None  # the graph was never loaded
    assert np.mean(found) >= 0.97, found


def test_a_missing_or_damaged_sketch_is_only_a_shortcut_lost(sketched_file, tmp_path: Path) -> None:
    folder, state, drawn = sketched_file
    data = drawn[:20_000]
    for name in ("v.hnsw", "v.hnsw.sketch"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    within = Subset(np.arange(7, 7 + 2 * 6000, 2, dtype=np.int64)[2:], len(data) - 2)
    q = data[5000]
    whole = hnsw.BACKEND.open(tmp_path / "v.hnsw", state, 384, {}, sketch_file=tmp_path / "v.hnsw.sketch")
    assert whole._sketched() is not None
    sketch_path = tmp_path / "v.hnsw.sketch"
    sketch_path.write_bytes(sketch_path.read_bytes()[:-8])  # cut short
    cut = hnsw.BACKEND.open(tmp_path / "v.hnsw", state, 384, {}, sketch_file=sketch_path)
    assert cut._sketched() is None
    assert cut.search(q, 10, within=within)[0][0] == 5000 * 2 + 7
    with pytest.raises(IndexCorruptError, match="damaged"):
        hnsw.BACKEND.verify(tmp_path / "v.hnsw", state, 384, sketch_file=sketch_path)
    sketch_path.unlink()
    gone = hnsw.BACKEND.open(tmp_path / "v.hnsw", state, 384, {}, sketch_file=sketch_path)
    assert gone._sketched() is None and len(gone.search(q, 10, within=within)) == 10
    with pytest.raises(IndexCorruptError, match="missing"):
        hnsw.BACKEND.verify(tmp_path / "v.hnsw", state, 384, sketch_file=sketch_path)
