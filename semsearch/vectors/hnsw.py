"""The HNSW engine (hnswlib): every hnswlib call and its parameters live here; the saved file's
layout, its checks and the search of a file left unloaded live in :mod:`semsearch.vectors.hnswfile`.

A saved index is one hnswlib file (space "cosine", labels = chunk ids). Its state: ``vector_file``,
``vector_count`` (live vectors), ``vector_slots`` (elements in the file, removed ones included),
``vector_size`` (checked with the header when the file is opened) and ``vector_sha256`` (checked
by ``semsearch status --verify``; hnswlib trusts its input and crashes on a damaged one, so the
links are checked before hnswlib reads a file).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import files
from semsearch.errors import IndexCorruptError
from semsearch.vectors import sketch
from semsearch.vectors.base import Subset, VectorState
from semsearch.vectors.hnswfile import HEADER, MappedGraph, check_links, ranked, records, unit, unreachable
from semsearch.vectors.sketch import Sketch

if TYPE_CHECKING:
    import numpy as np

NAME = "hnsw"


@dataclass(frozen=True)
class HnswParams:
    """The graph's parameters, recorded under "hnsw" in the index manifest."""

    space: str = "cosine"
    M: int = 32
    # 100, not 200: half the build time for recall@10 0.9925 against 0.9943 at ef 128 on real and
    # near-real embeddings at 100,000 (benchmarks/bench_graph.py). Indexes keep their own.
    ef_construction: int = 100
    ef_search: int = 128

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> HnswParams:
        known = {k: params[k] for k in ("space", "M", "ef_construction", "ef_search") if k in params}
        return cls(**known)


def check_vector_file(
    path: Path, state: Mapping[str, str], dim: int, shown: Path | None = None, *, checksum: bool = True
) -> None:
    """Validate a vector file before hnswlib reads it: size, header fields and (with *checksum*)
    its sha256.

    ``shown`` is the name for messages when ``path`` is another way to the file (an open fd).
    """
    name = shown or path
    expected_count = _slots(state)
    size = int(state.get("vector_size", "0"))
    try:
        actual = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(HEADER.size)
    except FileNotFoundError:
        raise IndexCorruptError(f"{name} is missing", path=Path(name), remedy="repair") from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {name}: {exc.strerror}", path=Path(name), remedy="repair") from None
    if actual != size or len(head) < HEADER.size:
        raise IndexCorruptError(
            f"{name} has the wrong size ({actual} bytes, expected {size})", path=Path(name), remedy="repair"
        )
    if not _plausible_header(HEADER.unpack(head), expected_count, dim, actual):
        raise IndexCorruptError(f"{name} is not the vector file this index expects", path=Path(name), remedy="repair")
    if checksum:
        verify_checksum(path, state, shown)


def verify_checksum(
    path: Path, state: Mapping[str, str], shown: Path | None = None, key: str = "vector_sha256"
) -> None:
    """The whole file against the sha256 recorded under *key* when it was written
    (``status --verify``): the vector file's, or its sketch's (``vector_sketch_sha256``)."""
    name = shown or path
    if files.sha256_file(path) != state.get(key, ""):
        raise IndexCorruptError(f"{name} fails its checksum", path=Path(name), remedy="repair")


def _slots(state: Mapping[str, str]) -> int:
    """The elements a saved file holds, removed ones included (its count, for older states)."""
    return int(state.get("vector_slots", state.get("vector_count", "0")))


def _plausible_header(fields: tuple[Any, ...], expected_count: int, dim: int, actual: int) -> bool:
    (offset0, max_el, count, per_element, label_off, data_off, _maxlevel, enter, _maxm, maxm0, m, _mult, _efc) = fields
    return bool(
        count == expected_count
        and max_el >= count
        and per_element == data_off + dim * 4 + 8
        and label_off == data_off + dim * 4
        and offset0 == 0
        and maxm0 == 2 * m
        and 0 < m < 10_000
        and (count == 0 or enter < count)
        and HEADER.size + count * per_element <= actual
    )


