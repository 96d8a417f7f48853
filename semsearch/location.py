"""Where an index lives: the folder (or PostgreSQL URL) given, else ``$SEMSEARCH_INDEX``, else
the nearest ``.semsearch`` in this folder or above."""

from __future__ import annotations

import os
from pathlib import Path

from semsearch.errors import IndexNotFoundError

__all__ = ["INDEX_ENV", "absolute", "find_index", "is_url", "url_of"]

INDEX_ENV = "SEMSEARCH_INDEX"


def absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def is_url(path: object) -> bool:
    """Whether *path* is a PostgreSQL URL."""
    from semsearch.pgstore import is_url as postgres_url

    return postgres_url(path)


def url_of(path: str | os.PathLike[str] | None) -> str | None:
    """A PostgreSQL URL given as the index (or in $SEMSEARCH_INDEX when no index is given)."""
    if path is None:
        path = os.environ.get(INDEX_ENV) or None
    return str(path) if is_url(path) else None


def find_index(path: str | os.PathLike[str] | None = None) -> Path:
    """The index a search uses: *path* (an index folder, or the folder that holds ``.semsearch``),
    else ``$SEMSEARCH_INDEX``, else the nearest ``.semsearch`` in this folder or above."""
    from semsearch.store import INDEX_DIR_NAME, find_index_dir, is_index_dir, looks_like_index

    if path is None and os.environ.get(INDEX_ENV):
        path = os.environ[INDEX_ENV]
    if is_url(path):
        return Path.cwd() / INDEX_DIR_NAME  # the project is this folder: paths are shown relative to it
    if path is not None:
        given = absolute(path)
        inner = given / INDEX_DIR_NAME
        # The folder that holds an index (a project folder, even one with a manifest.json of its
        # own) stands for its index.
        return inner if not is_index_dir(given) and looks_like_index(inner) else given
    found = find_index_dir()
    if found is None:
        raise IndexNotFoundError("no index here or in any parent folder", remedy="index_first")
    return found
