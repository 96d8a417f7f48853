"""The index folder: manifest, metadata database, HNSW vector files. The format is a contract.

Layout of an index folder (default ``.semsearch/``), format version 3::

    manifest.json              what the current index is: format version, model, chunking, HNSW
                               parameters, and which database file holds it (replaced atomically)
    meta-<E>.sqlite            SQLite (WAL): files, chunks (text, location, context line embedded
                               in front of the text, float32 vector),
                               chunks_fts (FTS5 over the text and context line of generation G's
                               chunks, changed only with the flip), state (generation, vector file,
                               its size and sha256, indexed roots, the walk settings of the last
                               run: hidden, max_file_size, follow_symlinks)
    vectors-<E>-<G>.hnsw       hnswlib index (space "cosine"), labels = chunks.id, for generation G
    building.json              present only while a new index (epoch E+1) is built; lets an
                               interrupted first build or rebuild resume
    lock                       advisory lock held by the one process that writes

Consistency. Every row carries ``gen_added`` and ``gen_removed``. Readers see generation ``G``
(``state.generation``): rows with ``gen_added <= G`` and ``gen_removed`` NULL or ``> G``, and the
vector file named in ``state``. A writer works on generation ``G + 1``: it commits new rows and
removal marks as it goes (durable progress: a killed run resumes without re-embedding), writes the
next vector file beside the current one, and then flips ``state.generation`` in one transaction.
A first build or a rebuild fills a new database and becomes current when ``manifest.json`` is
replaced. Nothing is pickled; every file is checked before use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import __version__
from semsearch.errors import (
    IndexCorruptError,
    IndexLockedError,
    IndexNotFoundError,
    IndexOutdatedError,
    IndexVersionError,
    SemsearchError,
)

if TYPE_CHECKING:
    import numpy as np

    from semsearch.chunk import Chunk

FORMAT_NAME = "semsearch-index"
FORMAT_VERSION = 3  # 2: chunks.context, model.precision, chunking.context; 3: chunks_fts.context
# Older formats a reader still reads and a writer upgrades in place (no re-embedding): 2 -> 3
# differs only in chunks_fts, which is rebuilt from the chunks table.
UPGRADABLE_FORMATS = (2,)
INDEX_DIR_NAME = ".semsearch"
MANIFEST = "manifest.json"
BUILDING = "building.json"
LOCK = "lock"
# Above this size the vector file is checked by its header and size only (hashing would dominate).
CHECKSUM_LIMIT = 1 << 30
REBUILD_DELETED_FRACTION = 0.25
OUTDATED_REASON = "the index was made by an older version of semsearch"  # open_writer's reason to rebuild

# BM25 over each chunk's text and its context line (title or heading path, file name for code):
# a title's words count for every chunk of its document, as in BM25F (measured on SciFact:
# lexical nDCG@10 0.671 -> 0.684, hybrid 0.732 -> 0.740; benchmarks/RESULTS.md).
FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, context, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
)"""

SCHEMA = """
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
    gen_removed INTEGER
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
""" + FTS_SCHEMA


@dataclass(frozen=True)
class ModelInfo:
    """The model that embedded an index: queries must use the same one."""

    name: str
    fingerprint: str
    dim: int
    max_tokens: int
    query_prompt: str = ""
    document_prompt: str = ""
    stamp: str = ""  # sizes and mtimes of the model files when the fingerprint was taken
    precision: str = "fp32"  # how documents were embedded: fp32, int8 (ONNX), bf16 or fp16 (autocast)


@dataclass(frozen=True)
class ChunkingInfo:
    encoding: str
    chunk_tokens: int
    overlap_tokens: int
    context: bool = False  # title / heading path embedded in front of each chunk


@dataclass(frozen=True)
class HnswParams:
    space: str = "cosine"
    M: int = 32
    ef_construction: int = 200
    ef_search: int = 128


