"""The tools `semsearch mcp` and `semsearch serve` offer (search, similar, status, duplicates,
topics, and index on request): their
arguments' bounds and checks, their results as JSON, each call in a worker thread.

The server around them (the index kept open and fresh, the time limit, errors as one line) is
:mod:`semsearch.cli.mcp_server`'s.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from mcp.types import CallToolResult, TextContent

from semsearch.errors import SemsearchError
from semsearch.files import folder_prefix

if TYPE_CHECKING:
    from mcp.server.mcpserver.exceptions import ToolError

    from semsearch.cli.mcp_server import IndexService
    from semsearch.search import Hit

# Bounds that keep one call small: an agent asking for a million hits or a megabyte query gets
# a clear error, not a stalled server.
MAX_K = 200
MAX_QUERY_CHARS = 4000
MAX_FILTER_ITEMS = 100
# How many calls run at once: each in a worker thread of its own, which a call over its time
# limit leaves behind.
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
    rerank: float  # the cross-encoder's, when the search asked for rerank


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
    highlight: list[int] | None  # [start, end): the sentence of text closest to the query
    type: str  # its file type (md, pdf, word, py ...)
    mtime: float  # the file's modification time when indexed (Unix seconds)


def _result(data: Any) -> CallToolResult:
    """A tool's result: the data as structured content, and the same as compact JSON text (for
    clients that read only text content)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


# How the library's option names read in the tools' arguments (others keep their own name).
TOOL_ARGUMENTS = {"top_k": "k", "target": "path", "path": "the index", "paths": "paths"}


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
        "highlight": list(hit.highlight) if hit.highlight else None,
        "type": type_of(c.display, c.kind),
        "mtime": c.mtime_ns / 1e9,
    }


def _check_list(name: str, values: list[str] | None) -> list[str] | None:
    if values is not None and len(values) > MAX_FILTER_ITEMS:
        raise ValueError(f"{name}: at most {MAX_FILTER_ITEMS} items")
    return values


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


def add_tools(server: Any, service: IndexService, *, allow_index: bool) -> None:
    """Register the tools on *server* (``index`` only with *allow_index*), each answering from
    *service*'s index."""
    _add_search(server, service)
    _add_similar(server, service)
    _add_status(server, service)
    _add_duplicates(server, service)
    _add_topics(server, service)
    if allow_index:
        _add_index(server, service)


def _failing(service: IndexService, exc: SemsearchError) -> ToolError:
    """The CLI's one-line message, naming the tools' own arguments (not the CLI's flags), with
    paths relative to the project as the tools take them."""

    from semsearch.cli.messages import REMEDIES

    message = exc.render(TOOL_ARGUMENTS, REMEDIES)
    project = service.asked_project()
    if project is not None:
        message = message.replace(folder_prefix(project), "")
    return status_error(message, error_status(exc, message))


def error_status(exc: SemsearchError, message: str) -> int:
    """The HTTP status `semsearch serve` answers a tool's failure with."""
    from semsearch.errors import IndexLockedError, InvalidOptionError, ModelError

    if isinstance(exc, InvalidOptionError):
        return 404 if "is not in the index" in message else 422
    if isinstance(exc, IndexLockedError):
        return 409
    if isinstance(exc, ModelError):
        return 502
    return 503  # no index, or one that cannot be read now


def status_error(message: str, status: int = 422) -> ToolError:
    """A ToolError that carries the HTTP status `semsearch serve` answers it with (422: the
    arguments)."""
    from mcp.server.mcpserver.exceptions import ToolError

    error = ToolError(message)
    error.status = status  # type: ignore[attr-defined]
    return error


def _absolute(paths: list[str] | None, project: Path) -> list[str] | None:
    return None if paths is None else [inside(p, project) for p in paths]


def inside(path: str, project: Path) -> str:
    """*path* (relative to the project) as an absolute path, refused when it leads out of the
    project: the tools answer about the index's files only."""
    full = os.path.normpath(project / path)
    if full != str(project) and not full.startswith(folder_prefix(project)):
        raise status_error(f"{path} is outside the project", 403)
    return full


