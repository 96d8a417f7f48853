"""The command line: flags and environment -> options, one library call, formatted results.

Exit codes follow grep: 0 found, 1 nothing found, 2 error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from semsearch import __version__
from semsearch.errors import InvalidOptionError, SemsearchError

if TYPE_CHECKING:
    from rich.console import Console

    from semsearch.indexer import IndexEvent, IndexSummary

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2
# Set by `query` once its results are written and the index is closed: the console script then
# ends the process at once instead of tearing the interpreter down (see main()).
_done_early = False
_interrupt_reported = False  # `index` said what an interruption leaves behind

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Semantic search over local files: offline, fast, scriptable.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


class Fail(Exception):
    """A one-line error for the user (exit 2)."""


def _error_line(message: str) -> str:
    """``semsearch: error: MESSAGE`` on one line, whatever the message quotes (a damaged
    database's garbage included)."""
    from semsearch.output import escape_controls

    return f"semsearch: error: {escape_controls(message.replace(chr(13), ' '), keep_newlines=False)}"


def _fail(message: str) -> None:
    _stderr().print(_error_line(message), style="red")
    raise typer.Exit(EXIT_ERROR)


def _index_dir_for_writing(index: Optional[Path]) -> Path:
    from semsearch.store import INDEX_DIR_NAME

    return Path(os.path.abspath(index or Path.cwd() / INDEX_DIR_NAME))


def _index_dir_for_reading(index: Optional[Path]) -> Path:
    from semsearch.store import INDEX_DIR_NAME, find_index_dir, is_index_dir

    if index is not None:
        given = Path(os.path.abspath(index))
        inner = given / INDEX_DIR_NAME
        # The folder that holds an index (a project folder) stands for its index.
        return inner if not is_index_dir(given) and is_index_dir(inner) else given
    found = find_index_dir()
    if found is None:
        raise SemsearchError("no index here or in any parent folder (run `semsearch index PATH` first)")
    return found


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


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


@app.command()
def index(
    paths: list[Path] = typer.Argument(None,
                                       help="Files and folders to index [default: those indexed before]."),
    index: Optional[Path] = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX",
                                         help="Index folder [default: ./.semsearch; with no PATH, the nearest .semsearch above]."),
    model: Optional[str] = typer.Option(None, "--model", envvar="SEMSEARCH_MODEL",
                                        help="sentence-transformers model name or folder [default: bundled all-MiniLM-L6-v2]."),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", show_default=False,
                                               help="Chunk size in cl100k tokens [default: the index's own, else 128]."),
    overlap_tokens: Optional[int] = typer.Option(None, "--overlap-tokens", show_default=False,
                                                 help="Tokens shared by neighbouring chunks [default: the index's own, else 32]."),
    context: Optional[bool] = typer.Option(None, "--context/--no-context", show_default=False,
                                           help="Embed each chunk with its document title (Markdown: heading path) in front [default: the index's own, else on]."),
    max_file_size: Optional[str] = typer.Option(None, "--max-file-size", show_default=False,
                                                help="Skip files larger than this [default: the index's own, else 20M]."),
    hidden: Optional[bool] = typer.Option(None, "--hidden/--no-hidden", show_default=False,
                                          help="Include hidden files and folders [default: the index's own, else no]."),
    follow_symlinks: Optional[bool] = typer.Option(None, "--follow-symlinks/--no-follow-symlinks", show_default=False,
                                                   help="Follow links that lead outside the given folders [default: the index's own, else no]."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Re-embed everything into a fresh index."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto, fp32, int8, bf16 or fp16 (auto: the index's own, else int8 on CPUs with VNNI, fp16 on CUDA, else fp32)."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another index run to finish."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar or summary."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Name every skipped file."),
) -> None:
    """Index files and folders (re-embeds only what changed).

    Settings not given keep the values the index was built or last updated with.
    """
    global _interrupt_reported
    from semsearch.indexer import IndexOptions, WalkChoices, build_index
    from semsearch.models import LocalModel

    err = _stderr()
    try:
        index_dir = _index_dir_for_indexing(index, bool(paths))
        if index_dir is None:
            raise InvalidOptionError("nothing to index: give a PATH (later runs remember it)")
        for root in paths or []:
            if not os.path.lexists(root):
                raise InvalidOptionError(f"{root}: no such file or folder")
        if wait < 0:
            raise InvalidOptionError(f"--wait must be 0 or more seconds (got {wait:g})")
        existing = _existing_manifest(index_dir)
        note = (lambda message: err.print(f"semsearch: {message}", style="dim")) if not quiet else (lambda message: None)
        provider = LocalModel(model, device=device, precision=precision,
                              known=existing.model if existing else None, on_note=note)
        options = IndexOptions(
            roots=[Path(p) for p in (paths or [])],
            index_dir=index_dir,
            chunking=_chunk_settings(existing, chunk_tokens, overlap_tokens, context),
            walk=WalkChoices(hidden=hidden, follow_symlinks=follow_symlinks,
                             max_file_size=parse_size(max_file_size) if max_file_size is not None else None),
            rebuild=rebuild,
            lock_wait_seconds=wait,
        )
        try:
            with _IndexProgress(err, enabled=not quiet and err.is_terminal, verbose=verbose) as progress, \
                    _terminate_as_interrupt():
                summary = build_index(options, provider, progress.on_event)
        except KeyboardInterrupt as exc:
            what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
            err.print(f"semsearch: {what}{_what_an_interruption_leaves(index_dir)}")
            _interrupt_reported = True
            raise typer.Exit(143 if isinstance(exc, _Terminated) else 130) from None
        if provider.loaded or not _export_exists(provider):
            provider.ensure_export(note)  # the query path runs the ONNX export
    except SemsearchError as exc:
        _fail(str(exc))
        return
    if not quiet:
        err.print(_summary_line(summary))


