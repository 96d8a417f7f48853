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
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from mcp.types import CallToolResult, TextContent

from semsearch.errors import SemsearchError
from semsearch.files import folder_prefix

if TYPE_CHECKING:
    from semsearch.api import Index
    from semsearch.search import Hit

# Bounds that keep one call small: an agent asking for a million hits or a megabyte query gets
# a clear error, not a stalled server.
MAX_K = 200
MAX_QUERY_CHARS = 4000
MAX_FILTER_ITEMS = 100
# Each call's time limit (`semsearch mcp --timeout`, SEMSEARCH_MCP_TIMEOUT; 0: none), and how many
# calls run at once: each in a worker thread of its own, which a call over its limit leaves behind.
DEFAULT_TIMEOUT = 60.0
MAX_WORKERS = 8

Mode = Literal["hybrid", "semantic", "lexical"]


# A hit as the tools return it. Their output schemas stay a plain object: a typed one costs the
# SDK's Python client about 2-3 ms of jsonschema checks per 10 hits (benchmarks/RESULTS.md); the
# fields are in the tools' descriptions and the README.
class Location(TypedDict, total=False):
    """Where a hit is: ``kind`` names the number given (the snippet's line, or its document's
    page, cell, slide or section); ``<kind>_end`` is the last one the passage reaches."""

    kind: Literal["line", "page", "cell", "slide", "section"]  # always there
    line: int
    line_end: int
    page: int
    page_end: int
    cell: int
    cell_end: int
    slide: int
    slide_end: int
    section: int
    section_end: int


class Scores(TypedDict, total=False):
    """The score parts: cosine similarity, BM25, and the blend the hits are ranked by."""

    cosine: float
    bm25: float
    fused: float


class HitResult(TypedDict):
    """One passage: where it is, how it scored, its text."""

    rank: int
    path: str  # relative to the project (Index.base_folder)
    location: Location
    score: float  # what the hits are ranked by: the fused score (semantic: cosine; lexical: BM25)
    scores: Scores
    title: str | None  # the document's title, when it has one
    context: str | None  # the title and headings the passage sits under
    text: str  # the passage
    type: str  # its file type (md, pdf, word, py ...)
    mtime: float  # the file's modification time when indexed (Unix seconds)


