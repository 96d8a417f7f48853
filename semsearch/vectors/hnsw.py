"""The HNSW engine (hnswlib): every hnswlib call and its parameters live here; the saved file's
layout, its links' check and the search of a file left unloaded live in
:mod:`semsearch.vectors.hnswfile`, its checks against its state in :mod:`.hnsw_checks`, and the
searches that read it in place (exact, sketched) and their costs in :mod:`.hnsw_search`.

A saved index is one hnswlib file (space "cosine", labels = chunk ids). Its state: ``vector_file``,
``vector_count`` (live vectors), ``vector_slots`` (elements in the file, removed ones included),
``vector_size`` (checked with the header when the file is opened) and ``vector_sha256`` (checked
by ``semsearch status --verify``; hnswlib trusts its input and crashes on a damaged one, so the
links are checked before hnswlib reads a file).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import files
from semsearch.errors import IndexCorruptError
from semsearch.vectors.base import Subset, VectorState
from semsearch.vectors.hnsw_checks import (
    ORPHANS_KEY,
    _orphans,
    _slots,
    check_reachable,
    check_sketch,
    check_vector_file,
    verify_checksum,
    write_sketch,
)
from semsearch.vectors.hnsw_search import (
    EXACT_ALWAYS,
    EXACT_US_RUN,
    EXACT_US_VECTOR,
    GATHER_BLOCK,
    GATHER_US_VECTOR,
    GRAPH_US,
    RERANK_MIN,
    RERANK_SHARE,
    RERANK_US,
    SCORE_BLOCK,
    SKETCH_US_SEARCH,
    SKETCH_US_VECTOR,
    SavedVectors,
    _allowed,
    _best,
    _scoped_way,
    _SketchLabelsWrong,
    rerank,
)
from semsearch.vectors.hnswfile import check_links, ranked, records, unit, unreachable
from semsearch.vectors.sketch import Sketch

if TYPE_CHECKING:
    import numpy as np

NAME = "hnsw"

# The file checks and the searches that need no graph have modules of their own; their names stay
# importable from here. Their tunables (EXACT_ALWAYS, GRAPH_US, RERANK_MIN ...) are read where
# they are defined: set them on semsearch.vectors.hnsw_search, not here.
__all__ = [
    "BACKEND", "BATCH_EF", "EF_SIZE", "EXACT_ALWAYS", "EXACT_SLOTS", "EXACT_US_RUN", "EXACT_US_VECTOR",
    "GATHER_BLOCK", "GATHER_US_VECTOR", "GRAPH_US", "LOAD_BYTES", "MAPPED_SEARCHES", "NAME", "ORPHANS_KEY",
    "RERANK_MIN", "RERANK_SHARE", "RERANK_US", "SCORE_BLOCK", "SEARCH_EF_FLOOR", "SKETCH_US_SEARCH",
    "SKETCH_US_VECTOR", "HnswBackend", "HnswIndex", "HnswParams", "check_links", "check_vector_file", "rerank",
    "search_ef", "verify_checksum", "write_sketch",
]  # fmt: skip


@dataclass(frozen=True)
class HnswParams:
    """The graph's parameters, recorded under "hnsw" in the index manifest."""

    space: str = "cosine"
    M: int = 32
    # 100, not 200: half the build time for recall@10 0.9925 against 0.9943 at ef 128 on real and
    # near-real embeddings at 100,000 (benchmarks/scale/bench_graph.py). Indexes keep their own.
    ef_construction: int = 100
    ef_search: int = 128

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> HnswParams:
        known = {k: params[k] for k in ("space", "M", "ef_construction", "ef_search") if k in params}
        return cls(**known)


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
        self._load = load
        # The saved file the views read (None: a new, unsaved graph); a small one (*sha256*
        # given) is checked whole before its first exact search.
        self._saved = (
            SavedVectors(file, dim, shown=shown, sketch=sketch, slots=slots, sha256=sha256)
            if file is not None
            else None
        )
        self._ef_search = ef_search  # the recorded ef_search (the graph's own ef), widened per search
        self._slots = slots  # the saved file's elements
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
        saved = self._saved
        if saved is not None and self._slots <= EXACT_SLOTS:
            return saved.exact_all(query, k, within, self._removed_bitmap())
        if within is not None and saved is not None:
            # within holds live chunks only: an exact or sketched search needs no tombstones.
            way = _scoped_way(within, self._live, self._asked(k, ef, within)[2], saved.sketched() is not None)
            try:
                if way == "exact":
                    return saved.exact(query, k, within)
                if way == "sketch":
                    return saved.sketched_search(query, k, ef, within)
            except _SketchLabelsWrong:
                saved.drop_sketch()
                return self.search(query, k, ef=ef, within=within)
        if saved is not None and self._orphans is not None and len(self._orphans):
            # Elements the graph cannot reach, scored beside its search.
            found = self._graph_search(query, k, ef, within)
            return _best(found + saved.orphan_hits(self._orphans, query, within, self._removed_bitmap()), k)
        return self._graph_search(query, k, ef, within)

    def _sketched(self) -> Sketch | None:
        """The saved file's sketch (None: none, or damaged)."""
        return self._saved.sketched() if self._saved is not None else None

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

    def _mapped_search(
        self, query: np.ndarray, k: int, ef: int | None, within: Subset | None
    ) -> list[tuple[int, float]]:
        removed = self._removed_bitmap()
        inside = within.bitmap() if within is not None else None

        def allowed(labels: np.ndarray) -> np.ndarray:
            return _allowed(labels, removed, inside)

        need = removed is not None or inside is not None
        k, wanted, explore = self._asked(k, ef, within)  # as hnswlib is asked: then the best k
        assert self._saved is not None  # (only a saved file's graph is searched unloaded)
        return self._saved.map().search(query, wanted, explore, allowed if need else None)[:k]

    def _removed_bitmap(self) -> np.ndarray | None:
        import numpy as np

        with self._lock:
            if self._removed is None and self._gone:
                gone = np.asarray(self._gone, dtype=np.int64)
                bits = np.zeros(int(gone.max()) + 1, dtype=np.uint8)
                bits[gone[gone >= 0]] = 1
                self._removed = bits
            return self._removed

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


# Saved files of at most this many elements are always searched exactly (about 1-2 ms at
# 10,000, against 0.3-1 ms for the graph): their answers are the true nearest.
EXACT_SLOTS = 10_000
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


def search_ef(ef_search: int, elements: int, floor: int = SEARCH_EF_FLOOR) -> int:
    """The ef a graph of *elements* is searched with: the recorded ef_search up to EF_SIZE
    elements, then wider by log10 of the growth (twice at ten times EF_SIZE); never under
    *floor* (SEARCH_EF_FLOOR; the PostgreSQL engine's own). At a fixed ef, recall falls as a graph grows: 0.990 at 100,000 and 0.974
    at 1,000,000 for ef 128, 0.989 at 1,000,000 for ef 256 (benchmarks/RESULTS.md)."""
    if elements <= EF_SIZE:
        return max(ef_search, floor)
    return max(round(ef_search * (1.0 + math.log10(elements / EF_SIZE))), floor)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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
            check_reachable(path, state, dim)
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
        check_sketch(sketch_file, state, dim)

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
