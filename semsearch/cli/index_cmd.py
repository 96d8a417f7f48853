"""`semsearch index`: index files and folders, keep watching them, or publish a local index to
PostgreSQL; its options, progress and interruption."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from semsearch.cli import console
from semsearch.cli.messages import describe
from semsearch.errors import InvalidOptionError, SemsearchError

if TYPE_CHECKING:
    from rich.console import Console

    from semsearch.api import Index
    from semsearch.indexing import IndexSummary

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
    help="sentence-transformers model name or folder, or openai:NAME for a model served by an "
    "OpenAI-compatible endpoint (see --api-base) [default: bundled all-MiniLM-L6-v2].",
)
_API_BASE = typer.Option(
    None,
    "--api-base",
    metavar="URL",
    help="For --model openai:NAME: the OpenAI-compatible endpoint, e.g. http://localhost:11434/v1 (Ollama) "
    "[default: the index's own, else $OPENAI_BASE_URL, else OpenAI's].",
)
_API_KEY_ENV = typer.Option(
    None,
    "--api-key-env",
    metavar="VAR",
    help="The environment variable holding the endpoint's key (its name is kept, never the key) "
    "[default: the index's own, else OPENAI_API_KEY].",
)
_API_CONCURRENCY = typer.Option(None, "--api-concurrency", min=1, help="Requests at once [default: 4].")
_API_BATCH = typer.Option(None, "--api-batch", min=1, help="Texts per request [default: 64; halved on 413].")
_API_TIMEOUT = typer.Option(None, "--api-timeout", min=0.001, help="Seconds a request may take [default: 120].")
_API_RETRIES = typer.Option(
    None,
    "--api-retries",
    min=0,
    help="Attempts after the first on 429, 5xx, timeouts and lost connections [default: 6].",
)
_QUERY_PROMPT = typer.Option(
    None, "--query-prompt", help="Text put before each query, as some models need (e.g. 'query: ') "
    "[default: the model family's known one].",
)  # fmt: skip
_DOCUMENT_PROMPT = typer.Option(
    None, "--document-prompt", help="Text put before each chunk (e.g. 'passage: ') [default: the family's known one].",
)  # fmt: skip
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
_RAY_SHARED = typer.Option(
    False,
    "--ray-shared-paths",
    help="With --ray: the workers read each file at its path (a file system every node mounts at the "
    "same place) instead of its bytes sent from here.",
)
_RAY = typer.Option(
    None,
    "--ray",
    envvar="SEMSEARCH_RAY",
    metavar="ADDRESS",
    help="Read, OCR, chunk and embed the changed files on a Ray cluster: HOST:PORT, ray://HOST:PORT, "
    "or 'local' for a Ray instance started here (pip install 'semsearch[ray]').",
)
_DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
_PRECISION = typer.Option(
    "auto",
    "--precision",
    help="auto, fp32, int8, bf16 or fp16 (auto: the index's own, else int8 on CPUs with VNNI, fp16 on CUDA, else fp32).",
)
_WAIT = typer.Option(0.0, "--wait", help="Seconds to wait for another index run to finish.")
_QUIET = typer.Option(False, "-q", "--quiet", help="No progress bar or summary.")
_VERBOSE = typer.Option(False, "-v", "--verbose", help="Name every skipped file.")


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
    api_base: str | None = _API_BASE,
    api_key_env: str | None = _API_KEY_ENV,
    api_concurrency: int | None = _API_CONCURRENCY,
    api_batch: int | None = _API_BATCH,
    api_timeout: float | None = _API_TIMEOUT,
    api_retries: int | None = _API_RETRIES,
    query_prompt: str | None = _QUERY_PROMPT,
    document_prompt: str | None = _DOCUMENT_PROMPT,
    ray: str | None = _RAY,
    ray_shared_paths: bool = _RAY_SHARED,
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
            api_base=api_base,
            api_key_env=api_key_env,
            api_concurrency=api_concurrency,
            api_batch=api_batch,
            api_timeout=api_timeout,
            api_retries=api_retries,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
        )
        if source is not None:
            _publish(target, source, paths, wait=wait, quiet=quiet, err=err)
            return
        executor = None
        if ray_shared_paths and ray is None:
            raise InvalidOptionError("--ray-shared-paths needs --ray")
        if ray is not None:
            from semsearch.indexing.cluster import RayExecutor

            executor = RayExecutor(ray, shared_paths=ray_shared_paths)
        with target:
            summary = _update(
                target, paths, rebuild=rebuild, wait=wait, quiet=quiet, verbose=verbose, err=err, executor=executor
            )
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
    target: Index,
    paths: list[Path] | None,
    *,
    rebuild: bool,
    wait: float,
    quiet: bool,
    verbose: bool,
    err: Console,
    executor: object = None,
) -> IndexSummary:
    """Run the update with a progress bar; an interruption says what it leaves (exit 130 or 143)."""
    try:
        with (
            console.IndexProgress(
                err, enabled=not quiet and err.is_terminal, verbose=verbose, plain=not quiet
            ) as progress,
            console.terminate_as_interrupt(),
        ):
            return target.update(paths, rebuild=rebuild, wait=wait, on_event=progress.on_event, executor=executor)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, console.Terminated)
        kept = target.what_an_interruption_leaves()
        err.print(f"semsearch: {'terminated' if terminated else 'interrupted'}{'; ' + kept if kept else ''}")
        console.STATE.interrupt_reported = True
        raise typer.Exit(143 if terminated else 130) from None