def _result(data: Any) -> CallToolResult:
    """A tool's result: the data as structured content, and the same as compact JSON text (for
    clients that read only text content)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


# How the library's option names read in the tools' arguments (others keep their own name).
TOOL_ARGUMENTS = {"top_k": "k", "target": "path", "path": "the index", "paths": "paths"}


class IndexService:
    """The index behind the tools: opened lazily, reopened when it changes on disk.

    Each call first makes a check of a few microseconds: the manifest file's identity (a rebuild
    replaces it) and SQLite's ``data_version`` on a connection held open for that (it changes
    when another process commits, as an update does). Only when one of them moved is the
    manifest read and the generation compared.
    """

    def __init__(self, index: Path | None) -> None:
        self.asked = index
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

        with self._lock:
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
            # A long-lived server: two threads answer a query sooner (the vectors are the same).
            index = Index.open(path, query_threads=min(2, usable_cpus()))
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


def _relative(path: Path, project: Path) -> str:
    try:
        return os.path.relpath(path, project)
    except ValueError:
        return str(path)


def _hit(hit: Hit, project: str) -> HitResult:
    """A hit as the tools return it: the fields of `query --json` an agent cites, built directly
    (not all of them and then a selection: this is on every call's path)."""
    from semsearch.output import location_of
    from semsearch.scope import type_of
    from semsearch.store import display_name  # JSON-RPC cannot carry a name's non-UTF-8 bytes

    c = hit.chunk
    path = str(c.path)
    rel = path[len(project) :] if path.startswith(project) else _relative(c.path, Path(project))
    return {
        "rank": hit.rank,
        "path": display_name(rel),
        "location": location_of(hit),  # type: ignore[typeddict-item]  # the keys Location names
        "score": round(hit.score, 6),
        "scores": {k: round(v, 6) for k, v in hit.scores.items()},  # type: ignore[typeddict-item]
        "title": display_name(c.title),
        "context": display_name(c.context),
        "text": c.text,
        "type": type_of(c.display, c.kind),
        "mtime": c.mtime_ns / 1e9,
    }


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


def _check_list(name: str, values: list[str] | None) -> list[str] | None:
    if values is not None and len(values) > MAX_FILTER_ITEMS:
        raise ValueError(f"{name}: at most {MAX_FILTER_ITEMS} items")
    return values


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


def threaded(work: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A tool that runs *work* in a worker thread, one the call can leave when it runs over its
    time limit (the SDK's own thread for a plain function would hold the call until it ends).
    Searches spend their time in SQLite, hnswlib and onnxruntime, which let other threads run."""
    import anyio

    limiter: list[Any] = []  # made in the event loop, on the first call

    @functools.wraps(work)
    async def tool(*args: Any, **kwargs: Any) -> Any:
        if not limiter:
            limiter.append(anyio.CapacityLimiter(MAX_WORKERS))
        call = functools.partial(work, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter[0])

    return tool


def build_server(index: Path | None, *, allow_index: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The MCP server with its tools (``index`` only with *allow_index*); a call that runs over
    *timeout* seconds (0: no limit) is answered with an error, and the server goes on."""
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError

    from semsearch.cli.messages import REMEDIES
    from semsearch.version import __version__

    _plain_logging()
    service = IndexService(index)

    class Server(MCPServer):
        async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
            try:
                with anyio.fail_after(timeout) if timeout > 0 else contextlib.nullcontext():
                    return await super().call_tool(name, arguments, context)
            except TimeoutError:
                after = "; the update goes on (see the status tool)" if name == "index" else ""
                raise ToolError(
                    f"the call ran over its time limit of {timeout:g} s (semsearch mcp --timeout){after}"
                ) from None
            except UnexpectedToolError as exc:
                if not _is_argument_error(exc):
                    raise ToolError(_unexpected(exc, name)) from None
                raise ToolError(_one_line(exc, name, allow_index)) from None
            except ToolError as exc:
                raise ToolError(_one_line(exc, name, allow_index)) from None

    server = Server(
        name="semsearch",
        version=__version__,
        instructions=(
            "Semantic and keyword search over the files of this project. Use `search` with a "
            "question in plain words; narrow it with paths, globs, types or dates. Hits carry a "
            "path relative to the project, a location (line, page, cell, slide or section) and the text."
        ),
        log_level="WARNING",
    )

    def failing(exc: SemsearchError) -> ToolError:
        # The CLI's one-line message, naming the tools' own arguments (not the CLI's flags), with
        # paths relative to the project as the tools take them.
        message = exc.render(TOOL_ARGUMENTS, REMEDIES)
        project = service.asked_project()
        if project is not None:
            message = message.replace(folder_prefix(project), "")
        return ToolError(message)

    def absolute(paths: list[str] | None, project: Path) -> list[str] | None:
        return None if paths is None else [str(project / p) for p in paths]

    @server.tool()
    @threaded
    def search(
        query: str,
        k: int = 10,
        mode: Mode = "hybrid",
        paths: list[str] | None = None,
        globs: list[str] | None = None,
        types: list[str] | None = None,
        types_not: list[str] | None = None,
        changed_within: str | None = None,
        changed_before: str | None = None,
        files_only: bool = False,
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        """Search the project's files for passages that mean what the query asks.

        mode: hybrid (default: meaning and keywords), semantic or lexical. paths: files or
        folders relative to the project; globs: gitignore-style patterns on the path relative to
        the project, such as "docs/**/*.md" ("!" excludes); types:
        md, pdf, word, py, code, docs ... ; changed_within: 7d, 12h; changed_before: a date or
        a duration ago. Returns {"query", "hits"}, the hits best first, each with: rank; path
        (relative to the project); location ({"kind": "line", "line": N, "line_end": M}, or the
        page, cell, slide or section in documents of parts); score (what ranks them: the
        cosine/BM25 blend; cosine in semantic mode, BM25 in lexical); scores (cosine, bm25,
        fused); title; context (the headings above the passage); text (the passage); type (md,
        pdf, py ...); mtime (Unix seconds when indexed).
        """
        if not query.strip():
            raise ToolError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"the query is over {MAX_QUERY_CHARS} characters")
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be between 1 and {MAX_K} (got {k})")
        try:
            for name, values in (("paths", paths), ("globs", globs), ("types", types), ("types_not", types_not)):
                _check_list(name, values)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        try:
            idx = service.index()
            project = idx.base_folder()
            hits = idx.search(
                query,
                k=k,
                mode=mode,
                files_only=files_only,
                paths=absolute(paths, project),
                globs=globs,
                types=types,
                types_not=types_not,
                changed_within=changed_within,
                changed_before=changed_before,
            )
        except SemsearchError as exc:
            raise failing(exc) from None
        return _result({"query": query, "hits": [_hit(h, folder_prefix(project)) for h in hits]})

    @server.tool()
    @threaded
    def similar(
        path: str, line: int | None = None, k: int = 10, files_only: bool = False
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        """Passages (or files, with files_only) like a file of the project, or like the passage at
        its line (the page, cell, slide or section number for documents of parts). Returns
        {"target", "hits"}, the hits as search returns them (the file itself left out)."""
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be between 1 and {MAX_K} (got {k})")
        if not path.strip():
            raise ToolError("the path is empty")
        try:
            idx = service.index()
            project = idx.base_folder()
            hits = idx.similar(str(project / path), line=line, k=k, files_only=files_only)
        except SemsearchError as exc:
            raise failing(exc) from None
        target = f"{path}:{line}" if line is not None else path
        return _result({"target": target, "hits": [_hit(h, folder_prefix(project)) for h in hits]})

    @server.tool()
    @threaded
    def status() -> Annotated[CallToolResult, dict[str, Any]]:
        """What the index holds: files, chunks, model, when it was updated, what changed on disk since."""
        try:
            info = service.index().status()
        except SemsearchError as exc:
            raise failing(exc) from None
        return _result(info.to_dict())

    if allow_index:

        @server.tool(name="index")
        @threaded
        def update_index() -> Annotated[CallToolResult, dict[str, Any]]:
            """Update the index from the project's files (re-embeds only what changed)."""
            try:
                idx = service.index()
                summary = idx.update()
            except SemsearchError as exc:
                raise failing(exc) from None
            return _result(
                {
                    "indexed": summary.indexed,
                    "unchanged": summary.unchanged,
                    "removed": summary.removed,
                    "chunks_added": summary.chunks_added,
                    "chunks_removed": summary.chunks_removed,
                    "chunks_total": summary.chunks_total,
                    "seconds": round(summary.seconds, 3),
                }
            )

    server._semsearch_service = service  # type: ignore[attr-defined]  # for closing at exit
    return server


def serve(
    index: Path | None, *, allow_index: bool = False, watch: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Run the server on stdin/stdout until the client goes away; with *watch*, a thread keeps the
    index fresh meanwhile (one line per update on stderr)."""
    import anyio

    from semsearch.cli.mcp_stdio import run_guarded

    server = build_server(index, allow_index=allow_index, timeout=timeout)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(index, stop), name="semsearch-watch", daemon=True)
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


def _watch(index: Path | None, stop: threading.Event) -> None:
    """Update the index after each burst of changes until *stop* (errors are reported, not fatal)."""
    import sys

    from semsearch.api import Index, find_index
    from semsearch.cli.messages import describe
    from semsearch.cli.report import summary_line

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    while not stop.is_set():
        try:
            with Index.open(find_index(index), on_note=lambda note: say(f"semsearch: watch: {note}")) as target:
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
