"""Reading an index: one consistent snapshot of the current generation, for any number of searches."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import vectors
from semsearch.errors import IndexCorruptError
from semsearch.store.catalog import FileCatalog
from semsearch.store.database import (
    connect,
    decode_vectors,
    decode_walk_settings,
    get_state,
    has_column,
    vector_state,
    visible,
)
from semsearch.store.format import read_manifest
from semsearch.store.layout import key_to_path, path_key, within_project
from semsearch.vectors import segments

if TYPE_CHECKING:
    import numpy as np

    from semsearch.scope import Scope
    from semsearch.vectors import Subset, VectorIndex, VectorState


# A subset holding at least this share of the chunks is searched by BM25 ranking with a bitmap
# check (cost of an unfiltered search); a narrower one inside the SQL (cost with its size).
WIDE_SUBSET = 0.05
# A hit's cosine as the vector engine scored it and as the database's copy of its vector gives
# it differ in the last bits only (float32 sums in another order).
SCORE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ChunkRecord:
    """A stored chunk with its file, as search returns it."""

    id: int
    file_id: int
    path: Path
    display: str
    kind: str
    title: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page_start: int | None
    page_end: int | None
    context: str = ""  # the title / heading path embedded with the text
    mtime_ns: int = 0  # the file's modification time when it was indexed
    # Where each numbered part of its file begins (lines of the extracted text), for documents
    # whose chunks may span parts (notebook cells, Word sections); None otherwise.
    part_lines: tuple[int, ...] | None = None

    def part_of_line(self, line: int) -> int | None:
        """The part (cell, section, ...) holding *line*: from the file's part lines when it has
        them, else the chunk's first part (None outside documents of parts)."""
        if self.part_lines:
            import bisect

            return max(1, bisect.bisect_right(self.part_lines, line))
        return self.page_start


@dataclass(frozen=True)
class IndexStats:
    files: int
    files_without_text: int
    chunks: int
    generation: int
    updated_at: float
    roots: list[str]
    disk_bytes: int


_CHUNK_SELECT = (
    "SELECT c.id, c.file_id, f.path, f.display, f.kind, f.title, c.ordinal, c.text, c.char_start, c.char_end, "
    "c.line_start, c.line_end, c.page_start, c.page_end, c.context, f.mtime_ns, {parts} "
    "FROM chunks c JOIN files f ON f.id = c.file_id"
)


