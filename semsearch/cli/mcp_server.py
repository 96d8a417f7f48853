"""`semsearch mcp`: a Model Context Protocol server over stdio, on the official `mcp` SDK.

It opens the index once and keeps the query model loaded between calls. Before each call it
checks, in one small read, whether another process updated or rebuilt the index, and if so reads
the new state (the model stays loaded when the index's model is the same). Errors are MCP tool
errors carrying the CLI's one-line messages; a bad argument, a missing or damaged index never
stops the server. Paths in and out (and globs) are relative to the project: the folder that
holds the index when the indexed folders lie in it, else the indexed folders' common folder
(``Index.base_folder``), so that an index kept elsewhere still answers ``notes/a.md``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.cli.mcp_tools import (
    MAX_FILTER_ITEMS,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_WORKERS,
    TOOL_ARGUMENTS,
    HitResult,
    Location,
    Mode,
    Scores,
    add_tools,
    status_error,
    threaded,
)
from semsearch.errors import SemsearchError

if TYPE_CHECKING:
    from semsearch.api import Index

# The tools, their bounds and their results are mcp_tools.py's; their names stay importable from here.
__all__ = [
    "DEFAULT_TIMEOUT", "MAX_FILTER_ITEMS", "MAX_K", "MAX_QUERY_CHARS", "MAX_WORKERS", "TOOL_ARGUMENTS",
    "WATCH_RETRY", "HitResult", "IndexService", "Location", "Mode", "Scores", "build_server", "serve", "threaded",
]  # fmt: skip

# Each call's time limit (`semsearch mcp --timeout`, SEMSEARCH_MCP_TIMEOUT; 0: none).
DEFAULT_TIMEOUT = 60.0


class IndexService:
    """The index behind the tools: opened lazily, reopened when it changes on disk.

    Each call first makes a check of a few microseconds: the manifest file's identity (a rebuild
    replaces it) and SQLite's ``data_version`` on a connection held open for that (it changes
    when another process commits, as an update does). Only when one of them moved is the
    manifest read and the generation compared.
    """

    def __init__(self, index: Path | str | None, *, rerank_model: str | None = None) -> None:
        self.asked = index
        self.rerank_model = rerank_model  # the cross-encoder a search with rerank uses (None: the default)
        self._remote = False  # the index is PostgreSQL's
        self._index: Index | None = None
        self._seen: tuple[Any, ...] | None = None
        self._quick_seen: tuple[Any, ...] | None = None
        self._watch_conn: sqlite3.Connection | None = None
        self._watch_db: Path | None = None
        self._lock = threading.Lock()

    def _identity(self, index_dir: Path) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
        """What changes when the index is updated or rebuilt (the manifest and the generation),
        and the quick token taken before it was read (None when there is none)."""
        from semsearch.store import MANIFEST, read_manifest

        try:
            st: os.stat_result | None = os.stat(index_dir / MANIFEST)
        except OSError:
            st = None  # read_manifest says what is wrong
        manifest = read_manifest(index_dir)
        db = index_dir / manifest.database
        self._follow(db)
        version = self._data_version()
        generation = None
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
                generation = row[0] if row else None
            finally:
                conn.close()
        except sqlite3.Error:
            generation = None
        token = _token(st, version)
        return (manifest.epoch, manifest.database, manifest.model.fingerprint, generation), token

    def _follow(self, db: Path) -> None:
        """Hold a connection to *db* for its ``data_version`` (none when it cannot be opened)."""
        if self._watch_db == db and self._watch_conn is not None:
            return
        self._unfollow()
        try:
            self._watch_conn = sqlite3.connect(
                f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )  # used under self._lock, from whichever worker thread runs the tool
            self._watch_db = db
        except sqlite3.Error:
            self._watch_conn = None

    def _unfollow(self) -> None:
        if self._watch_conn is not None:
            self._watch_conn.close()
        self._watch_conn, self._watch_db = None, None

    def _data_version(self) -> int | None:
        if self._watch_conn is None:
            return None
        try:
            return int(self._watch_conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def _quick(self, index_dir: Path) -> tuple[Any, ...] | None:
        """A token that moves whenever the identity may have moved (None: cannot tell)."""
        from semsearch.store import MANIFEST

        version = self._data_version()
        try:
            st = os.stat(index_dir / MANIFEST)
        except OSError:
            return None
        return _token(st, version)

    def index(self) -> Index:
        """The current index (raises the library's errors: not found, damaged ...)."""
        from semsearch.api import Index, find_index
        from semsearch.models.hardware import usable_cpus
        from semsearch.pgstore import is_url

        with self._lock:
            if self._index is not None and self._remote:
                return self._index  # a PostgreSQL index: each call asks its server for a newer state
            if self._index is not None:
                quick = self._quick(self._index.path)
                if quick is not None and quick == self._quick_seen:
                    return self._index  # nothing committed, no manifest replaced: as it was
                try:
                    now, self._quick_seen = self._identity(self._index.path)
                except SemsearchError:
                    self._close()
                    raise
                if now != self._seen:
                    self._index._drop_snapshot()  # the next search reads the new state
                    self._seen = now
                return self._index
            path = find_index(self.asked)
            url = str(self.asked) if is_url(self.asked) else None
            # A long-lived server: two threads answer a query sooner (the vectors are the same).
            index = Index.open(url or path, query_threads=min(2, usable_cpus()))
            self._remote = index.engine == "postgresql"
            if not self._remote:
                self._seen, self._quick_seen = self._identity(index.path)
            self._index = index
            return index

    def _close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
            self._seen = None
        self._quick_seen = None
        self._unfollow()

    def close(self) -> None:
        with self._lock:
            self._close()

    def asked_project(self) -> Path | None:
        """The folder paths are relative to, of the index in use (None before one was opened)."""
        if self._index is None:
            return None
        try:
            return self._index.base_folder()
        except SemsearchError:
            return self._index.path.parent


def _token(manifest: os.stat_result | None, data_version: int | None) -> tuple[Any, ...] | None:
    """The quick change token: the manifest file's identity and the database's data_version."""
    if manifest is None or data_version is None:
        return None
    return (manifest.st_ino, manifest.st_mtime_ns, manifest.st_size, data_version)


def _one_line(exc: Exception, tool: str, allow_index: bool) -> str:
    """A tool error as one line in semsearch's words: the SDK's argument check (pydantic's
    several lines) as "ARGUMENT: what is wrong", its "Error executing tool ..." prefix dropped."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "arguments"
            what = str(first.get("msg", "is not valid"))
            return f"{where}: {'a value is required' if first.get('type') == 'missing' else what}"
        except (IndexError, TypeError, AttributeError):
            pass
    message = str(exc)
    prefix = f"Error executing tool {tool}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if message.startswith("Unknown tool") and tool == "index" and not allow_index:
        message += " (the index tool is offered by `semsearch mcp --allow-index`)"
    return message.splitlines()[0] if message else "the call failed"


def _is_argument_error(exc: Exception) -> bool:
    """Whether the SDK's error is its check of the arguments (pydantic's), not a tool's crash."""
    return callable(getattr(exc.__cause__, "errors", None))


