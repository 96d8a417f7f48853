"""The commands: flags and environment -> one :class:`semsearch.Index` call -> formatted results."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from semsearch.cli import console
from semsearch.cli.console import EXIT_FOUND, EXIT_NOT_FOUND
from semsearch.cli.messages import describe
from semsearch.errors import InvalidOptionError, SemsearchError
from semsearch.version import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from semsearch.api import Index
    from semsearch.indexing import IndexSummary
    from semsearch.search import SearchOptions

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Semantic search over local files: offline, fast, scriptable.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
INDEX_HELP = "Index folder or PostgreSQL URL [default: nearest .semsearch above]."


def parse_size(text: str) -> int:
    """'20M', '512k', '1.5G', '1000' -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise InvalidOptionError(f"--max-file-size: cannot read size '{text}' (try 20M)")
    factor = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    size = int(float(match.group(1)) * factor)
    if size < 1:
        raise InvalidOptionError(f"--max-file-size must be at least 1 byte (got '{text}')")
    return size


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"semsearch {__version__}")
        raise typer.Exit(0)


def _kept(*flags: str, help: str) -> Any:
    """An option of `index` whose default is the index's own setting (None: not given)."""
    return typer.Option(None, *flags, show_default=False, help=help)


# The options of `index` (declared here to keep the command's signature readable).
_PATHS = typer.Argument(None, help="Files and folders to index [default: those indexed before].")
_INDEX_FOR_WRITING = typer.Option(
    None,
    "--index",
    envvar="SEMSEARCH_INDEX",
    help="Index folder, or a PostgreSQL URL (postgresql://user@host/db; the password from PGPASSWORD or "
    "~/.pgpass) [default: ./.semsearch; with no PATH, the nearest .semsearch above].",
)
_FROM = typer.Option(
    None,
    "--from",
    metavar="INDEX",
    help="Publish this local index to the PostgreSQL --index as it is (its stored vectors: nothing is embedded).",
)
_MODEL = typer.Option(
    None,
    "--model",
    envvar="SEMSEARCH_MODEL",
    help="sentence-transformers model name or folder [default: bundled all-MiniLM-L6-v2].",
)
_CHUNK_TOKENS = _kept("--chunk-tokens", help="Chunk size in cl100k tokens [default: the index's own, else 128].")
_OVERLAP_TOKENS = _kept(
    "--overlap-tokens", help="Tokens shared by neighbouring chunks [default: the index's own, else 32]."
)
_CONTEXT = _kept(
    "--context/--no-context",
    help="Embed each chunk with its document title (Markdown: heading path) in front [default: the index's own, else on].",
)
_MAX_FILE_SIZE = _kept("--max-file-size", help="Skip files larger than this [default: the index's own, else 20M].")
_HIDDEN = _kept("--hidden/--no-hidden", help="Include hidden files and folders [default: the index's own, else no].")
_FOLLOW_SYMLINKS = _kept(
    "--follow-symlinks/--no-follow-symlinks",
    help="Follow links that lead outside the given folders [default: the index's own, else no].",
)
_OCR = typer.Option(
    None,
    "--ocr",
    metavar="off|auto|images",
    help="Read text by OCR: off; auto, PDF pages without a text layer; images, those and image files "
    "(PNG, JPEG, TIFF...) [default: the index's own, else auto].",
)
_NOTEBOOK_OUTPUTS = _kept(
    "--notebook-outputs/--no-notebook-outputs",
    help="Index the text outputs of notebook cells too [default: the index's own, else no].",
)
_WATCH = typer.Option(
    False,
    "--watch",
    help="After indexing, keep watching the folders and update the index after each burst of changes "
    "(one line per update; Ctrl-C stops after the update in progress).",
)
_REBUILD = typer.Option(False, "--rebuild", help="Re-embed everything into a fresh index.")
_DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
_PRECISION = typer.Option(
    "auto",
    "--precision",
    help="auto, fp32, int8, bf16 or fp16 (auto: the index's own, else int8 on CPUs with VNNI, fp16 on CUDA, else fp32).",
)
_WAIT = typer.Option(0.0, "--wait", help="Seconds to wait for another index run to finish.")
_QUIET = typer.Option(False, "-q", "--quiet", help="No progress bar or summary.")
_VERBOSE = typer.Option(False, "-v", "--verbose", help="Name every skipped file.")


