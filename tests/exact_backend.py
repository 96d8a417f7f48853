"""A test-only vector engine: exact (brute-force) cosine search with numpy, in one raw file.

It exists to show that a second engine is one module plus a registration (``register_backend``),
with no edit to the indexer or the searcher. File layout (little-endian): the 8-byte magic
``SSEXACT1``, count (uint64), dim (uint32), 4 bytes of padding, then ``count`` chunk ids (int64)
and ``count x dim`` float32 vectors. State: ``vector_file``, ``vector_count``, ``vector_size``,
``vector_sha256`` (checked before the file is parsed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semsearch import files
from semsearch.errors import IndexCorruptError
from semsearch.vectors import Subset, VectorState

NAME = "exact"
MAGIC = b"SSEXACT1"
_HEADER = struct.Struct("<8sQI4x")


class ExactIndex:
    """Every live vector in one matrix; a search scores them all."""

    def __init__(self, dim: int, ids: np.ndarray | None = None, vectors: np.ndarray | None = None) -> None:
        self.dim = dim
        self._ids = ids if ids is not None else np.zeros(0, dtype=np.int64)
        self._vectors = vectors if vectors is not None else np.zeros((0, dim), dtype=np.float32)

    @property
    def count(self) -> int:
        return len(self._ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vecs = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._vectors = np.concatenate([self._vectors, vecs])

    def remove(self, ids: Sequence[int]) -> None:
        keep = ~np.isin(self._ids, np.asarray(list(ids), dtype=np.int64))
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]

    def save(self, folder: Path, name: str) -> VectorState:
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(_HEADER.pack(MAGIC, self.count, self.dim))
                handle.write(np.ascontiguousarray(self._ids, dtype="<i8").tobytes())
                handle.write(np.ascontiguousarray(self._vectors, dtype="<f4").tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        files.fsync_dir(folder)
        return {
            "vector_file": name,
            "vector_count": str(self.count),
            "vector_size": str(path.stat().st_size),
            "vector_sha256": files.sha256_file(path),
        }

    def search(
        self, query: np.ndarray, k: int, *, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        ids, vecs = self._ids, self._vectors  # one consistent pair (searches never mutate them)
        if within is not None:
            keep = np.isin(ids, within.ids)
            ids, vecs = ids[keep], vecs[keep]
        if k <= 0 or len(ids) == 0:
            return []
        scores = vecs @ np.asarray(query, dtype=np.float32).reshape(-1)
        order = np.lexsort((ids, -scores))[:k]  # best first; equal scores by id
        return [(int(ids[i]), float(scores[i])) for i in order]

    def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_cos = np.zeros((len(queries), k), dtype=np.float32)
        ids, vecs = self._ids, self._vectors
        if len(ids):
            scores = np.asarray(queries, dtype=np.float32) @ vecs.T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            got = order.shape[1]
            out_ids[:, :got] = ids[order]
            out_cos[:, :got] = np.take_along_axis(scores, order, axis=1)
        return out_ids, out_cos


class ExactBackend:
    """Makes and opens :class:`ExactIndex` files."""

    name = NAME
    file_suffix = ".exact"
    rebuild_fraction = 0.25  # the same policy as hnsw, so both take the same paths in the store tests

    def default_params(self) -> dict[str, Any]:
        return {"metric": "cosine"}

    def build_identity(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return (params.get("metric", "cosine"),)

    def create(self, dim: int, capacity: int, params: Mapping[str, Any]) -> ExactIndex:
        return ExactIndex(dim)

    def verify(self, path: Path, state: Mapping[str, str], dim: int, *, sketch_file: Path | None = None) -> None:
        self.open(path, state, dim, {})  # the whole file is read and hashed on every open

    def open(
        self,
        path: Path,
        state: Mapping[str, str],
        dim: int,
        params: Mapping[str, Any],
        *,
        extra_capacity: int | None = None,
        shown: Path | None = None,
        sketch_file: Path | None = None,  # this engine writes no sketch
    ) -> ExactIndex:
        name = shown or path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IndexCorruptError(f"{name} is missing", remedy="rebuild") from None
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {name}: {exc.strerror}", remedy="rebuild") from None
        count = int(state.get("vector_count", "-1"))
        expected = _HEADER.size + count * (8 + 4 * dim)
        if len(data) != int(state.get("vector_size", "-1")) or len(data) != expected:
            raise IndexCorruptError(f"{name} has the wrong size ({len(data)} bytes, expected {expected})", remedy="rebuild")
        if hashlib.sha256(data).hexdigest() != state.get("vector_sha256", ""):
            raise IndexCorruptError(f"{name} fails its checksum", remedy="rebuild")
        magic, n, d = _HEADER.unpack_from(data)
        if magic != MAGIC or n != count or d != dim:
            raise IndexCorruptError(f"{name} is not the vector file this index expects", remedy="rebuild")
        ids = np.frombuffer(data, dtype="<i8", count=count, offset=_HEADER.size).astype(np.int64)
        vecs = np.frombuffer(data, dtype="<f4", count=count * dim, offset=_HEADER.size + 8 * count)
        return ExactIndex(dim, ids, vecs.astype(np.float32).reshape(count, dim))


BACKEND = ExactBackend()
