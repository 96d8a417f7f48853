"""The ``pgvector`` entry of the vector engines: a PostgreSQL index's vectors live in the database
(:mod:`semsearch.pgstore`), in a halfvec or vector column with pgvector's HNSW index. This entry
gives its parameters and what makes two builds the same; it holds no vector file of its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from semsearch.errors import InvalidOptionError

TYPES = ("halfvec", "vector")
# The local engine's graph (hnswlib's M 32, ef_construction 100). At a million chunks of clustered
# synthetic vectors, m 16 / ef_construction 64 left recall@10 at 0.87 (ef_search 400) and 0.90
# even at 1,600; m 32 reached 0.99 (benchmarks/RESULTS.md), for about twice the graph's build.
M = 32
EF_CONSTRUCTION = 100


class PgvectorParameters:
    name = "pgvector"
    rebuild_fraction = 1.0

    def default_params(self) -> dict[str, Any]:
        # halfvec: half the table and index of vector, the same ranking. An index keeps the
        # parameters it was built with (builds made before this default: m 16, ef_construction 64).
        return {"type": "halfvec", "m": M, "ef_construction": EF_CONSTRUCTION}

    def build_identity(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        kind = params.get("type", "halfvec")
        if kind not in TYPES:
            raise InvalidOptionError(f"pgvector's type is one of {', '.join(TYPES)} (got {kind!r})")
        return (kind, int(params.get("m", M)), int(params.get("ef_construction", EF_CONSTRUCTION)))

    def _in_database(self, *args: object, **kwargs: object) -> Any:
        raise InvalidOptionError("a pgvector index lives in PostgreSQL: open it by its URL")

    def create(self, dim: int, capacity: int, params: Mapping[str, Any]) -> Any:
        return self._in_database()

    def open(self, path: Path, state: Mapping[str, str], dim: int, params: Mapping[str, Any], **kw: Any) -> Any:
        return self._in_database()


BACKEND = PgvectorParameters()
