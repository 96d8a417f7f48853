"""A project's builds in the database: which is current, starting or resuming a new one, the
writers' advisory lock, and the pointer folder that lets ``semsearch query`` find the index again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import IndexLockedError, IndexNotFoundError, SemsearchError
from semsearch.pgstore.connection import (
    Target,
    check_pgvector,
    connect,
    errors_as_one_line,
    parse_target,
    psycopg_module,
    register_vectors,
)
from semsearch.pgstore.schema import (
    MIGRATIONS,
    REGISTRY,
    REGISTRY_SQL,
    SCHEMA_VERSION,
    check_version,
    create_build,
)

if TYPE_CHECKING:
    import psycopg

    from semsearch.pgstore.writer import PgWriter
    from semsearch.store import IndexManifest

from semsearch.store.layout import POSTGRES_POINTER as POINTER  # the URL, never a password

ENGINE = "pgvector"  # the manifest's vector_index for PostgreSQL builds


@dataclass(frozen=True)
class Build:
    schema: str
    manifest: IndexManifest
    generation: int


def search_path(conn: psycopg.Connection[Any], schema: str) -> str:
    """The SET that puts *schema* first, then the schema that holds pgvector's types."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    ext = row[0] if row else "public"
    return f'SET search_path = "{schema}", "{ext}"'


def _manifest(text: str, where: str) -> IndexManifest:
    from semsearch.store import IndexManifest

    return IndexManifest.from_json(text, Path(where))


def current_build(conn: psycopg.Connection[Any], target: Target, *, manifest: bool = True) -> Build:
    """The project's current build (IndexNotFoundError when it has none)."""
    psycopg = psycopg_module()
    try:
        row = conn.execute(f"SELECT live_schema FROM {REGISTRY}.projects WHERE name = %s", (target.project,)).fetchone()
    except psycopg.errors.UndefinedTable:
        row = None
    if row is None or row[0] is None:
        raise IndexNotFoundError(f"no index at {target.shown}", remedy="index_first")
    schema = str(row[0])
    found = conn.execute(
        f'SELECT key, value FROM "{schema}".meta WHERE key IN (%s, %s, %s)',
        ("generation", "manifest", "schema_version"),
    ).fetchall()
    meta = dict(found)
    check_version(int(meta.get("schema_version", SCHEMA_VERSION)), target.shown)
    if not manifest:
        return Build(schema, None, int(meta.get("generation", 0)))  # type: ignore[arg-type]
    return Build(schema, _manifest(meta["manifest"], target.shown), int(meta.get("generation", 0)))


