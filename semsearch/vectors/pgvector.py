"""The ``pgvector`` entry of the vector engines: a PostgreSQL index's vectors live in the database
(:mod:`semsearch.pgstore`), in a halfvec or vector column with pgvector's HNSW index. This entry
gives its parameters and what makes two builds the same; it holds no vector file of its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from semsearch.errors import InvalidOptionError

TYPES = ("halfvec", "vector")


class PgvectorParameters:
    name = "pgvector"
    rebuild_fraction = 1.0

    def default_params(self) -> dict[str, Any]:
        # halfvec: half the table and index of vector, the same ranking. ef_construction 64: at
        # 100,000 chunks 128 searched 1.4x slower for the same recall (1.0) and built 2x longer;
        # at a million it took recall@10 from 0.80 to 0.94 (benchmarks/RESULTS.md): pass it in
        # vector_params for an index that big. An index keeps the parameters it was built with.
        return {"type": "halfvec", "m": 16, "ef_construction": 64}

    def build_identity(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        kind = params.get("type", "halfvec")
        if kind not in TYPES:
            raise InvalidOptionError(f"pgvector's type is one of {', '.join(TYPES)} (got {kind!r})")
        return (kind, int(params.get("m", 16)), int(params.get("ef_construction", 64)))

    def _in_database(self, *args: object, **kwargs: object) -> Any:
        raise InvalidOptionError("a pgvector index lives in PostgreSQL: open it by its URL")

    def create(self, dim: int, capacity: int, params: Mapping[str, Any]) -> Any:
        return self._in_database()

    def open(self, path: Path, state: Mapping[str, str], dim: int, params: Mapping[str, Any], **kw: Any) -> Any:
        return self._in_database()


BACKEND = PgvectorParameters()
