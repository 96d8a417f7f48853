"""Which storage engine holds an index, and opening it: the local folder (:mod:`semsearch.store`,
the default) or PostgreSQL (:mod:`semsearch.pgstore`), named by a ``postgresql://`` URL or by the
pointer a project's ``.semsearch`` folder keeps of one. Both answer the same reader calls."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import SemsearchError

if TYPE_CHECKING:
    from semsearch.pgstore import Target
    from semsearch.store import IndexManifest


def postgres_target(index_dir: Path, url: str | None) -> Target | None:
    """The PostgreSQL index for *index_dir* (*url*, else its pointer), or None: a local one."""
    from semsearch.pgstore.registry import target_of

    return target_of(index_dir, url)


def open_reader(index_dir: Path, url: str | None = None) -> Any:
    """A reader of the index's current state: an ``IndexReader`` or a ``PgReader``."""
    target = postgres_target(index_dir, url)
    if target is not None:
        from semsearch.pgstore.reader import PgReader

        return PgReader(target, index_dir)
    from semsearch.store import IndexReader

    return IndexReader(index_dir)


def is_postgres(index_dir: Path, url: str | None = None) -> bool:
    return postgres_target(index_dir, url) is not None


def existing_manifest(index_dir: Path, url: str | None = None) -> IndexManifest | None:
    """The settings last asked of the index: those of a build under way, else the index's own;
    None for a new index."""
    target = postgres_target(index_dir, url)
    if target is not None:
        return _postgres_manifest(target)
    from semsearch.store import BUILDING, MANIFEST, read_manifest

    for name in (BUILDING, MANIFEST):
        with contextlib.suppress(SemsearchError):
            return read_manifest(index_dir, name)
    return None


def _postgres_manifest(target: Target) -> IndexManifest | None:
    from semsearch.errors import IndexNotFoundError
    from semsearch.pgstore.connection import connect, errors_as_one_line
    from semsearch.pgstore.registry import building_manifest, current_build

    conn = connect(target, autocommit=True)
    try:
        with errors_as_one_line(target, "read"):
            pending = building_manifest(conn, target)
            if pending is not None:
                return pending
            try:
                return current_build(conn, target).manifest
            except IndexNotFoundError:
                return None
    finally:
        conn.close()
