"""The PostgreSQL + pgvector storage engine: a team's index in a database, behind the same calls as
the local folder's (:mod:`semsearch.store`). psycopg is imported only when such an index is used."""

from __future__ import annotations

from semsearch.pgstore.connection import Target, is_url, parse_target, redact

__all__ = ["Target", "is_url", "parse_target", "redact"]
