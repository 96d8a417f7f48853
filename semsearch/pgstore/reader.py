"""Reading a PostgreSQL index: the calls of :class:`semsearch.store.IndexReader`, answered inside
the database.

A reader pins the generation current when it opened; rows a later update removes stay one
generation longer (``PgWriter.finalize``), so its searches stay consistent while ``Index`` checks
for a newer generation before each call (one short query) and reopens.

- Vectors: pgvector's HNSW index (halfvec or vector), cosine by inner product of unit vectors.
  A filter (paths, globs, types, dates: the files of the scope, by id) is SQL beside the search;
  iterative index scans keep going until k rows pass it. A narrow scope is scored exactly
  (``EXACT_ROWS``, chosen by measurement: benchmarks/RESULTS.md).
- Words: the local index's BM25 (FTS5's formula, k1 1.2, b 0.75, over text and context) computed
  in SQL over the rows a GIN index on their terms matches, from each term's stored document count.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.pgstore.connection import (
    Target,
    as_db_vector,
    connect,
    errors_as_one_line,
    psycopg_module,
    register_vectors,
)
from semsearch.pgstore.registry import current_build
from semsearch.store.catalog import FileCatalog
from semsearch.store.database import visible
from semsearch.store.layout import key_to_path, path_key, within_project
from semsearch.store.reader import ChunkRecord, IndexStats, chunk_record, scoped_subset

if TYPE_CHECKING:
    import numpy as np
    import psycopg

    from semsearch.scope import Scope
    from semsearch.store import IndexManifest
    from semsearch.vectors import Subset

EXACT_ROWS = 20_000  # a scope of at most this many chunks is scored exactly (no index)
SEARCH_EF_FLOOR = 200  # hnsw.ef_search at least this: recall@10 0.9977 at 100, 0.9987 at 200 (RESULTS.md)
MAX_SCAN_TUPLES = 200_000  # how far an iterative scan may go to fill k under a filter
NEIGHBOUR_BATCH = 256  # vectors whose neighbours one statement finds (duplicates)

_SELECT = (
    "SELECT c.id, c.file_id, f.path, f.display, f.kind, f.title, c.ordinal, c.text, c.char_start, c.char_end, "
    "c.line_start, c.line_end, c.page_start, c.page_end, c.context, f.mtime_ns, f.parts "
    "FROM chunks c JOIN files f ON f.id = c.file_id"
)


def search_ef(chunks: int) -> int:
    """The ef_search an index of *chunks* is searched with: SEARCH_EF_FLOOR, and beyond 100,000
    chunks wider by log10 of the growth, as the local engine's graphs (at a million, ef 400 took
    recall@10 from 0.80 to 0.87 at no more time: RESULTS.md)."""
    from semsearch.vectors.hnsw import search_ef as graph_ef

    return graph_ef(SEARCH_EF_FLOOR, chunks, floor=SEARCH_EF_FLOOR)


class _Segments:
    """What ``status`` shows of the local engine's vector files: one index, no tombstones."""

    tombstones = 0

    def segment_states(self) -> list[dict[str, str]]:
        return [{}]


