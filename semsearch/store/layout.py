"""Where an index lives: finding it, creating its folder, the paths stored in it, and its write lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from semsearch import files
from semsearch.errors import IndexLockedError, InvalidOptionError, SemsearchError
from semsearch.store.format import BUILDING, MANIFEST

INDEX_DIR_NAME = ".semsearch"
LOCK = "lock"
OCR_CACHE = "ocr-cache.sqlite"


def ocr_cache_path(index_dir: Path) -> Path:
    """The index folder's OCR cache (see semsearch.store.format)."""
    return index_dir / OCR_CACHE


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


def is_index_dir(folder: Path) -> bool:
    """Whether *folder* holds an index (or the start of one): never a folder of the user's files."""
    return any((folder / name).exists() for name in (MANIFEST, BUILDING, LOCK, OCR_CACHE)) or any(
        folder.glob("meta-*.sqlite")
    )


def discard_empty_index(index_dir: Path) -> None:
    """Remove a new index folder that stored no file (a first run that failed or was cut short),
    keeping its OCR cache when it holds pages (the next run then recognises none of them again).

    A folder with only the cache is no index (``find_index_dir`` looks for a manifest), so it
    never hides an index further up."""
    import shutil

    cache = index_dir / OCR_CACHE
    keep = False
    with contextlib.suppress(OSError, sqlite3.Error):
        if cache.is_file():
            conn = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
            try:
                keep = conn.execute("SELECT 1 FROM pages LIMIT 1").fetchone() is not None
            finally:
                conn.close()
    if not keep:
        shutil.rmtree(index_dir, ignore_errors=True)
        return
    for entry in index_dir.iterdir():
        if entry.name == OCR_CACHE:
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()


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
    check_index_folder(index_dir)
    return False


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
        if not is_index_dir(index_dir) and any(index_dir.iterdir()):
            inner = index_dir / INDEX_DIR_NAME
            hint = f" (its index is {inner})" if is_index_dir(inner) else ""
            raise InvalidOptionError(
                f"{index_dir} is not an index and not empty: give {{path}} a new or empty folder{hint}",
                options=("path",),
                path=index_dir,
            )
    except OSError as exc:
        raise SemsearchError(f"cannot use index folder {index_dir}: {exc.strerror}", path=index_dir) from None
