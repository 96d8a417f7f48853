"""The metadata database: schema, connections, generation visibility and the state table."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from semsearch.errors import IndexCorruptError

# BM25 over each chunk's text and its context line (title or heading path, file name for code):
# a title's words count for every chunk of its document, as in BM25F (better on SciFact, in both
# lexical and hybrid mode: benchmarks/RESULTS.md).
FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, context, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
)"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL,
    display TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    encoding TEXT,
    title TEXT,
    error TEXT,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    gen_added INTEGER NOT NULL,
    gen_removed INTEGER,
    parts TEXT
);
CREATE INDEX IF NOT EXISTS files_path ON files(path);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id),
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    page_start INTEGER,
    page_end INTEGER,
    tokens INTEGER NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    vector BLOB NOT NULL,
    gen_added INTEGER NOT NULL,
    gen_removed INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id);
CREATE INDEX IF NOT EXISTS chunks_added ON chunks(gen_added);
CREATE INDEX IF NOT EXISTS chunks_removed ON chunks(gen_removed);
CREATE TABLE IF NOT EXISTS vector_tombstones (id INTEGER PRIMARY KEY);
"""
    + FTS_SCHEMA
)


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def connect(db_path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not db_path.is_file():
            raise IndexCorruptError(f"{db_path} is missing", path=db_path, remedy="rebuild")
        uri = f"file:{db_path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise IndexCorruptError(f"{db_path} is damaged ({exc})", path=db_path, remedy="rebuild") from None
    return conn


def visible(gen: int, alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return f"{p}gen_added <= {int(gen)} AND ({p}gen_removed IS NULL OR {p}gen_removed > {int(gen)})"


def decode_walk_settings(value: str | None) -> dict[str, Any]:
    """The ``walk`` state value as a dict ({} when absent or not a JSON object)."""
    try:
        settings = json.loads(value) if value else {}
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def get_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM state").fetchall())


def vector_state(state: dict[str, str]) -> dict[str, str]:
    """The vector engine's keys of the state table (``vector_file``, ``vector_count``, its own)."""
    return {k: v for k, v in state.items() if k.startswith("vector_")}
