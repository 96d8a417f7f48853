"""The HNSW engine (hnswlib): every hnswlib call, its file checks and its parameters live here.

A saved index is one hnswlib file (space "cosine", labels = chunk ids). Its state: ``vector_file``,
``vector_count`` (live vectors), ``vector_slots`` (elements in the file, removed ones included),
``vector_size`` and ``vector_sha256`` (checked before hnswlib reads the file: hnswlib trusts its
input and crashes on a damaged one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import files
from semsearch.errors import IndexCorruptError
from semsearch.vectors.base import VectorState

if TYPE_CHECKING:
    import numpy as np

NAME = "hnsw"
# Above this size a vector file is checked by its header and size only (hashing would dominate).
CHECKSUM_LIMIT = 1 << 30
# hnswlib's file header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData (size_t each), maxlevel (int), enterpoint (uint32), maxM, maxM0, M
# (size_t), mult (double), ef_construction (size_t).
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


@dataclass(frozen=True)
class HnswParams:
    """The graph's parameters, recorded under "hnsw" in the index manifest."""

    space: str = "cosine"
    M: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> HnswParams:
        known = {k: params[k] for k in ("space", "M", "ef_construction", "ef_search") if k in params}
        return cls(**known)


def check_vector_file(path: Path, state: Mapping[str, str], dim: int, shown: Path | None = None) -> None:
    """Validate a vector file before hnswlib reads it: size, header fields and checksum.

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
    if actual <= CHECKSUM_LIMIT and files.sha256_file(path) != state.get("vector_sha256", ""):
        raise IndexCorruptError(f"{name} fails its checksum", path=Path(name), remedy="rebuild")


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
    """An hnswlib graph in memory."""

    def __init__(self, index: Any, live: int, *, replace_deleted: bool) -> None:
        self._index = index
        self._live = live
        self._replace_deleted = replace_deleted  # an update reuses the slots of removed vectors

    @property
    def count(self) -> int:
        return self._live

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_items(vectors, ids, replace_deleted=self._replace_deleted)
        self._live += len(ids)

    def remove(self, ids: Sequence[int]) -> None:
        for label in ids:
            with contextlib.suppress(RuntimeError):  # not in the graph (or removed already)
                self._index.mark_deleted(int(label))
                self._live -= 1

    def save(self, folder: Path, name: str) -> VectorState:
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        self._index.save_index(str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
            written = os.fstat(handle.fileno()).st_size
        if written != self._index.index_file_size():
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
            "vector_slots": str(self._index.get_current_count()),
            "vector_size": str(path.stat().st_size),
            "vector_sha256": files.sha256_file(path),
        }

    def search(
        self, query: np.ndarray, k: int, *, ef: int | None = None, allowed: Callable[[int], bool] | None = None
    ) -> list[tuple[int, float]]:
        if self._live <= 0:
            return []
        k = max(1, min(k, self._live))
        # The graph's ef is set once, when it is opened, and never per search: concurrent searches
        # share it. hnswlib explores max(ef, k) candidates, so a larger ef for one search is
        # asking for that many neighbours and keeping the best k.
        wanted = min(max(k, ef or 0), self._live)
        try:
            labels, distances = self._index.knn_query(query.reshape(1, -1), k=wanted, filter=allowed)
        except RuntimeError:
            # Fewer reachable neighbours than asked (heavily deleted graphs, selective filters): ask for fewer.
            try:
                labels, distances = self._index.knn_query(query.reshape(1, -1), k=max(1, k // 2), filter=allowed)
            except RuntimeError:
                return []
        hits = [(int(label), float(1.0 - dist)) for label, dist in zip(labels[0], distances[0], strict=True)]
        return hits[:k]


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
        check_vector_file(path, state, dim, shown)
        slots = int(state.get("vector_slots", state.get("vector_count", "0")))
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
        return HnswIndex(index, int(state.get("vector_count", "0")), replace_deleted=True)


BACKEND = HnswBackend()
