"""pgvector's HNSW graph of a build: its parameters chosen by the index's size, built once over
the first rows, and built again (without blocking readers) when the index outgrows it.

A graph of m 16 / ef_construction 64 is the fastest to search up to a few hundred thousand
chunks at full recall; past that, clustered vectors need more links per node (m 32): at a
million synthetic chunks m 16 stayed under recall@10 0.90 at any ef_search, m 32 reached 0.99
(benchmarks/RESULTS.md). Parameters given explicitly (``vector_params``) are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

SMALL = (16, 64)  # (m, ef_construction) below LARGE_ROWS
LARGE = (32, 100)  # the local engine's graph (hnswlib M 32, ef_construction 100)
LARGE_ROWS = 250_000
NAME = "chunks_embedding"
NEXT = "chunks_embedding_next"  # the bigger graph while it is built


def chosen(params: Mapping[str, Any], rows: int) -> tuple[int, int]:
    """(m, ef_construction) for a graph over *rows*: those given, else by size."""
    m, efc = LARGE if rows >= LARGE_ROWS else SMALL
    return int(params.get("m") or m), int(params.get("ef_construction") or efc)


def index_sql(vector_type: str, m: int, ef_construction: int, *, name: str = NAME, concurrently: bool = False) -> str:
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {name} ON chunks USING hnsw (embedding {vector_type}_ip_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )


def memory_for(conn: psycopg.Connection[Any], rows: int, dim: int, vector_type: str) -> None:
    """Enough maintenance_work_mem to build the graph in memory: about twice the vectors' bytes
    (never lowered)."""
    need = int(rows * (dim * (2 if vector_type == "halfvec" else 4) + 256) * 2)
    need_mb = max(64, min(need >> 20, 8192))
    conn.execute(
        "SELECT set_config('maintenance_work_mem', %s, false) "
        "WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < %s",
        (f"{need_mb}MB", need_mb << 20),
    )


def current(conn: psycopg.Connection[Any]) -> tuple[int, int] | None:
    """(m, ef_construction) of the build's graph, None when it has none yet."""
    row = conn.execute(
        "SELECT c.reloptions FROM pg_class c WHERE c.oid = to_regclass(%s)", (NAME,)
    ).fetchone()  # fmt: skip
    if row is None:
        return None
    options = dict(str(o).split("=", 1) for o in (row[0] or []))
    return int(options.get("m", 16)), int(options.get("ef_construction", 64))


def settle(conn: psycopg.Connection[Any]) -> None:
    """Finish what a writer killed while growing the graph left (in autocommit): a complete next
    graph takes the name of the one it replaces, an incomplete one goes."""
    row = conn.execute(
        "SELECT i.indisvalid, to_regclass(%s) IS NOT NULL FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
        (NAME, NEXT),
    ).fetchone()
    if row is None:
        return
    valid, old_there = row
    if not valid:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEXT}")
        return
    if old_there:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
    conn.execute(f"ALTER INDEX {NEXT} RENAME TO {NAME}")


def outgrown(params: Mapping[str, Any], graph: tuple[int, int] | None, rows: int) -> tuple[int, int] | None:
    """The bigger graph's (m, ef_construction) when the index has outgrown its graph, else None.
    Never for parameters given explicitly."""
    if graph is None or params.get("m") or params.get("ef_construction"):
        return None
    wanted = chosen(params, rows)
    return wanted if wanted[0] > graph[0] else None


def grow(conn: psycopg.Connection[Any], vector_type: str, dim: int, rows: int, wanted: tuple[int, int]) -> None:
    """Build the bigger graph beside the current one (CREATE INDEX CONCURRENTLY: readers go on
    with the old one meanwhile), then put it in its place. Runs in autocommit, after the update's
    commit; a writer killed meanwhile leaves the old graph, settled by the next run."""
    memory_for(conn, rows, dim, vector_type)
    conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEXT}")
    conn.execute(index_sql(vector_type, *wanted, name=NEXT, concurrently=True))
    settle(conn)
