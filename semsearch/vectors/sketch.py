"""A segment's sketch: one bit per dimension of each vector, for scoped searches over many
scattered chunks.

A scope of files spread over a big index (every tenth file of a million chunks) is too wide to
read exactly (its vectors lie all over the file: 100,000 of them are 150 MB to copy) and too
narrow for the graph (a filtered search visits ef / share nodes). Its sketch is 48 bytes a
vector at 384 dimensions: the sign of each component once the segment's mean is taken away
(centred, a bit splits the vectors about evenly). The Hamming distance between two sketches
follows the angle between the vectors. A query is compared unquantized: a bit that differs
counts as much as the query's component lies from the mean (in eight levels: three bit planes),
which is the asymmetric estimate of the inner product from sign bits. The nearest sketches in
the scope (one in a hundred, at least :data:`hnsw_search.RERANK_MIN`), scored exactly from the vector
file, hold its nearest vectors (recall in benchmarks/RESULTS.md).

The file, written beside its vector file when that is saved (``<vector file>.sketch``): a header
(:data:`HEAD`: magic, dimensions, 64-bit words per sketch, slots), the mean (dim float32), each
slot's label (the chunk id, int64, in the vector file's slot order: the id-to-slot map is built
from these 8 bytes a slot instead of from the labels strewn through the vector file), then the
sketches word by word (each of the *words* uint64 columns for every slot in turn: a scope's
words are gathered from one column at a time). Its size and header are checked when it is opened, its sha256
by ``semsearch status --verify``; it is only ever a shortcut to the vector file's own answers.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch import files
from semsearch.errors import IndexCorruptError

if TYPE_CHECKING:
    import numpy as np

SUFFIX = ".sketch"
MAGIC = b"SSKETCH1"
HEAD = struct.Struct("<8sIIQ")  # magic, dim, words per sketch, slots
BLOCK = 1 << 16  # vectors sketched at a time
PLANES = 3  # the bits of a query component's weight (recall against cost: benchmarks/RESULTS.md)


def words_for(dim: int) -> int:
    return (dim + 63) // 64


def size_for(dim: int, count: int) -> int:
    return HEAD.size + 4 * dim + 8 * count + 8 * words_for(dim) * count


def write(path: Path, vectors: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Write the sketch of *vectors* (slot order) and their *labels* durably as *path*
    (atomically); the state keys that name it."""

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for a in range(0, len(vectors), BLOCK):
            yield vectors[a : a + BLOCK], labels[a : a + BLOCK]

    return write_blocks(path, blocks, *vectors.shape)


def write_blocks(
    path: Path, blocks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], count: int, dim: int
) -> dict[str, str]:
    """:func:`write` from *blocks*: each call gives the vectors and labels again, a block at a
    time in slot order (read twice: for the mean, then for the sketches)."""
    import numpy as np

    words = words_for(dim)
    mean = np.zeros(dim, dtype=np.float64)
    for vectors, _ in blocks():
        mean += vectors.sum(axis=0, dtype=np.float64)
    mean = (mean / max(1, count)).astype(np.float32)
    columns = np.empty((words, count), dtype="<u8")
    ids = np.empty(count, dtype="<i8")
    at = 0
    for vectors, labels in blocks():
        columns[:, at : at + len(vectors)] = codes(vectors, mean, words).T
        ids[at : at + len(vectors)] = labels
        at += len(vectors)
    if at != count:
        raise ValueError(f"{count} vectors expected, {at} given")
    data = b"".join((HEAD.pack(MAGIC, dim, words, count), mean.tobytes(), ids.tobytes(), columns.tobytes()))
    files.write_atomic(path, data)  # owner-only, synced, renamed into place
    return {"vector_sketch": path.name, "vector_sketch_sha256": hashlib.sha256(data).hexdigest()}


def codes(vectors: np.ndarray, mean: np.ndarray, words: int) -> np.ndarray:
    """The sketches of *vectors* (rows): uint64 words of the sign bits of ``vector - mean``."""
    import numpy as np

    return _pack(np.asarray(vectors, dtype=np.float32) > mean, words)


def _pack(bits: np.ndarray, words: int) -> np.ndarray:
    """Rows of booleans as rows of *words* uint64 (the last one padded with zero bits)."""
    import numpy as np

    packed = np.packbits(bits, axis=1)
    padded = np.zeros((len(packed), 8 * words), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view("<u8")


class Sketch:
    """A sketch file, mapped read-only: its mean, labels and sketches as numpy views."""

    def __init__(self, path: Path, dim: int, count: int, shown: Path | None = None) -> None:
        import numpy as np

        name = Path(shown or path)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                head = handle.read(HEAD.size)
                if size != size_for(dim, count) or len(head) < HEAD.size:
                    raise _damaged(name, f"{size} bytes, expected {size_for(dim, count)}")
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise IndexCorruptError(f"{name} is missing", path=name, remedy="repair") from None
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {name}: {exc.strerror}", path=name, remedy="repair") from None
        if HEAD.unpack(head) != (MAGIC, dim, words_for(dim), count):
            raise _damaged(name, "not the sketch of this vector file")
        self.words = words_for(dim)
        self.mean = np.frombuffer(self._map, dtype=np.float32, count=dim, offset=HEAD.size)
        at = HEAD.size + 4 * dim
        self.labels = np.frombuffer(self._map, dtype="<i8", count=count, offset=at)
        self.columns = np.frombuffer(self._map, dtype="<u8", count=count * self.words, offset=at + 8 * count).reshape(
            self.words, count
        )

    def nearest(self, query: np.ndarray, slots: np.ndarray, r: int) -> np.ndarray:
        """The positions in *slots* of the *r* sketches nearest the unit vector *query*, in no
        order (all of them when there are no more than *r*): the sum, over the bits where a
        sketch and the query's differ, of the query's distance from the mean there (quantized)."""
        import numpy as np

        if len(slots) <= r:
            return np.arange(len(slots))
        centred = np.asarray(query, dtype=np.float32).reshape(1, -1) - self.mean
        mine = _pack(centred > 0, self.words)[0]
        level = np.abs(centred[0])
        level = np.rint(level * ((1 << PLANES) - 1) / max(float(level.max()), 1e-30)).astype(np.int64)
        planes = _pack(np.stack([(level >> p) & 1 for p in range(PLANES)]) > 0, self.words)
        distance = np.zeros(len(slots), dtype=np.uint16)
        word, masked = np.empty(len(slots), dtype="<u8"), np.empty(len(slots), dtype="<u8")
        for j in range(self.words):
            np.take(self.columns[j], slots, out=word, mode="clip")  # slots < count
            np.bitwise_xor(word, mine[j], out=word)
            for p in range(PLANES):
                np.bitwise_and(word, planes[p][j], out=masked)
                distance += np.bitwise_count(masked).astype(np.uint16) << p
        return np.argpartition(distance, r - 1)[:r]


def _damaged(name: Path, what: str) -> IndexCorruptError:
    return IndexCorruptError(f"{name} is damaged ({what})", path=name, remedy="repair")