@app.command()
def index(
    paths: list[Path] = _PATHS,
    index: str | None = _INDEX_FOR_WRITING,
    model: str | None = _MODEL,
    chunk_tokens: int | None = _CHUNK_TOKENS,
    overlap_tokens: int | None = _OVERLAP_TOKENS,
    context: bool | None = _CONTEXT,
    max_file_size: str | None = _MAX_FILE_SIZE,
    hidden: bool | None = _HIDDEN,
    follow_symlinks: bool | None = _FOLLOW_SYMLINKS,
    ocr: str | None = _OCR,
    notebook_outputs: bool | None = _NOTEBOOK_OUTPUTS,
    rebuild: bool = _REBUILD,
    watch: bool = _WATCH,
    device: str = _DEVICE,
    precision: str = _PRECISION,
    wait: float = _WAIT,
    quiet: bool = _QUIET,
    verbose: bool = _VERBOSE,
    source: Path | None = _FROM,
) -> None:
    """Index files and folders (re-embeds only what changed).

    Settings not given keep the values the index was built or last updated with.
    """
    from semsearch.api import Index

    err = console.stderr()
    try:
        size = parse_size(max_file_size) if max_file_size is not None else None
        target = Index.for_update(
            index,
            new_paths=bool(paths),
            on_note=console.note_printer(err, quiet),
            model=model,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
            context=context,
            max_file_size=size,
            hidden=hidden,
            follow_symlinks=follow_symlinks,
            ocr=ocr,
            notebook_outputs=notebook_outputs,
            precision=precision,
            device=device,
        )
        if source is not None:
            _publish(target, source, paths, wait=wait, quiet=quiet, err=err)
            return
        with target:
            summary = _update(target, paths, rebuild=rebuild, wait=wait, quiet=quiet, verbose=verbose, err=err)
            if not quiet or watch:
                from semsearch.cli.report import summary_line

                err.print(summary_line(summary))
            if watch:
                _watch(target, err=err, verbose=verbose)
    except SemsearchError as exc:
        console.fail(describe(exc))
        return


def _publish(target: Index, source: Path, paths: list[Path], *, wait: float, quiet: bool, err: Console) -> None:
    """`index --index postgresql://... --from DIR`: the local index copied as it is."""
    if paths:
        console.fail("give either PATHs to index or --from INDEX to publish, not both")
        return
    with target:
        done = target.copy_from(source, wait=wait)
    if not quiet:
        err.print(
            f"published {done.files} files, {done.chunks} chunks ({done.model}) from {source} "
            f"in {done.seconds:.1f}s; nothing embedded"
        )


def _watch(target: Index, *, err: Console, verbose: bool) -> None:
    """`index --watch`: one summary line per update until Ctrl-C or SIGTERM, which stop after the
    update in progress (nothing half done)."""
    import signal
    import threading

    from semsearch.cli.report import summary_line

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    printer = console.IndexProgress(err, enabled=False, verbose=verbose)
    try:
        target.watch(
            on_update=lambda summary: err.print(summary_line(summary)),
            on_event=printer.on_event,
            stop=stop,
            on_ready=lambda: err.print("semsearch: watching for changes (Ctrl-C to stop)"),
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err.print("semsearch: stopped watching")


def _update(
    target: Index, paths: list[Path] | None, *, rebuild: bool, wait: float, quiet: bool, verbose: bool, err: Console
) -> IndexSummary:
    """Run the update with a progress bar; an interruption says what it leaves (exit 130 or 143)."""
    try:
        with (
            console.IndexProgress(
                err, enabled=not quiet and err.is_terminal, verbose=verbose, plain=not quiet
            ) as progress,
            console.terminate_as_interrupt(),
        ):
            return target.update(paths, rebuild=rebuild, wait=wait, on_event=progress.on_event)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, console.Terminated)
        kept = target.what_an_interruption_leaves()
        err.print(f"semsearch: {'terminated' if terminated else 'interrupted'}{'; ' + kept if kept else ''}")
        console.STATE.interrupt_reported = True
        raise typer.Exit(143 if terminated else 130) from None


# The filters of `query`, `similar`, `duplicates` and `eval`.
_SCOPE_PATHS = typer.Argument(
    None, metavar="[PATH]...", show_default=False, help="Only files under these files or folders."
)
_GLOB = typer.Option(
    None, "-g", "--glob", metavar="GLOB", help="Only paths matching GLOB (gitignore-style; !GLOB excludes). Repeatable."
)
_TYPE = typer.Option(
    None, "-t", "--type", metavar="TYPE", help="Only files of TYPE (md, pdf, py, code...). Repeatable."
)
_TYPE_NOT = typer.Option(None, "-T", "--type-not", metavar="TYPE", help="No files of TYPE. Repeatable.")
_CHANGED_WITHIN = typer.Option(
    None, "--changed-within", metavar="DURATION", help="Only files modified within DURATION (7d, 12h, 2w)."
)
_CHANGED_BEFORE = typer.Option(
    None,
    "--changed-before",
    metavar="DATE",
    help="Only files modified before DATE (2026-11-01, '2026-11-01 14:30') or DURATION ago (30d).",
)
_TYPE_LIST = typer.Option(False, "--type-list", help="List the file types and their patterns, and exit.")
_INDEX = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=INDEX_HELP)
_JSON = typer.Option(False, "--json", help="JSON Lines, one object per hit.")
_FILES_ONLY = typer.Option(False, "-l", "--files-only", help="Only the distinct files, best first.")
_NULL = typer.Option(False, "-0", "--null", help="With -l: end each file name with NUL (for xargs -0).")
_TOP = typer.Option(10, "-k", "--top", help="How many hits.")


