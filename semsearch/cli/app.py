"""The commands: flags and environment -> one :class:`semsearch.Index` call -> formatted results.

The typer app is made here and every command registered on it here, in the order ``--help``
lists them; `index` is written in :mod:`semsearch.cli.index_cmd`, the options several commands
share in :mod:`semsearch.cli.options`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from semsearch.cli import console
from semsearch.cli import options as opt
from semsearch.cli.console import EXIT_FOUND, EXIT_NOT_FOUND
from semsearch.cli.index_cmd import index
from semsearch.cli.messages import describe
from semsearch.cli.topics_cmd import topics
from semsearch.errors import InvalidOptionError, SemsearchError
from semsearch.version import __version__

if TYPE_CHECKING:
    from semsearch.search import SearchOptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Semantic search over local files: offline, fast, scriptable.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"semsearch {__version__}")
        raise typer.Exit(0)


app.command()(index)  # first in --help's list


def _scope(*filters: Any) -> Any:
    """The filters given on the command line as a Scope (None: none given)."""
    from semsearch.scope import scope_of

    return scope_of(*filters)


def _rerank_args(rerank: bool, model: str | None, depth: int | None) -> dict[str, Any]:
    """Index.search's re-ranking arguments, as the flags ask (SEMSEARCH_RERANK_MODEL alone does
    not turn it on)."""
    if depth is not None and not rerank:
        raise InvalidOptionError("--rerank-depth needs --rerank")
    return {"rerank": True, "rerank_model": model, "rerank_depth": depth} if rerank else {}


def _print_type_list() -> None:
    from semsearch.scope import GROUPS, type_globs, type_names

    for name in type_names():
        shown = ", ".join(GROUPS[name]) if name in GROUPS else ", ".join(type_globs(name))
        typer.echo(f"{name}: {shown}")


@app.command()
def query(
    text: str | None = typer.Argument(
        None,
        metavar="QUERY",
        show_default=False,
        help="What to look for, in plain words; '-' reads one query per line from stdin.",
    ),
    paths: list[Path] = opt.SCOPE_PATHS,
    top: int = opt.TOP,
    min_score: float | None = typer.Option(
        None,
        "--min-score",
        help="Drop hits whose cosine similarity is under this, in every mode (the score shown is "
        "the one that ranks: the hybrid blend by default).",
    ),
    mode: str | None = typer.Option(
        None, "--mode", envvar="SEMSEARCH_MODE", help="semantic, lexical or hybrid [default: hybrid]."
    ),
    globs: list[str] = opt.GLOB,
    types: list[str] = opt.TYPE,
    types_not: list[str] = opt.TYPE_NOT,
    changed_within: str | None = opt.CHANGED_WITHIN,
    changed_before: str | None = opt.CHANGED_BEFORE,
    as_json: bool = opt.JSON,
    files_only: bool = opt.FILES_ONLY,
    null: bool = opt.NULL,
    type_list: bool = opt.TYPE_LIST,
    rerank: bool = opt.RERANK,
    rerank_model: str | None = opt.RERANK_MODEL,
    rerank_depth: int | None = opt.RERANK_DEPTH,
    index: str | None = opt.INDEX,
) -> None:
    """Find the passages that mean what you ask (only under PATHs, when given).

    QUERY is what to look for, in plain words; with - instead, one query per line is read from
    stdin (the model is loaded once for all of them).

    Exit status: 0 when a hit was found, 1 when none was, 2 on an error (one line on stderr)."""
    from semsearch.search import DEFAULT_MODE, SearchOptions

    if type_list:
        _print_type_list()
        return

    def run() -> bool:
        if text is None:
            raise InvalidOptionError("Missing argument 'QUERY' (what to look for, or - to read queries from stdin)")
        options = SearchOptions(top_k=top, min_score=min_score, mode=mode or DEFAULT_MODE, files_only=files_only)
        reranking = _rerank_args(rerank, rerank_model, rerank_depth)
        _check_mode_from_environment(mode)
        _check_null(null, files_only=files_only, as_json=as_json)
        options.validate()
        options.scope = _scope(paths, globs, types, types_not, changed_within, changed_before)
        if text == "-":
            queries: Iterable[str] = _stdin_queries()
        else:
            if not text.strip():
                raise InvalidOptionError("empty query")
            queries = [text]
        return _run_queries(queries, options, as_json=as_json, null=null, index=index, reranking=reranking)

    console.answer(run)


@app.command()
def similar(
    target: str = typer.Argument(
        ...,
        metavar="PATH[:LINE|#PAGE]",
        help="An indexed file: PATH:LINE (the passage there), PATH#PAGE (a PDF page) or PATH (the whole file).",
    ),
    paths: list[Path] = opt.SCOPE_PATHS,
    top: int = opt.TOP,
    min_score: float | None = typer.Option(None, "--min-score", help="Drop hits under this cosine similarity."),
    include_self: bool = typer.Option(False, "--include-self", help="Let the file's own other passages match."),
    globs: list[str] = opt.GLOB,
    types: list[str] = opt.TYPE,
    types_not: list[str] = opt.TYPE_NOT,
    changed_within: str | None = opt.CHANGED_WITHIN,
    changed_before: str | None = opt.CHANGED_BEFORE,
    as_json: bool = opt.JSON,
    files_only: bool = opt.FILES_ONLY,
    null: bool = opt.NULL,
    index: str | None = opt.INDEX,
) -> None:
    """Find passages (or, with -l, files) like the one at PATH:LINE, PATH#PAGE or like a whole
    file PATH, from the index alone (no model is loaded); the file itself is left out unless
    --include-self. Only files under the further PATHs, when given.

    Exit status: 0 when a hit was found, 1 when none was, 2 on an error (one line on stderr)."""
    from semsearch.api import Index
    from semsearch.similar import Target

    def run() -> bool:
        _check_null(null, files_only=files_only, as_json=as_json)
        where = Target.parse(target)
        scope = _scope(paths, globs, types, types_not, changed_within, changed_before)
        with Index.open(index, on_note=console.note_printer(console.stderr())) as opened:
            path = where.path
            if not os.path.lexists(path) and not os.path.isabs(target):
                # Not here: a path as `semsearch mcp` takes it, below the indexed folders.
                candidate = opened.base_folder() / os.path.relpath(path)
                if os.path.lexists(candidate):
                    path = candidate
            hits = opened.similar(
                os.fspath(path),
                line=where.line,
                page=where.page,
                k=top,
                min_score=min_score,
                files_only=files_only,
                include_self=include_self,
                scope=scope,
            )
        _hit_writer(as_json=as_json, null=null, files_only=files_only, batch=False).write(where.label(), hits)
        return bool(hits)

    console.answer(run)


@app.command()
def duplicates(
    paths: list[Path] = opt.SCOPE_PATHS,
    min_score: float | None = typer.Option(
        None, "--min-score", help="Cosine at which two passages count as copies [default: 0.93]."
    ),
    globs: list[str] = opt.GLOB,
    types: list[str] = opt.TYPE,
    types_not: list[str] = opt.TYPE_NOT,
    changed_within: str | None = opt.CHANGED_WITHIN,
    changed_before: str | None = opt.CHANGED_BEFORE,
    as_json: bool = typer.Option(False, "--json", help="JSON Lines, one object per group (with -l: per pair)."),
    files_only: bool = typer.Option(False, "-l", "--files-only", help="Pairs of files that share passages."),
    index: str | None = opt.INDEX,
) -> None:
    """Find near-duplicate passages across files, most text per file first (-l: pairs of files).

    Exit status: 0 when copies were found, 1 when none were, 2 on an error (one line on stderr)."""
    from semsearch import output
    from semsearch.api import Index

    def run() -> bool:
        scope = _scope(paths, globs, types, types_not, changed_within, changed_before)
        with Index.open(index, on_note=console.note_printer(console.stderr())) as opened:
            found = opened.duplicates(min_score=min_score, scope=scope)
        out = sys.stdout
        terminal = out.isatty() and not as_json
        if files_only:
            output.write_file_pairs(out, found.files, as_json=as_json, terminal=terminal)
        else:
            output.write_groups(out, found.groups, as_json=as_json, terminal=terminal)
        return bool(found.groups)

    console.answer(run)


def _check_null(null: bool, *, files_only: bool, as_json: bool) -> None:
    if null and not files_only:
        raise InvalidOptionError("-0/--null goes with -l/--files-only")
    if null and as_json:
        raise InvalidOptionError("-0/--null does not go with --json (JSON Lines end each object with a newline)")


def _hit_writer(*, as_json: bool, null: bool, files_only: bool, batch: bool) -> Any:
    """Hits to stdout: the terminal view on a terminal, else lines, file lists or JSON Lines."""
    from semsearch import output

    out = sys.stdout
    return output.HitWriter(
        out, terminal=out.isatty() and not as_json, as_json=as_json, null=null, files_only=files_only, batch=batch
    )


def _check_mode_from_environment(mode: str | None) -> None:
    """A bad SEMSEARCH_MODE is named as such (not as a bad --mode the user never typed)."""
    from semsearch.search import MODES

    if mode is not None and mode not in MODES and os.environ.get("SEMSEARCH_MODE") == mode and "--mode" not in sys.argv:
        raise InvalidOptionError(f"SEMSEARCH_MODE must be one of {', '.join(MODES)} (got {mode})")


def _stdin_queries() -> Iterator[str]:
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", errors="replace").strip().replace("\x00", "")
        if line:
            yield line


def _run_queries(
    queries: Iterable[str],
    options: SearchOptions,
    *,
    as_json: bool,
    null: bool,
    index: str | None,
    reranking: dict[str, Any],
) -> bool:
    from semsearch.api import Index

    err = console.stderr()
    view = _hit_writer(as_json=as_json, null=null, files_only=options.files_only, batch=not isinstance(queries, list))
    found = False
    with Index.open(index, on_note=console.note_printer(err), model_server=True) as target:
        for query_text, hits in target.search_many(
            queries,
            k=options.top_k,
            mode=options.mode,
            min_score=options.min_score,
            files_only=options.files_only,
            scope=options.scope,
            **reranking,
        ):
            found = found or bool(hits)
            view.write(query_text, hits)
    return found


app.command()(topics)  # after duplicates in --help


@app.command("eval")
def evaluate(
    queries: Path = typer.Option(..., "--queries", help="BEIR queries: JSON Lines with _id and text."),
    qrels: Path = typer.Option(
        ..., "--qrels", help="BEIR judgments: query-id<TAB>corpus-id<TAB>score lines (a header line is optional)."
    ),
    mode: str | None = typer.Option(
        None, "--mode", envvar="SEMSEARCH_MODE", help="semantic, lexical or hybrid [default: hybrid]."
    ),
    id_mode: str = typer.Option(
        "stem", "--id-mode", help="Hit file -> document id: stem (name without extension), name, relpath."
    ),
    depth: int = typer.Option(100, "--depth", help="Distinct documents ranked per query."),
    rerank: bool = opt.RERANK,
    rerank_model: str | None = opt.RERANK_MODEL,
    rerank_depth: int | None = opt.RERANK_DEPTH,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    paths: list[Path] = opt.SCOPE_PATHS,
    globs: list[str] = opt.GLOB,
    types: list[str] = opt.TYPE,
    types_not: list[str] = opt.TYPE_NOT,
    changed_within: str | None = opt.CHANGED_WITHIN,
    changed_before: str | None = opt.CHANGED_BEFORE,
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=opt.INDEX_HELP),
) -> None:
    """Score the index on judged queries: nDCG@10, Recall@10/100, MRR@10, latency (only files under PATHs, when given)."""
    from semsearch.api import Index
    from semsearch.evaluate import EvalInputError, load_qrels, load_queries

    err = console.stderr()
    try:
        _check_mode_from_environment(mode)
        try:
            judged = load_qrels(qrels)
            asked = load_queries(queries)
        except OSError as exc:
            raise InvalidOptionError(f"{exc.filename}: {exc.strerror}") from None
        except EvalInputError as exc:
            raise InvalidOptionError(str(exc).splitlines()[0]) from None
        with Index.open(index, on_note=console.note_printer(err)) as target:
            scope = _scope(paths, globs, types, types_not, changed_within, changed_before)
            reranking = _rerank_args(rerank, rerank_model, rerank_depth)
            result = target.evaluate(asked, judged, mode=mode, id_mode=id_mode, depth=depth, scope=scope, **reranking)
    except SemsearchError as exc:
        console.fail(describe(exc))
        return
    if result.ids_matched == 0 and result.queries_run:
        err.print(
            f"semsearch: no ranked document's id (--id-mode {result.id_mode}) is among the judged ids; "
            "check --id-mode against the ids in the judgments",
            style="yellow",
        )
    if result.not_asked:
        err.print(
            f"semsearch: {result.not_asked} judged queries are not in {queries.name}; "
            f"scored over the {result.report.num_queries} that are",
            style="dim",
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    figures = result.summary()
    typer.echo(f"mode        {figures['mode']}")
    typer.echo(f"queries     {figures['queries']}")
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        typer.echo(f"{key:<11} {figures[key]:.4f}")
    typer.echo(f"latency     p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms")


@app.command()
def status(
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=opt.INDEX_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    verify: bool = typer.Option(
        False, "--verify", help="Also check the whole index: database pages, vector files' checksums and links."
    ),
) -> None:
    """Where the index is, what it holds, and how much changed on disk since.

    With --verify, exit code 2 when the index is damaged (each problem on stderr)."""
    from semsearch.api import Index
    from semsearch.cli.report import status_lines

    try:
        with Index.open(index) as target:
            info = target.status(verify=verify)
    except SemsearchError as exc:
        console.fail(describe(exc))
        return
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
    else:
        for key, value in status_lines(info):
            typer.echo(f"{key:<8} {value}")
    if info.problems:
        from semsearch.cli.messages import in_cli_words

        for problem in info.problems:
            console.stderr().print(f"semsearch: {in_cli_words(problem)}", markup=False, highlight=False)
        if all(problem.startswith("vectors-") for problem in info.problems):
            # Only vector files (or their sketches): written again from the database's vectors.
            remedy = "run `semsearch index` to repair it (nothing is embedded again)"
        else:
            remedy = "run `semsearch index --rebuild`"
        console.stderr().print(f"semsearch: the index is damaged: {remedy}", markup=False)
        raise typer.Exit(2)


@app.command("model-server")
def model_server_command(
    status: bool = typer.Option(False, "--status", help="List your running model servers (exit 1: none)."),
    stop: bool = typer.Option(False, "--stop", help="Stop your model servers (never another user's)."),
    model: str | None = typer.Option(
        None, "--model", help="Serve this model (its ModelInfo as JSON; `query` starts servers so)."
    ),
    idle: float | None = typer.Option(None, "--idle", help="Seconds without a request before it exits."),
) -> None:
    """The resident query model that `semsearch query` starts in the background and asks for its
    query vectors; it exits after SEMSEARCH_MODEL_SERVER_IDLE seconds (900) without a request."""
    if sum((status, stop, model is not None)) != 1:
        console.fail("give one of --status, --stop or --model")
    if idle is not None and not 0 < idle < float("inf"):
        console.fail(f"--idle must be a number of seconds over 0 (got {idle})")
    if status or stop:
        _model_servers(stop=stop)
        return
    from semsearch.models import query_embedder
    from semsearch.models.base import ModelInfo
    from semsearch.models.resident import serve

    info = ModelInfo(**json.loads(model or "{}"))
    try:
        code = serve(info, lambda known: query_embedder(known, threads=1), idle=idle)
    except SemsearchError as exc:
        console.fail(describe(exc))  # into the server's log
        return
    raise typer.Exit(code)


def _model_servers(*, stop: bool) -> None:
    """`model-server --status` (a line per server on stdout) or `--stop`."""
    import time

    from semsearch.models import resident

    if not stop:
        servers = resident.running_servers()
        for server in servers:
            pid = server.pid if server.pid is not None else "?"
            since = f", up {_duration(time.time() - server.started)}" if server.started else ""
            typer.echo(f"pid {pid}: {server.model}{since} ({server.socket})")
        if not servers:
            console.stderr().print("semsearch: no model server of yours is running")
        raise typer.Exit(EXIT_FOUND if servers else EXIT_NOT_FOUND)
    stopped, left = resident.stop_servers()
    err = console.stderr()
    if not stopped and not left:
        err.print("semsearch: no model server of yours is running")
    for server in stopped:
        err.print(f"semsearch: stopped the model server of {server.model} (pid {server.pid})")
    if left:
        pids = ", ".join(str(s.pid) if s.pid is not None else "?" for s in left)
        console.fail(f"could not stop {len(left)} model server(s) (pid {pids})")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {int(seconds) % 60} s"


@app.command("mcp")
def mcp_command(
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=opt.INDEX_HELP),
    allow_index: bool = typer.Option(
        False, "--allow-index", help="Offer the `index` tool, which updates the index (it writes)."
    ),
    watch: bool = typer.Option(
        False, "--watch", help="Also keep the index fresh: update it after each burst of changes to its folders."
    ),
    timeout: float = typer.Option(
        60.0,
        "--timeout",
        envvar="SEMSEARCH_MCP_TIMEOUT",
        metavar="SECONDS",
        help="Answer a tool call that runs longer with an error (0: no limit); other calls go on meanwhile.",
    ),
    rerank_model: str | None = opt.RERANK_MODEL,
) -> None:
    """Serve the index to coding agents and editors: a Model Context Protocol server on stdio.

    Tools: search, similar, status, duplicates, topics (and index with --allow-index). The index is opened once and
    the query model stays loaded; an index updated or rebuilt meanwhile is picked up. A search
    asking for rerank uses --rerank-model.
    """
    import math

    from semsearch.cli.mcp_server import serve

    if not math.isfinite(timeout) or timeout < 0:
        console.fail(f"--timeout must be 0 (no limit) or a number of seconds (got {timeout})")
    serve(index, allow_index=allow_index, watch=watch, timeout=timeout, rerank_model=rerank_model)


@app.command("serve")
def serve_command(
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=opt.INDEX_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; any but a loopback one needs a token."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free one)."),
    token: str | None = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        help="The token callers must give (visible to `ps`: prefer the file or the variable).",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", metavar="FILE", help="Read the token from the first line of FILE."
    ),
    allow_index: bool = typer.Option(
        False, "--allow-index", help="Offer POST /index and the MCP index tool (it writes)."
    ),
    watch: bool = typer.Option(
        False, "--watch", help="Also keep the index fresh: update it after each burst of changes to its folders."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", metavar="SECONDS", help="Answer a call that runs longer with 504 (0: no limit)."
    ),
    rerank_model: str | None = opt.RERANK_MODEL,
) -> None:
    """Serve the index over HTTP: a search page at /, a JSON API (/search, /similar, /status,
    /duplicates, /topics; /openapi.json describes it) and MCP over streamable HTTP at /mcp.

    Binds to 127.0.0.1 unless --host says otherwise, which needs a token (--token, --token-file or
    SEMSEARCH_SERVE_TOKEN): callers give it as "Authorization: Bearer TOKEN", the page asks for it
    once. The query model stays loaded; an index updated or rebuilt meanwhile is picked up.
    """
    import math

    from semsearch.cli.serve_app import ServeSettings, is_loopback, run

    try:
        secret = _serve_token(token, token_file)
        if not math.isfinite(timeout) or timeout < 0:
            raise InvalidOptionError(f"--timeout must be 0 (no limit) or a number of seconds (got {timeout})")
        if not 0 <= port <= 65535:
            raise InvalidOptionError(f"--port must be between 0 and 65535 (got {port})")
        if secret is None and not is_loopback(host):
            raise InvalidOptionError(
                f"serving on {host} needs a token (--token-file FILE or SEMSEARCH_SERVE_TOKEN); "
                "without one, only 127.0.0.1"
            )
        settings = ServeSettings(index, host=host, port=port, token=secret, allow_index=allow_index,
                                 timeout=timeout, rerank_model=rerank_model)  # fmt: skip
        err = console.stderr()

        def ready(url: str) -> None:
            guard = "a token is required" if secret else "loopback only, no token"
            err.print(f"semsearch: serving at {url} ({guard}): the page at /, the API at /search "
                      f"(/openapi.json), MCP at /mcp; Ctrl-C stops", markup=False, highlight=False)  # fmt: skip

        run(settings, on_ready=ready, watch=watch)
    except SemsearchError as exc:
        console.fail(describe(exc))


MIN_TOKEN = 16


def _serve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from the flag, else the file, else SEMSEARCH_SERVE_TOKEN (None: none given)."""
    if token is None and token_file is not None:
        try:
            token = (token_file.read_text(encoding="utf-8").splitlines() or [""])[0]
        except OSError as exc:
            raise InvalidOptionError(f"--token-file {token_file}: {exc.strerror}") from None
    if token is None:
        token = os.environ.get("SEMSEARCH_SERVE_TOKEN")
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidOptionError(
            f"the token must be at least {MIN_TOKEN} printable characters without spaces "
            '(make one with: python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return token
