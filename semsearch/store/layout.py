"""Where an index lives: finding it, creating its folder, the paths stored in it, and its write lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from semsearch import files
from semsearch.errors import IndexLockedError, InvalidOptionError, SemsearchError
from semsearch.store.format import BUILDING, FORMAT_NAME, MANIFEST

INDEX_DIR_NAME = ".semsearch"
LOCK = "lock"
OCR_CACHE = "ocr-cache.sqlite"
ROOTS = "roots.json"  # a copy of the roots and walk settings, for a rebuild that lost its database
# The index folder's own mark: written first into a folder semsearch makes (or is given empty),
# so that a folder is taken for an index only when semsearch made it.
TAG = "semsearch-index.tag"
TAG_SIGNATURE = b"semsearch-index\n"
_TAG_TEXT = TAG_SIGNATURE + (
    b"This folder is a semsearch index (https://pypi.org/project/semsearch/). semsearch writes,\n"
    b"replaces and deletes only its own files here; deleting the folder deletes the index.\n"
)
# Every name semsearch writes in an index folder: cleanups delete nothing else. A vector file is
# named by the engine's suffix; write_atomic's and the vector engine's temporary names wrap them.
_OWN = (
    r"manifest\.json|building\.json|roots\.json|lock|semsearch-index\.tag"
    r"|(?:meta-\d+|ocr-cache)\.sqlite(?:-wal|-shm|-journal)?"
    r"|vectors-\d+-\d+(?:-delta)?\.[a-z0-9]+(?:\.sketch)?"
)
_OWN_FILE = re.compile(rf"(?:{_OWN})|\.(?:{_OWN})\.tmp(?:-\d+)?")
_TAG_TMP = re.compile(r"\.semsearch-index\.tag\.tmp-\d+")
DATABASE_FILE = re.compile(r"meta-(\d+)\.sqlite(-wal|-shm|-journal)?")
VECTOR_FILE = re.compile(r"\.?vectors-(\d+)-\d+(?:-delta)?\.[a-z0-9]+(?:\.sketch)?(?:\.tmp(?:-\d+)?)?")


def is_own_file(name: str) -> bool:
    """Whether *name* is one semsearch writes in an index folder (the only names it deletes)."""
    return _OWN_FILE.fullmatch(name) is not None


def own_files(index_dir: Path, pattern: re.Pattern[str] = _OWN_FILE) -> list[Path]:
    """The index folder's own files whose names match *pattern* (never a folder, never a link)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(index_dir):
            if pattern.fullmatch(entry.name) and is_own_file(entry.name) and entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def ocr_cache_path(index_dir: Path) -> Path:
    """The index folder's OCR cache (see semsearch.store.format)."""
    return index_dir / OCR_CACHE


def find_index_dir(start: Path | None = None) -> Path | None:
    """Walk up from ``start`` (default: the current directory) to the nearest index folder."""
    here = Path(os.path.abspath(start or Path.cwd()))
    for folder in (here, *here.parents):
        candidate = folder / INDEX_DIR_NAME
        if looks_like_index(candidate):
            return candidate
    return None


def path_key(index_dir: Path, path: Path) -> bytes:
    """How a file path is stored: relative to the folder that holds the index when inside it
    (so a project can be moved), else absolute; as bytes, so any file name round-trips."""
    return path_keys(index_dir)(os.path.abspath(path))


def path_keys(index_dir: Path) -> Callable[[str], bytes]:
    """:func:`path_key` for paths already absolute and normal (the walker's), as one function
    of string operations: this runs for every file of every update."""
    root, prefix = _project_prefix(os.fspath(index_dir))
    cut, posix = len(prefix), os.sep == "/"
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode's

    def key(full: str) -> bytes:
        if full == root:
            return b"."
        if full.startswith(prefix):
            return (full[cut:] if posix else full[cut:].replace(os.sep, "/")).encode(encoding, errors)
        return full.encode(encoding, errors)

    return key


@functools.lru_cache(maxsize=16)
def _project_prefix(index_dir: str) -> tuple[str, str]:
    """The folder that holds the index, and that folder as a prefix of the paths below it."""
    root = os.path.dirname(index_dir.rstrip(os.sep)) or os.sep
    return root, files.folder_prefix(root)