class PgReader:
    """A read-only view of a PostgreSQL index's current generation."""

    layout = _Segments()

    def __init__(self, target: Target, index_dir: Path) -> None:
        self.target = target
        self.index_dir = index_dir
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()
        self._catalog: FileCatalog | None = None
        self._catalog_lock = threading.Lock()
        self._docs: dict[str, int] = {}  # term -> chunks holding it, in this generation
        conn = self._conn()
        with errors_as_one_line(target, "read"):
            build = current_build(conn, target)
        self.schema = build.schema
        self.manifest: IndexManifest = build.manifest
        self.generation = build.generation
        self.vector_type = str(self.manifest.vector_params.get("type", "halfvec"))
        meta = dict(self._rows("SELECT key, value FROM meta"))
        self.vector_count = int(meta.get("vector_count", 0))
        self._lex_total = int(meta.get("lex_total", 0))
        # BM25's postings (schema 2): those of this generation's chunks are the ones up to its
        # ceiling, less the chunks it removed (kept one generation longer, with their postings).
        self._postings = int(meta.get("schema_version", 1)) >= 2
        self._ceiling = int(meta.get("chunk_ceiling", 0))
        # The files this generation removed (or an earlier one, not purged yet): their chunks'
        # rows stay as they were (schema 3: updating them re-inserted each into the HNSW graph).
        self._gone = [
            int(r[0])
            for r in self._rows(
                "SELECT id FROM files WHERE gen_removed IS NOT NULL AND gen_removed <= %s", [self.generation]
            )
        ]
        self._removed = [
            int(r[0]) for r in self._rows("SELECT id FROM chunks WHERE file_id = ANY(%s)", [self._gone])
        ] if self._postings and self._gone else []  # fmt: skip
        # Their ids as a literal, made once: every chunk read of this reader excludes them.
        self._gone_sql = f"'{{{','.join(map(str, self._gone))}}}'::bigint[]" if self._gone else ""
        self.updated_at = float(meta.get("updated_at", 0))
        self.roots: list[str] = json.loads(meta.get("roots", "[]"))
        from semsearch.store.database import decode_walk_settings

        self.walk_settings = decode_walk_settings(meta.get("walk"))

    # -- connections -----------------------------------------------------------------------

    def _conn(self) -> psycopg.Connection[Any]:
        """This thread's connection (a hybrid search reads both sides at once)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.target, autocommit=True)
            with contextlib.suppress(psycopg_module().ProgrammingError):
                register_vectors(conn)  # no pgvector in the database: no index there either (said below)
            with errors_as_one_line(self.target, "read"):
                conn.execute("SET hnsw.iterative_scan = relaxed_order")
                conn.execute(f"SET hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
                conn.execute("SET jit = off")
                # psycopg prepares a query run five times; a generic plan sees neither the scope's
                # file ids nor the LIMIT, and scores a wide scope exactly (7x slower at 50 %).
                conn.execute("SET plan_cache_mode = force_custom_plan")
            schema = getattr(self, "schema", None)
            if schema is not None:
                self._use(conn, schema)
            self._local.conn = conn
            self._local.ef = None
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _use(self, conn: psycopg.Connection[Any], schema: str) -> None:
        from semsearch.pgstore.registry import search_path

        conn.execute(search_path(conn, schema))

    def _rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        """The rows of one statement; *binary*: results in binary (vectors: parsing 50 of them as
        text cost 3 ms, 15x the statement)."""
        conn = self._conn()
        if getattr(self._local, "schema", None) != self.schema:
            self._use(conn, self.schema)
            self._local.schema = self.schema
        with errors_as_one_line(self.target, "read"), conn.cursor(binary=binary) as cur:
            return list(cur.execute(sql, params).fetchall())

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._conns = []

    def __enter__(self) -> PgReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_current(self) -> bool:
        """Whether this reader's build and generation are still the index's current ones (one
        statement: asked before each call of a long-lived Index)."""
        psycopg = psycopg_module()
        try:
            row = (
                self._conn()
                .execute(
                    f'SELECT p.live_schema = %s AND (SELECT m.value FROM "{self.schema}".meta m '
                    "WHERE m.key = 'generation') = %s FROM semsearch.projects p WHERE p.name = %s",
                    (self.schema, str(self.generation), self.target.project),
                )
                .fetchone()
            )
        except psycopg.errors.UndefinedTable:  # the build was dropped: a newer one is current
            return False
        except psycopg.Error as exc:
            from semsearch.pgstore.connection import describe

            raise describe(self.target, exc, "read") from None
        return bool(row and row[0])

    @property
    def count(self) -> int:
        return self.vector_count

    # -- scopes ----------------------------------------------------------------------------

    def catalog(self) -> FileCatalog:
        with self._catalog_lock:
            if self._catalog is None:
                rows = self._rows(  # a file's chunks are written together: one id range (two index probes)
                    "SELECT f.id, f.path, f.kind, f.mtime_ns, f.chunk_count, "
                    "(SELECT min(c.id) FROM chunks c WHERE c.file_id = f.id), "
                    "(SELECT max(c.id) FROM chunks c WHERE c.file_id = f.id) "
                    f"FROM files f WHERE {visible(self.generation, 'f')} AND f.chunk_count > 0 ORDER BY f.path"
                )
                rows = [(r[0], bytes(r[1]), *r[2:]) for r in rows]
                self._catalog = FileCatalog(rows, self._file_chunk_ids, self.index_dir, self.roots)
            return self._catalog

    def _file_chunk_ids(self, file_id: int) -> list[int]:
        rows = self._rows(f"SELECT id FROM chunks c WHERE c.file_id = %s AND {self._live('c')}", (file_id,))
        return [int(r[0]) for r in rows]

    def subset(self, scope: Scope | None) -> Subset | None:
        return scoped_subset(self.catalog, self.index_dir, scope)

    @staticmethod
    def _filter(within: Subset | None) -> tuple[str, dict[str, Any]]:
        """A scope as SQL on the chunks' file ids (named parameter ``files``)."""
        if within is None:
            return "", {}
        assert within.file_ids is not None
        return " AND c.file_id = ANY(%(files)s)", {"files": [int(i) for i in within.file_ids]}

    # -- vectors ---------------------------------------------------------------------------

    def _vec(self, query: np.ndarray) -> Any:
        import numpy as np

        return as_db_vector(np.asarray(query, dtype=np.float32).reshape(-1), self.vector_type)

    def vector_search(
        self, query: np.ndarray, k: int, ef: int | None = None, within: Subset | None = None
    ) -> list[tuple[int, float]]:
        """Nearest chunks by cosine: [(chunk id, cosine)], best first; k whenever *within* holds k."""
        if (within is not None and len(within) == 0) or self.vector_count == 0 or k <= 0:
            return []
        sql, params = self._semantic_sql(query, k, ef, within)
        rows = self._rows(f"SELECT id, score FROM ({sql}) t ORDER BY score DESC, id", params)
        return [(int(i), float(s)) for i, s in rows]

    def _semantic_sql(
        self, query: np.ndarray, k: int, ef: int | None, within: Subset | None
    ) -> tuple[str, dict[str, Any]]:
        """The k nearest chunks' (id, score) as one SELECT: pgvector's HNSW index with iterative
        scans, or exact scoring for a scope of at most EXACT_ROWS chunks."""
        where, params = self._filter(within)
        exact = within is not None and len(within) <= EXACT_ROWS
        order = "(c.embedding <#> %(q)s) + 0" if exact else "c.embedding <#> %(q)s"  # + 0: no index
        if not exact:
            self._set_ef(max(ef or 0, k, search_ef(self.vector_count)))
        sql = (
            f"SELECT c.id, -(c.embedding <#> %(q)s) AS score FROM chunks c WHERE {self._live('c')}"
            f"{where} ORDER BY {order} LIMIT %(k_sem)s"
        )
        return sql, {**params, "q": self._vec(query), "k_sem": k}

    def _set_ef(self, ef: int) -> None:
        ef = min(ef, 1000)
        self._conn()
        if self._local.ef != ef:
            with errors_as_one_line(self.target, "read"):
                self._conn().execute(f"SET hnsw.ef_search = {int(ef)}")
            self._local.ef = ef

    def neighbours(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each of *vectors*' k nearest chunks (ids, cosines; -1 where fewer): one statement per
        batch of NEIGHBOUR_BATCH vectors (a lateral search each), not one per vector."""
        import numpy as np

        ids = np.full((len(vectors), k), -1, dtype=np.int64)
        cos = np.zeros((len(vectors), k), dtype=np.float32)
        if self.vector_count == 0 or k <= 0 or not len(vectors):
            return ids, cos
        self._set_ef(max(k, search_ef(self.vector_count)))
        kind = f"{self.vector_type}({self.manifest.model.dim})"
        for start in range(0, len(vectors), NEIGHBOUR_BATCH):
            part = vectors[start : start + NEIGHBOUR_BATCH]
            rows = self._rows(
                f"SELECT q.i, n.id, n.score FROM unnest(%s::int[], %s::{kind}[]) AS q(i, v) CROSS JOIN LATERAL "
                f"(SELECT c.id, -(c.embedding <#> q.v) AS score FROM chunks c WHERE {self._live('c')} "
                "ORDER BY c.embedding <#> q.v LIMIT %s) AS n",
                [list(range(len(part))), [self._vec(v) for v in part], k],
            )
            by_row: dict[int, list[tuple[float, int]]] = {}
            for i, cid, score in rows:
                by_row.setdefault(int(i), []).append((float(score), int(cid)))
            for i, found in by_row.items():
                found.sort(key=lambda sc: (-sc[0], sc[1]))
                for col, (score, cid) in enumerate(found[:k]):
                    ids[start + i, col], cos[start + i, col] = cid, score
        return ids, cos

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        import numpy as np

        if not ids:
            return {}
        rows = self._rows(
            f"SELECT id, embedding FROM chunks c WHERE id = ANY(%s) AND {self._live('c')}",
            [[int(i) for i in ids]],
            binary=True,
        )
        return {int(i): np.asarray(v.to_numpy(), dtype=np.float32) for i, v in rows}

    def chunk_vectors(
        self, within: Subset | None = None, batch: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        import numpy as np

        where, params = self._filter(within)
        last = 0
        while True:
            rows = self._rows(
                f"SELECT c.id, c.file_id, c.embedding, c.text FROM chunks c WHERE c.id > %(last)s AND "
                f"{self._live('c')}{where} ORDER BY c.id LIMIT %(batch)s",
                {**params, "last": last, "batch": batch},
                binary=True,
            )
            if not rows:
                return
            last = rows[-1][0]
            yield (
                np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows], dtype=np.int64),
                np.array([r[2].to_numpy() for r in rows], dtype=np.float32),
                [r[3] for r in rows],
            )

    # -- words -----------------------------------------------------------------------------

    def term_docs(self, terms: Sequence[str]) -> list[int]:
        """How many chunks hold each term (the counts of this generation, kept once read)."""
        missing = [t for t in dict.fromkeys(terms) if t not in self._docs]
        if missing:
            found = dict(self._rows("SELECT term, df FROM lexemes WHERE term = ANY(%s)", [missing]))
            with self._catalog_lock:
                if len(self._docs) > 100_000:
                    self._docs.clear()
                self._docs.update({t: int(found.get(t, 0)) for t in missing})
        return [self._docs.get(t, 0) for t in terms]

    def lexical_search(self, match: str, k: int, within: Subset | None = None) -> list[tuple[int, float]]:
        """Chunks matching *match* (an FTS5 query of quoted words joined by OR), ranked by the
        local index's BM25: [(chunk id, score)], best first (pgstore/bm25.py: MaxScore's pruning,
        the same top k as scoring every match)."""
        from semsearch.pgstore import bm25

        if (within is not None and len(within) == 0) or self.vector_count == 0 or k <= 0:
            return []
        total = max(self.vector_count, 1)
        words = bm25.words_of(match, self.term_docs, total)
        if not words:
            return []
        where, extra = self._filter(within)
        avg = max(self._lex_total / total, 1e-9)
        if self._postings:
            read, posted = self._live_postings()
            if where:
                read += " AND p.chunk IN (SELECT c.id FROM chunks c WHERE c.file_id = ANY(%(files)s))"
            extra |= posted
        budget = bm25.FIRST_ROWS if self._postings else bm25.TSVECTOR_ROWS
        taken = bm25.first_taken(words, budget)
        while True:
            if self._postings:
                sql = bm25.postings_statement(" AND " + read, words, taken)
            else:
                sql = bm25.statement(self._live("c"), where)
            rows = self._rows(sql, bm25.params(words, taken, k, avg, extra))
            found = [(int(i), float(s)) for i, s in rows]
            if bm25.enough(found, k, words, taken):
                return found
            taken = bm25.more(words, taken, budget)

    def _live(self, alias: str) -> str:
        """SQL: the chunk row *alias* is in this generation (added by it or before, and its file
        not removed)."""
        gone = f" AND {alias}.file_id <> ALL({self._gone_sql})" if self._gone_sql else ""
        return visible(self.generation, alias) + gone

    def _live_postings(self) -> tuple[str, dict[str, Any]]:
        """The postings (``p``) of this generation's chunks: SQL and its named parameters."""
        sql = "p.chunk <= %(ceiling)s AND p.chunk <> ALL(%(removed)s::bigint[])"
        return sql, {"ceiling": self._ceiling, "removed": self._removed}

    # -- chunks and files ------------------------------------------------------------------

    def _record(self, row: Sequence[Any], paths: dict[int, Path]) -> ChunkRecord:
        return chunk_record(self.index_dir, row, paths)

    def fetch_chunks(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        ids = list(dict.fromkeys(int(i) for i in ids))
        if not ids:
            return {}
        paths: dict[int, Path] = {}
        rows = self._rows(f"{_SELECT} WHERE c.id = ANY(%s) AND {self._live('c')}", [ids])
        return {int(r[0]): self._record(r, paths) for r in rows}

    def file_chunks(self, path: Path) -> list[ChunkRecord] | None:
        key = path_key(self.index_dir, within_project(self.index_dir, path))
        found = self._rows(f"SELECT id FROM files WHERE path = %s AND {visible(self.generation)}", [key])
        if not found:
            return None
        paths: dict[int, Path] = {}
        rows = self._rows(f"{_SELECT} WHERE c.file_id = %s AND {self._live('c')} ORDER BY c.ordinal", [found[0][0]])
        return [self._record(r, paths) for r in rows]

    def file_chunk_counts(self, file_ids: set[int]) -> dict[int, tuple[Path, int]]:
        rows = self._rows("SELECT id, path, chunk_count FROM files WHERE id = ANY(%s)", [sorted(file_ids)])
        return {int(i): (key_to_path(self.index_dir, bytes(k)), int(n)) for i, k, n in rows}

    def chunks(self) -> Iterator[ChunkRecord]:
        paths: dict[int, Path] = {}
        for row in self._rows(f"{_SELECT} WHERE {self._live('c')} ORDER BY c.file_id, c.ordinal"):
            yield self._record(row, paths)

    def files(self) -> Iterator[tuple[Path, int, int, str | None]]:
        for key, size, mtime, error in self._rows(
            f"SELECT path, size, mtime_ns, error FROM files WHERE {visible(self.generation)}"
        ):
            yield key_to_path(self.index_dir, bytes(key)), int(size), int(mtime), error

    def stats(self) -> IndexStats:
        row = self._rows(
            f"SELECT count(*), count(*) FILTER (WHERE error IS NOT NULL) FROM files WHERE {visible(self.generation)}"
        )[0]
        size = self._rows("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                          [self.schema])[0][0]  # fmt: skip
        return IndexStats(
            files=int(row[0]), files_without_text=int(row[1]), chunks=self.vector_count, generation=self.generation,
            updated_at=self.updated_at, roots=list(self.roots), disk_bytes=int(size),
        )  # fmt: skip

    def verify(self) -> list[str]:
        """The stored rows against what the index records: counts, dimensions, each file's chunks,
        each term's chunk count against its postings."""
        problems: list[str] = []
        (chunks,) = self._rows(f"SELECT count(*) FROM chunks c WHERE {self._live('c')}")[0]
        if int(chunks) != self.vector_count:
            problems.append(f"the database lists {chunks} chunks and its state {self.vector_count}")
        (bad,) = self._rows(
            f"SELECT count(*) FROM chunks c WHERE vector_dims(c.embedding) <> %s AND {self._live('c')}",
            [self.manifest.model.dim],
        )[0]
        if bad:
            problems.append(f"{bad} stored vectors are not of the model's {self.manifest.model.dim} dimensions")
        (files,) = self._rows(
            f"SELECT count(*) FROM files f WHERE {visible(self.generation, 'f')} AND f.chunk_count <> "
            f"(SELECT count(*) FROM chunks c WHERE c.file_id = f.id AND {self._live('c')})"
        )[0]
        if files:
            problems.append(f"{files} files do not hold the chunks they list")
        if self._postings:  # BM25's counts: each term's chunks, as the postings hold them
            live, posted = self._live_postings()
            (terms,) = self._rows(
                f"SELECT count(*) FROM (SELECT term, count(*) AS n FROM postings p WHERE {live} GROUP BY term) p "
                "FULL JOIN lexemes l USING (term) WHERE p.n IS DISTINCT FROM l.df",
                posted,
            )[0]
            if terms:
                problems.append(f"{terms} terms' chunk counts differ from their postings")
        return problems
