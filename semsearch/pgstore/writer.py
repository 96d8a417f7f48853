"""Updating a PostgreSQL index: the same calls as the local :class:`semsearch.store.IndexWriter`.

Rows of the next generation are committed as they come (durable progress, invisible to readers);
:meth:`PgWriter.finalize` makes them visible in one transaction: the generation flip, the removed
rows deleted, the term counts BM25 reads updated. A first build's vector index is built there, in
one statement over the loaded rows (faster than row by row); later updates add to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.lexicon import tsvectors
from semsearch.pgstore import graph
from semsearch.pgstore.schema import POSTINGS_INDEX_SQL, post_chunks, unpost_chunks
from semsearch.store.database import decode_signatures, decode_walk_settings, reusable_vectors, under_keys, visible
from semsearch.store.writer import FileRow, FinalizeReport

if TYPE_CHECKING:
    import numpy as np
    import psycopg

    from semsearch.chunk import Chunk
    from semsearch.pgstore.connection import Target
    from semsearch.store import IndexManifest


FLUSH_FILES = 256  # files, or
FLUSH_CHUNKS = 4096  # chunks, sent together


def clean(text: str | None) -> str | None:
    """Text PostgreSQL can store: no NUL characters, no lone surrogates."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def removed_at(generation: str) -> str:
    """SQL: the chunk ``c`` was removed by a generation *generation* (``"= 5"``, ``"<= %s"``): its
    file's row says so (schema 3; schema 2 marked the chunks' rows too). A file removed by the
    generation that added it is deleted at once (remove_file), so these chunks are older."""
    return f"c.file_id IN (SELECT f.id FROM files f WHERE f.gen_removed IS NOT NULL AND f.gen_removed {generation})"


