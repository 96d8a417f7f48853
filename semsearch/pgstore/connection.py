"""Where a PostgreSQL index lives (its URL, without a password), and connections to it whose every
failure is one line: a wrong URL, failed authentication, no pgvector, a server too old, a lost
connection, a role that may only read.

Credentials follow libpq's conventions (``PGPASSWORD``, ``~/.pgpass``, service files): a URL's
password is used for the connection but never stored, printed, or put in an error message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from semsearch.errors import SemsearchError

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql://", "postgres://")
MIN_SERVER = 130000  # PostgreSQL 13
MIN_PGVECTOR = (0, 8, 0)  # iterative index scans (filters that still fill k)
DEFAULT_PROJECT = "default"
_PROJECT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
INSTALL_HINT = "pip install 'semsearch[postgres]'"


def is_url(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEMES)


@dataclass(frozen=True)
class Target:
    """A PostgreSQL index: the server's URL without a password, and the project (several projects
    live in one database, one schema each)."""

    url: str  # never holds a password
    project: str = DEFAULT_PROJECT
    password: str | None = None  # from the URL the user gave, kept in memory only

    @property
    def shown(self) -> str:
        """The URL as messages show it (no password), with the project when not the default."""
        return self.url if self.project == DEFAULT_PROJECT else f"{self.url} (project {self.project})"


def parse_target(text: str) -> Target:
    """*text* (``postgresql://user[:password]@host[:port]/db[?project=NAME&...]``) as a Target."""
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        raise SemsearchError(f"not a PostgreSQL URL: {redact(text)} ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres") or (not parts.hostname and not parts.path.strip("/")):
        raise SemsearchError(f"not a PostgreSQL URL: {redact(text)}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    project = DEFAULT_PROJECT
    kept = []
    for key, value in query:
        if key == "project":
            project = value
        elif key == "password":
            continue  # never kept
        else:
            kept.append((key, value))
    if not _PROJECT.match(project):
        raise SemsearchError(
            f"project names are lower-case letters, digits and _, up to 40, starting with a letter (got {project!r})"
        )
    user = parts.username or ""
    host = parts.hostname or ""
    if host and ":" in host:
        host = f"[{host}]"
    netloc = (f"{user}@" if user else "") + host + (f":{port}" if port else "")
    url = urlunsplit(("postgresql", netloc, parts.path, urlencode(kept), ""))
    if project != DEFAULT_PROJECT:
        url += ("&" if kept else "?") + f"project={project}"
    password = parts.password or dict(query).get("password") or None
    return Target(url, project, password)


def redact(text: str) -> str:
    """*text* with any password of a URL in it (or a ``password=`` parameter) replaced by ``***``."""
    text = re.sub(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)


def _conninfo(target: Target) -> str:
    parts = urlsplit(target.url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "project"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), ""))


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError:
        raise SemsearchError(f"a PostgreSQL index needs psycopg and pgvector: {INSTALL_HINT}", remedy=None) from None
    return psycopg


def connect(target: Target, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to *target*'s server, checked: version, pgvector. Every failure one line."""
    psycopg = psycopg_module()
    kwargs: dict[str, Any] = {"autocommit": autocommit, "connect_timeout": 10, "application_name": "semsearch"}
    if target.password:
        kwargs["password"] = target.password
    try:
        conn = psycopg.connect(_conninfo(target), **kwargs)
    except psycopg.OperationalError as exc:
        raise SemsearchError(f"cannot connect to {target.shown}: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise SemsearchError(f"cannot connect to {target.shown}: {_first_line(exc)}") from None
    if conn.info.server_version < MIN_SERVER:
        conn.close()
        raise SemsearchError(
            f"{target.shown} runs PostgreSQL {conn.info.server_version // 10000}: semsearch needs 13 or newer"
        )
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    for prefix in ("connection failed: ", "FATAL:  "):
        line = line.replace(prefix, "")
    # psycopg names the host and port first ('connection to server at "h" (::1), port 5 failed: ...')
    line = re.sub(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: ', "", line)
    line = re.sub(r'^connection to server on socket "[^"]*" failed: ', "", line)
    line = redact(line.strip()) or type(exc).__name__
    if "no password supplied" in line:
        line += " (set PGPASSWORD, or put it in ~/.pgpass)"
    return line


def check_pgvector(conn: psycopg.Connection[Any], target: Target, *, create: bool) -> None:
    """pgvector must be installed in the database (created when *create* and allowed), 0.8 or newer."""
    psycopg = psycopg_module()
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None and create:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            if available is None:
                raise SemsearchError(
                    f"{target.shown} has no pgvector extension: install pgvector 0.8 or newer on the server"
                ) from None
            raise SemsearchError(
                f"cannot create the pgvector extension in {target.shown} ({_first_line(exc)}): "
                "ask an administrator to run CREATE EXTENSION vector"
            ) from None
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        raise SemsearchError(f"{target.shown} has no pgvector extension (CREATE EXTENSION vector)")
    version = tuple(int(x) for x in re.findall(r"\d+", row[0])[:3])
    if version < MIN_PGVECTOR:
        raise SemsearchError(f"{target.shown} has pgvector {row[0]}: semsearch needs 0.8 or newer")


def register_vectors(conn: psycopg.Connection[Any]) -> None:
    """pgvector's adapter on *conn*: vectors travel in binary (a text vector of 384 floats cost
    15-20x more to send: benchmarks/RESULTS.md)."""
    try:
        from pgvector.psycopg import register_vector
    except ImportError:
        raise SemsearchError(f"a PostgreSQL index needs pgvector's Python adapter: {INSTALL_HINT}") from None
    register_vector(conn)


def as_db_vector(vector: Any, kind: str) -> Any:
    """A numpy vector as pgvector's adapter sends it (halfvec or vector)."""
    from pgvector import HalfVector, Vector

    return HalfVector(vector) if kind == "halfvec" else Vector(vector)


def describe(target: Target, exc: BaseException, doing: str) -> SemsearchError:
    """A database error during *doing* as one line (no password, no SQL)."""
    psycopg = psycopg_module()
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return SemsearchError(f"cannot {doing} {target.shown}: this role may not write it (permission denied)")
    if isinstance(exc, psycopg.OperationalError):
        return SemsearchError(
            f"lost the connection to {target.shown} while trying to {doing} it: {_first_line(exc)}; "
            "nothing committed is lost (run it again)"
        )
    return SemsearchError(f"cannot {doing} {target.shown}: {_first_line(exc)}")


@contextlib.contextmanager
def errors_as_one_line(target: Target, doing: str) -> Iterator[None]:
    psycopg = psycopg_module()
    try:
        yield
    except psycopg.Error as exc:
        raise describe(target, exc, doing) from None
