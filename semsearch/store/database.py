"""The metadata database: schema, connections, generation visibility and the state table."""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from semsearch.errors import IndexCorruptError, SemsearchError
from semsearch.lexicon import CJK_RANGES, words

# BM25 over each chunk's text and its context line (title or heading path, file name for code):
# a title's words count for every chunk of its document, as in BM25F (better on SciFact, in both
# lexical and hybrid mode: benchmarks/RESULTS.md).
# The text is read through semsearch_words (lexicon.words: runs of CJK characters as their pairs),
# registered on every connection; chunks_words is the content FTS5 checks its index against.
FTS_SCHEMA = """
CREATE VIEW IF NOT EXISTS chunks_words AS
    SELECT id, semsearch_words(text) AS text, semsearch_words(context) AS context FROM chunks;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, context, content='chunks_words', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
)"""
# The rows chunks_fts reads (insert and delete alike): rowid, text, context.
FTS_ROWS = "SELECT id, semsearch_words(text), semsearch_words(context) FROM chunks"
WORDS = "cjk-pairs"  # state "words": chunks_fts holds its rows as FTS_ROWS reads them
# Text with a character lexicon.CJK reads in pairs (SQLite's GLOB compares code points).
CJK_GLOB = f"*[{CJK_RANGES}]*"

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


# A chunk's vector in the chunks table: float16, little-endian (format 6). The vector files are
# written from these values, so the database and the vector files hold the same numbers, and a
# rebuild, a repair or a reused vector gives exactly what a first embedding stored. Half the size
# of float32 (benchmarks/RESULTS.md, "Scale": SciFact's index 2.92x -> 1.87x the text plus one
# float32 copy, nDCG@10 the same to 0.0002); a float16 copy's cosine with its float32 original
# is above 1 - 1e-6 (1 - 2.4e-7 at worst on 10,000 random unit vectors of 384 numbers).
# An index of format 5 or older keeps float32 here until its next update converts it in place
# (IndexWriter): readers tell the two apart by a blob's length.
VECTOR_DTYPE = "<f2"
# The state that says every vector blob is VECTOR_DTYPE (no vector_ prefix: those keys are the
# vector engine's, rewritten by every generation flip).
VECTOR_BLOB_KEY, VECTOR_BLOB = "chunk_vectors", "float16"
# A new database's page size. A chunk row (text, context line, float16 vector) is 1-1.5 KB: two
# or three to a 4 KB page, which leaves a fifth to a quarter of it empty. The chunks table of a
# million synthetic chunks took 1,368 MB in 4 KB pages, 1,171 MB in 8 KB and 1,170 MB in 16 KB;
# SciFact's 32.6 / 29.4 / 28.1 MB (benchmarks/RESULTS.md, "Scale"). 8 KB: nearly all of the
# gain, and half the least size of 16 KB pages for the tables of a small index.
PAGE_SIZE = 8192


def encode_vectors(vectors: Any) -> Any:
    """*vectors* (float32 rows) as the chunks table stores them: a float16 array, a row's
    ``tobytes()`` its blob."""
    import numpy as np

    return np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)


