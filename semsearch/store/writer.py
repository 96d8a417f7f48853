"""Writing an index: the next generation's files and chunks (the commit point that makes it current
is :mod:`semsearch.store.segment_writer`'s)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import IndexCorruptError
from semsearch.store.database import (
    CJK_GLOB,
    FTS_ROWS,
    FTS_SCHEMA,
    PAGE_SIZE,
    SCHEMA,
    VECTOR_BLOB,
    VECTOR_BLOB_KEY,
    WORDS,
    connect,
    decode_signatures,
    decode_vectors,
    decode_walk_settings,
    encode_vectors,
    get_state,
    half_vector,
    has_column,
    open_error,
    reusable_vectors,
    under_keys,
    visible,
)
from semsearch.store.format import IndexManifest
from semsearch.store.segment_writer import FinalizeReport, SegmentWriter

if TYPE_CHECKING:
    import numpy as np

    from semsearch.chunk import Chunk

__all__ = ["FileRow", "FinalizeReport", "IndexWriter"]  # FinalizeReport: as imported before it moved


@dataclass(frozen=True)
class FileRow:
    id: int
    size: int
    mtime_ns: int
    sha256: str
    gen_added: int
    error: str | None
    kind: str = ""  # the reader kind it was read as


class IndexWriter(SegmentWriter):
    """Updates one index database towards its next generation. Hold an IndexLock while using it."""

    def __init__(self, index_dir: Path, manifest: IndexManifest, *, new_build: bool) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        self.new_build = new_build
        self.db_path = index_dir / manifest.database
        self.conn = connect(self.db_path, readonly=False)
        with contextlib.suppress(OSError):
            os.chmod(self.db_path, 0o600)
        try:
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:  # damage, or a full disk / read-only folder said as such
            raise open_error(self.db_path, exc, writing=True) from None
        state = get_state(self.conn)
        if not new_build and "generation" not in state:
            # A current database always has a committed generation: this one is empty or foreign.
            self.conn.close()
            raise IndexCorruptError(f"{self.db_path} holds no index", path=self.db_path, remedy="rebuild")
        self._sound: set[str] = set()  # vector files checked whole by this writer and found sound
        self.committed = int(state.get("generation", "0"))
        self.working = self.committed + 1
        self._in_tx = False
        self.upgraded: list[str] = []  # what opening it changed in place: one line each, for the user
        self._upgrade_fts()
        self._upgrade_vectors()
        if not has_column(self.conn, "files", "parts"):
            # Added without a format change: NULL (no part lines) is what older versions left.
            self.conn.execute("ALTER TABLE files ADD COLUMN parts TEXT")

    def _upgrade_fts(self) -> None:
        """Bring chunks_fts to this version's words, in one transaction: a format-2 one (text only)
        gets the context column; one that holds CJK text read as whole runs (before format 5) is
        read again as pairs (lexicon.words). Done once: the state says so."""
        row = self.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
        if row is not None and "context" in row[0] and get_state(self.conn).get("words") == WORDS:
            return
        self._begin()
        if row is None or "context" not in row[0] or ("chunks_words" not in row[0] and self._holds_cjk()):
            self.conn.execute("DROP TABLE IF EXISTS chunks_fts")
            for statement in FTS_SCHEMA.split(";"):  # in this transaction (executescript would commit it)
                self.conn.execute(statement)
            self.conn.execute(
                f"INSERT INTO chunks_fts(rowid, text, context) {FTS_ROWS} WHERE {visible(self.committed)}"
            )
        self.conn.execute("INSERT OR REPLACE INTO state VALUES ('words', ?)", (WORDS,))
        self.commit()

    def _upgrade_vectors(self) -> None:
        """Convert the float32 vectors of an index from before format 6 to float16, in one
        transaction, then give the freed pages back to the file system (:meth:`_compact`).
        Nothing is embedded again; the vector files keep their float32 copies until rewritten.
        Done once: the state says so (a new database's first writer says it at once)."""
        if get_state(self.conn).get(VECTOR_BLOB_KEY) == VECTOR_BLOB:
            return
        width = 4 * self.manifest.model.dim
        self._begin()
        self.conn.create_function("semsearch_half", 1, half_vector, deterministic=True)
        converted = self.conn.execute(
            "UPDATE chunks SET vector = semsearch_half(vector) WHERE length(vector) = ?", (width,)
        ).rowcount
        self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (VECTOR_BLOB_KEY, VECTOR_BLOB))
        self.commit()
        if converted:
            self._compact()
            self.upgraded.append(
                f"index upgraded in place to format 6: {converted:,} stored vectors now float16, nothing embedded "
                "again (semsearch versions before it cannot read this index)"
            )

    def _compact(self) -> None:
        """VACUUM, in pages of PAGE_SIZE when this is the only connection to the database (the page
        size changes only outside write-ahead logging, which SQLite leaves only for a database no
        one else has open), else in the pages it has. Busy or a full disk: the space waits."""
        with contextlib.suppress(sqlite3.OperationalError):
            try:
                alone = self.conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
            except sqlite3.OperationalError:
                alone = False
            try:
                if alone:
                    self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                self.conn.execute("VACUUM")
            finally:
                if alone:
                    self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _holds_cjk(self) -> bool:
        found = self.conn.execute(
            "SELECT 1 FROM chunks WHERE text GLOB ? OR context GLOB ? LIMIT 1", (CJK_GLOB, CJK_GLOB)
        ).fetchone()
        return found is not None

    # -- transactions ------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        """Make the work so far durable (not yet visible to readers)."""
        if self._in_tx:
            self.conn.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._in_tx:
                self.conn.execute("ROLLBACK")
            self.conn.close()

    # -- files -------------------------------------------------------------------------------

    def lookup_file(self, key: bytes) -> FileRow | None:
        row = self.conn.execute(
            f"SELECT id, size, mtime_ns, sha256, gen_added, error, kind FROM files WHERE path = ? AND {visible(self.working)}",
            (key,),
        ).fetchone()
        return FileRow(*row) if row else None

    def touch_file(self, file_id: int, size: int, mtime_ns: int) -> None:
        """Same content, new size/mtime (e.g. touched): record them so the next run skips the hash."""
        self._begin()
        self.conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, file_id))

    def remove_file(self, file_id: int) -> None:
        """Drop a file from the next generation (at once if it was never visible)."""
        self._begin()
        row = self.conn.execute("SELECT gen_added FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            return
        if row[0] >= self.working:  # never visible, so never in chunks_fts either
            self.conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        else:
            self.conn.execute("UPDATE files SET gen_removed = ? WHERE id = ?", (self.working, file_id))
            self.conn.execute(
                "UPDATE chunks SET gen_removed = ? WHERE file_id = ? AND gen_removed IS NULL", (self.working, file_id)
            )

    def add_file(
        self,
        key: bytes,
        display: str,
        *,
        size: int,
        mtime_ns: int,
        sha256: str,
        kind: str,
        encoding: str | None,
        title: str,
        error: str | None,
        chunks: Sequence[Chunk],
        vectors: np.ndarray | None,
        part_lines: Sequence[int] | None = None,
    ) -> int:
        """Add a file and all its chunks with their vectors to the next generation.

        *part_lines*: the line where each numbered part begins, for a document whose chunks may
        span parts (a hit there is located by the part of its snippet's line)."""
        self._begin()
        cur = self.conn.execute(
            "INSERT INTO files (path, display, size, mtime_ns, sha256, kind, encoding, title, error, chunk_count, "
            "gen_added, parts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                display,
                size,
                mtime_ns,
                sha256,
                kind,
                encoding,
                title,
                error,
                len(chunks),
                self.working,
                json.dumps(list(part_lines)) if part_lines else None,
            ),
        )
        file_id = int(cur.lastrowid or 0)
        if chunks:
            assert vectors is not None and len(vectors) == len(chunks)
            vecs = encode_vectors(vectors)  # every row at once: float16, as the table keeps them
            for chunk, vec in zip(chunks, vecs, strict=True):
                cur = self.conn.execute(
                    "INSERT INTO chunks (file_id, ordinal, text, char_start, char_end, line_start, line_end, "
                    "page_start, page_end, tokens, context, vector, gen_added) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        file_id,
                        chunk.ordinal,
                        chunk.text,
                        chunk.char_start,
                        chunk.char_end,
                        chunk.line_start,
                        chunk.line_end,
                        chunk.page_start,
                        chunk.page_end,
                        chunk.tokens,
                        chunk.context,
                        vec.tobytes(),
                        self.working,
                    ),
                )
        return file_id

    def vectors_to_reuse(self, sha256: str, chunks: Sequence[Chunk], previous: int | None = None) -> list[bytes | None]:
        """For each of *chunks*, a stored vector (float32 bytes) made from the same embedding input
        (chunk text and context line), or None where it must be embedded.

        Looked for in the file's indexed version *previous* (an edit leaves most chunks as they
        were) and in indexed copies of the same content (a renamed, moved or copied file). The
        committed generation counts too, so a file removed by this run (the old name of a renamed
        file) still lends its vectors before they are purged.
        """
        dim = self.manifest.model.dim
        stored = (2 * dim, 4 * dim)  # float16, or float32 in an index not yet converted
        sources = [previous] if previous is not None else []
        sources += [
            file_id
            for (file_id,) in self.conn.execute(
                f"SELECT id FROM files WHERE sha256 = ? AND error IS NULL "
                f"AND ({visible(self.committed)} OR {visible(self.working)}) ORDER BY id DESC LIMIT 4",
                (sha256,),
            )
        ]

        def rows_of(file_id: int) -> Iterator[tuple[str, str, bytes | None]]:
            for text, context, vector in self.conn.execute(
                "SELECT text, context, vector FROM chunks WHERE file_id = ?", (file_id,)
            ):
                yield text, context, (vector if len(vector) in stored else None)

        found = reusable_vectors([(c.text, c.context) for c in chunks], sources, rows_of)
        return [None if v is None else decode_vectors([v], dim, unit=False)[0].tobytes() for v in found]

    def live_file_stats(self, under: Sequence[bytes] | None = None) -> dict[bytes, tuple[int, int, str]]:
        """(size, mtime_ns, kind) of every file of the next generation (or those at or under the
        path keys *under*) by path key: what an update compares each file on disk with (one
        query, and no object per file)."""
        where, params = under_keys(under, "?")
        query = f"SELECT path, size, mtime_ns, kind FROM files WHERE {visible(self.working)} AND {where}"
        return {row[0]: row[1:] for row in self.conn.execute(query, params)}

    def live_files(self, under: Sequence[bytes] | None = None) -> Iterator[tuple[int, bytes]]:
        """(id, path key) of every file in the next generation (or those at or under *under*)."""
        where, params = under_keys(under, "?")
        yield from self.conn.execute(
            f"SELECT id, path FROM files WHERE {visible(self.working)} AND {where}", params
        ).fetchall()

    def set_roots(self, roots: Sequence[str]) -> None:
        self._begin()
        self.conn.execute("INSERT OR REPLACE INTO state VALUES ('roots', ?)", (json.dumps(list(roots)),))

    def roots(self) -> list[str]:
        row = self.conn.execute("SELECT value FROM state WHERE key = 'roots'").fetchone()
        return json.loads(row[0]) if row else []

    def set_walk_settings(self, settings: dict[str, Any]) -> None:
        """What the walk honoured (hidden files, size limit, ...): the next run's defaults."""
        self._begin()
        self.conn.execute("INSERT OR REPLACE INTO state VALUES ('walk', ?)", (json.dumps(settings),))

    def walk_settings(self) -> dict[str, Any]:
        """The walk settings of the last run ({} for a new index, or an index from before they were kept)."""
        row = self.conn.execute("SELECT value FROM state WHERE key = 'walk'").fetchone()
        return decode_walk_settings(row[0] if row else None)

    def set_reader_signatures(self, signatures: dict[str, str]) -> None:
        """The readers that read the indexed files (kind -> version and settings)."""
        self._begin()
        self.conn.execute("INSERT OR REPLACE INTO state VALUES ('readers', ?)", (json.dumps(signatures),))

    def reader_signatures(self) -> dict[str, str] | None:
        """The readers of the last run (None: an index from before they were recorded)."""
        row = self.conn.execute("SELECT value FROM state WHERE key = 'readers'").fetchone()
        return decode_signatures(row[0] if row else None)

    def live_chunk_count(self) -> int:
        """Chunks the committed generation holds (its vector count: counting the rows would read
        the whole table, vectors and all; `status --verify` checks that the two agree)."""
        row = self.conn.execute("SELECT value FROM state WHERE key = 'vector_count'").fetchone()
        if row is not None and self.committed:
            return int(row[0])
        return int(self.conn.execute(f"SELECT count(*) FROM chunks WHERE {visible(self.committed)}").fetchone()[0])
