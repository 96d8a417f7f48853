"""`semsearch mcp`: a Model Context Protocol server over stdio, on the official `mcp` SDK.

It opens the index once and keeps the query model loaded between calls. Before each call it
checks, in one small read, whether another process updated or rebuilt the index, and if so reads
the new state (the model stays loaded when the index's model is the same). Errors are MCP tool
errors carrying the CLI's one-line messages; a bad argument, a missing or damaged index never
stops the server. Paths in and out are relative to the project: the folder that holds the index.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semsearch.errors import SemsearchError

if TYPE_CHECKING:
    from semsearch.api import Index
    from semsearch.search import Hit

# Bounds that keep one call small: an agent asking for a million hits or a megabyte query gets
# a clear error, not a stalled server.
MAX_K = 200
MAX_QUERY_CHARS = 4000
MAX_FILTER_ITEMS = 100

Mode = Literal["hybrid", "semantic", "lexical"]
# How the library's option names read in the tools' arguments (others keep their own name).
TOOL_ARGUMENTS = {"top_k": "k", "target": "path", "path": "the index", "paths": "paths"}


class IndexService:
    """The index behind the tools: opened lazily, reopened when it changes on disk."""

    def __init__(self, index: Path | None) -> None:
        self.asked = index
        self._index: Index | None = None
        self._seen: tuple[Any, ...] | None = None
        self._lock = threading.Lock()

    def _identity(self, index_dir: Path) -> tuple[Any, ...]:
        """What changes when the index is updated or rebuilt: the manifest and the generation."""
        from semsearch.store import read_manifest

        manifest = read_manifest(index_dir)
        db = index_dir / manifest.database
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
        return (manifest.epoch, manifest.database, manifest.model.fingerprint, generation)

    def index(self) -> Index:
        """The current index (raises the library's errors: not found, damaged ...)."""
        from semsearch.api import Index, find_index

        with self._lock:
            if self._index is not None:
                try:
                    now = self._identity(self._index.path)
                except SemsearchError:
                    self._close()
                    raise
                if now != self._seen:
                    self._index._drop_snapshot()  # the next search reads the new state
                    self._seen = now
                return self._index
            path = find_index(self.asked)
            index = Index.open(path)
            self._seen = self._identity(index.path)
            self._index = index
            return index

    def _close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
            self._seen = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def project(self) -> Path:
        return self.index().path.parent


def _relative(path: Path, project: Path) -> str:
    try:
        return os.path.relpath(path, project)
    except ValueError:
        return str(path)


def _hit(hit: Hit, query: str, project: Path) -> dict[str, Any]:
    from semsearch.output import hit_to_json

    data = hit_to_json(hit, query)
    data["path"] = _relative(hit.chunk.path, project)
    return {
        key: data[key]
        for key in ("rank", "path", "location", "score", "scores", "title", "context", "text", "type", "mtime")
    }


def _check_list(name: str, values: list[str] | None) -> list[str] | None:
    if values is not None and len(values) > MAX_FILTER_ITEMS:
        raise ValueError(f"{name}: at most {MAX_FILTER_ITEMS} items")
    return values


def build_server(index: Path | None, *, allow_index: bool = False) -> Any:
    """The MCP server with its tools (``index`` only with *allow_index*)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from semsearch.cli.messages import REMEDIES
    from semsearch.version import __version__

    service = IndexService(index)
    server = MCPServer(
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
        # The CLI's one-line message, naming the tools' own arguments (not the CLI's flags).
        return ToolError(exc.render(TOOL_ARGUMENTS, REMEDIES))

    def absolute(paths: list[str] | None, project: Path) -> list[str] | None:
        return None if paths is None else [str(project / p) for p in paths]

    @server.tool()
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
    ) -> dict[str, Any]:
        """Search the project's files for passages that mean what the query asks.

        mode: hybrid (default: meaning and keywords), semantic or lexical. paths: files or
        folders relative to the project; globs: gitignore-style patterns ("!" excludes); types:
        md, pdf, word, py, code, docs ... ; changed_within: 7d, 12h; changed_before: a date or
        a duration ago. Returns hits best first: path, location, score, scores, title, context, text.
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
            project = idx.path.parent
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
        return {"query": query, "hits": [_hit(h, query, project) for h in hits]}

    @server.tool()
    def similar(path: str, line: int | None = None, k: int = 10, files_only: bool = False) -> dict[str, Any]:
        """Passages (or files, with files_only) like a file of the project, or like the passage at
        its line (the page, cell, slide or section number for documents of parts)."""
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be between 1 and {MAX_K} (got {k})")
        try:
            idx = service.index()
            project = idx.path.parent
            hits = idx.similar(str(project / path), line=line, k=k, files_only=files_only)
        except SemsearchError as exc:
            raise failing(exc) from None
        return {"target": path, "hits": [_hit(h, path, project) for h in hits]}

    @server.tool()
    def status() -> dict[str, Any]:
        """What the index holds: files, chunks, model, when it was updated, what changed on disk since."""
        try:
            info = service.index().status()
        except SemsearchError as exc:
            raise failing(exc) from None
        return dict(info.to_dict())

    if allow_index:

        @server.tool(name="index")
        def update_index() -> dict[str, Any]:
            """Update the index from the project's files (re-embeds only what changed)."""
            try:
                idx = service.index()
                summary = idx.update()
            except SemsearchError as exc:
                raise failing(exc) from None
            return {
                "indexed": summary.indexed,
                "unchanged": summary.unchanged,
                "removed": summary.removed,
                "chunks_added": summary.chunks_added,
                "chunks_removed": summary.chunks_removed,
                "chunks_total": summary.chunks_total,
                "seconds": round(summary.seconds, 3),
            }

    server._semsearch_service = service  # type: ignore[attr-defined]  # for closing at exit
    return server


def serve(index: Path | None, *, allow_index: bool = False, watch: bool = False) -> None:
    """Run the server on stdin/stdout until the client goes away; with *watch*, a thread keeps the
    index fresh meanwhile (one line per update on stderr)."""
    server = build_server(index, allow_index=allow_index)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(index, stop), name="semsearch-watch", daemon=True)
    if watch:
        watcher.start()
    try:
        server.run("stdio")
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=60)
        server._semsearch_service.close()


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
            with Index.open(find_index(index)) as target:
                target.update()
                target.watch(on_update=lambda summary: say(summary_line(summary)), stop=stop)
        except SemsearchError as exc:
            say(f"semsearch: watch: {describe(exc)}")
            stop.wait(5.0)  # no index yet, or it is being rebuilt: try again
