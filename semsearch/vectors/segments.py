"""Segments: one index's vectors as a base and small deltas, searched together (an LSM tree's idea).

An update adds its new vectors as a delta segment of their own and records the ids it removed
as tombstones, so its cost follows the change, not the index; an update that finds the deltas
past a share of the base merges them into it. Every segment is an engine's :class:`VectorIndex`
in a file of its own. The state keys (``vector_*``, beside the engine's own keys of the base):

``vector_deltas``
    JSON list of the delta segments' engine states, oldest first (absent: none);
``vector_base_gen``
    the generation that wrote the base (the deltas hold vectors added after it);
``vector_tombstones``
    how many ids the ``vector_tombstones`` table holds: removed chunks whose vectors a segment
    file still holds; applied as removals when a segment is opened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch.errors import IndexCorruptError
from semsearch.vectors.base import FILE_KEYS, Subset, VectorIndex, VectorState

if TYPE_CHECKING:
    import numpy as np

DELTAS_KEY = "vector_deltas"
BASE_GEN_KEY = "vector_base_gen"
TOMBSTONES_KEY = "vector_tombstones"

# An update merges the deltas into the base when they (or the tombstones) pass this share of the
# base, or when there would be more than MAX_DELTAS of them (each is one more search per query).
MERGE_SHARE = 0.10
MAX_DELTAS = 8


@dataclass
class Layout:
    """Where an index's vectors are: the base's engine state, the deltas', the tombstone count."""

    base: VectorState = field(default_factory=dict)
    deltas: list[VectorState] = field(default_factory=list)
    base_gen: int = 0
    tombstones: int = 0

    @classmethod
    def from_state(cls, state: Mapping[str, str]) -> Layout:
        try:
            deltas = json.loads(state.get(DELTAS_KEY) or "[]")
            if not isinstance(deltas, list) or not all(isinstance(d, dict) for d in deltas):
                raise ValueError("not a list of objects")
            base = {k: v for k, v in state.items() if k not in (DELTAS_KEY, BASE_GEN_KEY, TOMBSTONES_KEY)}
            return cls(
                base=base,
                deltas=[{str(k): str(v) for k, v in d.items()} for d in deltas],
                base_gen=int(state.get(BASE_GEN_KEY, "0")),
                tombstones=int(state.get(TOMBSTONES_KEY, "0")),
            )
        except ValueError as exc:
            raise IndexCorruptError(
                f"the index's list of vector segments is damaged ({exc})", remedy="rebuild"
            ) from None

    def to_state(self, live: int) -> VectorState:
        """The state keys to record: the base's, its count replaced by the live total."""
        state = dict(self.base)
        state["vector_count"] = str(live)
        state["vector_base_count"] = self.base.get("vector_base_count", self.base.get("vector_count", "0"))
        if self.deltas:
            state[DELTAS_KEY] = json.dumps(self.deltas, sort_keys=True)
        state[BASE_GEN_KEY] = str(self.base_gen)
        state[TOMBSTONES_KEY] = str(self.tombstones)
        return state

    def segment_states(self) -> list[VectorState]:
        """Every segment's engine state, the base first (none when there is no base yet)."""
        return [self.base_state(), *self.deltas] if self.base.get("vector_file") else []

    def files(self) -> list[str]:
        """Every segment's files (its vector file, then any the engine keeps beside it), the base first."""
        return [name for state in self.segment_states() for key in FILE_KEYS if (name := state.get(key, ""))]

    def base_state(self) -> VectorState:
        """The base's own engine state (its count as written, not the live total)."""
        state = dict(self.base)
        if "vector_base_count" in state:
            state["vector_count"] = state.pop("vector_base_count")
        return state

    def delta_slots(self) -> int:
        return sum(int(d.get("vector_slots", d.get("vector_count", "0"))) for d in self.deltas)

    def base_slots(self) -> int:
        base = self.base_state()
        return int(base.get("vector_slots", base.get("vector_count", "0")))

    def wants_merge(self, added: int, removed: int) -> bool:
        """After an update that adds a delta of *added* and *removed* more tombstones."""
        share = MERGE_SHARE * max(1, self.base_slots())
        return (
            self.delta_slots() + added > share
            or self.tombstones + removed > share
            or len(self.deltas) + (1 if added else 0) > MAX_DELTAS
        )


class Segments:
    """Several segments searched as one (read-only: the writer makes and merges segments)."""

    def __init__(self, parts: Sequence[VectorIndex], live: int) -> None:
        self.parts = list(parts)
        self._live = live

    @property
    def count(self) -> int:
        return self._live

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise TypeError("segments are written by the index writer, one file each")

    def remove(self, ids: Sequence[int]) -> None:
        for part in self.parts:
            part.remove(ids)

    def save(self, folder: Path, name: str) -> VectorState:
        raise TypeError("segments are written by the index writer, one file each")

    def search(
        self, query: np.ndarray, k: int, *, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        if len(self.parts) == 1:
            return self.parts[0].search(query, k, ef=ef, within=within)
        hits = [hit for part in self.parts for hit in part.search(query, k, ef=ef, within=within)]
        hits.sort(key=lambda h: (-h[1], h[0]))  # a chunk lives in one segment only
        return hits[:k]

    def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        if len(self.parts) == 1:
            return self.parts[0].search_batch(queries, k)
        found = [part.search_batch(queries, k) for part in self.parts]
        ids = np.concatenate([f[0] for f in found], axis=1)
        cos = np.concatenate([f[1] for f in found], axis=1)
        cos = np.where(ids < 0, -np.inf, cos)
        order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(queries))[:, None]
        best_ids, best_cos = ids[rows, order], cos[rows, order]
        return best_ids, np.where(best_ids < 0, 0.0, best_cos).astype(np.float32)