@dataclass(frozen=True)
class IndexManifest:
    """Contents of ``manifest.json`` (and ``building.json``)."""

    epoch: int
    database: str
    model: ModelInfo
    chunking: ChunkingInfo
    hnsw: HnswParams
    created_at: float = field(default_factory=time.time)
    tool_version: str = __version__
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def same_build(self, other: IndexManifest) -> bool:
        """True when both describe vectors and chunks made the same way."""
        return (self.model.fingerprint, self.model.precision, self.chunking, self.hnsw.space, self.hnsw.M,
                self.hnsw.ef_construction) == (other.model.fingerprint, other.model.precision, other.chunking,
                                               other.hnsw.space, other.hnsw.M, other.hnsw.ef_construction)

    @classmethod
    def from_json(cls, text: str, source: Path) -> IndexManifest:
        remedy = "run `semsearch index --rebuild`"
        try:
            data = json.loads(text)
        except ValueError:
            raise IndexCorruptError(f"{source} is not valid JSON; {remedy}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise IndexCorruptError(f"{source} is not a semsearch manifest; {remedy}")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise IndexCorruptError(f"{source} has no format version; {remedy}")
        if version > FORMAT_VERSION:
            raise IndexVersionError(
                f"{source} is format version {version}, newer than this semsearch ({FORMAT_VERSION}); upgrade semsearch or {remedy}"
            )
        if version < FORMAT_VERSION and version not in UPGRADABLE_FORMATS:
            raise IndexOutdatedError(f"{source} is an old format version ({version}); {remedy}")
        try:
            manifest = cls(
                epoch=int(data["epoch"]),
                database=str(data["database"]),
                model=ModelInfo(**data["model"]),
                chunking=ChunkingInfo(**data["chunking"]),
                hnsw=HnswParams(**data["hnsw"]),
                created_at=float(data["created_at"]),
                tool_version=str(data["tool_version"]),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError):
            raise IndexCorruptError(f"{source} is missing fields; {remedy}") from None
        if "/" in manifest.database or manifest.database.startswith("."):
            raise IndexCorruptError(f"{source} names an unexpected database file; {remedy}")
        return manifest


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


@dataclass(frozen=True)
class FileRow:
    id: int
    size: int
    mtime_ns: int
    sha256: str
    gen_added: int
    error: str | None


@dataclass(frozen=True)
class IndexStats:
    files: int
    files_without_text: int
    chunks: int
    generation: int
    updated_at: float
    roots: list[str]
    disk_bytes: int


# --------------------------------------------------------------------------------------------
# Locating the folder and paths inside it


def find_index_dir(start: Path | None = None) -> Path | None:
    """Walk up from ``start`` (default: the current directory) to the nearest index folder."""
    here = Path(os.path.abspath(start or Path.cwd()))
    for folder in (here, *here.parents):
        candidate = folder / INDEX_DIR_NAME
        if (candidate / MANIFEST).is_file() or (candidate / BUILDING).is_file():
            return candidate
    return None


def path_key(index_dir: Path, path: Path) -> bytes:
    """How a file path is stored: relative to the folder that holds the index when inside it
    (so a project can be moved), else absolute; as bytes, so any file name round-trips."""
    root = index_dir.parent
    try:
        rel = Path(os.path.abspath(path)).relative_to(root)
        return os.fsencode(rel.as_posix() if str(rel) != "." else ".")
    except ValueError:
        return os.fsencode(os.path.abspath(path))


def key_to_path(index_dir: Path, key: bytes) -> Path:
    decoded = os.fsdecode(key)
    return Path(decoded) if os.path.isabs(decoded) else index_dir.parent / decoded


def display_name(path: Path | str) -> str:
    """A file name as text for people; bytes that are not UTF-8 are shown escaped."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


# --------------------------------------------------------------------------------------------
# Low-level helpers


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(index_dir: Path, name: str = MANIFEST) -> IndexManifest:
    path = index_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if name == MANIFEST and (index_dir / BUILDING).is_file():
            raise IndexNotFoundError(f"the first build of the index at {index_dir} did not finish "
                                     "(run `semsearch index` there to finish it)") from None
        raise IndexNotFoundError(f"no index at {index_dir} (run `semsearch index PATH` first)") from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc.strerror}") from None
    return IndexManifest.from_json(data.decode("utf-8", errors="replace"), path)


def _connect(db_path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not db_path.is_file():
            raise IndexCorruptError(f"{db_path} is missing; run `semsearch index --rebuild`")
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
        raise IndexCorruptError(f"{db_path} is damaged ({exc}); run `semsearch index --rebuild`") from None
    return conn


def _visible(gen: int, alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return f"{p}gen_added <= {int(gen)} AND ({p}gen_removed IS NULL OR {p}gen_removed > {int(gen)})"


def decode_walk_settings(value: str | None) -> dict[str, Any]:
    """The ``walk`` state value as a dict ({} when absent or not a JSON object)."""
    try:
        settings = json.loads(value) if value else {}
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def _get_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM state").fetchall())


# hnswlib's file header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData (size_t each), maxlevel (int), enterpoint (uint32), maxM, maxM0, M
# (size_t), mult (double), ef_construction (size_t).
_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def check_vector_file(
    path: Path, expected_count: int, dim: int, size: int, digest: str, shown: Path | None = None
) -> None:
    """Validate a vector file before hnswlib reads it: size, header fields and checksum.

    ``shown`` is the name for messages when ``path`` is another way to the file (an open fd).
    """
    remedy = "run `semsearch index --rebuild`"
    name = shown or path
    try:
        actual = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_HNSW_HEADER.size)
    except FileNotFoundError:
        raise IndexCorruptError(f"{name} is missing; {remedy}") from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {name}: {exc.strerror}; {remedy}") from None
    if actual != size or len(head) < _HNSW_HEADER.size:
        raise IndexCorruptError(f"{name} has the wrong size ({actual} bytes, expected {size}); {remedy}")
    (offset0, max_el, count, per_element, label_off, data_off, _maxlevel, enter, _maxm, maxm0, m,
     _mult, _efc) = _HNSW_HEADER.unpack(head)
    plausible = (
        count == expected_count
        and max_el >= count
        and per_element == data_off + dim * 4 + 8
        and label_off == data_off + dim * 4
        and offset0 == 0
        and maxm0 == 2 * m
        and 0 < m < 10_000
        and (count == 0 or enter < count)
        and _HNSW_HEADER.size + count * per_element <= actual
    )
    if not plausible:
        raise IndexCorruptError(f"{name} is not the vector file this index expects; {remedy}")
    if actual <= CHECKSUM_LIMIT and sha256_file(path) != digest:
        raise IndexCorruptError(f"{name} fails its checksum; {remedy}")


# --------------------------------------------------------------------------------------------
# Reading


class IndexReader:
    """A consistent, read-only view of the current index generation."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self._hnsw: Any = None
        self._vector_fd = -1
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
        self.conn = _connect(self.db_path, readonly=True)
        try:
            # One read transaction for the reader's life: a writer's later commits stay unseen.
            self.conn.execute("BEGIN")
            state = _get_state(self.conn)
            self.generation = int(state.get("generation", "0"))
            self.vector_file = state.get("vector_file", "")
            self.vector_count = int(state.get("vector_count", "0"))
            self.vector_slots = int(state.get("vector_slots", state.get("vector_count", "0")))
            self.vector_size = int(state.get("vector_size", "0"))
            self.vector_sha256 = state.get("vector_sha256", "")
            self.updated_at = float(state.get("updated_at", "0"))
            self.roots = json.loads(state.get("roots", "[]"))
            self.walk_settings = decode_walk_settings(state.get("walk"))
        except (sqlite3.DatabaseError, ValueError) as exc:
            self.conn.close()
            raise IndexCorruptError(f"{self.db_path} is damaged ({exc}); run `semsearch index --rebuild`") from None
        if self.vector_file and "/" not in self.vector_file:
            # Hold the vector file of this snapshot open: the writer of the next generation
            # deletes it, and this reader must still answer from it.
            try:
                self._vector_fd = os.open(self.index_dir / self.vector_file, os.O_RDONLY)
            except FileNotFoundError:
                if not last:
                    self.conn.close()
                    return False
            except OSError:
                pass  # reported with the file's other checks when vectors are first needed
        return True

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        if self._vector_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._vector_fd)
            self._vector_fd = -1

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        return self.vector_count

    def _load_hnsw(self) -> Any:
        if self._hnsw is not None:
            return self._hnsw
        import hnswlib

        if self.vector_count == 0 or not self.vector_file:
            self._hnsw = False
            return self._hnsw
        if "/" in self.vector_file:
            raise IndexCorruptError(f"{self.db_path} names an unexpected vector file; run `semsearch index --rebuild`")
        path = self.index_dir / self.vector_file
        dim = self.manifest.model.dim
        source = path
        if self._vector_fd >= 0 and os.path.exists(f"/proc/self/fd/{self._vector_fd}"):
            source = Path(f"/proc/self/fd/{self._vector_fd}")  # this snapshot's file, even if replaced
        check_vector_file(source, self.vector_slots, dim, self.vector_size, self.vector_sha256, shown=path)
        index = hnswlib.Index(space=self.manifest.hnsw.space, dim=dim)
        try:
            index.load_index(str(source), max_elements=0)
        except (RuntimeError, MemoryError, ValueError) as exc:
            raise IndexCorruptError(f"{path} cannot be loaded ({exc}); run `semsearch index --rebuild`") from None
        index.set_ef(self.manifest.hnsw.ef_search)
        self._hnsw = index
        return index

    def vector_search(self, query: np.ndarray, k: int, ef: int | None = None) -> list[tuple[int, float]]:
        """Nearest chunks by cosine similarity: [(chunk id, cosine)], best first."""
        index = self._load_hnsw()
        if not index:
            return []
        k = max(1, min(k, self.vector_count))
        index.set_ef(max(ef or self.manifest.hnsw.ef_search, k))
        try:
            labels, distances = index.knn_query(query.reshape(1, -1), k=k)
        except RuntimeError:
            # Fewer reachable neighbours than k (heavily deleted graphs): ask for fewer.
            labels, distances = index.knn_query(query.reshape(1, -1), k=max(1, k // 2))
        return [(int(label), float(1.0 - dist)) for label, dist in zip(labels[0], distances[0])]

    def lexical_search(self, match: str, k: int) -> list[tuple[int, float]]:
        """Chunks matching an FTS5 query: [(chunk id, bm25 score, higher is better)], best first."""
        # Rank in FTS alone, then drop rows this generation cannot see (a join per matching row
        # cost ~40% of the query); ask for more when invisible rows crowd the top.
        limit = k + 16
        while True:
            try:
                rows = self.conn.execute(
                    "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                    "ORDER BY bm25(chunks_fts) LIMIT ?",
                    (match, limit),
                ).fetchall()
            except sqlite3.OperationalError:
                return []
            visible: set[int] = set()
            for start in range(0, len(rows), 500):
                part = [r[0] for r in rows[start:start + 500]]
                marks = ",".join("?" * len(part))
                visible.update(i for (i,) in self.conn.execute(
                    f"SELECT id FROM chunks WHERE id IN ({marks}) AND {_visible(self.generation)}", part))
            kept = [(int(i), float(s)) for i, s in rows if i in visible][:k]
            if len(kept) >= k or len(rows) < limit:
                return kept
            limit *= 4

    def fetch_chunks(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        """Chunk records by id (only those visible in this generation)."""
        out: dict[int, ChunkRecord] = {}
        paths: dict[int, Path] = {}  # file id -> path (chunks of one file share it)
        ids = list(dict.fromkeys(int(i) for i in ids))
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(
                "SELECT c.id, c.file_id, f.path, f.display, f.kind, f.title, c.ordinal, c.text, c.char_start, "
                "c.char_end, c.line_start, c.line_end, c.page_start, c.page_end, c.context FROM chunks c "
                f"JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks}) AND {_visible(self.generation, 'c')}",
                part,
            ).fetchall()
            for row in rows:
                path = paths.get(row[1])
                if path is None:
                    path = paths[row[1]] = key_to_path(self.index_dir, row[2])
                out[row[0]] = ChunkRecord(
                    id=row[0], file_id=row[1], path=path, display=row[3],
                    kind=row[4], title=row[5] or "", ordinal=row[6], text=row[7], char_start=row[8],
                    char_end=row[9], line_start=row[10], line_end=row[11], page_start=row[12], page_end=row[13],
                    context=row[14],
                )
        return out

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by chunk id (to score hits that came from the lexical side)."""
        import numpy as np

        out: dict[int, np.ndarray] = {}
        ids = list(dict.fromkeys(int(i) for i in ids))
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for cid, blob in self.conn.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", part):
                out[cid] = np.frombuffer(blob, dtype=np.float32)
        return out

    def files(self) -> Iterator[tuple[Path, int, int, str | None]]:
        """Indexed files: (path, size, mtime_ns, error)."""
        for key, size, mtime, error in self.conn.execute(
            f"SELECT path, size, mtime_ns, error FROM files WHERE {_visible(self.generation)}"
        ):
            yield key_to_path(self.index_dir, key), size, mtime, error

    def stats(self) -> IndexStats:
        files, no_text = self.conn.execute(
            f"SELECT count(*), sum(error IS NOT NULL) FROM files WHERE {_visible(self.generation)}"
        ).fetchone()
        disk = sum(p.stat().st_size for p in self.index_dir.iterdir() if p.is_file())
        return IndexStats(
            files=files or 0, files_without_text=no_text or 0, chunks=self.vector_count,
            generation=self.generation, updated_at=self.updated_at, roots=list(self.roots), disk_bytes=disk,
        )


# --------------------------------------------------------------------------------------------
# Writing


class IndexLock:
    """An exclusive advisory lock on the index folder; the kernel drops it if the holder dies."""

    def __init__(self, index_dir: Path, wait_seconds: float = 0.0) -> None:
        self.path = index_dir / LOCK
        self.wait_seconds = wait_seconds
        self.fd = -1

    def __enter__(self) -> IndexLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    os.close(self.fd)
                    after = (f"it did not finish within --wait {self.wait_seconds:g} s" if self.wait_seconds > 0
                             else "try again when it ends, or wait for it with --wait SECONDS")
                    raise IndexLockedError(
                        f"another `semsearch index` (pid {holder}) is updating {self.path.parent}; {after}"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1


def is_index_dir(folder: Path) -> bool:
    """Whether *folder* holds an index (or the start of one): never a folder of the user's files."""
    return any((folder / name).exists() for name in (MANIFEST, BUILDING, LOCK)) or any(folder.glob("meta-*.sqlite"))


def ensure_index_dir(index_dir: Path) -> bool:
    """Create the index folder, readable by its owner only (it holds the users' text).

    Returns whether it was created. An existing folder must be empty or an index: the index's
    files are never put among the user's.
    """
    try:
        index_dir.mkdir(mode=0o700, parents=True)
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        raise SemsearchError(f"cannot create index folder {index_dir}: {exc.strerror}") from None
    if not index_dir.is_dir():
        raise SemsearchError(f"cannot create index folder {index_dir}: a file is in the way")
    try:
        if not is_index_dir(index_dir) and any(index_dir.iterdir()):
            inner = index_dir / INDEX_DIR_NAME
            hint = f" (its index is {inner})" if is_index_dir(inner) else ""
            raise SemsearchError(f"{index_dir} is not an index and not empty: give --index a new or empty folder{hint}")
    except OSError as exc:
        raise SemsearchError(f"cannot use index folder {index_dir}: {exc.strerror}") from None
    return False


@dataclass
class FinalizeReport:
    generation: int
    added: int
    removed: int
    rebuilt_graph: bool
    seconds: float


class IndexWriter:
    """Updates one index database towards its next generation. Hold an IndexLock while using it."""

    def __init__(self, index_dir: Path, manifest: IndexManifest, *, new_build: bool) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        self.new_build = new_build
        self.db_path = index_dir / manifest.database
        self.conn = _connect(self.db_path, readonly=False)
        with contextlib.suppress(OSError):
            os.chmod(self.db_path, 0o600)
        try:
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"{self.db_path} is damaged ({exc}); run `semsearch index --rebuild`") from None
        state = _get_state(self.conn)
        if not new_build and "generation" not in state:
            # A current database always has a committed generation: this one is empty or foreign.
            self.conn.close()
            raise IndexCorruptError(f"{self.db_path} holds no index; run `semsearch index --rebuild`")
        self.committed = int(state.get("generation", "0"))
        self.working = self.committed + 1
        self._in_tx = False
        self._upgrade_fts()

    def _upgrade_fts(self) -> None:
        """Rebuild a format-2 chunks_fts (text only) with the context column, in one transaction."""
        row = self.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
        if row is None or "context" in row[0]:
            return
        self._begin()
        self.conn.execute("DROP TABLE chunks_fts")
        self.conn.execute(FTS_SCHEMA)
        self.conn.execute("INSERT INTO chunks_fts(rowid, text, context) SELECT id, text, context FROM chunks "
                          f"WHERE {_visible(self.committed)}")
        self.commit()

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
            f"SELECT id, size, mtime_ns, sha256, gen_added, error FROM files WHERE path = ? AND {_visible(self.working)}",
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
    ) -> int:
        """Add a file and all its chunks with their vectors to the next generation."""
        import numpy as np

        self._begin()
        cur = self.conn.execute(
            "INSERT INTO files (path, display, size, mtime_ns, sha256, kind, encoding, title, error, chunk_count, "
            "gen_added) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (key, display, size, mtime_ns, sha256, kind, encoding, title, error, len(chunks), self.working),
        )
        file_id = int(cur.lastrowid or 0)
        if chunks:
            assert vectors is not None and len(vectors) == len(chunks)
            vecs = np.ascontiguousarray(vectors, dtype=np.float32)
            for chunk, vec in zip(chunks, vecs):
                cur = self.conn.execute(
                    "INSERT INTO chunks (file_id, ordinal, text, char_start, char_end, line_start, line_end, "
                    "page_start, page_end, tokens, context, vector, gen_added) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (file_id, chunk.ordinal, chunk.text, chunk.char_start, chunk.char_end, chunk.line_start,
                     chunk.line_end, chunk.page_start, chunk.page_end, chunk.tokens, chunk.context, vec.tobytes(),
                     self.working),
                )
        return file_id

    def vectors_to_reuse(self, sha256: str, chunks: Sequence[Chunk], previous: int | None = None) -> list[bytes | None]:
        """For each of *chunks*, a stored vector (float32 bytes) made from the same embedding input
        (chunk text and context line), or None where it must be embedded.

        Looked for in the file's indexed version *previous* (an edit leaves most chunks as they
        were: 98% of the chunks of the FastAPI docs' 40 longest pages after inserting a paragraph
        mid-file) and in indexed copies of the same content (a renamed, moved or copied file). The
        committed generation counts too, so a file removed by this run (the old name of a renamed
        file) still lends its vectors before they are purged.
        """
        size = self.manifest.model.dim * 4
        wanted = {(c.text, c.context) for c in chunks}
        found: dict[tuple[str, str], bytes] = {}
        sources = [previous] if previous is not None else []
        sources += [file_id for (file_id,) in self.conn.execute(
            f"SELECT id FROM files WHERE sha256 = ? AND error IS NULL "
            f"AND ({_visible(self.committed)} OR {_visible(self.working)}) ORDER BY id DESC LIMIT 4",
            (sha256,),
        )]
        for file_id in dict.fromkeys(sources):
            for text, context, vector in self.conn.execute(
                "SELECT text, context, vector FROM chunks WHERE file_id = ?", (file_id,)
            ):
                if (text, context) in wanted and len(vector) == size:
                    found.setdefault((text, context), vector)
            if len(found) == len(wanted):
                break
        return [found.get((c.text, c.context)) for c in chunks]

    def live_files(self) -> Iterator[tuple[int, bytes]]:
        """(id, path key) of every file in the next generation."""
        yield from self.conn.execute(f"SELECT id, path FROM files WHERE {_visible(self.working)}").fetchall()

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

    def pending_changes(self) -> tuple[int, int]:
        """(chunks to add, chunks to remove) between the committed and the next generation."""
        added = self.conn.execute(
            "SELECT count(*) FROM chunks WHERE gen_added = ? AND gen_removed IS NULL", (self.working,)
        ).fetchone()[0]
        removed = self.conn.execute(
            "SELECT count(*) FROM chunks WHERE gen_removed = ? AND gen_added < ?", (self.working, self.working)
        ).fetchone()[0]
        return int(added), int(removed)

    def _vectors(self, where: str, params: Sequence[Any], batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import numpy as np

        dim = self.manifest.model.dim
        cursor = self.conn.execute(f"SELECT id, vector FROM chunks WHERE {where} ORDER BY id", params)
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vecs

    # -- the commit point --------------------------------------------------------------------

    def finalize(
        self,
        progress: Callable[[int, int], None] | None = None,
        *,
        force: bool = False,
        before_switch: Callable[[], None] | None = None,
    ) -> FinalizeReport | None:
        """Write the next vector file and make the next generation current.

        Returns None when nothing changed (no new generation is made). ``before_switch`` runs
        after the vector file is durable and before readers can see the new generation (a first
        build or rebuild replaces the manifest there).
        """
        import hnswlib

        started = time.perf_counter()
        self.commit()
        added, removed = self.pending_changes()
        if not (added or removed or force or self.new_build):
            return None
        params = self.manifest.hnsw
        dim = self.manifest.model.dim
        state = _get_state(self.conn)
        old_file = state.get("vector_file", "")
        old_count = int(state.get("vector_count", "0"))
        old_slots = int(state.get("vector_slots", str(old_count)))
        live = old_count + added - removed
        rebuild = self.new_build or not old_file or old_count == 0 or removed > REBUILD_DELETED_FRACTION * max(1, old_count)
        index = hnswlib.Index(space=params.space, dim=dim)
        capacity = max(16, live)
        done = 0
        if rebuild:
            index.init_index(max_elements=capacity, M=params.M, ef_construction=params.ef_construction,
                             random_seed=100, allow_replace_deleted=True)
            sources = self._vectors(_visible(self.working), ())
            total = live
        else:
            check_vector_file(self.index_dir / old_file, old_slots, dim, int(state.get("vector_size", "0")),
                              state.get("vector_sha256", ""))
            index.load_index(str(self.index_dir / old_file), max_elements=old_slots + added, allow_replace_deleted=True)
            for ids, _ in self._vectors("gen_removed = ? AND gen_added < ?", (self.working, self.working)):
                for label in ids:
                    with contextlib.suppress(RuntimeError):
                        index.mark_deleted(int(label))
            sources = self._vectors("gen_added = ? AND gen_removed IS NULL", (self.working,))
            total = added
        for ids, vecs in sources:
            index.add_items(vecs, ids, replace_deleted=not rebuild)
            done += len(ids)
            if progress:
                progress(done, total)
        name = f"vectors-{self.manifest.epoch}-{self.working}.hnsw"
        path = self.index_dir / name
        tmp = path.with_name(f".{name}.tmp")
        index.save_index(str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
            written = os.fstat(handle.fileno()).st_size
        if written != index.index_file_size():
            # hnswlib does not check its writes: a full disk leaves a short file, silently.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise OSError(errno.ENOSPC, f"{path.name} was written incompletely (disk full?)")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        _fsync_dir(self.index_dir)
        size = path.stat().st_size
        digest = sha256_file(path)
        self._begin()
        # chunks_fts follows the flip in the same transaction: BM25 statistics never count rows
        # a reader cannot see (pending rows of an interrupted run, removed rows not yet purged).
        self.conn.execute("INSERT INTO chunks_fts(rowid, text, context) SELECT id, text, context FROM chunks "
                          "WHERE gen_added = ? AND gen_removed IS NULL", (self.working,))
        self.conn.execute("INSERT INTO chunks_fts(chunks_fts, rowid, text, context) "
                          "SELECT 'delete', id, text, context FROM chunks "
                          "WHERE gen_removed = ? AND gen_added < ?", (self.working, self.working))
        for key, value in (("vector_file", name), ("vector_count", str(live)),
                           ("vector_slots", str(index.get_current_count())), ("vector_size", str(size)),
                           ("vector_sha256", digest), ("updated_at", repr(time.time())),
                           ("generation", str(self.working))):
            self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))
        if before_switch is None:
            self.commit()  # readers of this database now see the new generation
        else:
            self.commit()  # visible only once the manifest names this database
            before_switch()
        self._purge(self.working)
        self.committed, self.working = self.working, self.working + 1
        for stale in self.index_dir.glob(f"vectors-{self.manifest.epoch}-*.hnsw"):
            if stale.name != name:
                with contextlib.suppress(OSError):
                    stale.unlink()
        return FinalizeReport(self.committed, added, removed, rebuild, time.perf_counter() - started)

    def _purge(self, generation: int) -> None:
        """Delete rows no generation from ``generation`` on can see."""
        self._begin()  # their chunks_fts rows went at the flip
        self.conn.execute("DELETE FROM chunks WHERE gen_removed IS NOT NULL AND gen_removed <= ?", (generation,))
        self.conn.execute("DELETE FROM files WHERE gen_removed IS NOT NULL AND gen_removed <= ?", (generation,))
        self.commit()


