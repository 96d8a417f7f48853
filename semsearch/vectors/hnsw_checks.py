"""A saved HNSW file checked against its state, and its sketch written (again) beside it.

The checks hnswlib does not make (it trusts its input and crashes on a damaged one): the
file's size and header in constant time on open, its sha256 and every live element's
reachability on ``semsearch status --verify``, its sketch whole. The links themselves are
checked by :func:`semsearch.vectors.hnswfile.check_links`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import files
from semsearch.errors import IndexCorruptError
from semsearch.vectors import sketch
from semsearch.vectors.base import VectorState
from semsearch.vectors.hnswfile import HEADER, records, unreachable
from semsearch.vectors.sketch import Sketch

if TYPE_CHECKING:
    import numpy as np

ORPHANS_KEY = "vector_orphans"  # the slots of live elements the graph cannot reach, space-separated


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


def _orphans(state: Mapping[str, str], path: Path) -> np.ndarray | None:
    """The slots the state lists as unreachable through the graph (None: none listed)."""
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


def check_reachable(path: Path, state: Mapping[str, str], dim: int) -> None:
    """Every live element of a graph searched as one reachable through its links, or listed in
    its state as not (searched beside the graph)."""
    listed = _orphans(state, path)
    lost = set(unreachable(path, dim).tolist()) - set(listed.tolist() if listed is not None else [])
    if lost:
        raise IndexCorruptError(
            f"{path}: {len(lost)} of its vectors cannot be reached through its graph", path=path, remedy="repair"
        )


def check_sketch(sketch_file: Path, state: Mapping[str, str], dim: int) -> None:
    """A saved file's sketch whole: there, its size and header, its sha256; named by its own
    name (*sketch_file* may be an open fd's path)."""
    shown = Path(state.get("vector_sketch", sketch_file.name))
    Sketch(sketch_file, dim, _slots(state), shown)
    verify_checksum(sketch_file, state, shown, key="vector_sketch_sha256")


def write_sketch(path: Path, dim: int) -> VectorState:
    """Write the sketch of the saved file *path* beside it (its vectors and labels, read a block
    at a time); the state keys that name it."""
    count, blocks = records(path, dim)
    return sketch.write_blocks(path.with_name(f"{path.name}{sketch.SUFFIX}"), blocks, count, dim)