def _unexpected(exc: Exception, tool: str) -> str:
    """A tool's crash (a bug): its traceback on stderr, one line for the client."""
    import logging

    cause = exc.__cause__ or exc
    logging.getLogger("semsearch.mcp").error("the %s tool failed", tool, exc_info=cause)
    text = (str(cause).splitlines() or [""])[0][:300]
    return (
        f"{tool} failed: {type(cause).__name__}: {text} (a bug in semsearch; the traceback is on the server's stderr)"
    )


def _plain_logging() -> None:
    """Log to stderr as plain lines. The SDK would install rich's handler, whose tracebacks
    (syntax-highlighted, with locals) took minutes to render for one unexpected error while
    every call waited; a plain traceback is as useful in a bug report."""
    import logging
    import sys

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("semsearch mcp: %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def build_server(
    index: Path | str | None,
    *,
    allow_index: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    rerank_model: str | None = None,
) -> Any:
    """The MCP server with its tools (``index`` only with *allow_index*); a call that runs over
    *timeout* seconds (0: no limit) is answered with an error, and the server goes on. A search
    with ``rerank`` uses *rerank_model* (None: the default)."""
    from semsearch.version import __version__

    _plain_logging()
    service = IndexService(index, rerank_model=rerank_model)
    server = _server_class(timeout, allow_index)(
        name="semsearch",
        version=__version__,
        instructions=(
            "Semantic and keyword search over the files of this project. Use `search` with a "
            "question in plain words; narrow it with paths, globs, types or dates. Hits carry a "
            "path relative to the project, a location (line, page, cell, slide or section) and the text."
        ),
        log_level="WARNING",
    )
    add_tools(server, service, allow_index=allow_index)
    server._semsearch_service = service  # for closing at exit
    return server


