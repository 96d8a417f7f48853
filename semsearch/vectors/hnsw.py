"""The HNSW engine (hnswlib): every hnswlib call, its file checks and its parameters live here.

A saved index is one hnswlib file (space "cosine", labels = chunk ids). Its state: ``vector_file``,
``vector_count`` (live vectors), ``vector_slots`` (elements in the file, removed ones included),
``vector_size`` and ``vector_sha256`` (checked before hnswlib reads the file: hnswlib trusts its
input and crashes on a damaged one).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import files
from semsearch.errors import IndexCorruptError
from semsearch.vectors.base import Subset, VectorState

if TYPE_CHECKING:
    import numpy as np

NAME = "hnsw"
# hnswlib's file header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData (size_t each), maxlevel (int), enterpoint (uint32), maxM, maxM0, M
# (size_t), mult (double), ef_construction (size_t).
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


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
    expected_count = int(state.get("vector_slots", state.get("vector_count", "0")))
    size = int(state.get("vector_size", "0"))
    try:
        actual = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_HEADER.size)
    except FileNotFoundError:
        raise IndexCorruptError(f"{name} is missing", path=Path(name), remedy="rebuild") from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {name}: {exc.strerror}", path=Path(name), remedy="rebuild") from None
    if actual != size or len(head) < _HEADER.size:
        raise IndexCorruptError(
            f"{name} has the wrong size ({actual} bytes, expected {size})", path=Path(name), remedy="rebuild"
        )
    if not _plausible_header(_HEADER.unpack(head), expected_count, dim, actual):
        raise IndexCorruptError(f"{name} is not the vector file this index expects", path=Path(name), remedy="rebuild")
    if checksum:
        verify_checksum(path, state, shown)


def verify_checksum(path: Path, state: Mapping[str, str], shown: Path | None = None) -> None:
    """The whole file against the sha256 recorded when it was written (``status --verify``)."""
    name = shown or path
    if files.sha256_file(path) != state.get("vector_sha256", ""):
        raise IndexCorruptError(f"{name} fails its checksum", path=Path(name), remedy="rebuild")


def check_links(path: Path, dim: int, shown: Path | None = None) -> None:
    """Check every neighbour id of the graph before hnswlib follows it: a damaged file would send
    its search outside its arrays (a native crash, not an error). hnswlib's own load checks the
    link lists' sizes against the file; this checks their contents, and that the entry point's
    level is the graph's top level.

    One vectorised pass over the bottom layer's links (every element: about a sixth of the
    file) and a walk over the upper layers' lists, visiting only the elements that have some
    (one in M): 17 ms at 100,000 vectors against 130-180 ms for hashing the file
    (benchmarks/RESULTS.md).
    """
    import mmap

    import numpy as np

    name = Path(shown or path)

    def damaged(what: str) -> IndexCorruptError:
        return IndexCorruptError(f"{name} is damaged ({what})", path=name, remedy="rebuild")

    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < _HEADER.size:
            raise damaged("too short")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    # The map closes when the last view of it goes (views keep it open).
    (_o, _m, n, per_element, _lo, data_off, maxlevel, enter, maxm, maxm0, _m2, _mult, _efc) = _HEADER.unpack(
        mapped[: _HEADER.size]
    )
    if n == 0:
        return
    if data_off != 4 + 4 * maxm0 or per_element % 4 or _HEADER.size + n * per_element > size:
        raise damaged("its bottom layer does not fit the file")
    # Bottom layer: per element a 4-byte header (link count in its low 16 bits) and maxM0 ids.
    words = per_element // 4
    for start in range(0, n, 1 << 16):
        rows = min(1 << 16, n - start)
        block = np.ndarray(
            (rows, 1 + maxm0), dtype="<u4", buffer=mapped,
            offset=_HEADER.size + start * per_element, strides=(4 * words, 4),
        )  # fmt: skip
        # Slots past an element's count hold 0 or an earlier neighbour (hnswlib zeroes a new
        # element's links): every slot, used or not, must name an element of the graph.
        if int((block[:, 0] & 0xFFFF).max()) > maxm0:
            raise damaged("a bottom-layer link count is out of range")
        if int(block[:, 1:].max()) >= n:
            raise damaged("a bottom-layer link points past the graph")
    # Upper layers: per element a u32 byte size, then size / (4 + 4 maxM) lists (mostly none).
    # The walk is sequential (a size says where the next one is), so it is kept to C speed: a
    # regex skips each run of empty elements, and the lists found are checked together at the end.
    per_level = 4 + 4 * maxm
    start = _HEADER.size + n * per_element
    if (size - start) % 4:
        raise damaged("its upper layers do not fit the file")
    pos, i = start, 0
    entry_level = 0
    list_words: list[int] = []  # the word index of every upper-layer list
    skip = _ZERO_WORDS.match
    view = memoryview(mapped)
    while True:
        zeros = skip(view, pos)  # always matches (zero or more empty elements)
        run = (zeros.end() if zeros is not None else pos) - pos  # empty elements: a zero word each
        i += run // 4
        pos += run
        if i >= n:
            break
        if pos + 4 > size:
            raise damaged("its upper layers end early")
        nbytes = int.from_bytes(view[pos : pos + 4], "little")
        if nbytes % per_level or pos + 4 + nbytes > size:
            raise damaged("an upper-layer link list does not fit")
        levels = nbytes // per_level
        first = (pos + 4) // 4
        list_words.extend(range(first, first + levels * (1 + maxm), 1 + maxm))
        if i == enter:
            entry_level = levels
        i, pos = i + 1, pos + 4 + nbytes
    if i != n or pos != size:
        raise damaged("its upper layers do not fit the file")
    if list_words:
        words = np.frombuffer(mapped, dtype="<u4", count=(size - start) // 4, offset=start)
        lists = words[np.asarray(list_words, dtype=np.int64)[:, None] - start // 4 + np.arange(1 + maxm)]
        if int((lists[:, 0] & 0xFFFF).max()) > maxm or int(lists[:, 1:].max()) >= n:
            raise damaged("an upper-layer link list is out of range")
    if maxlevel != entry_level:
        raise damaged("its top level is not its entry point's")


_ZERO_WORDS = re.compile(rb"(?:\x00\x00\x00\x00)*")


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
        and _HEADER.size + count * per_element <= actual
    )


class HnswIndex:
    """An hnswlib graph, loaded on first need, and a zero-copy view of its saved vectors.

    A search scoped to few chunks (a :class:`Subset`) is answered exactly from the saved file's
    vectors, through the page cache, without loading the graph; a wider one by the graph with
    the subset as hnswlib's filter (see :data:`EXACT_FACTOR`).
    """

    def __init__(
        self, index: Any, live: int, *, replace_deleted: bool, load: Callable[[], Any] | None = None,
        file: Path | None = None, dim: int = 0,
    ) -> None:  # fmt: skip
        self._index = index
        self._load = load
        self._file = file  # the saved file the vectors view reads (None: a new, unsaved graph)
        self._dim = dim
        self._view: tuple[np.ndarray, np.ndarray] | None = None  # (vectors by slot, slot by id)
        self._live = live
        self._replace_deleted = replace_deleted  # an update reuses the slots of removed vectors
        self._pending: list[int] = []  # removals asked before the graph was loaded
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
        self._view = None

    def remove(self, ids: Sequence[int]) -> None:
        with self._lock:
            if self._index is None and self._load is not None:
                # Not loaded yet (a segment opened with its tombstones): removed when it is, so
                # a scoped search that reads only the mapped vectors never loads the graph.
                self._pending.extend(int(i) for i in ids)
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
        files.fsync_dir(folder)
        return {
            "vector_file": name,
            "vector_count": str(self._live),
            "vector_slots": str(graph.get_current_count()),
            "vector_size": str(path.stat().st_size),
            "vector_sha256": files.sha256_file(path),
        }

    def search(
        self, query: np.ndarray, k: int, *, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        if self._live <= 0 or (within is not None and len(within) == 0):
            return []
        if within is not None and self._file is not None and _exact_is_cheaper(len(within), self._live):
            return self._exact(query, k, within)  # within holds live chunks only: no tombstones
        graph = self._graph()  # loaded first: its pending removals change the live count
        if self._live <= 0:
            return []
        reachable = min(self._live, len(within)) if within is not None else self._live
        k = max(1, min(k, reachable))
        # The graph's ef is set once, when it is opened, and never per search: concurrent searches
        # share it. hnswlib explores max(ef, k) candidates, so a larger ef for one search is
        # asking for that many neighbours and keeping the best k.
        wanted = min(max(k, ef or 0), reachable)
        allowed = within.contains() if within is not None else None
        with self._gate.search():
            try:
                labels, distances = graph.knn_query(query.reshape(1, -1), k=wanted, filter=allowed)
            except RuntimeError:
                # Fewer reachable neighbours than asked (heavily deleted graphs): ask for fewer.
                try:
                    labels, distances = graph.knn_query(query.reshape(1, -1), k=max(1, k // 2), filter=allowed)
                except RuntimeError:
                    return []
        hits = [(int(label), float(1.0 - dist)) for label, dist in zip(labels[0], distances[0], strict=True)]
        return hits[:k]

    def _exact(self, query: np.ndarray, k: int, within: Subset) -> list[tuple[int, float]]:
        import numpy as np

        vectors, slot_of = self._vectors_view()
        ids = within.ids[within.ids < len(slot_of)]
        slots = slot_of[ids]
        present = slots >= 0
        ids, slots = ids[present], slots[present]
        if len(ids) == 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        starts = np.flatnonzero(np.diff(slots) != 1) + 1
        if len(starts) * RUN_GATHER < len(slots):
            # Long runs of neighbouring slots (a file's chunks are added together): score each
            # run in place instead of copying the vectors out (a fifth faster, measured at 10k).
            bounds = [0, *starts.tolist(), len(slots)]
            scores = np.concatenate([vectors[slots[a] : slots[a] + (b - a)] @ q for a, b in itertools.pairwise(bounds)])
        else:
            scores = vectors[slots] @ q
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        top = top[np.lexsort((ids[top], -scores[top]))]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def _vectors_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The saved file's vectors by slot (a strided view of a read-only map) and each id's slot."""
        view = self._view
        if view is not None:
            return view
        with self._lock:
            if self._view is None:
                assert self._file is not None
                self._view = _map_vectors(self._file, self._dim)
            return self._view

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


