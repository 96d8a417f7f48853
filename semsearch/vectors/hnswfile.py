"""A saved hnswlib file read where it lies: its layout, its link checks, and a graph search over
the mapped file that never loads it.

hnswlib's ``load_index`` copies the whole file into memory: about 0.27 s for 100,000 vectors
and 2.1 s for 1,000,000 on this machine, while one search visits a few thousand of them. A
process that answers a few queries (a command-line ``semsearch query``) searches the mapped
file instead with :class:`MappedGraph`: hnswlib's own search (a greedy descent through the
upper layers, then the bottom layer's beam search ``ef`` wide) in Python over numpy views of
the page cache. Every neighbour id it follows is bounds-checked by numpy, so a damaged file
raises :class:`IndexCorruptError` where hnswlib would crash.

The layout (hnswlib's ``saveIndex``): a header (:data:`HEADER`); then, per element, a record of
``size_data_per_element`` bytes: a u32 (link count in its low 16 bits, the deleted mark in bit
16), maxM0 u32 neighbour ids, the vector (dim float32), the label (u64); then, per element, a
u32 byte size and that many bytes of upper-layer lists, each a u32 count and maxM ids.
"""

from __future__ import annotations

import heapq
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import IndexCorruptError

if TYPE_CHECKING:
    import numpy as np

# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset, offsetData
# (size_t each), maxlevel (int), enterpoint (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t).
HEADER = struct.Struct("<QQQQQQiIQQQdQ")
_ZERO_WORDS = re.compile(rb"(?:\x00\x00\x00\x00)*")
_DELETED = 1 << 16  # hnswlib's DELETE_MARK in the third byte of a bottom-layer list's header


def _damaged(name: Path, what: str) -> IndexCorruptError:
    return IndexCorruptError(f"{name} is damaged ({what})", path=name, remedy="rebuild")