def _check_k(k: int, name: str = "k") -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    if not 1 <= k <= MAX_K:
        raise ToolError(f"{name} must be between 1 and {MAX_K} (got {k})")


def _check_search(query: str, k: int, lists: dict[str, list[str] | None]) -> None:
    """The search tool's arguments within their bounds (a ToolError says which is not)."""
    from mcp.server.mcpserver.exceptions import ToolError

    if not query.strip():
        raise ToolError("the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise ToolError(f"the query is over {MAX_QUERY_CHARS} characters")
    _check_k(k)
    _check_lists(lists)


def _check_lists(lists: dict[str, list[str] | None]) -> None:
    """Each filter list within its bound (a ToolError says which is not)."""
    from mcp.server.mcpserver.exceptions import ToolError

    try:
        for name, values in lists.items():
            _check_list(name, values)
    except ValueError as exc:
        raise ToolError(str(exc)) from None


def _add_search(server: Any, service: IndexService) -> None:
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
        rerank: bool = False,
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
        pdf, py ...); mtime (Unix seconds when indexed). rerank: score the best 20 hits again
        with a cross-encoder (more precise, slower: tens to hundreds of ms); score is then its.
        """
        _check_search(query, k, {"paths": paths, "globs": globs, "types": types, "types_not": types_not})
        try:
            idx = service.index()
            project = idx.base_folder()
            hits = idx.search(
                query,
                k=k,
                mode=mode,
                files_only=files_only,
                paths=_absolute(paths, project),
                globs=globs,
                types=types,
                types_not=types_not,
                changed_within=changed_within,
                changed_before=changed_before,
                rerank=rerank,
                rerank_model=service.rerank_model if rerank else None,
            )
        except SemsearchError as exc:
            raise _failing(service, exc) from None
        return _result({"query": query, "hits": [_hit(h, folder_prefix(project)) for h in hits]})


def _add_similar(server: Any, service: IndexService) -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    @server.tool()
    @threaded
    def similar(
        path: str, line: int | None = None, k: int = 10, files_only: bool = False
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        """Passages (or files, with files_only) like a file of the project, or like the passage at
        its line (the page, cell, slide or section number for documents of parts). Returns
        {"target", "hits"}, the hits as search returns them (the file itself left out)."""
        _check_k(k)
        if not path.strip():
            raise ToolError("the path is empty")
        try:
            idx = service.index()
            project = idx.base_folder()
            hits = idx.similar(inside(path, project), line=line, k=k, files_only=files_only)
        except SemsearchError as exc:
            raise _failing(service, exc) from None
        target = f"{path}:{line}" if line is not None else path
        return _result({"target": target, "hits": [_hit(h, folder_prefix(project)) for h in hits]})


def _add_status(server: Any, service: IndexService) -> None:
    @server.tool()
    @threaded
    def status() -> Annotated[CallToolResult, dict[str, Any]]:
        """What the index holds: files, chunks, model, when it was updated, what changed on disk since."""
        try:
            info = service.index().status()
        except SemsearchError as exc:
            raise _failing(service, exc) from None
        return _result(info.to_dict())


def _add_duplicates(server: Any, service: IndexService) -> None:
    @server.tool()
    @threaded
    def duplicates(
        min_score: float | None = None,
        paths: list[str] | None = None,
        globs: list[str] | None = None,
        types: list[str] | None = None,
        types_not: list[str] | None = None,
        changed_within: str | None = None,
        changed_before: str | None = None,
        limit: int = 50,
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        """Near-duplicate passages of different files (cosine >= min_score, default 0.93), filters
        as for search. Returns {"groups", "files", "chunks_checked"}: groups, most text per file
        first (at most limit), each {"size", "files", "score", "min_score", "passages"} with the
        passages as search's hits (score: the passage's best cosine to another of the group);
        files, the pairs of files that share passages: {"files": [a, b], "shared", "chunks",
        "score"}."""
        from semsearch.search import Hit

        _check_k(limit, "limit")
        _check_lists({"paths": paths, "globs": globs, "types": types, "types_not": types_not})
        try:
            idx = service.index()
            project = idx.base_folder()
            found = idx.duplicates(
                min_score=min_score, paths=_absolute(paths, project), globs=globs, types=types,
                types_not=types_not, changed_within=changed_within, changed_before=changed_before,
            )  # fmt: skip
        except SemsearchError as exc:
            raise _failing(service, exc) from None
        prefix = folder_prefix(project)
        groups = [
            {
                "size": len(group.chunks), "files": group.files, "score": round(group.score, 6),
                "min_score": round(group.min_score, 6),
                "passages": [_hit(Hit(rank, score, chunk, {"cosine": score}), prefix)
                             for rank, (chunk, score) in enumerate(zip(group.chunks, group.scores, strict=True), 1)],
            }
            for group in found.groups[:limit]
        ]  # fmt: skip
        pairs = [
            {"files": [_relative(pair.a, project), _relative(pair.b, project)], "shared": pair.shared,
             "chunks": pair.chunks, "score": round(pair.score, 6)}
            for pair in found.files[:limit]
        ]  # fmt: skip
        return _result({"groups": groups, "files": pairs, "chunks_checked": found.chunks_checked})


def _add_topics(server: Any, service: IndexService) -> None:
    @server.tool()
    @threaded
    def topics(
        files: bool = False,
        min_size: int | None = None,
        depth: int = 1,
        paths: list[str] | None = None,
        globs: list[str] | None = None,
        types: list[str] | None = None,
        types_not: list[str] | None = None,
        changed_within: str | None = None,
        changed_before: str | None = None,
        limit: int = 50,
        passages: int = 3,
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        """What the project's passages (files=true: its files) are about: topics, largest first,
        each named by the words that set it apart (filters as for search). Returns {"topics",
        "outliers", "total"}: at most limit topics, each {"topic", "name", "words", "size",
        "passages" (its most central, at most passages of them, as search's hits; score: the
        cosine to the topic's centre), "files" ([{"path", "passages"}], most first), and with
        depth 2 "subtopics"}; outliers: how many fit no topic. min_size: the fewest members of a
        topic (default about 1 in 100)."""
        _check_k(limit, "limit")
        _check_k(passages, "passages")
        _check_lists({"paths": paths, "globs": globs, "types": types, "types_not": types_not})
        try:
            idx = service.index()
            project = idx.base_folder()
            found = idx.topics(
                files=files, min_size=min_size, depth=depth, paths=_absolute(paths, project), globs=globs,
                types=types, types_not=types_not, changed_within=changed_within, changed_before=changed_before,
            )  # fmt: skip
        except SemsearchError as exc:
            raise _failing(service, exc) from None
        prefix = folder_prefix(project)

        def one(topic: Any) -> dict[str, Any]:
            out = {
                "topic": topic.id, "name": topic.name, "words": topic.words, "size": topic.size,
                "passages": [_hit(hit, prefix) for hit in topic.central_hits()[:passages]],
                "files": [{"path": _relative(path, project), "passages": n} for path, n in topic.files[:limit]],
            }  # fmt: skip
            if topic.subtopics:
                out["subtopics"] = [one(sub) for sub in topic.subtopics]
            return out

        return _result({"topics": [one(t) for t in found.topics[:limit]], "outliers": found.outliers,
                        "total": found.size})  # fmt: skip


def _add_index(server: Any, service: IndexService) -> None:
    @server.tool(name="index")
    @threaded
    def update_index() -> Annotated[CallToolResult, dict[str, Any]]:
        """Update the index from the project's files (re-embeds only what changed)."""
        try:
            idx = service.index()
            summary = idx.update()
        except SemsearchError as exc:
            raise _failing(service, exc) from None
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