def _server_class(timeout: float, allow_index: bool) -> type[Any]:
    """The SDK's server, its calls held to *timeout* seconds (0: no limit) and its errors made
    one line in semsearch's words."""
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError

    class Server(MCPServer):
        async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
            try:
                with anyio.fail_after(timeout) if timeout > 0 else contextlib.nullcontext():
                    return await super().call_tool(name, arguments, context)
            except TimeoutError:
                after = "; the update goes on (see the status tool)" if name == "index" else ""
                message = f"the call ran over its time limit of {timeout:g} s (--timeout){after}"
                raise status_error(message, 504) from None
            except UnexpectedToolError as exc:
                if not _is_argument_error(exc):
                    raise status_error(_unexpected(exc, name), 500) from None
                raise status_error(_one_line(exc, name, allow_index)) from None
            except ToolError as exc:
                message = _one_line(exc, name, allow_index)
                # The SDK may wrap the tool's own error: its status is on the cause then.
                status = getattr(exc, "status", None) or getattr(exc.__cause__, "status", None) or 422
                status = 404 if message.startswith("Unknown tool") else status
                raise status_error(message, status) from None

    return Server


def serve(
    index: Path | str | None,
    *,
    allow_index: bool = False,
    watch: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    rerank_model: str | None = None,
) -> None:
    """Run the server on stdin/stdout until the client goes away; with *watch*, a thread keeps the
    index fresh meanwhile (one line per update on stderr)."""
    import anyio

    from semsearch.cli.mcp_stdio import run_guarded

    server = build_server(index, allow_index=allow_index, timeout=timeout, rerank_model=rerank_model)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_index, args=(index, stop), name="semsearch-watch", daemon=True)
    if watch:
        watcher.start()
    try:
        anyio.run(run_guarded, server)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=60)
        server._semsearch_service.close()


WATCH_RETRY = 5.0  # seconds before the watcher starts again after an error


def watch_index(index: Path | str | None, stop: threading.Event) -> None:
    """Update the index after each burst of changes until *stop* (errors are reported, not fatal)."""
    import sys

    from semsearch.api import Index, find_index
    from semsearch.cli.messages import describe
    from semsearch.cli.report import summary_line
    from semsearch.pgstore import is_url

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    while not stop.is_set():
        try:
            with Index.open(
                index if is_url(index) else find_index(index), on_note=lambda note: say(f"semsearch: watch: {note}")
            ) as target:
                # watch's first update catches up, with the index's own settings (a plain update
                # would take the default model and precision)
                target.watch(
                    on_update=lambda summary: say(summary_line(summary)),
                    stop=stop,
                    on_ready=lambda: say("semsearch: watching for changes"),
                )
        except SemsearchError as exc:
            say(f"semsearch: watch: {describe(exc)}")
            stop.wait(WATCH_RETRY)  # no index yet, or it is being rebuilt: try again
        except Exception as exc:  # noqa: BLE001 - a bug in an update must not end the watcher
            # (the server would go on answering from an index no one keeps fresh): one line, and
            # the watcher starts again.
            say(f"semsearch: watch: the update failed ({type(exc).__name__}: {exc}); watching again")
            stop.wait(WATCH_RETRY)