def open_writer(
    index_dir: Path, wanted: IndexManifest, *, rebuild: bool = False
) -> tuple[IndexWriter, IndexManifest | None, str]:
    """Open the database to update, starting or resuming a new build when needed.

    Returns (writer, previous manifest or None, why a new build started or "").
    The caller holds the lock.
    """
    ensure_index_dir(index_dir)
    current: IndexManifest | None
    outdated = False
    try:
        current = read_manifest(index_dir)
    except IndexNotFoundError:
        current = None
    except IndexOutdatedError:
        current, rebuild = None, True  # an older format is rebuilt, never mixed
        outdated = True
    except (IndexCorruptError, IndexVersionError):
        if not rebuild:
            raise
        current = None
    reason = ""
    if current is not None and not rebuild:
        if current.same_build(wanted):
            manifest = replace(current, hnsw=wanted.hnsw, format_version=FORMAT_VERSION)
            writer = IndexWriter(index_dir, manifest, new_build=False)  # upgrades an older chunks_fts
            if current.format_version != FORMAT_VERSION:
                current = replace(current, format_version=FORMAT_VERSION)
                write_atomic(index_dir / MANIFEST, current.to_json().encode())
            return writer, current, ""
        reason = _change_reason(current, wanted)
    elif rebuild:
        reason = OUTDATED_REASON if outdated else "rebuild requested"
    # A new build: resume an interrupted one made the same way, else start afresh.
    try:
        pending: IndexManifest | None = read_manifest(index_dir, BUILDING)
    except SemsearchError:
        pending = None
    if pending is not None and pending.same_build(wanted) and not rebuild and (index_dir / pending.database).exists():
        pending = replace(pending, format_version=FORMAT_VERSION)
        return IndexWriter(index_dir, pending, new_build=True), current, reason or "resuming an interrupted build"
    # Past every database in the folder too: one of an unreadable manifest may still hold the roots.
    found = [int(m.group(1)) for p in index_dir.glob("meta-*.sqlite") if (m := re.fullmatch(r"meta-(\d+)\.sqlite", p.name))]
    epoch = max(current.epoch if current else 0, pending.epoch if pending else 0, *found) + 1
    manifest = IndexManifest(**{**asdict_shallow(wanted), "epoch": epoch, "database": f"meta-{epoch}.sqlite"})
    for stale in index_dir.glob(f"meta-{epoch}.sqlite*"):
        stale.unlink()
    write_atomic(index_dir / BUILDING, manifest.to_json().encode())
    return IndexWriter(index_dir, manifest, new_build=True), current, reason