class HnswIndex:
    """An hnswlib graph, loaded on first need, and zero-copy views of its saved file.

    A scoped search (a :class:`Subset`) is answered without loading the graph, through the page
    cache, when that costs less than the graph with the subset as hnswlib's filter (see
    :func:`_scoped_way`): exactly from the saved file's vectors, or from the nearest of the
    subset's sketches (:mod:`semsearch.vectors.sketch`) scored exactly. A saved graph larger than
    :data:`LOAD_BYTES` answers its first :data:`MAPPED_SEARCHES` searches from the mapped file
    (:class:`MappedGraph`), so a process that asks one question never copies it into memory;
    the search after those loads it (a long-lived process: hnswlib's own search is faster).
    """

    def __init__(
        self, index: Any, live: int, *, replace_deleted: bool, load: Callable[[], Any] | None = None,
        file: Path | None = None, dim: int = 0, ef_search: int = 0, shown: Path | None = None, size: int = 0,
        sketch: Path | None = None, slots: int = 0, sha256: str = "", orphans: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        self._index = index
        self._orphans = orphans  # slots of elements the graph cannot reach (searched exactly)
        self._sha256 = sha256  # a small file is checked whole before its first exact search
        self._load = load
        self._file = file  # the saved file the views read (None: a new, unsaved graph)
        self._shown = shown
        self._dim = dim
        self._ef_search = ef_search  # the recorded ef_search (the graph's own ef), widened per search
        self._mapped: MappedGraph | None = None  # the saved file, mapped (its vectors, its graph)
        self._sketch_file, self._slots = sketch, slots  # the saved file's sketch, and its elements
        self._sketch: Sketch | None = None
        self._sketch_lock = threading.Lock()
        # A saved file this big (*size*: its bytes) answers its first searches unloaded.
        self._mapped_left = MAPPED_SEARCHES if file is not None and size > LOAD_BYTES else 0
        self._removed: np.ndarray | None = None  # the pending removals as a bitmap over ids
        self._live = live
        self._replace_deleted = replace_deleted  # an update reuses the slots of removed vectors
        self._pending: list[int] = []  # removals asked before the graph was loaded
        self._gone: list[int] = []  # every removal asked before then (the exact searches' filter)
        self._lock = threading.Lock()
        self._gate = _EfGate()

    @property
    def count(self) -> int:
        return self._live

    def _graph(self) -> Any:
        if self._index is None:
            with self._lock:
                if self._index is None and self._load is not None:
                    graph = self._load()
                    self._mark_deleted(graph, self._pending)
                    self._pending = []
                    self._index = graph
        return self._index

    def _mark_deleted(self, graph: Any, ids: Sequence[int]) -> None:
        for label in ids:
            with contextlib.suppress(RuntimeError):  # not in the graph (or removed already)
                graph.mark_deleted(int(label))
                self._live -= 1

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._graph().add_items(vectors, ids, replace_deleted=self._replace_deleted)
        self._live += len(ids)

    def remove(self, ids: Sequence[int]) -> None:
        with self._lock:
            if self._index is None and self._load is not None:
                # Not loaded yet (a segment opened with its tombstones): removed when it is, so
                # a scoped search that reads only the mapped vectors never loads the graph.
                self._pending.extend(int(i) for i in ids)
                self._gone.extend(int(i) for i in ids)
                self._removed = None
                return
        self._mark_deleted(self._graph(), ids)

    def save(self, folder: Path, name: str) -> VectorState:
        graph = self._graph()
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        graph.save_index(str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
            written = os.fstat(handle.fileno()).st_size
        if written != graph.index_file_size():
            # hnswlib does not check its writes: a full disk leaves a short file, silently.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise OSError(errno.ENOSPC, f"{path.name} was written incompletely (disk full?)")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        saved = {
            "vector_file": name,
            "vector_count": str(self._live),
            "vector_slots": str(graph.get_current_count()),
            "vector_size": str(path.stat().st_size),
            "vector_sha256": files.sha256_file(path),
        }
        saved |= write_sketch(path, graph.dim)  # from the file as written (in the page cache now)
        if graph.get_current_count() > EXACT_SLOTS:  # (smaller ones are searched exactly)
            lost = unreachable(path, graph.dim)
            if len(lost):
                saved[ORPHANS_KEY] = " ".join(map(str, lost.tolist()))
        files.fsync_dir(folder)
        return saved

    def search(
        self, query: np.ndarray, k: int, *, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        if self._live <= 0 or (within is not None and len(within) == 0):
            return []
        if self._file is not None and self._slots <= EXACT_SLOTS:
            return self._exact_all(query, k, within)
        if within is not None and self._file is not None:
            # within holds live chunks only: an exact or sketched search needs no tombstones.
            way = _scoped_way(within, self._live, self._asked(k, ef, within)[2], self._sketched() is not None)
            try:
                if way == "exact":
                    return self._exact(query, k, within)
                if way == "sketch":
                    return self._sketched_search(query, k, ef, within)
            except _SketchLabelsWrong:
                self._drop_sketch()
                return self.search(query, k, ef=ef, within=within)
        if self._orphans is not None and len(self._orphans):
            # Elements the graph cannot reach, scored beside its search.
            return _best(self._graph_search(query, k, ef, within) + self._orphan_hits(query, within), k)
        return self._graph_search(query, k, ef, within)

    def _orphan_hits(self, query: np.ndarray, within: Subset | None) -> list[tuple[int, float]]:
        """The saved file's unreachable elements (its state's list) that a search may return, scored."""
        import numpy as np

        assert self._orphans is not None
        mapped = self._map()
        slots = self._orphans[self._orphans < mapped.count]
        slots = slots[mapped.live()[slots]]
        labels = mapped.labels[slots].astype(np.int64)
        keep = _allowed(labels, self._removed_bitmap(), within.bitmap() if within is not None else None)
        return ranked(labels[keep], mapped.vectors[slots[keep]], unit(query))

    def _graph_search(
        self, query: np.ndarray, k: int, ef: int | None, within: Subset | None
    ) -> list[tuple[int, float]]:
        if self._index is None and self._take_mapped():
            return self._mapped_search(query, k, ef, within)
        graph = self._graph()  # loaded first: its pending removals change the live count
        if self._live <= 0:
            return []
        # The graph's ef is the recorded ef_search, set once, when it is opened, and never per
        # search: concurrent searches share it. hnswlib explores max(ef, k) candidates, so a
        # wider search is asking for that many neighbours and keeping the best k.
        k, wanted, explore = self._asked(k, ef, within)
        asked = explore if explore > self._ef_search else wanted
        allowed = within.contains() if within is not None else None
        with self._gate.search():
            try:
                labels, _ = graph.knn_query(query.reshape(1, -1), k=asked, filter=allowed)
            except RuntimeError:
                # Fewer reachable neighbours than asked (heavily deleted graphs): ask for fewer.
                try:
                    labels, _ = graph.knn_query(query.reshape(1, -1), k=max(1, k // 2), filter=allowed)
                except RuntimeError:
                    return []
        import numpy as np

        # The best *wanted* by hnswlib's distance, then scored as the mapped search scores them
        # (get_items costs about 30 us a vector: never for all that a wide search explored).
        found = labels[0][:wanted].astype(np.int64)
        return ranked(found, graph.get_items(found, return_type="numpy"), unit(query))[:k]

    def _asked(self, k: int, ef: int | None, within: Subset | None) -> tuple[int, int, int]:
        """The hits to return, the neighbours to ask the graph for (max(k, ef)) and the
        candidates to explore (the ef of a graph this size, :func:`search_ef`), none more than
        the vectors a search can reach.

        A filtered search explores as an unfiltered one of the whole graph does: at the ef of a
        graph of only the subset's size, it missed the recall target (benchmarks/RESULTS.md).
        """
        reachable = min(self._live, len(within)) if within is not None else self._live
        k = max(1, min(k, reachable))
        wanted = min(max(k, ef or 0), reachable)
        return k, wanted, max(wanted, min(search_ef(self._ef_search, self._live), reachable))

    def _take_mapped(self) -> bool:
        with self._lock:
            if self._mapped_left <= 0:
                return False
            self._mapped_left -= 1
            return True

    def _map(self) -> MappedGraph:
        """The saved file, mapped read-only (once): what exact and unloaded searches read."""
        with self._lock:
            if self._mapped is None:
                assert self._file is not None
                self._mapped = MappedGraph(self._file, self._dim, self._shown)
            return self._mapped

    def _mapped_search(
        self, query: np.ndarray, k: int, ef: int | None, within: Subset | None
    ) -> list[tuple[int, float]]:

        removed = self._removed_bitmap()
        inside = within.bitmap() if within is not None else None

        def allowed(labels: np.ndarray) -> np.ndarray:
            return _allowed(labels, removed, inside)

        need = removed is not None or inside is not None
        k, wanted, explore = self._asked(k, ef, within)  # as hnswlib is asked: then the best k
        return self._map().search(query, wanted, explore, allowed if need else None)[:k]

    def _removed_bitmap(self) -> np.ndarray | None:
        import numpy as np

        with self._lock:
            if self._removed is None and self._gone:
                gone = np.asarray(self._gone, dtype=np.int64)
                bits = np.zeros(int(gone.max()) + 1, dtype=np.uint8)
                bits[gone[gone >= 0]] = 1
                self._removed = bits
            return self._removed

    def _sketched(self) -> Sketch | None:
        """The saved file's sketch, mapped (once); None when it has none or it is damaged: a
        sketch is only a shortcut, and ``semsearch status --verify`` names a damaged one."""
        with self._sketch_lock:
            if self._sketch_file is not None:
                with contextlib.suppress(IndexCorruptError):
                    self._sketch = Sketch(self._sketch_file, self._dim, self._slots)
                self._sketch_file = None
            return self._sketch

    def _drop_sketch(self) -> None:
        """Stop using a sketch whose labels are not the file's (damaged): the id-to-slot map is
        made again from the vector file's own labels, and no search reads the sketch again."""
        with self._sketch_lock:
            self._sketch, self._sketch_file = None, None
        self._map().forget_slots()

    def _check_labels(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """The file's own labels at *slots* (read with their vectors) must be *ids*: the slots
        came from the sketch's copy of the labels."""
        import numpy as np

        if len(slots) and not np.array_equal(self._map().labels[slots].astype(np.int64), ids):
            raise _SketchLabelsWrong

    def _in_file(self, within: Subset) -> tuple[np.ndarray, np.ndarray]:
        """The ids of *within* this file holds, and their slots."""
        sketched = self._sketched()
        slot_of = self._map().slot_of(sketched.labels if sketched is not None else None)
        ids = within.ids[within.ids < len(slot_of)]
        slots = slot_of[ids]
        present = slots >= 0
        return ids[present], slots[present]

    def _sketched_search(self, query: np.ndarray, k: int, ef: int | None, within: Subset) -> list[tuple[int, float]]:
        """The subset's nearest sketches, then those vectors scored exactly: the best *k*."""
        sketched = self._sketched()
        assert sketched is not None
        ids, slots = self._in_file(within)
        if len(ids) == 0:
            return []
        q = unit(query)
        near = sketched.nearest(q, slots, max(k, ef or 0, rerank(len(ids))))
        near = near[slots[near].argsort()]  # read in file order
        self._check_labels(ids[near], slots[near])
        return ranked(ids[near], self._map().vectors[slots[near]], q)[:k]

    def _exact_all(self, query: np.ndarray, k: int, within: Subset | None) -> list[tuple[int, float]]:
        """Every vector of the file scored (a small segment): the true nearest, whatever the
        graph's links. A graph does not promise that: an element added to a built graph far
        from the rest (a merge's new passage on a subject of its own) may get a single link,
        which a search at any ef can pass by (benchmarks/RESULTS.md, issue 23)."""
        import numpy as np

        with self._lock:
            if self._sha256:  # once: a small file costs a few ms to hash (a query reads it all)
                assert self._file is not None
                verify_checksum(self._file, {"vector_sha256": self._sha256}, self._shown)
                self._sha256 = ""
        mapped = self._map()
        if mapped.count == 0:
            return []
        q = unit(query)
        labels = mapped.labels.astype(np.int64)
        keep = mapped.live() & _allowed(labels, self._removed_bitmap(), within.bitmap() if within is not None else None)
        slots = np.flatnonzero(keep)
        if not len(slots):
            return []
        scores = _scores(mapped.vectors, q)[slots]  # in place, one pass over the file
        k = min(k, len(slots))
        # A margin past the k-th score: the top is then scored as every search scores it
        # (ranked: the same bits whichever way found a vector), ties broken by id.
        bar = np.partition(scores, len(scores) - k)[len(scores) - k] - 1e-4 if k < len(slots) else -np.inf
        near = slots[scores >= bar]
        return ranked(labels[near], mapped.vectors[near], q)[:k]

    def _exact(self, query: np.ndarray, k: int, within: Subset) -> list[tuple[int, float]]:
        import numpy as np

        vectors = self._map().vectors
        ids, slots = self._in_file(within)
        if len(ids) == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        starts = np.flatnonzero(np.diff(slots) != 1) + 1
        if _in_place_is_cheaper(len(slots), len(starts) + 1):
            # Runs of neighbouring slots (a file's chunks are added together): each run scored
            # in place, where it lies in the file.
            bounds = [0, *starts.tolist(), len(slots)]
            scores = np.concatenate(
                [_scores(vectors[slots[a] : slots[a] + (b - a)], q) for a, b in itertools.pairwise(bounds)]
            )
        else:
            # Copied out a block at a time: a block stays in the cache while it is scored.
            scores = np.empty(len(slots), dtype=np.float32)
            for a in range(0, len(slots), GATHER_BLOCK):
                scores[a : a + GATHER_BLOCK] = _scores(vectors[slots[a : a + GATHER_BLOCK]], q)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        top = top[np.lexsort((ids[top], -scores[top]))]
        self._check_labels(ids[top], slots[top])
        return [(int(ids[i]), float(scores[i])) for i in top]

    def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        n = len(queries)
        ids = np.full((n, k), -1, dtype=np.int64)
        cos = np.zeros((n, k), dtype=np.float32)
        if self._live <= 0 or n == 0:
            return ids, cos
        graph = self._graph()
        if self._live <= 0:
            return ids, cos
        wanted = min(k, self._live)
        # A lower ef than the searches': neighbours this close are found early. The graph's ef is
        # shared, so the batch runs alone (searches wait for it, and it for them).
        with self._gate.alone():
            saved = graph.ef
            graph.set_ef(max(wanted, BATCH_EF))
            try:
                labels, distances = graph.knn_query(queries, k=wanted, num_threads=_cpus())
            except RuntimeError:
                labels, distances = graph.knn_query(queries, k=max(1, wanted // 2), num_threads=_cpus())
            finally:
                graph.set_ef(saved)
        got = labels.shape[1]
        ids[:, :got] = labels.astype(np.int64)
        cos[:, :got] = 1.0 - distances
        return ids, cos


# A scoped search takes the cheapest of three ways, by these costs in microseconds (warm, measured
# on a 1,000,000-vector file: benchmarks/bench_filter_scale.py; the sketch's also on 100,000 by
# bench_filter.py's crossover sweep and by bench_sketch.py: benchmarks/RESULTS.md). An exact
# search reads each vector of the subset: in place, run by run (a file's chunks are neighbours),
# or copied out. The graph filtered to a share s of the vectors visits about ef / s nodes. A
# sketched search compares every sketch of the subset and reads the nearest (rerank()).
EXACT_US_VECTOR = 0.08  # a vector scored in place
EXACT_US_RUN = 4.0  # a run of neighbouring vectors scored in place (one call)
GATHER_US_VECTOR = 0.3  # a vector copied out, a block at a time, and scored
GRAPH_US = 12.0  # one candidate of a filtered graph search's ef, per 1 / share
SKETCH_US_SEARCH = 1500.0  # a sketched search's own cost (the query's sketch, the partition, the scoring)
SKETCH_US_VECTOR = 0.05  # a vector's sketch gathered and compared (sketch.Sketch.nearest)
RERANK_US = 1.0  # one of the nearest sketches' vectors read (anywhere in the file) and scored
RERANK_SHARE = 0.01  # a sketched search scores this share of its subset exactly,
RERANK_MIN = 1000  # and at least this many
EXACT_ALWAYS = 2048  # subsets this small are searched exactly at any size
# Saved files of at most this many elements are always searched exactly (about 1-2 ms at
# 10,000, against 0.3-1 ms for the graph): their answers are the true nearest.
EXACT_SLOTS = 10_000
SCORE_BLOCK = 512  # rows scored per product in an exact search (see _scores)
GATHER_BLOCK = 4096  # vectors copied out at a time (6 MB at 384 dimensions)
BATCH_EF = 32  # search_batch's ef (near-duplicate neighbours)
EF_SIZE = 100_000  # graphs up to this size are searched at their recorded ef_search
# Graphs are searched at least this wide: on 20,868 hard vectors (random-word passages, every
# cosine near 0.79) after merges, recall@10 0.968 at ef 128 and 0.993 at 256, for 0.4 ms more
# a query (benchmarks/RESULTS.md, issue 23).
SEARCH_EF_FLOOR = 256
# Graphs above this size answer their first searches from the mapped file: hnswlib's load copies
# the file (about 2 ms per MB here), a mapped search reads a few thousand vectors (a first one
# 30-40 ms at 100,000 vectors, then about 6 ms against hnswlib's 1 ms). benchmarks/RESULTS.md.
LOAD_BYTES = 32 << 20
MAPPED_SEARCHES = 8


ORPHANS_KEY = "vector_orphans"  # the slots of live elements the graph cannot reach, space-separated


def _orphans(state: Mapping[str, str], path: Path) -> np.ndarray | None:
    import numpy as np

    text = state.get(ORPHANS_KEY, "")
    if not text:
        return None
    try:
        return np.array([int(word) for word in text.split()], dtype=np.int64)
    except ValueError:
        raise IndexCorruptError(
            f"{path.name}'s list of unreachable elements is damaged", path=path, remedy="repair"
        ) from None


def _allowed(labels: np.ndarray, removed: np.ndarray | None, inside: np.ndarray | None) -> np.ndarray:
    """Which of *labels* a search may return: not in the *removed* bitmap, and in the *inside*
    bitmap when given (bitmaps over ids; an id past a bitmap's end is not in it)."""
    import numpy as np

    good = np.ones(len(labels), dtype=np.bool_)
    for bits, keep in ((removed, False), (inside, True)):
        if bits is not None:
            held = labels < len(bits)
            good &= np.where(held, bits[np.minimum(labels, len(bits) - 1)] == keep, not keep)
    return good


def _best(hits: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    return sorted(dict(hits).items(), key=lambda h: (-h[1], h[0]))[:k]


def write_sketch(path: Path, dim: int) -> VectorState:
    """Write the sketch of the saved file *path* beside it (its vectors and labels, read a block
    at a time); the state keys that name it."""
    count, blocks = records(path, dim)
    return sketch.write_blocks(path.with_name(f"{path.name}{sketch.SUFFIX}"), blocks, count, dim)


def search_ef(ef_search: int, elements: int) -> int:
    """The ef a graph of *elements* is searched with: the recorded ef_search up to EF_SIZE
    elements, then wider by log10 of the growth (twice at ten times EF_SIZE); never under
    SEARCH_EF_FLOOR. At a fixed ef, recall falls as a graph grows: 0.990 at 100,000 and 0.974
    at 1,000,000 for ef 128, 0.989 at 1,000,000 for ef 256 (benchmarks/RESULTS.md)."""
    if elements <= EF_SIZE:
        return max(ef_search, SEARCH_EF_FLOOR)
    return max(round(ef_search * (1.0 + math.log10(elements / EF_SIZE))), SEARCH_EF_FLOOR)


def _scores(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``vectors @ q``, a block of rows at a time: OpenBLAS runs a product this size on every
    core, and on a busy machine its threads wait for each other (0.5-3 ms at 5,000 rows, against
    0.1-0.3 ms in blocks of SCORE_BLOCK, measured alternating in one process)."""
    import numpy as np

    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), SCORE_BLOCK):
        out[start : start + SCORE_BLOCK] = vectors[start : start + SCORE_BLOCK] @ q
    return out


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _in_place_is_cheaper(n: int, runs: int) -> bool:
    return _in_place_cost(n, runs) <= GATHER_US_VECTOR * n


def _in_place_cost(n: int, runs: int) -> float:
    return EXACT_US_VECTOR * n + EXACT_US_RUN * runs


def _exact_cost(n: int, runs: int) -> float:
    return min(_in_place_cost(n, runs), GATHER_US_VECTOR * n)


def rerank(n: int) -> int:
    """How many of a subset of *n* a sketched search scores exactly: its nearest sketches."""
    return max(RERANK_MIN, math.ceil(RERANK_SHARE * n))


def _scoped_way(within: Subset, total: int, ef: int, sketch: bool) -> str:
    """The cheapest way to search *within* out of *total* vectors: "exact" (every vector of the
    subset read), "sketch" (its sketches compared, the nearest read: only with a sketch) or
    "graph" (the graph searched at *ef* with the subset as its filter)."""
    n = len(within)
    if n <= EXACT_ALWAYS:
        return "exact"
    costs = {"exact": _exact_cost(n, within.runs), "graph": GRAPH_US * ef * total / n}
    if sketch:
        costs["sketch"] = SKETCH_US_SEARCH + SKETCH_US_VECTOR * n + RERANK_US * min(n, rerank(n))
    return min(costs, key=costs.__getitem__)  # ties: the first (exact answers are exact)


class _SketchLabelsWrong(Exception):
    """A sketch's labels disagree with its vector file's (the sketch is damaged)."""


class _EfGate:
    """Searches run together; a batch that changes the graph's ef runs alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._searching = 0
        self._alone = False

    @contextlib.contextmanager
    def search(self) -> Iterator[None]:
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._searching += 1
        try:
            yield
        finally:
            with self._cond:
                self._searching -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            while self._alone or self._searching:
                self._cond.wait()
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class HnswBackend:
    """Makes and opens :class:`HnswIndex` graphs."""

    name = NAME
    file_suffix = ".hnsw"
    # An update that removes more than this share of the vectors builds a new graph instead: a
    # graph with many deleted nodes searches worse and keeps their slots.
    rebuild_fraction = 0.25

    def default_params(self) -> dict[str, Any]:
        return asdict(HnswParams())

    def build_identity(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        p = HnswParams.from_mapping(params)
        return (p.space, p.M, p.ef_construction)  # ef_search changes no build

    def create(self, dim: int, capacity: int, params: Mapping[str, Any]) -> HnswIndex:
        import hnswlib

        p = HnswParams.from_mapping(params)
        index = hnswlib.Index(space=p.space, dim=dim)
        index.init_index(
            max_elements=max(16, capacity),
            M=p.M,
            ef_construction=p.ef_construction,
            random_seed=100,
            allow_replace_deleted=True,
        )
        index.set_ef(p.ef_search)
        return HnswIndex(index, 0, replace_deleted=False, ef_search=p.ef_search)

    def add_sketch(self, path: Path, state: Mapping[str, str], dim: int) -> VectorState:
        """The state of a file saved without a sketch (before sketches, or whose sketch an older
        version deleted), its sketch now written beside it: one read of the file."""
        name = state.get("vector_sketch", "")
        if name and "/" not in name and (path.parent / name).is_file():
            return dict(state)
        return {**state, **write_sketch(path, dim)}

    def verify(self, path: Path, state: Mapping[str, str], dim: int, *, sketch_file: Path | None = None) -> None:
        check_vector_file(path, state, dim, checksum=True)
        check_links(path, dim)
        if _slots(state) > EXACT_SLOTS:  # a graph searched as one: every live element reachable, or listed
            listed = _orphans(state, path)
            lost = set(unreachable(path, dim).tolist()) - set(listed.tolist() if listed is not None else [])
            if lost:
                raise IndexCorruptError(
                    f"{path}: {len(lost)} of its vectors cannot be reached through its graph", path=path,
                    remedy="repair",
                )  # fmt: skip
        if sketch_file is not None:
            self.verify_sketch(sketch_file, state, dim)

    def items(self, path: Path, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A saved file's (labels, vectors, live) a block at a time, in slot order; live is False
        for elements marked deleted in the file (``status --verify`` compares the rest with the
        database)."""
        _count, blocks = records(path, dim, with_live=True)
        yield from blocks()

    def verify_sketch(self, sketch_file: Path, state: Mapping[str, str], dim: int) -> None:
        """A saved file's sketch whole: there, its size and header, its sha256; named by its own
        name (*sketch_file* may be an open fd's path)."""
        shown = Path(state.get("vector_sketch", sketch_file.name))
        Sketch(sketch_file, dim, _slots(state), shown)
        verify_checksum(sketch_file, state, shown, key="vector_sketch_sha256")

    def open(
        self,
        path: Path,
        state: Mapping[str, str],
        dim: int,
        params: Mapping[str, Any],
        *,
        extra_capacity: int | None = None,
        shown: Path | None = None,
        sketch_file: Path | None = None,
    ) -> HnswIndex:
        import hnswlib

        p = HnswParams.from_mapping(params)
        # Size and header now, in constant time; the links just before hnswlib reads the file
        # (a scoped search that reads only some vectors through the mapped view never hands it
        # to hnswlib). The whole file's sha256 is checked by `semsearch status --verify`.
        check_vector_file(path, state, dim, shown, checksum=False)
        slots = _slots(state)

        def load() -> Any:
            check_links(path, dim, shown)
            index = hnswlib.Index(space=p.space, dim=dim)
            try:
                if extra_capacity is not None:  # opened to be updated
                    index.load_index(str(path), max_elements=slots + extra_capacity, allow_replace_deleted=True)
                else:
                    index.load_index(str(path), max_elements=0)
            except (RuntimeError, MemoryError, ValueError) as exc:
                raise IndexCorruptError(
                    f"{shown or path} cannot be loaded ({exc})", path=shown or path, remedy="repair"
                ) from None
            index.set_ef(p.ef_search)  # searches ask for more (HnswIndex._asked)
            return index

        live = int(state.get("vector_count", "0"))
        if extra_capacity is not None:
            # A merge appends its vectors: hnswlib's reuse of removed elements' slots rewires
            # their neighbours (updatePoint) and measured worse recall than new elements (0.907
            # against 0.948 on clustered vectors, a fresh build 0.959: benchmarks/RESULTS.md);
            # the removed ones stay as waypoints until a merge builds the base anew.
            return HnswIndex(load(), live, replace_deleted=False, ef_search=p.ef_search)
        # To be searched: the graph is loaded by the first search that needs it (a scoped search
        # over few chunks reads only their vectors).
        return HnswIndex(
            None, live, replace_deleted=True, load=load, file=path, dim=dim, ef_search=p.ef_search,
            shown=shown, size=int(state.get("vector_size", "0")),  # checked against the file above
            sketch=sketch_file, slots=slots, sha256=state.get("vector_sha256", "") if slots <= EXACT_SLOTS else "",
            orphans=_orphans(state, path),
        )  # fmt: skip


BACKEND = HnswBackend()