def decode_vectors(blobs: Sequence[bytes], dim: int, *, unit: bool = True) -> Any:
    """Stored vector blobs as a float32 array of shape (len(blobs), dim), each of unit length
    again (float16 rounding leaves a norm within 2e-4 of 1: renormalized, a dot product is the
    cosine the vector files' search gives; *unit* False: the stored numbers as they are, which
    store again as the same float16): float16 ones and the float32 ones of an index not yet
    converted, by their length. A blob of neither length (damage) is a row of zeros, unlike
    every vector."""
    import numpy as np

    if all(len(b) == 2 * dim for b in blobs):
        out = np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(blobs), dim).astype(np.float32)
    else:
        out = np.zeros((len(blobs), dim), dtype=np.float32)
        for i, blob in enumerate(blobs):
            if len(blob) == 2 * dim:
                out[i] = np.frombuffer(blob, dtype=VECTOR_DTYPE)
            elif len(blob) == 4 * dim:
                out[i] = np.frombuffer(blob, dtype="<f4")
    if not unit:
        return out
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def half_vector(blob: bytes) -> bytes:
    """A float32 vector blob as float16 (the in-place conversion of a format 5 index's rows)."""
    import numpy as np

    return np.frombuffer(blob, dtype="<f4").astype(VECTOR_DTYPE).tobytes()


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def connect(db_path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to an index database. Read-only, it works in a folder it cannot write (a
    read-only folder or mount) too; a folder it cannot write, or a full disk, is said as such,
    never as damage."""
    if readonly:
        if not db_path.is_file():
            raise IndexCorruptError(f"{db_path} is missing", path=db_path, remedy="rebuild")
        uri = f"file:{urllib.parse.quote(os.fspath(db_path))}?mode=ro"
        try:
            return _open(db_path, uri, readonly=True)
        except sqlite3.OperationalError as exc:
            if not _environment(exc) or _wal_holds_data(db_path):
                raise open_error(db_path, exc, writing=False) from None
        # SQLite could not make the shared-memory file a WAL database wants beside it (the folder is
        # read-only, or the disk full). With no write-ahead log to read, the database file is the
        # whole index, and no writer can be changing it there: read it as immutable (no -shm, no locks).
        try:
            return _open(db_path, uri + "&immutable=1", readonly=True)
        except sqlite3.OperationalError as exc:
            raise open_error(db_path, exc, writing=False) from None
    try:
        return _open(db_path, os.fspath(db_path), readonly=False)
    except sqlite3.OperationalError as exc:
        raise open_error(db_path, exc, writing=True) from None


def _open(db_path: Path, target: str, *, readonly: bool) -> sqlite3.Connection:
    """Open and probe *target*: OperationalError for what the environment refuses, IndexCorruptError for damage."""
    conn = sqlite3.connect(target, uri=readonly, isolation_level=None, check_same_thread=False)
    conn.create_function("semsearch_words", 1, words, deterministic=True)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new database's; an existing one keeps its own
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if _environment(exc):
            raise
        raise IndexCorruptError(f"{db_path} is damaged ({exc})", path=db_path, remedy="rebuild") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise IndexCorruptError(f"{db_path} is damaged ({exc})", path=db_path, remedy="rebuild") from None
    return conn


# SQLite's primary result codes for what the file system refused (not what the file holds).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 3, 8, 10, 13, 14


def _environment(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error is the file system's refusal (permissions, read-only, full, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return any(w in str(exc) for w in ("unable to open", "readonly", "disk is full", "disk I/O"))
    return code & 0xFF in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN)


def _wal_holds_data(db_path: Path) -> bool:
    try:
        return os.path.getsize(f"{db_path}-wal") > 0
    except OSError:
        return False


def disk_full(folder: Path) -> bool:
    """Whether the file system that holds *folder* has no room left for this user."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024  # less than SQLite needs for a shared-memory file


def open_error(db_path: Path, exc: sqlite3.Error, *, writing: bool) -> SemsearchError:
    """What stopped SQLite from opening *db_path*, in one line: not damage (the index is intact)."""
    if not _environment(exc):
        return IndexCorruptError(f"{db_path} is damaged ({exc})", path=db_path, remedy="rebuild")
    folder = db_path.parent
    if disk_full(folder) or getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL:
        why = "the disk is full"
    elif not os.access(db_path, os.R_OK):
        why = "permission denied"
    elif not os.access(folder, os.W_OK) or (writing and not os.access(db_path, os.W_OK)):
        why = "its folder is read-only" + (" and its write-ahead log holds data" if not writing else "")
    else:
        why = str(exc)
    verb = "write" if writing else "read"
    return SemsearchError(f"cannot {verb} {db_path}: {why} (the index is not damaged)", path=db_path)


def visible(gen: int, alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return f"{p}gen_added <= {int(gen)} AND ({p}gen_removed IS NULL OR {p}gen_removed > {int(gen)})"


def under_keys(keys: Sequence[bytes] | None, mark: str) -> tuple[str, list[bytes]]:
    """SQL on ``path`` for the files at or under the path *keys* (a whole-project key, or None:
    every file), with its parameters; *mark* is the driver's placeholder. Range conditions, so
    the path index answers a one-file update without reading every file's row."""
    if keys is None or b"." in keys:
        return "1 = 1", []
    terms, params = [], []
    for key in keys:
        # Below key/: from "key/" up to "key0" ("0" follows "/"): the path index reads a range.
        below = key if key.endswith(b"/") else key + b"/"
        terms.append(f"path = {mark} OR (path >= {mark} AND path < {mark})")
        params += [key, below, below[:-1] + b"0"]
    return "(" + " OR ".join(terms) + ")" if terms else "1 = 0", params


def reusable_vectors(
    wanted: Sequence[tuple[str, str]],
    sources: Iterable[int],
    rows_of: Callable[[int], Iterable[tuple[str, str, bytes | None]]],
) -> list[bytes | None]:
    """For each (text, context) of *wanted*, a stored vector made from the same embedding input,
    or None: looked for in the files *sources* in order (``rows_of(file id)`` gives a file's
    chunks as (text, context, float32 bytes or None)), until every one is found. Both engines'
    writers answer ``vectors_to_reuse`` with it."""
    keys = set(wanted)
    found: dict[tuple[str, str], bytes] = {}
    for file_id in dict.fromkeys(sources):
        for text, context, vector in rows_of(file_id):
            if vector is not None and (text, context) in keys:
                found.setdefault((text, context), vector)
        if len(found) == len(keys):
            break
    return [found.get(w) for w in wanted]


def decode_signatures(value: str | None) -> dict[str, str] | None:
    """The ``readers`` state value (kind -> reader signature); None when absent or not a JSON object."""
    try:
        data = json.loads(value) if value else None
    except ValueError:
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


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