def lock_key(target: Target) -> int:
    digest = hashlib.sha256(f"semsearch:{target.project}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def take_lock(conn: psycopg.Connection[Any], target: Target, wait: float, index_dir: Path) -> None:
    """The project's writer lock (a session advisory lock: it goes with the connection, so a killed
    writer holds nothing). IndexLockedError after *wait* seconds."""
    deadline = time.monotonic() + max(wait, 0.0)
    key = lock_key(target)
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        conn.commit()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise IndexLockedError(
                f"another update is writing {target.shown}", path=index_dir, holder=target.shown, waited=wait
            )
        time.sleep(0.2)


def _ensure_registry(conn: psycopg.Connection[Any]) -> None:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{REGISTRY}.projects",)).fetchone()
    if exists is None or exists[0] is None:
        conn.execute(REGISTRY_SQL)
        conn.commit()


def open_writer(
    target: Target, index_dir: Path, wanted: IndexManifest, *, rebuild: bool, wait: float
) -> tuple[PgWriter, IndexManifest | None, str]:
    """The writer of the next generation (the lock taken), starting or resuming a new build when
    the model or chunking changed. Returns (writer, current manifest or None, why a new build)."""
    from semsearch.pgstore.writer import PgWriter

    conn = connect(target)
    try:
        with errors_as_one_line(target, "write"):
            check_pgvector(conn, target, create=True)
            conn.commit()
            register_vectors(conn)
            take_lock(conn, target, wait, index_dir)
            _ensure_registry(conn)
            drop_old_builds(conn, target)
            current = _current_or_none(conn, target)
            reason = ""
            if current is not None and not rebuild:
                if current.manifest.same_build(wanted):
                    _use(conn, current.schema)
                    _migrate(conn, current.schema)
                    manifest = replace(_reached(conn, current.manifest, wanted), vector_params=wanted.vector_params)
                    writer = PgWriter(conn, target, current.schema, manifest, index_dir, new_build=False)
                    return writer, current.manifest, ""
                reason = _change_reason(current.manifest, wanted)
            elif rebuild:
                reason = "rebuild requested"
            schema, manifest, resumed = _new_build(conn, target, wanted, rebuild)
            writer = PgWriter(conn, target, schema, manifest, index_dir, new_build=True)
            if resumed:
                reason = reason or "resuming an interrupted build"
            return writer, current.manifest if current else None, reason
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise


def _reached(conn: psycopg.Connection[Any], manifest: IndexManifest, wanted: IndexManifest) -> IndexManifest:
    """*manifest* with a served model's endpoint as given on this run, stored in the build the
    search path names (later runs and queries use it)."""
    reached = manifest.with_access(wanted)
    if reached is not manifest:
        conn.execute("UPDATE meta SET value = %s WHERE key = 'manifest'", (reached.to_json(),))
        conn.commit()
    return reached


def _change_reason(current: IndexManifest, wanted: IndexManifest) -> str:
    from semsearch.store.lifecycle import _change_reason as reason

    return reason(current, wanted)


def _current_or_none(conn: psycopg.Connection[Any], target: Target) -> Build | None:
    try:
        return current_build(conn, target)
    except IndexNotFoundError:
        conn.rollback()
        return None


def _use(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(search_path(conn, schema))
    conn.commit()


def _migrate(conn: psycopg.Connection[Any], schema: str) -> None:
    """Numbered migrations, in one transaction, up to SCHEMA_VERSION (under the writer's lock)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 1
    check_version(version, schema)
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for sql in MIGRATIONS[step]:
            conn.execute(sql)
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(step),))
    conn.commit()


def _new_build(
    conn: psycopg.Connection[Any], target: Target, wanted: IndexManifest, rebuild: bool
) -> tuple[str, IndexManifest, bool]:
    """Resume the project's build under way when made the same way, else start one afresh."""
    row = conn.execute(
        f"SELECT building_schema FROM {REGISTRY}.projects WHERE name = %s FOR UPDATE", (target.project,)
    ).fetchone()
    building = row[0] if row else None
    if building:
        meta = conn.execute(
            f'SELECT value FROM "{building}".meta WHERE key = %s', ("manifest",)
        ).fetchone() if _schema_exists(conn, building) else None  # fmt: skip
        if meta is not None and not rebuild:
            pending = _manifest(meta[0], target.shown)
            if pending.same_build(wanted):
                conn.commit()
                _use(conn, building)
                return building, _reached(conn, pending, wanted), True
        if _schema_exists(conn, building):
            conn.execute(f'DROP SCHEMA "{building}" CASCADE')
    epoch = int(time.time() * 1000)
    schema = f"semsearch_{target.project}_{epoch}"
    manifest = replace(wanted, epoch=epoch, database=schema)
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(search_path(conn, schema))
    conn.execute(create_build(wanted.model.dim, str(wanted.vector_params.get("type", "halfvec"))))
    conn.execute(
        "INSERT INTO meta VALUES ('manifest', %s), ('schema_version', %s), ('generation', '0')",
        (manifest.to_json(), str(SCHEMA_VERSION)),
    )
    conn.execute(
        f"INSERT INTO {REGISTRY}.projects (name, building_schema) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET building_schema = excluded.building_schema",
        (target.project, schema),
    )
    conn.commit()
    return schema, manifest, False


def _schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def publish(conn: psycopg.Connection[Any], target: Target, schema: str) -> str | None:
    """Make *schema* the project's current build (in the caller's transaction: the switch is its
    commit). Returns the build it replaces, for :func:`drop_old_builds` after the commit."""
    row = conn.execute(
        f"SELECT live_schema FROM {REGISTRY}.projects WHERE name = %s FOR UPDATE", (target.project,)
    ).fetchone()
    old = row[0] if row else None
    conn.execute(
        f"UPDATE {REGISTRY}.projects SET live_schema = %s, building_schema = NULL, updated_at = %s WHERE name = %s",
        (schema, time.time(), target.project),
    )
    return old if old != schema else None


def drop_old_builds(conn: psycopg.Connection[Any], target: Target) -> None:
    """Drop the project's builds that are neither current nor under way (a replaced one, or one a
    failed drop left). A reader still on one holds a lock on its tables: the drop waits for it at
    most a moment, else it is left to the next update (the readers are never kept waiting long)."""
    psycopg = psycopg_module()
    row = conn.execute(
        f"SELECT live_schema, building_schema FROM {REGISTRY}.projects WHERE name = %s", (target.project,)
    ).fetchone()
    keep = {r for r in (row or ()) if r}
    names = [
        r[0]
        for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname ~ %s", (f"^semsearch_{target.project}_[0-9]+$",)
        )
    ]
    conn.commit()
    for name in names:
        if name in keep:
            continue
        try:
            conn.execute("SET lock_timeout = '2s'")
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')
            conn.commit()
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
        finally:
            conn.execute("SET lock_timeout = 0")
            conn.commit()


# -- the pointer in the project ----------------------------------------------------------------


def holds_local_index(index_dir: Path) -> bool:
    """Whether the folder holds a local index (a pointer there would hide it)."""
    from semsearch.store import BUILDING, MANIFEST

    return (index_dir / MANIFEST).exists() or (index_dir / BUILDING).exists()


def write_pointer(index_dir: Path, target: Target) -> None:
    """Record *target*'s URL (no password) in the project's index folder."""
    from semsearch.files import write_atomic
    from semsearch.store.layout import ensure_index_dir

    ensure_index_dir(index_dir)
    data = {"url": target.url, "project": target.project}
    write_atomic(index_dir / POINTER, (json.dumps(data, indent=2) + "\n").encode())


def read_pointer(index_dir: Path) -> Target | None:
    """The PostgreSQL index the folder names (None: a local index, or none)."""
    path = index_dir / POINTER
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SemsearchError(f"cannot read {path}: {exc.strerror or exc}", path=path) from None
    try:
        data = json.loads(text)
        return parse_target(str(data["url"]))
    except (ValueError, KeyError, TypeError):
        raise SemsearchError(
            f"{path} does not name a PostgreSQL index (remove it, or index again)", path=path
        ) from None


def target_of(index_dir: Path, url: str | None) -> Target | None:
    """The PostgreSQL index for *index_dir*: *url* when given, else the folder's pointer."""
    if url:
        return parse_target(url)
    if not os.path.isdir(index_dir):
        return None
    return read_pointer(index_dir)


def building_manifest(conn: psycopg.Connection[Any], target: Target) -> IndexManifest | None:
    """The manifest of the project's build under way (None when none)."""
    psycopg = psycopg_module()
    try:
        row = conn.execute(
            f"SELECT building_schema FROM {REGISTRY}.projects WHERE name = %s", (target.project,)
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    if not row or not row[0] or not _schema_exists(conn, row[0]):
        return None
    meta = conn.execute(f'SELECT value FROM "{row[0]}".meta WHERE key = %s', ("manifest",)).fetchone()
    return _manifest(meta[0], target.shown) if meta else None
