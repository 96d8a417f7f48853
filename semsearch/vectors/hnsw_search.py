"""Searches of a saved HNSW file that need no loaded graph, and the costs that choose among them.

:class:`SavedVectors` reads the saved file mapped (:class:`MappedGraph`) and its sketch
(:mod:`semsearch.vectors.sketch`): every vector of a small file scored exactly, a subset's
vectors scored exactly, or a subset's nearest sketches scored exactly. :func:`_scoped_way`
picks, for a scoped search, the cheapest of those and the graph filtered to the subset (the
graph itself is :mod:`semsearch.vectors.hnsw`'s).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch.errors import IndexCorruptError
from semsearch.vectors.base import Subset
from semsearch.vectors.hnsw_checks import verify_checksum
from semsearch.vectors.hnswfile import MappedGraph, ranked, unit
from semsearch.vectors.sketch import Sketch

if TYPE_CHECKING:
    import numpy as np

# A scoped search takes the cheapest of three ways, by these costs in microseconds (warm, measured
# on a 1,000,000-vector file: benchmarks/scale/bench_filter_scale.py; the sketch's also on 100,000 by
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
SCORE_BLOCK = 512  # rows scored per product in an exact search (see _scores)
GATHER_BLOCK = 4096  # vectors copied out at a time (6 MB at 384 dimensions)


class SavedVectors:
    """A saved file's vectors, mapped read-only on first need, and its sketch: the searches that
    read them in place (exact, sketched) without hnswlib.

    *sha256*: a small file's checksum, checked once before its first whole-file search (a query
    reads it all). *slots*: the elements the file holds (its sketch's count).
    """

    def __init__(
        self, file: Path, dim: int, *, shown: Path | None = None, sketch: Path | None = None, slots: int = 0,
        sha256: str = "",
    ) -> None:  # fmt: skip
        self._file = file
        self._shown = shown
        self._dim = dim
        self._sha256 = sha256
        self._mapped: MappedGraph | None = None  # the saved file, mapped (its vectors, its graph)
        self._sketch_file, self._slots = sketch, slots  # the saved file's sketch, and its elements
        self._sketch: Sketch | None = None
        self._sketch_lock = threading.Lock()
        self._lock = threading.Lock()

    def map(self) -> MappedGraph:
        """The saved file, mapped read-only (once): what exact and unloaded searches read."""
        with self._lock:
            if self._mapped is None:
                self._mapped = MappedGraph(self._file, self._dim, self._shown)
            return self._mapped

    def sketched(self) -> Sketch | None:
        """The saved file's sketch, mapped (once); None when it has none or it is damaged: a
        sketch is only a shortcut, and ``semsearch status --verify`` names a damaged one."""
        with self._sketch_lock:
            if self._sketch_file is not None:
                with contextlib.suppress(IndexCorruptError):
                    self._sketch = Sketch(self._sketch_file, self._dim, self._slots)
                self._sketch_file = None
            return self._sketch

    def drop_sketch(self) -> None:
        """Stop using a sketch whose labels are not the file's (damaged): the id-to-slot map is
        made again from the vector file's own labels, and no search reads the sketch again."""
        with self._sketch_lock:
            self._sketch, self._sketch_file = None, None
        self.map().forget_slots()

    def _check_labels(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """The file's own labels at *slots* (read with their vectors) must be *ids*: the slots
        came from the sketch's copy of the labels."""
        import numpy as np

        if len(slots) and not np.array_equal(self.map().labels[slots].astype(np.int64), ids):
            raise _SketchLabelsWrong

    def _in_file(self, within: Subset) -> tuple[np.ndarray, np.ndarray]:
        """The ids of *within* this file holds, and their slots."""
        sketched = self.sketched()
        slot_of = self.map().slot_of(sketched.labels if sketched is not None else None)
        ids = within.ids[within.ids < len(slot_of)]
        slots = slot_of[ids]
        present = slots >= 0
        return ids[present], slots[present]

    def orphan_hits(
        self, orphans: np.ndarray, query: np.ndarray, within: Subset | None, removed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """The file's unreachable elements (*orphans*: their slots) that a search may return,
        scored."""
        import numpy as np

        mapped = self.map()
        slots = orphans[orphans < mapped.count]
        slots = slots[mapped.live()[slots]]
        labels = mapped.labels[slots].astype(np.int64)
        keep = _allowed(labels, removed, within.bitmap() if within is not None else None)
        return ranked(labels[keep], mapped.vectors[slots[keep]], unit(query))

    def sketched_search(self, query: np.ndarray, k: int, ef: int | None, within: Subset) -> list[tuple[int, float]]:
        """The subset's nearest sketches, then those vectors scored exactly: the best *k*."""
        sketched = self.sketched()
        assert sketched is not None
        ids, slots = self._in_file(within)
        if len(ids) == 0:
            return []
        q = unit(query)
        near = sketched.nearest(q, slots, max(k, ef or 0, rerank(len(ids))))
        near = near[slots[near].argsort()]  # read in file order
        self._check_labels(ids[near], slots[near])
        return ranked(ids[near], self.map().vectors[slots[near]], q)[:k]

    def exact_all(
        self, query: np.ndarray, k: int, within: Subset | None, removed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """Every vector of the file scored (a small segment): the true nearest, whatever the
        graph's links. A graph does not promise that: an element added to a built graph far
        from the rest (a merge's new passage on a subject of its own) may get a single link,
        which a search at any ef can pass by (benchmarks/RESULTS.md, issue 23)."""
        import numpy as np

        with self._lock:
            if self._sha256:  # once: a small file costs a few ms to hash (a query reads it all)
                verify_checksum(self._file, {"vector_sha256": self._sha256}, self._shown)
                self._sha256 = ""
        mapped = self.map()
        if mapped.count == 0:
            return []
        q = unit(query)
        labels = mapped.labels.astype(np.int64)
        keep = mapped.live() & _allowed(labels, removed, within.bitmap() if within is not None else None)
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

    def exact(self, query: np.ndarray, k: int, within: Subset) -> list[tuple[int, float]]:
        """Every vector of *within* the file holds scored: the best *k*."""
        import numpy as np

        vectors = self.map().vectors
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


def _scores(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``vectors @ q``, a block of rows at a time: OpenBLAS runs a product this size on every
    core, and on a busy machine its threads wait for each other (0.5-3 ms at 5,000 rows, against
    0.1-0.3 ms in blocks of SCORE_BLOCK, measured alternating in one process)."""
    import numpy as np

    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), SCORE_BLOCK):
        out[start : start + SCORE_BLOCK] = vectors[start : start + SCORE_BLOCK] @ q
    return out


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