def within_project(index_dir: Path, path: Path | str) -> Path:
    """*path* made absolute; when it lies outside the folder that holds the index only by way of
    a link to it (a shell's ``$PWD`` through a symlink, the project reached by another name), the
    same place below that folder, where paths are stored and compared. A link inside the project
    is left as it is."""
    project = os.path.abspath(index_dir.parent)
    text = os.path.abspath(path)
    if text == project or text.startswith(files.folder_prefix(project)):
        return Path(text)
    real, real_project = os.path.realpath(text), os.path.realpath(project)
    if real == real_project:
        return Path(project)
    if real.startswith(files.folder_prefix(real_project)):
        return Path(project) / os.path.relpath(real, real_project)
    return Path(text)


def key_to_path(index_dir: Path, key: bytes) -> Path:
    decoded = os.fsdecode(key)
    return Path(decoded) if os.path.isabs(decoded) else index_dir.parent / decoded


def display_name(path: Path | str) -> str:
    """A file name as text for people; bytes that are not UTF-8 are shown escaped."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


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
                    after = (
                        f"it did not finish within wait={self.wait_seconds:g} s"
                        if self.wait_seconds > 0
                        else "try again when it ends, or wait for it (wait=SECONDS)"
                    )
                    raise IndexLockedError(
                        f"another update (pid {holder}) is writing {self.path.parent}; {after}",
                        path=self.path.parent,
                        holder=holder,
                        waited=self.wait_seconds,
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


def lock_holder(index_dir: Path) -> int | None:
    """The pid of the live process that holds the index's write lock (None: none does), seen
    without taking the lock: the pid the holder wrote, alive, and (on Linux) a lock on the file."""
    path = index_dir / LOCK
    try:
        pid = int(path.read_bytes()[:32].decode("ascii").strip())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return None  # gone: its lock went with it
    return pid if _flock_held(st) is not False else None


def _flock_held(st: os.stat_result) -> bool | None:
    """Whether /proc/locks lists a granted flock on the file of *st* (None: cannot tell)."""
    try:
        with open("/proc/locks") as handle:
            table = handle.read()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; a waiter's line has "->" after the number.
    # The inode alone: an overlay file system may show another device number than stat's.
    inode = f":{st.st_ino}"
    return any(
        len(parts) >= 8 and parts[1] == "FLOCK" and parts[5].endswith(inode)
        for parts in map(str.split, table.splitlines())
    )


def build_under_way(index_dir: Path) -> str:
    """Who is building the unfinished build of *index_dir* and how far it got ("pid 42, 120
    files stored so far"), or "" when no live process holds its lock (an interrupted build)."""
    pid = lock_holder(index_dir)
    if pid is None:
        return ""
    stored = ""
    with contextlib.suppress(OSError, ValueError, sqlite3.Error):
        with open(index_dir / BUILDING, "rb") as handle:
            database = json.loads(handle.read(1 << 20)).get("database", "")
        if DATABASE_FILE.fullmatch(database):
            conn = sqlite3.connect(f"file:{urllib.parse.quote(os.fspath(index_dir / database))}?mode=ro", uri=True)
            try:
                (count,) = conn.execute("SELECT count(*) FROM files WHERE gen_removed IS NULL").fetchone()
            finally:
                conn.close()
            stored = f", {count} file{'' if count == 1 else 's'} stored so far"
    return f"pid {pid}{stored}"


POSTGRES_POINTER = "postgres.json"  # a project's pointer to its PostgreSQL index (semsearch.pgstore)


def is_index_dir(folder: Path) -> bool:
    """Whether *folder* is an index (or the start of one) that semsearch made: it holds the tag,
    or (an index from before the tag) a semsearch manifest or database. A folder of the user's
    files that merely holds a ``manifest.json`` or a ``meta-*.sqlite`` is none."""
    return (
        has_tag(folder)
        or _is_semsearch_manifest(folder / MANIFEST)
        or _is_semsearch_manifest(folder / BUILDING)
        or any(_is_semsearch_database(p) for p in own_files(folder, DATABASE_FILE) if p.name.endswith(".sqlite"))
    )


def looks_like_index(folder: Path) -> bool:
    """Whether *folder* is an index to read: one of semsearch's (:func:`is_index_dir`) holding a
    manifest or an unfinished first build, or a ``.semsearch`` folder that does (its damage is then
    reported). A folder of only a kept OCR cache is none, so it never hides an index further up.
    Writing needs :func:`is_index_dir`. A folder that points at a PostgreSQL index (its
    ``postgres.json``) is one too."""
    if (folder / POSTGRES_POINTER).is_file() and is_index_dir(folder):
        return True
    if not ((folder / MANIFEST).exists() or (folder / BUILDING).exists()):
        return False
    return folder.name == INDEX_DIR_NAME or is_index_dir(folder)


def has_tag(folder: Path) -> bool:
    try:
        with open(folder / TAG, "rb") as handle:
            return handle.read(len(TAG_SIGNATURE)) == TAG_SIGNATURE
    except OSError:
        return False


def write_tag(index_dir: Path) -> None:
    """Mark *index_dir* as an index (an index from before the tag gets it at its next update)."""
    if not has_tag(index_dir):
        files.write_atomic(index_dir / TAG, _TAG_TEXT)


def _is_semsearch_manifest(path: Path) -> bool:
    """A manifest semsearch wrote (of any version), by its content; not a web app's manifest.json."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _is_semsearch_database(path: Path) -> bool:
    """A database with semsearch's tables, read without writing anything beside it (immutable)."""
    with contextlib.suppress(OSError, sqlite3.Error):
        with open(path, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                return False
        conn = sqlite3.connect(f"file:{urllib.parse.quote(os.fspath(path))}?mode=ro&immutable=1", uri=True)
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
        return {"state", "files", "chunks"} <= names
    return False


def discard_empty_index(index_dir: Path) -> None:
    """Remove a new index folder that stored no file (a first run that failed or was cut short),
    keeping its OCR cache when it holds pages (the next run then recognises none of them again).

    Only semsearch's own files go, and the folder only once empty. A folder with only the cache
    (and the tag) is no index (``find_index_dir`` looks for a manifest), so it never hides an
    index further up."""
    cache = index_dir / OCR_CACHE
    keep = False
    with contextlib.suppress(OSError, sqlite3.Error):
        if cache.is_file():
            conn = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
            try:
                keep = conn.execute("SELECT 1 FROM pages LIMIT 1").fetchone() is not None
            finally:
                conn.close()
    for entry in own_files(index_dir):
        if keep and (entry.name.startswith(OCR_CACHE) or entry.name == TAG):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
    if not keep:
        with contextlib.suppress(OSError):
            index_dir.rmdir()  # only when empty: a file of anyone else's stays, and the folder


def ensure_index_dir(index_dir: Path) -> bool:
    """Create the index folder, readable by its owner only (it holds the users' text).

    Returns whether it was created. An existing folder must be empty or an index: the index's
    files are never put among the user's.
    """
    try:
        index_dir.mkdir(mode=0o700, parents=True)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise SemsearchError(f"cannot create index folder {index_dir}: {exc.strerror}") from None
    if not created:
        check_index_folder(index_dir)
    try:
        write_tag(index_dir)
        for stale in own_files(index_dir, _TAG_TMP):  # of a run killed while it wrote the tag
            stale.unlink()
    except OSError as exc:
        if created or not is_index_dir(index_dir):
            raise SemsearchError(f"cannot write in index folder {index_dir}: {exc.strerror}", path=index_dir) from None
        # An index from before the tag in a folder this run cannot write: the update says so.
    return created


def check_index_folder(index_dir: Path) -> None:
    """Refuse a folder an index cannot go in: a file, or a folder of the user's files (neither
    empty nor an index). A folder that does not exist yet is fine."""
    if not os.path.lexists(index_dir):
        return
    if not index_dir.is_dir():
        raise InvalidOptionError(
            f"cannot create index folder {index_dir}: a file is in the way", options=("path",), path=index_dir
        )
    try:
        # A first run killed while it wrote the tag leaves only the tag's temporary file.
        if not is_index_dir(index_dir) and any(not _TAG_TMP.fullmatch(p.name) for p in index_dir.iterdir()):
            inner = index_dir / INDEX_DIR_NAME
            hint = f" (its index is {inner})" if is_index_dir(inner) else ""
            raise InvalidOptionError(
                f"{index_dir} is not an index and not empty (semsearch writes only in a folder of its "
                f"own): give {{path}} a new or empty folder{hint}",
                options=("path",),
                path=index_dir,
            )
    except OSError as exc:
        raise SemsearchError(f"cannot use index folder {index_dir}: {exc.strerror}", path=index_dir) from None