class _Mapped:
    """The file mapped read-only, its header unpacked (the map closes with its last view)."""

    def __init__(self, path: Path, shown: Path | None) -> None:
        self.name = Path(shown or path)
        with open(path, "rb") as handle:
            self.size = os.fstat(handle.fileno()).st_size
            if self.size < HEADER.size:
                raise _damaged(self.name, "too short")
            self.map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        (offset0, _max, self.n, self.per_element, self.label_off, self.data_off, self.maxlevel, self.enter,
         self.maxm, self.maxm0, _m, _mult, _efc) = HEADER.unpack(self.map[: HEADER.size])  # fmt: skip
        if (
            offset0 != 0
            or self.data_off != 4 + 4 * self.maxm0
            or self.per_element % 4
            or self.label_off + 8 != self.per_element
            or HEADER.size + self.n * self.per_element > self.size
            or (self.n and self.enter >= self.n)
        ):
            raise _damaged(self.name, "its bottom layer does not fit the file")
        self.upper_start = HEADER.size + self.n * self.per_element

    def upper_lists(self) -> dict[int, tuple[int, int]]:
        """Each element that has upper-layer lists: its slot -> (word index of its first list in
        the file, how many levels); the entry point's level is checked to be the top level.

        The walk is sequential (a size says where the next one is), so it is kept to C speed: a
        regex skips each run of elements without upper layers (a zero word each), and only the
        elements with some (one in M) take a Python step."""
        n, size, maxm = self.n, self.size, self.maxm
        per_level = 4 + 4 * maxm
        pos, i = self.upper_start, 0
        if (size - pos) % 4:
            raise _damaged(self.name, "its upper layers do not fit the file")
        found: dict[int, tuple[int, int]] = {}
        skip = _ZERO_WORDS.match
        view = memoryview(self.map)
        while True:
            zeros = skip(view, pos)  # always matches (zero or more empty elements)
            run = (zeros.end() if zeros is not None else pos) - pos
            i += run // 4
            pos += run
            if i >= n:
                break
            if pos + 4 > size:
                raise _damaged(self.name, "its upper layers end early")
            nbytes = int.from_bytes(view[pos : pos + 4], "little")
            if nbytes % per_level or pos + 4 + nbytes > size:
                raise _damaged(self.name, "an upper-layer link list does not fit")
            found[i] = ((pos + 4) // 4, nbytes // per_level)
            i, pos = i + 1, pos + 4 + nbytes
        if i != n or pos != size:
            raise _damaged(self.name, "its upper layers do not fit the file")
        if n and self.maxlevel != found.get(self.enter, (0, 0))[1]:
            raise _damaged(self.name, "its top level is not its entry point's")
        return found


def check_links(path: Path, dim: int, shown: Path | None = None) -> None:
    """Check every neighbour id of the graph before hnswlib follows it: a damaged file would send
    its search outside its arrays (a native crash, not an error). hnswlib's own load checks the
    link lists' sizes against the file; this checks their contents, and that the entry point's
    level is the graph's top level.

    One vectorised pass over the bottom layer's links (every element: about a sixth of the
    file) and the walk over the upper layers' lists (:meth:`_Mapped.upper_lists`): 17 ms at
    100,000 vectors against 130-180 ms for hashing the file (benchmarks/RESULTS.md).
    """
    import numpy as np

    mapped = _Mapped(path, shown)
    n, maxm0, maxm = mapped.n, mapped.maxm0, mapped.maxm
    if n == 0:
        return
    words = mapped.per_element // 4
    for start in range(0, n, 1 << 16):
        rows = min(1 << 16, n - start)
        block = np.ndarray(
            (rows, 1 + maxm0), dtype="<u4", buffer=mapped.map,
            offset=HEADER.size + start * mapped.per_element, strides=(4 * words, 4),
        )  # fmt: skip
        # Slots past an element's count hold 0 or an earlier neighbour (hnswlib zeroes a new
        # element's links): every slot, used or not, must name an element of the graph.
        if int((block[:, 0] & 0xFFFF).max()) > maxm0:
            raise _damaged(mapped.name, "a bottom-layer link count is out of range")
        if int(block[:, 1:].max()) >= n:
            raise _damaged(mapped.name, "a bottom-layer link points past the graph")
    found = mapped.upper_lists()
    if found:
        all_words = np.frombuffer(mapped.map, dtype="<u4", count=mapped.size // 4)
        firsts = [first + level * (1 + maxm) for first, levels in found.values() for level in range(levels)]
        lists = all_words[np.asarray(firsts, dtype=np.int64)[:, None] + np.arange(1 + maxm)]
        if int((lists[:, 0] & 0xFFFF).max()) > maxm or int(lists[:, 1:].max()) >= n:
            raise _damaged(mapped.name, "an upper-layer link list is out of range")


def unreachable(path: Path, dim: int) -> np.ndarray:
    """The slots of live elements no search of the graph can reach: not linked, through the
    bottom layer, from the entry point (a breadth-first pass, a frontier at a time). hnswlib's
    neighbour heuristic can leave some: an element whose every neighbour kept closer ones."""
    import numpy as np

    graph = MappedGraph(path, dim)
    n = graph.count
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    maxm0 = graph._mapped.maxm0
    seen = np.zeros(n, dtype=np.bool_)
    seen[graph._mapped.enter] = True
    frontier = np.array([graph._mapped.enter], dtype=np.int64)
    columns = np.arange(maxm0)
    while len(frontier):
        rows = graph._words[frontier]
        counts = (rows[:, 0] & 0xFFFF).astype(np.int64)
        if len(counts) and int(counts.max()) > maxm0:
            raise _damaged(graph._mapped.name, "a bottom-layer link count is out of range")
        near = rows[:, 1 : 1 + maxm0][columns[None, :] < counts[:, None]].astype(np.int64)
        if len(near) and int(near.max()) >= n:
            raise _damaged(graph._mapped.name, "a bottom-layer link points past the graph")
        near = np.unique(near[~seen[near]])
        seen[near] = True
        frontier = near
    lost: np.ndarray = np.flatnonzero(~seen & graph.live()).astype(np.int64)
    return lost


def records(
    path: Path, dim: int, rows: int = 1 << 16, *, with_live: bool = False
) -> tuple[int, Callable[[], Iterator[Any]]]:
    """The elements of a saved file and a way to read their vectors and labels, *rows* at a time
    in slot order, from the mapped file; each block's pages are let go once the next is asked
    for (a pass over the whole map would leave every page of it counted in the process's memory).
    *with_live*: blocks of (labels, vectors, not marked deleted) instead."""
    import numpy as np

    graph = MappedGraph(path, dim)
    mapped = graph._mapped

    def blocks() -> Iterator[Any]:
        for start in range(0, graph.count, rows):
            end = min(start + rows, graph.count)
            labels = graph.labels[start:end].astype(np.int64)
            if with_live:
                yield labels, np.array(graph.vectors[start:end]), graph.live()[start:end]
            else:
                yield graph.vectors[start:end], labels
            at = HEADER.size + start * mapped.per_element
            first = at - at % mmap.PAGESIZE
            mapped.map.madvise(
                mmap.MADV_DONTNEED, first, min(HEADER.size + end * mapped.per_element, mapped.size) - first
            )

    return graph.count, blocks


def unit(query: np.ndarray) -> np.ndarray:
    """The query as space "cosine" takes it: float32, scaled to length 1 as hnswlib does."""
    import numpy as np

    q = np.asarray(query, dtype=np.float32).reshape(-1)
    scaled: np.ndarray = q * np.float32(1.0 / (float(np.sqrt(q @ q)) + 1e-30))
    return scaled


def ranked(labels: np.ndarray, vectors: np.ndarray, q: np.ndarray) -> list[tuple[int, float]]:
    """(label, cosine) best first, each cosine summed in one fixed order (numpy's pairwise sum
    of one row): the same bits whichever search found the vector, and whatever else it found.
    hnswlib's SIMD sums and BLAS differ in the last bits, and BLAS with the batch."""
    import numpy as np

    if not len(labels):
        return []
    scores = (vectors * q).sum(axis=1, dtype=np.float32)
    order = np.lexsort((labels, -scores))
    return [(int(labels[i]), float(scores[i])) for i in order]


# Which slots a search may return, given their labels (chunk ids): the removed ones and those
# outside a scoped search's subset are not (None: every one may).
Allowed = Callable[["np.ndarray"], "np.ndarray"]


class MappedGraph:
    """hnswlib's search (``searchKnn``) over the mapped file: same graph, same algorithm, same
    answers up to ties and float rounding (tests/test_hnswfile.py compares them)."""

    def __init__(self, path: Path, dim: int, shown: Path | None = None) -> None:
        import numpy as np

        mapped = _Mapped(path, shown)
        if mapped.per_element != mapped.data_off + dim * 4 + 8:
            raise IndexCorruptError(
                f"{mapped.name} is not the vector file this index expects", path=mapped.name, remedy="rebuild"
            )
        self._mapped = mapped
        self.count = mapped.n  # elements, removed ones included
        if mapped.n == 0:  # an index whose every file was deleted: no record to view
            self._words = np.zeros((0, mapped.per_element // 4), dtype="<u4")
            self.vectors = np.zeros((0, dim), dtype=np.float32)
            self.labels = np.zeros(0, dtype="<u8")
        else:
            self._words = np.ndarray(
                (mapped.n, mapped.per_element // 4), dtype="<u4", buffer=mapped.map, offset=HEADER.size
            )
            # The vectors by slot and their labels: strided views of the map, read where they lie.
            self.vectors = np.ndarray(
                (mapped.n, dim), dtype=np.float32, buffer=mapped.map, offset=HEADER.size + mapped.data_off,
                strides=(mapped.per_element, 4),
            )  # fmt: skip
            self.labels = np.ndarray(
                (mapped.n,), dtype="<u8", buffer=mapped.map, offset=HEADER.size + mapped.label_off,
                strides=(mapped.per_element,),
            )  # fmt: skip
        self._all_words = np.frombuffer(mapped.map, dtype="<u4", count=mapped.size // 4)
        self._upper: dict[int, tuple[int, int]] | None = None
        self._slot_of: np.ndarray | None = None

    def live(self) -> np.ndarray:
        """A boolean per slot: not marked deleted in the file (hnswlib's mark)."""
        flags: np.ndarray = (self._words[:, 0] & _DELETED) == 0
        return flags

    def forget_slots(self) -> None:
        """Drop the id-to-slot map (made from a sketch's labels that proved wrong)."""
        self._slot_of = None

    def slot_of(self, labels: np.ndarray | None = None) -> np.ndarray:
        """Each label's slot (-1: not in the file), by label: one pass over every label, once.

        *labels*: the file's labels in slot order kept apart (a sketch's, 8 bytes a slot), read
        instead of the ones strewn through the file (one in each element's record)."""
        import numpy as np

        if self._slot_of is None:
            count = self.count
            labels = (self.labels if labels is None or len(labels) != count else labels).astype(np.int64)
            if count and (int(labels.min()) < 0 or int(labels.max()) >= max(1 << 32, 16 * count)):
                raise IndexCorruptError(
                    f"{self._mapped.name} holds labels that are not chunk ids", path=self._mapped.name, remedy="rebuild"
                )
            slot_of = np.full(int(labels.max()) + 1 if count else 1, -1, dtype=np.int64)
            slot_of[labels] = np.arange(count, dtype=np.int64)
            self._slot_of = slot_of
        return self._slot_of

    def _upper_list(self, slot: int, level: int) -> np.ndarray:
        if self._upper is None:
            self._upper = self._mapped.upper_lists()
        first, levels = self._upper.get(slot, (0, 0))
        if level > levels:
            raise _damaged(self._mapped.name, "a link leads to a level its element does not have")
        at = first + (level - 1) * (1 + self._mapped.maxm)
        count = int(self._all_words[at]) & 0xFFFF
        if count > self._mapped.maxm:
            raise _damaged(self._mapped.name, "an upper-layer link count is out of range")
        return self._all_words[at + 1 : at + 1 + count]

    def search(self, query: np.ndarray, k: int, ef: int, allowed: Allowed | None = None) -> list[tuple[int, float]]:
        """The nearest *k* labels and their cosines, best first, exploring max(ef, k) candidates;
        only slots *allowed* (and not marked deleted in the file) are returned."""
        try:
            return self._search(query, k, max(ef, k), allowed)
        except IndexError:  # a neighbour id past the graph: numpy checked it
            raise _damaged(self._mapped.name, "a link points past the graph") from None

    def _search(self, query: np.ndarray, k: int, ef: int, allowed: Allowed | None) -> list[tuple[int, float]]:
        import numpy as np

        if self.count == 0 or k <= 0:
            return []
        q = unit(query)
        vectors, words, one = self.vectors, self._words, np.float32(1.0)

        def distances(slots: np.ndarray) -> np.ndarray:
            result: np.ndarray = one - vectors[slots] @ q
            return result

        def ok(slots: np.ndarray) -> np.ndarray:
            good: np.ndarray = (words[slots, 0] & _DELETED) == 0
            if allowed is not None:
                good &= allowed(self.labels[slots].astype(np.int64))
            return good

        # The upper layers: greedy, to the closest element of each.
        current = self._mapped.enter
        current_dist = float(distances(np.array([current]))[0])
        for level in range(self._mapped.maxlevel, 0, -1):
            changed = True
            while changed:
                changed = False
                near = self._upper_list(current, level)
                if len(near):
                    dist = distances(near)
                    best = int(np.argmin(dist))
                    if float(dist[best]) < current_dist:
                        current, current_dist, changed = int(near[best]), float(dist[best]), True

        # The bottom layer: hnswlib's searchBaseLayerST, as with deletions or a filter (it stops
        # only once ef allowed candidates are held, which also suits graphs without either).
        visited = np.zeros(self.count, dtype=np.bool_)
        visited[current] = True
        top: list[tuple[float, int]] = []  # a max-heap of (-distance, slot): the ef best allowed
        candidates: list[tuple[float, int]] = [(current_dist, current)]  # a min-heap to expand
        lower = float("inf")
        if ok(np.array([current]))[0]:
            top.append((-current_dist, current))
            lower = current_dist
        maxm0 = self._mapped.maxm0
        push, pop = heapq.heappush, heapq.heappop
        while candidates:
            dist0, node = candidates[0]
            if dist0 > lower and len(top) == ef:
                break
            pop(candidates)
            row = words[node]
            count = int(row[0]) & 0xFFFF
            if count > maxm0:
                raise _damaged(self._mapped.name, "a bottom-layer link count is out of range")
            near = row[1 : 1 + count]
            near = near[~visited[near]]
            if not len(near):
                continue
            visited[near] = True
            dist = distances(near)
            if len(top) >= ef:  # only closer ones can enter (the bound only tightens)
                closer = dist < lower
                near, dist = near[closer], dist[closer]
                if not len(near):
                    continue
            for d, slot, good in zip(dist.tolist(), near.tolist(), ok(near).tolist(), strict=True):
                if len(top) < ef or lower > d:
                    push(candidates, (d, slot))
                    if good:
                        push(top, (-d, slot))
                        if len(top) > ef:
                            pop(top)
                    if top:
                        lower = -top[0][0]
        nearest = np.array([slot for _d, slot in sorted((-neg, slot) for neg, slot in top)[:k]], dtype=np.int64)
        return ranked(self.labels[nearest].astype(np.int64), vectors[nearest], q)
