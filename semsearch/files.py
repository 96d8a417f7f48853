"""Durable file writes and checksums, shared by the index folder and the vector files."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


def folder_prefix(folder: str | os.PathLike[str]) -> str:
    """A folder's path as a prefix of the paths below it ("/a/b" -> "/a/b/", "/" -> "/"): what
    string comparisons of paths on hot paths use instead of pathlib's relative_to."""
    root = os.fspath(folder)
    return root if root.endswith(os.sep) else root + os.sep


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in *directory* durable (best effort where directories cannot be synced)."""
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
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
