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
        # halfvec: half the table and index of vector, the same ranking. No m or ef_construction:
        # chosen by the index's size (pgstore/graph.py). An index keeps the parameters it was
        # built with (builds made before: m 16, ef_construction 64, given explicitly).
        return {"type": "halfvec"}

    def build_identity(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        kind = params.get("type", "halfvec")
        if kind not in TYPES:
            raise InvalidOptionError(f"pgvector's type is one of {', '.join(TYPES)} (got {kind!r})")
        given = [params.get(key) for key in ("m", "ef_construction")]
        return (kind, *(int(v) if v else None for v in given))

    def _in_database(self, *args: object, **kwargs: object) -> Any:
        raise InvalidOptionError("a pgvector index lives in PostgreSQL: open it by its URL")

    def create(self, dim: int, capacity: int, params: Mapping[str, Any]) -> Any:
        return self._in_database()

    def open(self, path: Path, state: Mapping[str, str], dim: int, params: Mapping[str, Any], **kw: Any) -> Any:
        return self._in_database()


BACKEND = PgvectorParameters()
