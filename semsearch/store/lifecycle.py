"""The build lifecycle: which database a run writes, resuming or starting new builds, publishing them."""

from __future__ import annotations

import contextlib
import json
import re
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
from semsearch.store.database import decode_walk_settings
from semsearch.store.format import BUILDING, FORMAT_VERSION, MANIFEST, IndexManifest, read_manifest
from semsearch.store.layout import ensure_index_dir
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
            manifest = replace(current, vector_params=wanted.vector_params, format_version=FORMAT_VERSION)
            writer = IndexWriter(index_dir, manifest, new_build=False)  # upgrades an older chunks_fts
            if current.format_version != FORMAT_VERSION:
                current = replace(current, format_version=FORMAT_VERSION)
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
        pending = replace(pending, format_version=FORMAT_VERSION)
        return IndexWriter(index_dir, pending, new_build=True), current, reason or "resuming an interrupted build"
    # Past every database in the folder too: one of an unreadable manifest may still hold the roots.
    found = [
        int(m.group(1)) for p in index_dir.glob("meta-*.sqlite") if (m := re.fullmatch(r"meta-(\d+)\.sqlite", p.name))
    ]
    epoch = max(current.epoch if current else 0, pending.epoch if pending else 0, *found) + 1
    manifest = replace(wanted, epoch=epoch, database=f"meta-{epoch}.sqlite")
    for stale in index_dir.glob(f"meta-{epoch}.sqlite*"):
        stale.unlink()
    files.write_atomic(index_dir / BUILDING, manifest.to_json().encode())
    return IndexWriter(index_dir, manifest, new_build=True), current, reason


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
    files.write_atomic(index_dir / MANIFEST, manifest.to_json().encode())
    with contextlib.suppress(OSError):
        (index_dir / BUILDING).unlink()
    keep = {manifest.database, f"{manifest.database}-wal", f"{manifest.database}-shm"}
    for stale in index_dir.iterdir():
        if (stale.name.startswith("meta-") and stale.name not in keep) or (
            stale.name.startswith("vectors-") and not stale.name.startswith(f"vectors-{manifest.epoch}-")
        ):
            with contextlib.suppress(OSError):
                stale.unlink()


def holds_files(index_dir: Path) -> bool:
    """Whether any database in the index folder has stored a file (visible or not)."""
    for db in index_dir.glob("meta-*.sqlite"):
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
        candidates += sorted(index_dir.glob("meta-*.sqlite"), key=lambda p: p.stat().st_mtime, reverse=True)
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
    return [], {}