def _what_an_interruption_leaves(index_dir: Path) -> str:
    from semsearch.store import BUILDING, MANIFEST

    current, building = (index_dir / MANIFEST).exists(), (index_dir / BUILDING).exists()
    if current and building:
        return "; the index in use is unchanged: run the same command again to finish the rebuild"
    if current or building:
        return "; what was stored is kept: run `semsearch index` again to finish"
    return ""


class _Terminated(KeyboardInterrupt):
    """SIGTERM during `index`: unwound like Ctrl-C (the run stops between writes, says so)."""


@contextlib.contextmanager
def _terminate_as_interrupt():  # -> Iterator[None]
    """Turn SIGTERM into :class:`_Terminated` for the block (main thread only; restored after)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _index_dir_for_indexing(index: Optional[Path], given_paths: bool) -> Path | None:
    """Where `index` writes: --index, else ./.semsearch; with no PATH and no ./.semsearch, the
    nearest index above (the one `query` here would read), or None when there is none."""
    from semsearch.store import find_index_dir, is_index_dir

    here = _index_dir_for_writing(index)
    if index is not None or given_paths or (here.is_dir() and is_index_dir(here)):
        return here
    return find_index_dir()


def _existing_manifest(index_dir: Path):  # -> IndexManifest | None
    """The settings last asked of the index: those of a build still under way (an interrupted
    first build, or a rebuild for new settings), else the index's own; None for a new index."""
    from semsearch.store import BUILDING, MANIFEST, read_manifest

    for name in (BUILDING, MANIFEST):
        with contextlib.suppress(SemsearchError):
            return read_manifest(index_dir, name)
    return None


def _chunk_settings(existing, chunk_tokens: Optional[int], overlap_tokens: Optional[int],  # noqa: ANN001
                    context: Optional[bool]):  # -> ChunkSettings
    """The options given, else the index's own settings, else the defaults. A new --chunk-tokens
    alone keeps the index's overlap when it still fits (at most half a chunk), else a quarter chunk."""
    from semsearch.chunk import ChunkSettings

    base = ChunkSettings()
    if existing is not None:
        base = ChunkSettings(chunk_tokens=existing.chunking.chunk_tokens,
                             overlap_tokens=existing.chunking.overlap_tokens, context=existing.chunking.context)
    size = chunk_tokens if chunk_tokens is not None else base.chunk_tokens
    if overlap_tokens is None:
        overlap_tokens = base.overlap_tokens if base.overlap_tokens <= size // 2 else size // 4
    return ChunkSettings(chunk_tokens=size, overlap_tokens=overlap_tokens,
                         context=base.context if context is None else context)


def _export_exists(provider) -> bool:  # noqa: ANN001 - LocalModel
    from semsearch.models import export_dir_for

    return (export_dir_for(provider.info().fingerprint) / "export.json").is_file()