def _scope(*filters: Any) -> Any:
    """The filters given on the command line as a Scope (None: none given)."""
    from semsearch.scope import scope_of

    return scope_of(*filters)


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
    paths: list[Path] = _SCOPE_PATHS,
    top: int = _TOP,
    min_score: float | None = typer.Option(
        None,
        "--min-score",
        help="Drop hits whose cosine similarity is under this, in every mode (the score shown is "
        "the one that ranks: the hybrid blend by default).",
    ),
    mode: str | None = typer.Option(
        None, "--mode", envvar="SEMSEARCH_MODE", help="semantic, lexical or hybrid [default: hybrid]."
    ),
    globs: list[str] = _GLOB,
    types: list[str] = _TYPE,
    types_not: list[str] = _TYPE_NOT,
    changed_within: str | None = _CHANGED_WITHIN,
    changed_before: str | None = _CHANGED_BEFORE,
    as_json: bool = _JSON,
    files_only: bool = _FILES_ONLY,
    null: bool = _NULL,
    type_list: bool = _TYPE_LIST,
    index: str | None = _INDEX,
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
        return _run_queries(queries, options, as_json=as_json, null=null, index=index)

    _answer(run)


@app.command()
def similar(
    target: str = typer.Argument(
        ...,
        metavar="PATH[:LINE|#PAGE]",
        help="An indexed file: PATH:LINE (the passage there), PATH#PAGE (a PDF page) or PATH (the whole file).",
    ),
    paths: list[Path] = _SCOPE_PATHS,
    top: int = _TOP,
    min_score: float | None = typer.Option(None, "--min-score", help="Drop hits under this cosine similarity."),
    include_self: bool = typer.Option(False, "--include-self", help="Let the file's own other passages match."),
    globs: list[str] = _GLOB,
    types: list[str] = _TYPE,
    types_not: list[str] = _TYPE_NOT,
    changed_within: str | None = _CHANGED_WITHIN,
    changed_before: str | None = _CHANGED_BEFORE,
    as_json: bool = _JSON,
    files_only: bool = _FILES_ONLY,
    null: bool = _NULL,
    index: str | None = _INDEX,
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

    _answer(run)


@app.command()
def duplicates(
    paths: list[Path] = _SCOPE_PATHS,
    min_score: float | None = typer.Option(
        None, "--min-score", help="Cosine at which two passages count as copies [default: 0.93]."
    ),
    globs: list[str] = _GLOB,
    types: list[str] = _TYPE,
    types_not: list[str] = _TYPE_NOT,
    changed_within: str | None = _CHANGED_WITHIN,
    changed_before: str | None = _CHANGED_BEFORE,
    as_json: bool = typer.Option(False, "--json", help="JSON Lines, one object per group (with -l: per pair)."),
    files_only: bool = typer.Option(False, "-l", "--files-only", help="Pairs of files that share passages."),
    index: str | None = _INDEX,
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

    _answer(run)


def _answer(run: Callable[[], bool]) -> None:
    """Run a search command with grep's exit codes: 0 found, 1 nothing found, 2 an error (one
    line on stderr); a pipe closed early (``| head``) ends it quietly."""
    try:
        found = run()
    except BrokenPipeError:
        console.quiet_stdout()
        raise typer.Exit(EXIT_FOUND) from None
    except SemsearchError as exc:
        console.fail(describe(exc))
        return
    console.STATE.done_early = True
    raise typer.Exit(EXIT_FOUND if found else EXIT_NOT_FOUND)


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
    queries: Iterable[str], options: SearchOptions, *, as_json: bool, null: bool, index: str | None
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
        ):
            found = found or bool(hits)
            view.write(query_text, hits)
    return found


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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    paths: list[Path] = _SCOPE_PATHS,
    globs: list[str] = _GLOB,
    types: list[str] = _TYPE,
    types_not: list[str] = _TYPE_NOT,
    changed_within: str | None = _CHANGED_WITHIN,
    changed_before: str | None = _CHANGED_BEFORE,
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=INDEX_HELP),
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
            result = target.evaluate(asked, judged, mode=mode, id_mode=id_mode, depth=depth, scope=scope)
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
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=INDEX_HELP),
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
    index: str | None = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=INDEX_HELP),
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
) -> None:
    """Serve the index to coding agents and editors: a Model Context Protocol server on stdio.

    Tools: search, similar, status (and index with --allow-index). The index is opened once and
    the query model stays loaded; an index updated or rebuilt meanwhile is picked up.
    """
    import math

    from semsearch.cli.mcp_server import serve

    if not math.isfinite(timeout) or timeout < 0:
        console.fail(f"--timeout must be 0 (no limit) or a number of seconds (got {timeout})")
    serve(index, allow_index=allow_index, watch=watch, timeout=timeout)