def asdict_shallow(manifest: IndexManifest) -> dict[str, Any]:
    return {f: getattr(manifest, f) for f in manifest.__dataclass_fields__}


def _change_reason(current: IndexManifest, wanted: IndexManifest) -> str:
    if current.model.fingerprint != wanted.model.fingerprint:
        return f"the model changed ({current.model.name} -> {wanted.model.name})"
    if current.model.precision != wanted.model.precision:
        return f"the embedding precision changed ({current.model.precision} -> {wanted.model.precision})"
    if current.chunking != wanted.chunking:
        return "the chunk settings changed"
    return "the HNSW parameters changed"


def discard_pending_build(index_dir: Path, current: IndexManifest) -> None:
    """Delete an unfinished new build (``building.json``, its database and vector files), if any;
    never the files of *current*."""
    try:
        pending = read_manifest(index_dir, BUILDING)
    except SemsearchError:
        if not (index_dir / BUILDING).exists():
            return
        pending = None  # unreadable: only the marker goes
    if pending is not None and pending.database != current.database and pending.epoch != current.epoch:
        for stale in index_dir.iterdir():
            if stale.name.startswith((pending.database, f"vectors-{pending.epoch}-")):
                with contextlib.suppress(OSError):
                    stale.unlink()
    with contextlib.suppress(OSError):
        (index_dir / BUILDING).unlink()


def publish_build(index_dir: Path, manifest: IndexManifest) -> None:
    """Make a finished new build current: replace the manifest, then drop the old files."""
    write_atomic(index_dir / MANIFEST, manifest.to_json().encode())
    with contextlib.suppress(OSError):
        (index_dir / BUILDING).unlink()
    keep = {manifest.database, f"{manifest.database}-wal", f"{manifest.database}-shm"}
    for stale in index_dir.iterdir():
        if (stale.name.startswith("meta-") and stale.name not in keep) or (
            stale.name.startswith("vectors-") and not stale.name.startswith(f"vectors-{manifest.epoch}-")
        ):
            with contextlib.suppress(OSError):
                stale.unlink()