# An exact search over a subset reads each of its vectors (about 0.2 us apiece, warm); the graph
# filtered to a share s of the vectors explores about 1/s as much as an unfiltered search (about
# 1 ms at 100,000). The exact search is taken when n**2 <= EXACT_FACTOR * total, n the subset's
# size: measured at 100,000 vectors, the two cross at about 16,000 (benchmarks/bench_filter.py).
EXACT_FACTOR = 2500
EXACT_ALWAYS = 2048  # subsets this small are searched exactly at any size
RUN_GATHER = 8  # runs this many times shorter than the subset on average are scored in place
BATCH_EF = 32  # search_batch's ef (near-duplicate neighbours)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _exact_is_cheaper(n: int, total: int) -> bool:
    return n <= EXACT_ALWAYS or n * n <= EXACT_FACTOR * total


def _map_vectors(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    import mmap

    import numpy as np

    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    if mapped is None or size < _HEADER.size:
        raise IndexCorruptError(f"{path} is too short", path=path, remedy="rebuild")
    (_o, _m, count, per_element, label_off, data_off, *_rest) = _HEADER.unpack(mapped[: _HEADER.size])
    if per_element != data_off + dim * 4 + 8 or _HEADER.size + count * per_element > size:
        raise IndexCorruptError(f"{path} is not the vector file this index expects", path=path, remedy="rebuild")
    vectors = np.ndarray(
        (count, dim), dtype=np.float32, buffer=mapped, offset=_HEADER.size + data_off, strides=(per_element, 4)
    )
    labels = np.ndarray((count,), dtype="<u8", buffer=mapped, offset=_HEADER.size + label_off, strides=(per_element,))
    labels = labels.astype(np.int64)
    if count and (int(labels.min()) < 0 or int(labels.max()) >= max(1 << 32, 16 * count)):
        raise IndexCorruptError(f"{path} holds labels that are not chunk ids", path=path, remedy="rebuild")
    slot_of = np.full(int(labels.max()) + 1 if count else 1, -1, dtype=np.int64)
    slot_of[labels] = np.arange(count, dtype=np.int64)
    return vectors, slot_of


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
        return HnswIndex(index, 0, replace_deleted=False)

    def verify(self, path: Path, state: Mapping[str, str], dim: int) -> None:
        check_vector_file(path, state, dim, checksum=True)
        check_links(path, dim)

    def open(
        self,
        path: Path,
        state: Mapping[str, str],
        dim: int,
        params: Mapping[str, Any],
        *,
        extra_capacity: int | None = None,
        shown: Path | None = None,
    ) -> HnswIndex:
        import hnswlib

        p = HnswParams.from_mapping(params)
        # Size and header now, in constant time; the links just before hnswlib reads the file
        # (a scoped search that reads only some vectors through the mapped view never hands it
        # to hnswlib). The whole file's sha256 is checked by `semsearch status --verify`.
        check_vector_file(path, state, dim, shown, checksum=False)
        slots = int(state.get("vector_slots", state.get("vector_count", "0")))

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
                    f"{shown or path} cannot be loaded ({exc})", path=shown or path, remedy="rebuild"
                ) from None
            index.set_ef(p.ef_search)
            return index

        live = int(state.get("vector_count", "0"))
        if extra_capacity is not None:
            return HnswIndex(load(), live, replace_deleted=True)
        # To be searched: the graph is loaded by the first search that needs it (a scoped search
        # over few chunks reads only their vectors).
        return HnswIndex(None, live, replace_deleted=True, load=load, file=path, dim=dim)


BACKEND = HnswBackend()