def _summary_line(s: IndexSummary) -> str:
    skipped = sum(s.skipped.values())
    parts = [
        f"indexed {s.indexed} file{'' if s.indexed == 1 else 's'}",
        f"{s.unchanged} unchanged",
        f"{s.removed} removed",
    ]
    skip_text = f"skipped {skipped}"
    if skipped:
        skip_text += " (" + ", ".join(f"{n} {reason}" for reason, n in s.skipped.most_common()) + ")"
    parts.append(skip_text)
    if s.no_text:
        parts.append(f"{s.no_text} without text")
    reused = f" ({s.chunks_reused} reused, not embedded again)" if s.chunks_reused else ""
    parts.append(f"chunks: +{s.chunks_added}{reused} -{s.chunks_removed} = {s.chunks_total}")
    parts.append(f"{s.seconds:.1f} s")
    return "semsearch: " + ", ".join(parts)


class _IndexProgress:
    """Progress bar and warnings on stderr; the bar only on a terminal."""

    def __init__(self, console: Console, enabled: bool, verbose: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.verbose = verbose
        self.progress = None
        self.task = None

    def __enter__(self) -> _IndexProgress:
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("scanning", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_event(self, event: IndexEvent) -> None:
        if event.kind in ("warning", "message") or (event.kind == "skip" and self.verbose):
            from semsearch.output import display_path, escape_name

            where = f"{escape_name(display_path(event.path))}: " if event.path else ""
            style = {"warning": "yellow", "skip": "dim"}.get(event.kind)
            self.console.print(f"semsearch: {where}{event.text}", style=style)
        if self.progress is None:
            return
        if event.kind == "plan":
            self.progress.update(self.task, description="indexing", total=event.total, completed=0)
        elif event.kind == "file":
            self.progress.update(self.task, completed=event.done)
        elif event.kind == "graph":
            self.progress.update(self.task, description="vector graph", total=event.total, completed=event.done)


@app.command()
def query(
    text: str = typer.Argument(..., metavar="QUERY", help="What to look for, in plain words; '-' reads one query per line from stdin."),
    top: int = typer.Option(10, "-k", "--top", help="How many hits."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Drop hits under this cosine similarity."),
    mode: Optional[str] = typer.Option(None, "--mode", envvar="SEMSEARCH_MODE", help="semantic, lexical or hybrid [default: hybrid]."),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines, one object per hit."),
    files_only: bool = typer.Option(False, "-l", "--files-only", help="Only the distinct files, best first."),
    null: bool = typer.Option(False, "-0", "--null", help="With -l: end each file name with NUL (for xargs -0)."),
    index: Optional[Path] = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help="Index folder [default: nearest .semsearch above]."),
) -> None:
    """Find the passages that mean what you ask."""
    from semsearch.search import DEFAULT_MODE, SearchOptions

    options = SearchOptions(top_k=top, min_score=min_score, mode=mode or DEFAULT_MODE, files_only=files_only)
    try:
        _check_mode_from_environment(mode)
        if null and not files_only:
            raise InvalidOptionError("-0/--null goes with -l/--files-only")
        options.validate()
        if text == "-":
            queries = _stdin_queries()
        else:
            if not text.strip():
                raise InvalidOptionError("empty query")
            queries = [text]
        found = _run_queries(queries, options, as_json=as_json, null=null, index=index)
    except BrokenPipeError:
        _quiet_stdout()
        raise typer.Exit(EXIT_FOUND) from None
    except SemsearchError as exc:
        _fail(str(exc))
        return
    global _done_early
    _done_early = True
    raise typer.Exit(EXIT_FOUND if found else EXIT_NOT_FOUND)


def _check_mode_from_environment(mode: Optional[str]) -> None:
    """A bad SEMSEARCH_MODE is named as such (not as a bad --mode the user never typed)."""
    from semsearch.search import MODES

    if mode is not None and mode not in MODES and os.environ.get("SEMSEARCH_MODE") == mode and "--mode" not in sys.argv:
        raise InvalidOptionError(f"SEMSEARCH_MODE must be one of {', '.join(MODES)} (got {mode})")


def _stdin_queries():  # -> Iterator[str]
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", errors="replace").strip().replace("\x00", "")
        if line:
            yield line


def _run_queries(queries, options, *, as_json: bool, null: bool, index: Optional[Path]) -> bool:  # noqa: ANN001
    from semsearch import output
    from semsearch.models import load_query_embedder
    from semsearch.search import Searcher
    from semsearch.store import IndexReader

    err = _stderr()
    reader = IndexReader(_index_dir_for_reading(index))
    note = lambda message: err.print(f"semsearch: {message}", style="dim")  # noqa: E731

    def load():  # noqa: ANN202
        embedder, _, _ = load_query_embedder(reader.manifest.model, on_note=note)
        return embedder

    searcher = Searcher(reader, load, on_note=note)
    out = sys.stdout
    terminal = out.isatty() and not as_json
    console = None
    if terminal:
        from rich.console import Console

        console = Console(highlight=False, markup=False, soft_wrap=False)
    found = False
    batch = not isinstance(queries, list)
    try:
        for number, query_text in enumerate(queries):
            hits = searcher.search(query_text, options)
            found = found or bool(hits)
            if as_json:
                output.write_json_lines(out, hits, query_text)
            elif options.files_only:
                if terminal and console is not None:
                    output.render_terminal(console, hits, query_text, files_only=True)
                else:
                    output.write_files(out, hits, null=null)
            elif terminal and console is not None:
                if batch:
                    console.print(f"# {output.escape_controls(query_text, keep_newlines=False)}", style="bold")
                output.render_terminal(console, hits, query_text)
            else:
                if batch:
                    out.write(("\n" if number else "") + f"# {output.escape_controls(query_text, keep_newlines=False)}\n")
                output.write_lines(out, hits)
            out.flush()
    finally:
        searcher.close()
        reader.close()
    return found


@app.command("eval")
def evaluate(
    queries: Path = typer.Option(..., "--queries", help="BEIR queries: JSON Lines with _id and text."),
    qrels: Path = typer.Option(..., "--qrels", help="BEIR judgments: query-id<TAB>corpus-id<TAB>score lines (a header line is optional)."),
    mode: Optional[str] = typer.Option(None, "--mode", envvar="SEMSEARCH_MODE", help="semantic, lexical or hybrid [default: hybrid]."),
    id_mode: str = typer.Option("stem", "--id-mode", help="Hit file -> document id: stem (name without extension), name, relpath."),
    depth: int = typer.Option(100, "--depth", help="Distinct documents ranked per query."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    index: Optional[Path] = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help="Index folder [default: nearest .semsearch above]."),
) -> None:
    """Score the index on judged queries: nDCG@10, Recall@10/100, MRR@10, latency."""
    from semsearch.evaluate import EvalInputError, load_qrels, load_queries
    from semsearch.evalrun import run_evaluation
    from semsearch.models import load_query_embedder
    from semsearch.search import DEFAULT_MODE, Searcher
    from semsearch.store import IndexReader

    err = _stderr()
    try:
        _check_mode_from_environment(mode)
        try:
            judged = load_qrels(qrels)
            asked = load_queries(queries)
        except (EvalInputError, OSError) as exc:
            raise InvalidOptionError(str(exc).splitlines()[0]) from None
        with IndexReader(_index_dir_for_reading(index)) as reader:
            note = lambda message: err.print(f"semsearch: {message}", style="dim")  # noqa: E731
            searcher = Searcher(reader, lambda: load_query_embedder(reader.manifest.model, on_note=note)[0], on_note=note)
            try:
                result = run_evaluation(reader, searcher, asked, judged, mode=mode or DEFAULT_MODE,
                                        id_mode=id_mode, depth=depth)
            except ValueError as exc:
                raise InvalidOptionError(str(exc)) from None
            finally:
                searcher.close()
    except SemsearchError as exc:
        _fail(str(exc))
        return
    if result.ids_matched == 0 and result.queries_run:
        err.print(f"semsearch: no ranked document's id (--id-mode {result.id_mode}) is among the judged ids; "
                  "check --id-mode against the ids in the judgments", style="yellow")
    if result.not_asked:
        err.print(f"semsearch: {result.not_asked} judged queries are not in {queries.name}; "
                  f"scored over the {result.report.num_queries} that are", style="dim")
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
    index: Optional[Path] = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help="Index folder [default: nearest .semsearch above]."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Where the index is, what it holds, and how much changed on disk since."""
    from semsearch.indexer import WalkChoices, disk_changes
    from semsearch.store import IndexReader

    try:
        with IndexReader(_index_dir_for_reading(index)) as reader:
            stats = reader.stats()
            disk = disk_changes(reader)
            walk = WalkChoices().resolve(reader.walk_settings)  # what the next plain `index` walks with
            manifest = reader.manifest
            info = {
                "index": str(reader.index_dir),
                "model": manifest.model.name,
                "model_fingerprint": manifest.model.fingerprint,
                "dim": manifest.model.dim,
                "files": stats.files,
                "files_without_text": stats.files_without_text,
                "chunks": stats.chunks,
                "disk_bytes": stats.disk_bytes,
                "updated_at": stats.updated_at,
                "created_at": manifest.created_at,
                "precision": manifest.model.precision,
                "changed_since": disk.changed,
                "missing_since": disk.missing,
                "new_since": disk.new,
                "roots": stats.roots,
                "chunking": {"chunk_tokens": manifest.chunking.chunk_tokens, "overlap_tokens": manifest.chunking.overlap_tokens,
                             "context": manifest.chunking.context},
                "walk": walk.remembered(),
                "format_version": manifest.format_version,
            }
    except SemsearchError as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(stats.updated_at))
    ago = _ago(time.time() - stats.updated_at)
    lines = [
        ("index", info["index"]),
        ("model", f"{manifest.model.name} ({manifest.model.dim}-d, {manifest.model.precision or 'fp32'}, "
                  f"{manifest.model.fingerprint[:19]}…)"),
        ("files", f"{stats.files}" + (f" ({stats.files_without_text} without text)" if stats.files_without_text else "")),
        ("chunks", f"{stats.chunks} ({manifest.chunking.chunk_tokens} tokens, {manifest.chunking.overlap_tokens} overlap, "
                   f"context {'on' if manifest.chunking.context else 'off'})"),
        ("walk", f"hidden files {'in' if walk.hidden else 'out'}, files up to {_human_bytes(walk.max_file_size)}, "
                 f"links out of the folders {'followed' if walk.follow_symlinks else 'not followed'}"),
        ("size", _human_bytes(stats.disk_bytes)),
        ("updated", f"{when} ({ago} ago)"),
        ("changed", f"{disk.changed} changed, {disk.missing} missing and {disk.new} new on disk since"
                    + (" (run `semsearch index`)" if disk.changed or disk.missing or disk.new else "")),
        ("roots", ", ".join(stats.roots) or "-"),
    ]
    for key, value in lines:
        typer.echo(f"{key:<8} {value}")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"


def _exit_now(code: object) -> None:
    status = code if isinstance(code, int) else (EXIT_FOUND if code is None else EXIT_ERROR)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader went away: what was left is not wanted
    except OSError:
        status = EXIT_ERROR
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(status)


def _quiet_stdout() -> None:
    """The reader went away (`| head -1`): send what is left to /dev/null, say nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(fast_exit: bool = True) -> None:
    """Console-script entry point: run the app; errors are one line, a closed pipe ends quietly.

    After a query has written its results (and closed the index), the process ends with
    ``os._exit`` once stdout and stderr are flushed: the interpreter's teardown (freeing the
    onnxruntime session, modules, threads) cost ~0.1 s of a ~0.7 s cold query and does nothing a
    reader needs. Other commands exit normally. ``fast_exit=False`` for callers that go on.
    """
    global _done_early, _interrupt_reported
    _done_early = False  # a query run earlier in this process (tests, forks) must not end this one
    _interrupt_reported = False
    try:
        code = app(standalone_mode=False)
    except BrokenPipeError:
        _quiet_stdout()
        code = EXIT_FOUND
    except KeyboardInterrupt:
        code = _interrupted()
    except Exception as exc:
        # click's exceptions (typer vendors its own copy of click in newer releases): by name.
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "NoArgsIsHelpError" in kinds:
            exc.show()  # type: ignore[attr-defined]  # the help text, as click shows it
            code = EXIT_ERROR
        elif "UsageError" in kinds:
            ctx = getattr(exc, "ctx", None)
            command = ctx.command_path if ctx is not None else "semsearch"
            _one_line_error(f"{exc.format_message()} (see `{command} -h`)")  # type: ignore[attr-defined]
            code = EXIT_ERROR
        elif "ClickException" in kinds:
            _one_line_error(exc.format_message())  # type: ignore[attr-defined]
            code = EXIT_ERROR
        elif "Abort" in kinds:
            code = _interrupted()
        else:
            raise
    if not isinstance(code, int):
        code = EXIT_FOUND if code is None else EXIT_ERROR
    if code == 130 and not _interrupt_reported:
        _interrupted()  # typer turns Ctrl-C inside a command into exit code 130, silently
    if fast_exit and _done_early:
        _exit_now(code)
    sys.exit(code)


def _interrupted() -> int:
    with contextlib.suppress(OSError):
        sys.stderr.write("semsearch: interrupted\n")
    return 130


def _one_line_error(message: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(_error_line(message) + "\n")
