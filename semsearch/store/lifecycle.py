"""The build lifecycle: which database a run writes, resuming or starting new builds, publishing them."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from semsearch import files
from semsearch.errors import (
    IndexCorruptError,
    IndexNotFoundError,
    IndexOutdatedError,
    IndexVersionError,
    SemsearchError,
)
from semsearch.store.database import connect, decode_walk_settings
from semsearch.store.format import BUILDING, FORMAT_VERSION, MANIFEST, IndexManifest, read_manifest
from semsearch.store.layout import DATABASE_FILE, ROOTS, VECTOR_FILE, ensure_index_dir, own_files
from semsearch.store.writer import IndexWriter

OUTDATED_REASON = "the index was made by an older version of semsearch"  # open_writer's reason to rebuild


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
            check_current_database(index_dir, current)  # never a new empty database in its place
            reached = current.with_access(wanted)  # a served model's endpoint given anew is kept
            manifest = replace(reached, vector_params=wanted.vector_params, format_version=FORMAT_VERSION)
            writer = IndexWriter(index_dir, manifest, new_build=False)  # upgrades an older chunks_fts
            if current.format_version != FORMAT_VERSION or reached is not current:
                current = replace(reached, format_version=FORMAT_VERSION)
                files.write_atomic(index_dir / MANIFEST, current.to_json().encode())
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
        reached = pending.with_access(wanted)
        if reached is not pending:
            files.write_atomic(index_dir / BUILDING, reached.to_json().encode())
        pending = replace(reached, format_version=FORMAT_VERSION)
        return IndexWriter(index_dir, pending, new_build=True), current, reason or "resuming an interrupted build"
    # Past every database in the folder too: one of an unreadable manifest may still hold the roots.
    found = [int(m.group(1)) for p in own_files(index_dir, DATABASE_FILE) if (m := DATABASE_FILE.fullmatch(p.name))]
    epoch = max(current.epoch if current else 0, pending.epoch if pending else 0, *found) + 1
    manifest = replace(wanted, epoch=epoch, database=f"meta-{epoch}.sqlite")
    for stale in own_files(index_dir, DATABASE_FILE):
        if _epoch_of(stale.name) == epoch:  # a database of that number left by an older version
            stale.unlink()
    files.write_atomic(index_dir / BUILDING, manifest.to_json().encode())
    return IndexWriter(index_dir, manifest, new_build=True), current, reason


def check_current_database(index_dir: Path, current: IndexManifest) -> None:
    """Raise :class:`IndexCorruptError` when the database the manifest names is missing or holds
    no index: damage to repair by a rebuild, never a database to start anew (which would then
    read as a healthy empty index)."""
    db_path = index_dir / current.database
    conn = connect(db_path, readonly=True)  # missing or unreadable: IndexCorruptError
    try:
        row = conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(f"{db_path} is damaged ({exc})", path=db_path, remedy="rebuild") from None
    finally:
        conn.close()
    if row is None:
        raise IndexCorruptError(f"{db_path} holds no index", path=db_path, remedy="rebuild")


def _change_reason(current: IndexManifest, wanted: IndexManifest) -> str:
    if current.model.fingerprint != wanted.model.fingerprint:
        return f"the model changed ({current.model.name} -> {wanted.model.name})"
    if current.model.precision != wanted.model.precision:
        return f"the embedding precision changed ({current.model.precision} -> {wanted.model.precision})"
    if current.chunking != wanted.chunking:
        return "the chunk settings changed"
    if current.vector_index != wanted.vector_index:
        return f"the vector index changed ({current.vector_index} -> {wanted.vector_index})"
    return f"the {current.vector_index.upper()} parameters changed"


def _epoch_of(name: str) -> int | None:
    """The build (epoch) a database or vector file of the index folder belongs to."""
    m = DATABASE_FILE.fullmatch(name) or VECTOR_FILE.fullmatch(name)
    return int(m.group(1)) if m else None


def discard_pending_build(index_dir: Path, current: IndexManifest) -> None:
    """Delete an unfinished new build (``building.json``, its database and vector files), if any;
    never the files of *current*, never a file semsearch did not write."""
    try:
        pending = read_manifest(index_dir, BUILDING)
    except SemsearchError:
        if not (index_dir / BUILDING).exists():
            return
        pending = None  # unreadable: only the marker goes
    if pending is not None and pending.database != current.database and pending.epoch != current.epoch:
        for stale in own_files(index_dir):
            if _epoch_of(stale.name) == pending.epoch:
                with contextlib.suppress(OSError):
                    stale.unlink()
    with contextlib.suppress(OSError):
        (index_dir / BUILDING).unlink()


def publish_build(index_dir: Path, manifest: IndexManifest) -> None:
    """Make a finished new build current: replace the manifest, then drop the old builds' files
    (only database and vector files of semsearch's own names: nothing else in the folder)."""
    files.write_atomic(index_dir / MANIFEST, manifest.to_json().encode())
    with contextlib.suppress(OSError):
        (index_dir / BUILDING).unlink()
    for stale in own_files(index_dir):
        epoch = _epoch_of(stale.name)
        if epoch is not None and epoch != manifest.epoch:
            with contextlib.suppress(OSError):
                stale.unlink()


def holds_files(index_dir: Path) -> bool:
    """Whether any database in the index folder has stored a file (visible or not)."""
    for db in own_files(index_dir, DATABASE_FILE):
        if not db.name.endswith(".sqlite"):
            continue
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                if conn.execute("SELECT 1 FROM files LIMIT 1").fetchone():
                    return True
            finally:
                conn.close()
    return False


def previous_state(index_dir: Path, previous: IndexManifest | None) -> tuple[list[str], dict[str, Any]]:
    """Roots and walk settings of the index being replaced (a rebuild re-walks its roots with its
    settings), or, when its manifest is damaged, of any database left in the folder that still reads."""
    candidates = [index_dir / previous.database] if previous is not None else []
    with contextlib.suppress(OSError):
        found = [p for p in own_files(index_dir, DATABASE_FILE) if p.name.endswith(".sqlite")]
        candidates += sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
    for db in candidates:
        with contextlib.suppress(sqlite3.Error, ValueError, TypeError, OSError):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                state = dict(conn.execute("SELECT key, value FROM state WHERE key IN ('roots', 'walk')").fetchall())
            finally:
                conn.close()
            roots = json.loads(state.get("roots", "[]"))
            # The replaced index's own database answers even with no roots; a leftover only with some.
            own = previous is not None and db == candidates[0]
            if isinstance(roots, list) and (roots or own) and all(isinstance(r, str) for r in roots):
                return roots, decode_walk_settings(state.get("walk"))
    # Every database gone or unreadable: the copy the last run left beside them.
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((index_dir / ROOTS).read_bytes())
        roots = data.get("roots") if isinstance(data, dict) else None
        if isinstance(roots, list) and roots and all(isinstance(r, str) for r in roots):
            walk = data.get("walk")
            return roots, walk if isinstance(walk, dict) else {}
    return [], {}


def remember_roots(index_dir: Path, roots: list[str], walk: dict[str, Any]) -> None:
    """Keep a copy of the index's roots and walk settings beside its database (``roots.json``):
    a rebuild after the database was lost still knows which folders to index."""
    data = (json.dumps({"roots": roots, "walk": walk}, indent=2, sort_keys=True) + "\n").encode()
    with contextlib.suppress(OSError):
        if (index_dir / ROOTS).read_bytes() == data:
            return
    with contextlib.suppress(OSError):  # only a copy: the database holds them
        files.write_atomic(index_dir / ROOTS, data)
