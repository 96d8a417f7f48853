"""The PostgreSQL index's schema: a registry of projects, one schema per project build, numbered
migrations applied in place.

``semsearch.projects`` names each project's current schema (and a build under way). A project's
build lives in a schema of its own (``semsearch_<project>_<epoch>``): a rebuild (another model or
chunking) fills a new schema while queries use the old one, then one transaction points the
project at it and drops the old one. Within a build, rows carry the generation that added and
removed them, as in the local index: an update's rows stay invisible until the generation flip,
which is one transaction (readers see the old state or the new one, never a mix), while its work
so far is committed as it goes (a killed writer loses nothing; the next run resumes).

``SCHEMA_VERSION`` is the version of the tables a build holds; ``MIGRATIONS[n]`` takes a build
from version n - 1 to n and runs in the writer's transaction (an older build is upgraded by its
next update). A build of a newer version is refused by this semsearch, read or written.
"""

from __future__ import annotations

import json
from typing import Any

from semsearch.errors import IndexVersionError

# 2: postings (BM25 reads a term's chunks from an index, not each chunk's tsvector).
# 3: a removed file's chunks are removed by its row alone (their own rows are no longer updated).
SCHEMA_VERSION = 3
REGISTRY = "semsearch"

REGISTRY_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {REGISTRY};
CREATE TABLE IF NOT EXISTS {REGISTRY}.projects (
    name text PRIMARY KEY,
    live_schema text,
    building_schema text,
    updated_at double precision NOT NULL DEFAULT 0
);
"""


def _tables(dim: int, vector_type: str) -> str:
    return (
        f"""
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE files (
    id bigserial PRIMARY KEY,
    path bytea NOT NULL,
    display text NOT NULL,
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    sha256 text NOT NULL,
    kind text NOT NULL,
    encoding text,
    title text,
    error text,
    chunk_count integer NOT NULL DEFAULT 0,
    gen_added integer NOT NULL,
    gen_removed integer,
    parts text
);
CREATE INDEX files_path ON files (path);
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX files_live ON files (gen_removed) WHERE gen_removed IS NOT NULL;
CREATE TABLE chunks (
    id bigserial PRIMARY KEY,
    file_id bigint NOT NULL REFERENCES files (id),
    ordinal integer NOT NULL,
    text text NOT NULL,
    char_start integer NOT NULL,
    char_end integer NOT NULL,
    line_start integer NOT NULL,
    line_end integer NOT NULL,
    page_start integer,
    page_end integer,
    tokens integer NOT NULL,
    context text NOT NULL DEFAULT '',
    embedding {vector_type}({dim}) NOT NULL,
    lex tsvector NOT NULL,
    lex_len integer NOT NULL,
    gen_added integer NOT NULL,
    gen_removed integer
);
CREATE INDEX chunks_file ON chunks (file_id, id);  -- a file's chunk id range from the index alone
CREATE INDEX chunks_added ON chunks (gen_added);
CREATE INDEX chunks_removed ON chunks (gen_removed) WHERE gen_removed IS NOT NULL;
CREATE TABLE lexemes (term text PRIMARY KEY, df integer NOT NULL);
"""
        + POSTINGS_TABLE_SQL
    )


# BM25's postings: each term of each visible chunk, with its count there and the chunk's length
# (FTS5 reads the same from its own posting lists). Rows are written by the update that makes their
# chunk visible, in its generation flip, and deleted when their chunk is purged: a reader excludes
# the chunks removed since (few) and any above the generation's ceiling (PgReader).
POSTINGS_TABLE_SQL = """
CREATE TABLE postings (term text NOT NULL, chunk bigint NOT NULL, tf integer NOT NULL, len integer NOT NULL);
"""
# A query's terms are read from the index alone (index-only scans): built after a first build's rows.
POSTINGS_INDEX_SQL = "CREATE INDEX IF NOT EXISTS postings_term ON postings (term, chunk) INCLUDE (tf, len)"


def post_chunks(where: str) -> str:
    """The SQL that writes the postings of the chunks *where* selects (``c``)."""
    return (
        "INSERT INTO postings (term, chunk, tf, len) SELECT u.lexeme, c.id, array_length(u.positions, 1), c.lex_len "
        f"FROM chunks c, unnest(c.lex) AS u WHERE {where}"
    )


def unpost_chunks(where: str) -> str:
    """The SQL that deletes the postings of the chunks *where* selects (``c``): one index probe a
    posting (the chunk's terms are in its tsvector), no index on the chunk needed."""
    return (
        "DELETE FROM postings p USING (SELECT c.id, u.lexeme FROM chunks c, unnest(c.lex) AS u "
        f"WHERE {where}) d WHERE p.term = d.lexeme AND p.chunk = d.id"
    )


def create_build(dim: int, vector_type: str) -> str:
    """The SQL of a new build's tables at SCHEMA_VERSION (run with the build's schema first on the
    search path). Its vector index is built once its first rows are in (faster than row by row)."""
    return _tables(dim, vector_type)


# MIGRATIONS[n]: the statements that take a build from version n - 1 to n (1 is create_build).
MIGRATIONS: dict[int, list[str]] = {
    # 2: postings for BM25, written for the chunks of the committed generation (a later one's are
    # written by its own flip); schema 1's GIN index on the tsvectors is no longer read.
    2: [
        POSTINGS_TABLE_SQL,
        post_chunks("c.gen_added <= (SELECT value::integer FROM meta WHERE key = 'generation')"),
        POSTINGS_INDEX_SQL,
        "INSERT INTO meta SELECT k, coalesce(max(id), 0)::text FROM chunks, "
        "unnest(ARRAY['chunk_ceiling', 'posted']) AS k "
        "WHERE gen_added <= (SELECT value::integer FROM meta WHERE key = 'generation') GROUP BY k "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        "DROP INDEX IF EXISTS chunks_lex",
        "ANALYZE postings",
    ],
    # 3: no statement: schema 2 marked a removed file's chunks and the file together, so its rows
    # read the same; the version keeps readers of schema 2 (which look at the chunks' marks only)
    # away from a build whose chunks are no longer marked.
    3: [],
}


def check_version(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise IndexVersionError(
            f"the index at {where} was written by a newer semsearch (schema {version}; this one reads "
            f"up to {SCHEMA_VERSION}): upgrade semsearch"
        )


def encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