def part_lines_of(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        lines = json.loads(value)
    except ValueError:
        return None
    if isinstance(lines, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in lines):
        return tuple(lines)
    return None


class IndexReader:
    """A consistent, read-only view of the current index generation."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self._vectors: VectorIndex | None = None
        self._catalog: FileCatalog | None = None
        self._catalog_lock = threading.Lock()
        self._no_vectors = False
        self._vector_fds: dict[str, int] = {}
        # A writer that finishes between our reads of the manifest, the database and the vector
        # file deletes the files of the state we started to read: start again from the manifest.
        for attempt in range(3):
            if self._open_snapshot(last=attempt == 2):
                break
            time.sleep(0.02)

    def _open_snapshot(self, last: bool) -> bool:
        self.manifest = read_manifest(self.index_dir)
        self.db_path = self.index_dir / self.manifest.database
        if not last and not self.db_path.is_file():
            return False
        self.conn = connect(self.db_path, readonly=True)
        try:
            # One read transaction for the reader's life: a writer's later commits stay unseen.
            self.conn.execute("BEGIN")
            state = get_state(self.conn)
            self.generation = int(state.get("generation", "0"))
            self.vector_state = vector_state(state)
            self.vector_file = state.get("vector_file", "")
            self.vector_count = int(state.get("vector_count", "0"))
            self.updated_at = float(state.get("updated_at", "0"))
            self.roots = json.loads(state.get("roots", "[]"))
            self.walk_settings = decode_walk_settings(state.get("walk"))
            # files.parts came later without a format change: an older database has none.
            parts = "f.parts" if has_column(self.conn, "files", "parts") else "NULL"
            self._chunk_select = _CHUNK_SELECT.format(parts=parts)
        except (sqlite3.DatabaseError, ValueError) as exc:
            self.conn.close()
            raise IndexCorruptError(f"{self.db_path} is damaged ({exc})", path=self.db_path, remedy="rebuild") from None
        try:
            self.layout = segments.Layout.from_state(self.vector_state)
        except IndexCorruptError:
            self.conn.close()
            raise
        # Hold the vector files of this snapshot open: the writer of a later generation deletes
        # them (a merge, a rebuild), and this reader must still answer from them.
        for name in self.layout.files():
            if "/" in name:
                continue  # refused with the file's other checks when vectors are first needed
            try:
                self._vector_fds[name] = os.open(self.index_dir / name, os.O_RDONLY)
            except FileNotFoundError:
                if not last:
                    self.close()
                    return False
            except OSError:
                pass  # reported with the file's other checks when vectors are first needed
        return True

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        for fd in self._vector_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._vector_fds = {}

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        return self.vector_count

    def _vector_index(self) -> VectorIndex | None:
        """This snapshot's vectors (its segments, tombstones applied), opened and checked on
        first need; None when empty."""
        if self._vectors is not None or self._no_vectors:
            return self._vectors
        if self.vector_count == 0 or not self.vector_file:
            self._no_vectors = True
            return None
        engine = vectors.backend(self.manifest.vector_index)
        layout = self.layout
        parts = [self._open_segment(engine, state) for state in layout.segment_states()]
        if layout.tombstones:
            gone = self._tombstones()
            for part in parts:
                part.remove(gone)
        self._vectors = parts[0] if len(parts) == 1 else segments.Segments(parts, self.vector_count)
        return self._vectors

    def _open_segment(self, engine: vectors.VectorBackend, state: VectorState) -> VectorIndex:
        name = state.get("vector_file", "")
        if not name or "/" in name:
            raise IndexCorruptError(
                f"{self.db_path} names an unexpected vector file", path=self.db_path, remedy="rebuild"
            )
        path = self.index_dir / name
        return engine.open(
            self._source(name), state, self.manifest.model.dim, self.manifest.vector_params, shown=path,
            sketch_file=self._sketch_of(state),
        )  # fmt: skip

    def _sketch_of(self, state: VectorState) -> Path | None:
        """Where to read a segment's sketch file (None: it has none)."""
        name = state.get("vector_sketch", "")
        return self._source(name) if name and "/" not in name else None

    def _source(self, name: str) -> Path:
        """Where to read segment *name* of this snapshot: the file held open for it, even if
        a later generation replaced or deleted it (else the file of that name)."""
        fd = self._vector_fds.get(name, -1)
        if fd >= 0 and os.path.exists(f"/proc/self/fd/{fd}"):
            return Path(f"/proc/self/fd/{fd}")
        return self.index_dir / name

    def verify(self) -> list[str]:
        """Check the whole snapshot: the database's pages, every vector segment whole (checksum
        and structure) and that the segments hold the chunks the database lists. The problems
        found, one line each ([] when none): what ``semsearch status --verify`` prints."""
        problems: list[str] = []
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            problems.append(f"{self.db_path.name}: " + "; ".join(rows[:3]))
        engine = vectors.backend(self.manifest.vector_index)
        for state in self.layout.segment_states():
            name = state.get("vector_file", "")
            path = self.index_dir / name
            source = self._source(name)
            check = getattr(engine, "verify", None)  # an engine from before verify: what open checks
            try:
                if check is not None:
                    check(source, state, self.manifest.model.dim, sketch_file=self._sketch_of(state))
                else:
                    engine.open(source, state, self.manifest.model.dim, self.manifest.vector_params, shown=path)
            except IndexCorruptError as exc:
                problems.append(exc.message.replace(str(source), name))
        if not problems:
            problems += self._segments_match_database(engine)
        try:
            (chunks,) = self.conn.execute(f"SELECT count(*) FROM chunks WHERE {visible(self.generation)}").fetchone()
        except sqlite3.DatabaseError:
            chunks = None
        if chunks is not None and chunks != self.vector_count:
            problems.append(f"the database lists {chunks} chunks and the vector segments {self.vector_count}")
        return problems

    def _segments_match_database(self, engine: vectors.VectorBackend) -> list[str]:
        """Every live vector of every segment file against the vector the database keeps for its
        label (a file whose checksum was recomputed over damage, a label under another chunk's
        vector): one line per file that differs."""
        problems = []
        gone = self._tombstones()
        for state in self.layout.segment_states():
            name = state.get("vector_file", "")
            wrong = unlike_database(
                self.conn, self.generation, engine, self._source(name), self.manifest.model.dim, gone
            )
            if wrong:
                problems.append(f"{name} holds {wrong} vectors that are not the database's for their chunks")
        return problems

    def _tombstones(self) -> list[int]:
        """Removed chunks whose vectors a segment file of this snapshot still holds."""
        try:
            return [i for (i,) in self.conn.execute("SELECT id FROM vector_tombstones")]
        except sqlite3.OperationalError:  # a database from before segments: none
            return []

    def catalog(self) -> FileCatalog:
        """This snapshot's files, for scoped searches (loaded on first need)."""
        with self._catalog_lock:
            if self._catalog is None:
                rows = self.conn.execute(
                    "SELECT f.id, f.path, f.kind, f.mtime_ns, f.chunk_count, "
                    "(SELECT min(c.id) FROM chunks c WHERE c.file_id = f.id), "
                    "(SELECT max(c.id) FROM chunks c WHERE c.file_id = f.id) "
                    f"FROM files f WHERE {visible(self.generation, 'f')} AND f.chunk_count > 0 ORDER BY f.path"
                ).fetchall()
                self._catalog = FileCatalog(rows, self._file_chunk_ids, self.index_dir, self.roots)
            return self._catalog

    def _file_chunk_ids(self, file_id: int) -> list[int]:
        query = f"SELECT id FROM chunks WHERE file_id = ? AND {visible(self.generation)}"
        return [cid for (cid,) in self.conn.execute(query, (file_id,))]

    def subset(self, scope: Scope | None) -> Subset | None:
        """The chunks a search in *scope* may return (None: all). Paths outside the indexed
        folders, or that neither exist nor hold indexed files, raise InvalidOptionError."""
        return scoped_subset(self.catalog, self.index_dir, scope)

    def vector_search(
        self, query: np.ndarray, k: int, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        """Nearest chunks by cosine similarity: [(chunk id, cosine)], best first; only chunks
        *within* the subset when given (k of them whenever it holds k)."""
        if within is not None and len(within) == 0:
            return []
        try:
            index = self._vector_index()
            if index is None:
                return []
            found = index.search(query, k, ef=ef, within=within)
        except IndexCorruptError as exc:
            # Any engine's damaged file: the next update writes the vector files again from the
            # vectors this database keeps (it checks every file it keeps).
            exc.remedy = "repair"
            raise
        self._check_found(query, found)
        return found

    def _check_found(self, query: np.ndarray, found: list[tuple[int, float]]) -> None:
        """The vector files against the database, for what a search returns: each hit's cosine
        with the vector the database stores for its chunk (a few rows read). A damaged or
        tampered file (a vector under another chunk's label) is an error, never a wrong hit."""
        if not found:
            return
        import numpy as np

        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / (float(np.sqrt(q @ q)) or 1.0)
        stored = self.vectors([cid for cid, _ in found])
        for cid, score in found:
            vec = stored.get(cid)
            if vec is None or len(vec) != len(q):
                vec = np.zeros_like(q)
            norm = float(np.sqrt(vec @ vec))
            if not norm or not abs(float(vec @ q) / norm - score) <= SCORE_TOLERANCE:
                raise IndexCorruptError(
                    f"the vector files of {self.index_dir} do not match its database (chunk {cid})",
                    path=self.index_dir,
                    remedy="repair",
                )

    def neighbours(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest chunks of many vectors at once: (ids, cosines), id -1 for none."""
        import numpy as np

        index = self._vector_index()
        if index is None:
            return np.full((len(vectors), k), -1, dtype=np.int64), np.zeros((len(vectors), k), dtype=np.float32)
        return index.search_batch(vectors, k)

    def lexical_search(self, match: str, k: int, within: Subset | None = None) -> list[tuple[int, float]]:
        """Chunks matching an FTS5 query: [(chunk id, bm25 score, higher is better)], best first;
        only chunks *within* the subset when given."""
        if within is None:
            # Rank in FTS alone, then drop rows this generation cannot see (a join per matching
            # row was a large share of the query).
            return self._ranked_then_kept(match, k, k + 16, self._visible_of)
        if len(within) == 0:
            return []
        if within.share >= WIDE_SUBSET:
            # A wide subset: ranked the same way, its rows kept by the subset's bitmap (about
            # the cost of an unfiltered search).
            contains = within.contains()
            return self._ranked_then_kept(
                match, k, int((k + 16) / within.share * 1.5) + 1, lambda ids: {i for i in ids if contains(i)}
            )
        # A narrow one: passed to SQLite as one JSON array of ids, kept as a filter on FTS5's
        # matches (the "+" keeps SQLite from making it one FTS5 lookup per id, which cost
        # seconds at 50 %: benchmarks/queries/bench_filter.py).
        import numpy as np

        ids = json.dumps(np.asarray(within.ids, dtype=np.int64).tolist())
        try:
            rows = self.conn.execute(
                "SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts "
                "WHERE chunks_fts MATCH ? AND +chunks_fts.rowid IN (SELECT value FROM json_each(?)) "
                "ORDER BY bm25(chunks_fts) LIMIT ?",
                (match, ids, k),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [(int(i), float(s)) for i, s in rows]

    def _ranked_then_kept(
        self, match: str, k: int, limit: int, keep: Callable[[list[int]], set[int]]
    ) -> list[tuple[int, float]]:
        """The best *k* FTS5 matches among those *keep* accepts: FTS5 ranks *limit* rows, and is
        asked for four times as many while too few are kept and more rows match."""
        while True:
            try:
                rows = self.conn.execute(
                    "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                    "ORDER BY bm25(chunks_fts) LIMIT ?",
                    (match, limit),
                ).fetchall()
            except sqlite3.OperationalError:
                return []
            kept_ids = keep([r[0] for r in rows])
            kept = [(int(i), float(s)) for i, s in rows if i in kept_ids][:k]
            if len(kept) >= k or len(rows) < limit:
                return kept
            limit *= 4

    def _visible_of(self, ids: list[int]) -> set[int]:
        """Which of *ids* this generation sees."""
        shown: set[int] = set()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            shown.update(
                i
                for (i,) in self.conn.execute(
                    f"SELECT id FROM chunks WHERE id IN ({marks}) AND {visible(self.generation)}", part
                )
            )
        return shown

    def term_docs(self, terms: Sequence[str]) -> list[int]:
        """How many chunks hold each of *terms* (FTS5's own counts: an fts5vocab table; 0 each when
        they cannot be read)."""
        try:
            self.conn.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.semsearch_terms USING fts5vocab(main, chunks_fts, row)"
            )
            counts = []
            for term in terms:
                row = self.conn.execute("SELECT doc FROM temp.semsearch_terms WHERE term = ?", (term,)).fetchone()
                counts.append(int(row[0]) if row else 0)
            return counts
        except sqlite3.Error:
            return [0 for _ in terms]

    def fetch_chunks(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        """Chunk records by id (only those visible in this generation)."""
        out: dict[int, ChunkRecord] = {}
        paths: dict[int, Path] = {}  # file id -> path (chunks of one file share it)
        ids = list(dict.fromkeys(int(i) for i in ids))
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(
                f"{self._chunk_select} WHERE c.id IN ({marks}) AND {visible(self.generation, 'c')}", part
            )
            for row in rows.fetchall():
                out[row[0]] = self._record(row, paths)
        return out

    def file_chunks(self, path: Path) -> list[ChunkRecord] | None:
        """A file's chunks in document order ([] for a file without text; None: not indexed)."""
        key = path_key(self.index_dir, within_project(self.index_dir, path))
        row = self.conn.execute(
            f"SELECT id FROM files WHERE path = ? AND {visible(self.generation)}", (key,)
        ).fetchone()
        if row is None:
            return None
        paths: dict[int, Path] = {}
        rows = self.conn.execute(
            f"{self._chunk_select} WHERE c.file_id = ? AND {visible(self.generation, 'c')} ORDER BY c.ordinal",
            (row[0],),
        )
        return [self._record(r, paths) for r in rows]

    def chunk_vectors(
        self, within: Subset | None = None, batch: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        """Every visible chunk's (ids, file ids, vectors, texts), in batches by id; only *within*
        when given."""
        import numpy as np

        allowed = within.contains() if within is not None else None
        last = 0
        while True:
            rows = self.conn.execute(
                f"SELECT id, file_id, vector, text FROM chunks WHERE id > ? AND {visible(self.generation)} "
                "ORDER BY id LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            if allowed is not None:
                rows = [r for r in rows if allowed(r[0])]
                if not rows:
                    continue
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            owners = np.array([r[1] for r in rows], dtype=np.int64)
            vecs = decode_vectors([r[2] for r in rows], self.manifest.model.dim)
            yield ids, owners, vecs, [r[3] for r in rows]

    def file_chunk_counts(self, file_ids: set[int]) -> dict[int, tuple[Path, int]]:
        """Files by id: (path, number of chunks)."""
        out: dict[int, tuple[Path, int]] = {}
        ids = sorted(file_ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for fid, key, count in self.conn.execute(
                f"SELECT id, path, chunk_count FROM files WHERE id IN ({marks})", part
            ):
                out[fid] = (key_to_path(self.index_dir, key), count)
        return out

    def chunks(self) -> Iterator[ChunkRecord]:
        """Every chunk of this generation, file by file, in document order."""
        paths: dict[int, Path] = {}
        rows = self.conn.execute(
            f"{self._chunk_select} WHERE {visible(self.generation, 'c')} ORDER BY c.file_id, c.ordinal"
        )
        for row in rows:
            yield self._record(row, paths)

    def _record(self, row: Sequence[Any], paths: dict[int, Path]) -> ChunkRecord:
        return chunk_record(self.index_dir, row, paths)

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by chunk id (to score hits that came from the lexical side)."""
        return stored_vectors(self.conn, self.generation, ids, self.manifest.model.dim)

    def files(self) -> Iterator[tuple[Path, int, int, str | None]]:
        """Indexed files: (path, size, mtime_ns, error)."""
        for key, size, mtime, error in self.conn.execute(
            f"SELECT path, size, mtime_ns, error FROM files WHERE {visible(self.generation)}"
        ):
            yield key_to_path(self.index_dir, key), size, mtime, error

    def stats(self) -> IndexStats:
        files, no_text = self.conn.execute(
            f"SELECT count(*), sum(error IS NOT NULL) FROM files WHERE {visible(self.generation)}"
        ).fetchone()
        disk = sum(p.stat().st_size for p in self.index_dir.iterdir() if p.is_file())
        return IndexStats(
            files=files or 0,
            files_without_text=no_text or 0,
            chunks=self.vector_count,
            generation=self.generation,
            updated_at=self.updated_at,
            roots=list(self.roots),
            disk_bytes=disk,
        )


def chunk_record(index_dir: Path, row: Sequence[Any], paths: dict[int, Path]) -> ChunkRecord:
    """A row of the chunk select (id, file id, path key, display, kind, title, ordinal, text, char
    and line spans, pages, context, mtime, parts) as a ChunkRecord; *paths* caches each file's path."""
    path = paths.get(row[1])
    if path is None:
        path = paths[row[1]] = key_to_path(index_dir, bytes(row[2]))
    return ChunkRecord(
        id=int(row[0]),
        file_id=int(row[1]),
        path=path,
        display=row[3],
        kind=row[4],
        title=row[5] or "",
        ordinal=row[6],
        text=row[7],
        char_start=row[8],
        char_end=row[9],
        line_start=row[10],
        line_end=row[11],
        page_start=row[12],
        page_end=row[13],
        context=row[14],
        mtime_ns=int(row[15]),
        part_lines=part_lines_of(row[16]),
    )


def scoped_subset(catalog: Callable[[], FileCatalog], index_dir: Path, scope: Scope | None) -> Subset | None:
    """The chunks a search in *scope* may return (None: all), from the snapshot's *catalog* (loaded
    only for a scope). Paths outside the indexed folders, or that neither exist nor hold indexed
    files, raise InvalidOptionError."""
    if not scope:
        return None
    files = catalog()
    if scope.paths:  # paths given through a link to the project: the same places below it
        from dataclasses import replace

        scope = replace(scope, paths=tuple(within_project(index_dir, p) for p in scope.paths))
    files.check_paths(scope.paths)
    return files.select(scope)


def stored_vectors(conn: sqlite3.Connection, generation: int, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
    """The vectors the database keeps for chunks *ids* of *generation*, by chunk id (float32)."""
    out: dict[int, np.ndarray] = {}
    ids = list(dict.fromkeys(int(i) for i in ids))
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT id, vector FROM chunks WHERE id IN ({marks}) AND {visible(generation)}", part
        ).fetchall()
        if rows:
            out.update(zip((r[0] for r in rows), decode_vectors([r[1] for r in rows], dim), strict=True))
    return out


def unlike_database(
    conn: sqlite3.Connection, generation: int, engine: vectors.VectorBackend, path: Path, dim: int, gone: Sequence[int]
) -> int:
    """How many live vectors of the segment file *path* are not the vector the database keeps
    for their label (*gone*: tombstoned labels, not compared); 0 for an engine that cannot list
    its vectors."""
    import numpy as np

    items = getattr(engine, "items", None)
    if items is None:
        return 0
    removed = np.asarray(list(gone), dtype=np.int64)
    missing = np.zeros(dim, dtype=np.float32)
    wrong = 0
    for labels, vecs, live in items(path, dim):
        keep = live & ~np.isin(labels, removed)
        ids = labels[keep]
        if not len(ids):
            continue
        stored = stored_vectors(conn, generation, ids.tolist(), dim)
        own = np.stack([stored.get(i, missing) for i in ids.tolist()])
        own = own / np.maximum(np.linalg.norm(own, axis=1, keepdims=True), 1e-30)
        mine = vecs[keep] / np.maximum(np.linalg.norm(vecs[keep], axis=1, keepdims=True), 1e-30)
        wrong += int(np.count_nonzero((own * mine).sum(axis=1) < 1.0 - SCORE_TOLERANCE))
    return wrong