class PgWriter:
    """Updates one build (schema) of a PostgreSQL index towards its next generation. The caller
    holds the project's advisory lock on *conn*'s session."""

    def __init__(
        self, conn: psycopg.Connection[Any], target: Target, schema: str, manifest: IndexManifest, index_dir: Path,
        *, new_build: bool,
    ) -> None:  # fmt: skip
        self.conn = conn
        self.target = target
        self.schema = schema
        self.manifest = manifest
        self.index_dir = index_dir
        self.new_build = new_build
        self.committed = int(self._meta("generation") or 0)
        self.working = self.committed + 1
        self.vector_type = str(manifest.vector_params.get("type", "halfvec"))
        self._ids: list[int] = []  # file ids taken from the sequence, not used yet
        self._files: list[tuple[Any, ...]] = []  # rows added since the last flush
        self._chunks: list[tuple[int, Sequence[Chunk], np.ndarray]] = []
        self._buffered = 0  # chunks in self._chunks

    # -- meta and transactions ---------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value)
        )

    def commit(self) -> None:
        """Make the work so far durable (not yet visible to readers)."""
        self.flush()
        self.conn.commit()

    def flush(self) -> None:
        """Send the files and chunks added since the last flush: one pipeline for many files (a
        round trip a file made loading slow: benchmarks/RESULTS.md). Every read flushes first."""
        if not self._files:
            return
        import numpy as np

        from semsearch.pgstore.connection import as_db_vector

        files, chunks = self._files, self._chunks
        self._files, self._chunks, self._buffered = [], [], 0
        texts = [(clean(c.text) or "", clean(c.context) or "") for _, part, _ in chunks for c in part]
        lex = iter(tsvectors(texts))
        text_of = iter(texts)
        rows = []
        for file_id, part, vectors in chunks:
            vecs = np.ascontiguousarray(vectors, dtype=np.float32)
            for c, v in zip(part, vecs, strict=True):
                t, ctx = next(text_of)
                tsv, n = next(lex)
                rows.append((file_id, c.ordinal, t, c.char_start, c.char_end, c.line_start, c.line_end, c.page_start,
                             c.page_end, c.tokens, ctx, as_db_vector(v, self.vector_type), tsv, n, self.working))  # fmt: skip
        with self.conn.pipeline(), self.conn.cursor(binary=True) as cur:  # vectors in binary (pgvector's adapter)
            cur.executemany(
                "INSERT INTO files (id, path, display, size, mtime_ns, sha256, kind, encoding, title, error, "
                "chunk_count, gen_added, parts) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                files,
            )
            if rows:
                cur.executemany(
                    "INSERT INTO chunks (file_id, ordinal, text, char_start, char_end, line_start, line_end, "
                    "page_start, page_end, tokens, context, embedding, lex, lex_len, gen_added) VALUES "
                    "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::tsvector,%s,%s)",
                    rows,
                )

    def _file_id(self) -> int:
        if not self._ids:
            self._ids = [
                int(r[0])
                for r in self.conn.execute(
                    "SELECT nextval(pg_get_serial_sequence('files', 'id')) FROM generate_series(1, %s)", (FLUSH_FILES,)
                )
            ]
        return self._ids.pop(0)

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.conn.rollback()
        with contextlib.suppress(Exception):
            self.conn.close()

    # -- files -------------------------------------------------------------------------------

    def lookup_file(self, key: bytes) -> FileRow | None:
        self.flush()
        row = self.conn.execute(
            "SELECT id, size, mtime_ns, sha256, gen_added, error, kind FROM files "
            f"WHERE path = %s AND {visible(self.working)}",
            (key,),
        ).fetchone()
        return FileRow(*row) if row else None

    def touch_file(self, file_id: int, size: int, mtime_ns: int) -> None:
        self.flush()
        self.conn.execute("UPDATE files SET size = %s, mtime_ns = %s WHERE id = %s", (size, mtime_ns, file_id))

    def remove_file(self, file_id: int) -> None:
        """Drop a file from the next generation (at once if it was never visible)."""
        self.flush()
        row = self.conn.execute("SELECT gen_added FROM files WHERE id = %s", (file_id,)).fetchone()
        if row is None:
            return
        if row[0] >= self.working:
            self.conn.execute(unpost_chunks(f"c.file_id = {int(file_id)}"))  # posted by a first build's finalize
            self.conn.execute("DELETE FROM chunks WHERE file_id = %s", (file_id,))
            self.conn.execute("DELETE FROM files WHERE id = %s", (file_id,))
        else:
            # The file's row says it (schema 3): its chunks' rows are left as they are, as a new
            # row version of a chunk is a new entry in the HNSW graph (109 ms for 10 at 1M).
            self.conn.execute("UPDATE files SET gen_removed = %s WHERE id = %s", (self.working, file_id))

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
        """Add a file and its chunks with their vectors to the next generation (sent with the
        next flush: at a read, a commit, or every FLUSH_FILES files / FLUSH_CHUNKS chunks)."""
        file_id = self._file_id()
        self._files.append(
            (file_id, key, clean(display), size, mtime_ns, sha256, kind, clean(encoding), clean(title), clean(error),
             len(chunks), self.working, json.dumps(list(part_lines)) if part_lines else None)
        )  # fmt: skip
        if chunks:
            assert vectors is not None and len(vectors) == len(chunks)
            self._chunks.append((file_id, chunks, vectors))
            self._buffered += len(chunks)
        if len(self._files) >= FLUSH_FILES or self._buffered >= FLUSH_CHUNKS:
            self.flush()
        return file_id

    def vectors_to_reuse(self, sha256: str, chunks: Sequence[Chunk], previous: int | None = None) -> list[bytes | None]:
        """As the local writer's: stored vectors (float32 bytes) for chunks embedded the same way."""
        import numpy as np

        self.flush()
        sources = [previous] if previous is not None else []
        sources += [
            int(r[0])
            for r in self.conn.execute(
                "SELECT id FROM files WHERE sha256 = %s AND error IS NULL "
                f"AND (({visible(self.committed)}) OR ({visible(self.working)})) ORDER BY id DESC LIMIT 4",
                (sha256,),
            )
        ]

        def rows_of(file_id: int) -> Iterator[tuple[str, str, bytes | None]]:
            with self.conn.cursor(binary=True) as cur:
                for text, context, vector in cur.execute(
                    "SELECT text, context, embedding FROM chunks WHERE file_id = %s", (file_id,)
                ):
                    yield text, context, np.asarray(vector.to_numpy(), dtype=np.float32).tobytes()

        wanted = [(clean(c.text) or "", clean(c.context) or "") for c in chunks]
        return reusable_vectors(wanted, sources, rows_of)

    def live_file_stats(self, under: Sequence[bytes] | None = None) -> dict[bytes, tuple[int, int, str]]:
        self.flush()
        where, params = under_keys(under, "%s")
        query = f"SELECT path, size, mtime_ns, kind FROM files WHERE {visible(self.working)} AND {where}"
        return {bytes(r[0]): (int(r[1]), int(r[2]), str(r[3])) for r in self.conn.execute(query, params)}

    def live_files(self, under: Sequence[bytes] | None = None) -> Iterator[tuple[int, bytes]]:
        self.flush()
        where, params = under_keys(under, "%s")
        rows = self.conn.execute(f"SELECT id, path FROM files WHERE {visible(self.working)} AND {where}", params)
        yield from ((int(r[0]), bytes(r[1])) for r in rows.fetchall())

    # -- settings kept with the index ----------------------------------------------------------

    def set_roots(self, roots: Sequence[str]) -> None:
        self._set_meta("roots", json.dumps(list(roots)))

    def roots(self) -> list[str]:
        value = self._meta("roots")
        return list(json.loads(value)) if value else []

    def set_walk_settings(self, settings: dict[str, Any]) -> None:
        self._set_meta("walk", json.dumps(settings))

    def walk_settings(self) -> dict[str, Any]:
        return decode_walk_settings(self._meta("walk"))

    def set_reader_signatures(self, signatures: dict[str, str]) -> None:
        self._set_meta("readers", json.dumps(signatures))

    def reader_signatures(self) -> dict[str, str] | None:
        return decode_signatures(self._meta("readers"))

    def previous_state(self) -> tuple[list[str], dict[str, Any]]:
        """The roots and walk settings of the project's current build (a rebuild keeps them)."""
        from semsearch.pgstore.schema import REGISTRY

        row = self.conn.execute(
            f"SELECT live_schema FROM {REGISTRY}.projects WHERE name = %s", (self.target.project,)
        ).fetchone()
        if row is None or not row[0] or row[0] == self.schema:
            return [], {}
        meta = dict(self.conn.execute(f'SELECT key, value FROM "{row[0]}".meta').fetchall())
        return list(json.loads(meta.get("roots", "[]"))), decode_walk_settings(meta.get("walk"))

    def live_chunk_count(self) -> int:
        return int(self._meta("vector_count") or 0)

    def pending_changes(self) -> tuple[int, int]:
        self.flush()
        row = self.conn.execute(
            "SELECT (SELECT count(*) FROM chunks WHERE gen_added = %s AND gen_removed IS NULL), "
            f"(SELECT count(*) FROM chunks c WHERE {removed_at('= %s')})",
            (self.working, self.working),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    # -- the commit point --------------------------------------------------------------------

    def finalize(
        self,
        progress: Callable[[int, int], None] | None = None,
        *,
        force: bool = False,
        before_switch: Callable[[], None] | None = None,
        merge: bool = True,
    ) -> FinalizeReport | None:
        """Make the next generation current, in one transaction. None when nothing changed."""
        started = time.perf_counter()
        self.commit()
        added, removed = self.pending_changes()
        if not (added or removed or force or self.new_build):
            return None
        params = self.manifest.vector_params
        self._autocommit(graph.settle)  # a graph growing when a writer was killed
        if graph.current(self.conn) is None:
            # A first build: the graph over every row at once (pgvector's parallel build), in memory.
            if progress is not None:
                progress(0, added)
            graph.memory_for(self.conn, added, self.manifest.model.dim, self.vector_type)
            self.conn.execute(graph.index_sql(self.vector_type, *graph.chosen(params, added)))
            self._post()  # and their index, over every row at once
            self.conn.execute(POSTINGS_INDEX_SQL)
            self.conn.commit()
            self._vacuum()
            if progress is not None:
                progress(added, added)
        self._count_terms(+1, f"c.gen_added = {self.working} AND c.gen_removed IS NULL")
        self._count_terms(-1, removed_at(f"= {self.working}"))
        self.conn.execute("DELETE FROM lexemes WHERE df <= 0")
        self._post()
        # Rows removed by an earlier generation go now: a reader still on the last one sees them.
        purged = removed_at(f"<= {self.committed}")
        self.conn.execute(unpost_chunks(purged))
        self.conn.execute(f"DELETE FROM chunks c WHERE {purged}")
        self.conn.execute(f"DELETE FROM files WHERE gen_removed IS NOT NULL AND gen_removed <= {self.committed}")
        # The live count and term total from the last generation's and this one's changes: counting
        # every live row read the whole table at each update (70 ms at 100,000 chunks).
        row = self.conn.execute(
            "SELECT (SELECT coalesce(sum(lex_len), 0) FROM chunks WHERE gen_added = %s AND gen_removed IS NULL), "
            f"(SELECT coalesce(sum(lex_len), 0) FROM chunks c WHERE {removed_at('= %s')})",
            (self.working, self.working),
        ).fetchone()
        assert row is not None
        count = int(self._meta("vector_count") or 0) + added - removed
        lex_total = int(self._meta("lex_total") or 0) + int(row[0]) - int(row[1])
        large = self.new_build or 10 * (added + removed) >= count
        if large:
            # Statistics now, not when autovacuum gets to it: without them the planner guesses the
            # visibility and scope filters' selectivity and may scan every row (seconds at 1M).
            self.conn.execute("ANALYZE chunks, files, lexemes, postings")
        self._set_meta("vector_count", str(count))
        self._set_meta("lex_total", str(lex_total))
        self._set_meta("generation", str(self.working))
        self._set_meta("updated_at", repr(time.time()))
        if before_switch is not None:
            before_switch()
        if self.new_build:
            from semsearch.pgstore.registry import publish

            publish(self.conn, self.target, self.schema)  # in the same transaction as its generation
        self.conn.execute("SELECT pg_notify('semsearch', %s)", (self.target.project,))
        self.conn.commit()
        if large and not self.new_build:
            self._vacuum()
        bigger = graph.outgrown(params, graph.current(self.conn), count)
        if bigger is not None:
            self.conn.commit()
            if progress is not None:
                progress(0, count)
            self._autocommit(lambda conn: graph.grow(conn, self.vector_type, self.manifest.model.dim, count, bigger))
            if progress is not None:
                progress(count, count)
        if self.new_build:
            from semsearch.pgstore.registry import drop_old_builds

            drop_old_builds(self.conn, self.target)  # the replaced build, once no reader holds it
        self.committed, self.working = self.working, self.working + 1
        return FinalizeReport(self.committed, added, removed, self.new_build, time.perf_counter() - started)

    def _post(self) -> None:
        """Write the postings of this generation's chunks not posted yet (those above the
        ``posted`` mark: chunk ids only grow), and move the mark. Readers see them at the flip,
        which sets the ceiling of the chunk ids it makes visible (PgReader)."""
        posted = int(self._meta("posted") or 0)
        row = self.conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()
        top = int(row[0]) if row else 0
        if top > posted:
            self.conn.execute(post_chunks(f"c.id > {posted} AND c.gen_added = {self.working}"))
            self._set_meta("posted", str(top))
        self._set_meta("chunk_ceiling", str(top))

    def _vacuum(self) -> None:
        """Mark the postings' pages all-visible (outside a transaction), so that BM25 reads them
        from their index alone: 4x faster than visiting the table (benchmarks/RESULTS.md)."""
        self._autocommit(lambda conn: conn.execute("VACUUM (ANALYZE) postings"))

    def _autocommit(self, work: Callable[[Any], object]) -> None:
        """*work(conn)* outside a transaction (what VACUUM and concurrent index builds need)."""
        self.conn.commit()
        self.conn.autocommit = True
        try:
            work(self.conn)
        finally:
            self.conn.autocommit = False

    def _count_terms(self, sign: int, where: str) -> None:
        """Add (or take away) the chunks matched by *where* (``c``) from each term's document count."""
        self.conn.execute(
            "INSERT INTO lexemes (term, df) "
            f"SELECT t, {int(sign)} * count(*) FROM chunks c, unnest(tsvector_to_array(c.lex)) AS t WHERE {where} "
            "GROUP BY t ON CONFLICT (term) DO UPDATE SET df = lexemes.df + excluded.df"
        )

    def merge_segments(self, progress: Callable[[int, int], None] | None = None) -> bool:
        """Nothing to merge: PostgreSQL keeps one vector index, updated in place."""
        return False
