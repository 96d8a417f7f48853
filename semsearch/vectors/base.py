"""The vector index protocol: what the store asks of an engine that finds nearest vectors.

Vectors are float32 and L2-normalized, so inner product is cosine similarity; ids are the chunk
ids of the metadata database. An engine keeps its build parameters under its own name in the
index manifest, and the state of its saved files (``vector_*`` keys) in the database's state
table: ``vector_file`` (the file a reader holds open for its snapshot) and ``vector_count``
are required; ``vector_sketch`` names a second file of the same saved index, which an engine
may write beside it (kept, held open and deleted with it), handed back to ``open`` and
``verify``; the rest is the engine's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

VectorState = dict[str, str]
FILE_KEYS = ("vector_file", "vector_sketch")  # the state keys that name a saved index's files


class Subset:
    """The chunk ids a search may return (a scoped search's filter), out of *total* live vectors.

    An engine chooses how to honour it: an exact search over the vectors it names, a shortlist
    of them scored exactly (the hnsw engine's sketches), or its graph search with
    :meth:`contains` as the filter; never by dropping hits after the search.
    """

    def __init__(self, ids: np.ndarray, total: int, file_ids: np.ndarray | None = None) -> None:
        self.ids = ids  # int64, no duplicates, any order
        self.total = total
        self.file_ids = file_ids  # the files whose chunks these are, when known (SQL filters use them)
        self._bitmap: np.ndarray | None = None
        self._bits: bytes | None = None
        self._runs: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def share(self) -> float:
        return len(self.ids) / self.total if self.total else 0.0

    @property
    def runs(self) -> int:
        """How many runs of consecutive ids :attr:`ids` holds, in its order (a file's chunks
        are one run: an engine may read each run's vectors in place)."""
        if self._runs is None:
            import numpy as np

            self._runs = int(np.count_nonzero(np.diff(self.ids) != 1)) + 1 if len(self.ids) else 0
        return self._runs

    def bitmap(self) -> np.ndarray:
        """A uint8 array over chunk ids up to the largest: 1 for the ids held."""
        if self._bitmap is None:
            import numpy as np

            top = int(self.ids.max()) + 1 if len(self.ids) else 1
            bits = np.zeros(top, dtype=np.uint8)
            bits[self.ids] = 1
            self._bitmap = bits
        return self._bitmap

    def contains(self) -> Callable[[int], bool]:
        """A fast membership test (a bitmap over the ids): ``contains()(chunk_id)``."""
        if self._bits is None:
            self._bits = self.bitmap().tobytes()
        bits_ = self._bits
        size = len(bits_)
        return lambda label: label < size and bits_[label] == 1


class VectorIndex(Protocol):
    """An open vector index: in memory, searchable, and (for a writer) changeable and savable."""

    @property
    def count(self) -> int:
        """Live vectors (removed ones not counted)."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under their chunk ids (ids not present before)."""
        ...

    def remove(self, ids: Sequence[int]) -> None:
        """Remove vectors by chunk id (ids not present are ignored)."""
        ...

    def save(self, folder: Path, name: str) -> VectorState:
        """Write the index durably as *folder*/*name* (atomically: all or nothing); the state to record."""
        ...

    def search(
        self, query: np.ndarray, k: int, *, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        """The nearest ids by cosine similarity, best first: at most *k*, only ids in *within*
        (when given: *k* of them whenever it holds at least *k*)."""
        ...

    def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate neighbours of many vectors at once (near-duplicate detection): arrays of
        shape (len(queries), k) of ids and cosines, best first; id -1 where fewer were found.
        May trade some recall for speed against :meth:`search`."""
        ...


class VectorBackend(Protocol):
    """A vector engine: makes new indexes and opens saved ones."""

    name: str
    file_suffix: str
    rebuild_fraction: float  # an update removing more than this share of the vectors builds anew

    def default_params(self) -> dict[str, Any]:
        """The build parameters a new index records under the engine's name."""
        ...

    def build_identity(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The parameters that decide what a build contains (a change rebuilds the index)."""
        ...

    def create(self, dim: int, capacity: int, params: Mapping[str, Any]) -> VectorIndex:
        """A new, empty index with room for *capacity* vectors."""
        ...

    def verify(self, path: Path, state: Mapping[str, str], dim: int, *, sketch_file: Path | None = None) -> None:
        """Check a saved file whole: its checksum and structure (raises IndexCorruptError), and
        its sketch file when it has one. What ``semsearch status --verify`` runs; opening a file
        checks only what is cheap."""
        ...

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
    ) -> VectorIndex:
        """A saved index, checked against *state* before it is loaded (raises IndexCorruptError).

        *extra_capacity*: opened to be updated, with room for that many additions (None: to be
        searched). *shown* names the file in messages (when *path* is another way to it).
        *sketch_file*: where to read the file ``vector_sketch`` names (None: not read)."""
        ...
