"""The CLI's streams: one-line errors, the progress bar and warnings of `index`, interruptions,
and the process's exit (codes as grep: 0 found, 1 nothing found, 2 error)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from semsearch.indexing import IndexEvent

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2


class RunState:
    """What one run of the app leaves for :func:`semsearch.cli.main`."""

    def __init__(self) -> None:
        # Set by `query` once its results are written and the index is closed: the console
        # script then ends the process at once instead of tearing the interpreter down.
        self.done_early = False
        self.interrupt_reported = False  # `index` said what an interruption leaves behind


STATE = RunState()


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def error_line(message: str) -> str:
    """``semsearch: error: MESSAGE`` on one line, whatever the message quotes (a damaged
    database's garbage included)."""
    from semsearch.output import escape_controls

    return f"semsearch: error: {escape_controls(message.replace(chr(13), ' '), keep_newlines=False)}"


def fail(message: str) -> None:
    """Print a one-line error and exit 2."""
    import typer

    stderr().print(error_line(message), style="red")
    raise typer.Exit(EXIT_ERROR)


def note_printer(console: Console, quiet: bool = False) -> Any:
    """A note handler that prints ``semsearch: NOTE`` dimmed (nothing when quiet)."""
    from semsearch.cli.messages import in_cli_words

    if quiet:
        return lambda message: None
    return lambda message: console.print(f"semsearch: {in_cli_words(message)}", style="dim")


class Terminated(KeyboardInterrupt):
    """SIGTERM during `index`: unwound like Ctrl-C (the run stops between writes, says so)."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the block (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


PLAIN_EVERY = 10.0  # seconds between two plain progress lines of one phase
# Events shown as a line of their own under the bar (and after a plain indexing line).
SIDE_LINES = {"requests": "embedding server", "cluster": "cluster"}


class IndexProgress:
    """Progress and warnings on stderr: a bar on a terminal (*enabled*); with *plain* (stderr is
    a file or a pipe), a line when a phase starts and one every PLAIN_EVERY seconds, as pip and
    ripgrep print for logs; neither when quiet."""

    def __init__(
        self,
        console: Console,
        enabled: bool,
        verbose: bool,
        *,
        plain: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.enabled = enabled
        self.verbose = verbose
        self.progress: Any = None
        self.task: Any = None
        self.ocr_task: Any = None  # a second bar while a scanned file is read (from the reading thread)
        self.side_tasks: dict[str, Any] = {}  # a served model's requests, a cluster's nodes: a line each
        self._side: dict[str, str] = {}  # the same, for plain lines
        self.plain = plain and not enabled
        self.clock = clock
        self._phase = ""
        self._phase_start = self._said = 0.0

    def __enter__(self) -> IndexProgress:
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            class AmountColumn(DownloadColumn):
                """Bytes for the main bar; pages for the OCR bar."""

                def render(self, task: Any) -> Any:
                    unit = task.fields.get("unit")
                    if unit:
                        from rich.text import Text

                        total = f"{int(task.total)}" if task.total is not None else "?"
                        return Text(f"{int(task.completed)}/{total} {unit}", style="progress.download")
                    return super().render(task)

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                AmountColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("scanning", total=None, unit="files")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_event(self, event: IndexEvent) -> None:
        if event.kind in ("warning", "message") or (event.kind == "skip" and self.verbose):
            from semsearch.output import display_path, escape_name

            where = f"{escape_name(display_path(event.path))}: " if event.path else ""
            style = {"warning": "yellow", "skip": "dim"}.get(event.kind)
            from semsearch.cli.messages import in_cli_words

            self.console.print(f"semsearch: {where}{in_cli_words(event.text)}", style=style)
        if self.progress is None:
            if self.plain:
                self._plain_line(event)
            return
        if event.kind == "scan":
            self.progress.update(self.task, completed=event.done)
        elif event.kind == "plan":
            self.progress.update(self.task, description="indexing", total=event.total, completed=0, unit="")
        elif event.kind == "file":
            self.progress.update(self.task, completed=event.done)
        elif event.kind == "graph":
            self.progress.update(
                self.task, description="vector graph", total=event.total, completed=event.done, unit="chunks"
            )
        elif event.kind in SIDE_LINES:  # a served model's requests so far, a cluster's nodes' shares
            if event.kind not in self.side_tasks:
                self.side_tasks[event.kind] = self.progress.add_task("", total=None, unit="")
            self.progress.update(self.side_tasks[event.kind], description=f"{SIDE_LINES[event.kind]}: {event.text}")
        elif event.kind == "ocr":
            from semsearch.output import display_path, escape_name

            name = escape_name(display_path(event.path)) if event.path else ""
            if self.ocr_task is None:
                self.ocr_task = self.progress.add_task("OCR", total=event.total, unit="pages")
            if event.done >= event.total:
                self.progress.update(self.ocr_task, visible=False)
            else:
                label = f"OCR {name[-40:]}"
                self.progress.update(
                    self.ocr_task, description=label, total=event.total, completed=event.done, visible=True
                )

    def _plain_line(self, event: IndexEvent) -> None:
        """A plain line when a phase starts, then at most one per PLAIN_EVERY seconds."""
        if event.kind in SIDE_LINES:
            self._side[event.kind] = event.text  # said with the next indexing line
            return
        phases = {"scan": "scanning", "plan": "indexing", "file": "indexing", "ocr": "indexing", "graph": "graph"}
        phase = phases.get(event.kind)
        if phase is None:
            return
        now = self.clock()
        if phase != self._phase:
            self._phase, self._phase_start, self._said = phase, now, now
            if event.kind == "plan":
                if event.total:  # else nothing to read: the summary says so
                    self._say(f"indexing: {event.text}, {_megabytes(event.total)}")
            elif event.kind == "graph":
                self._say(f"building the vector graph: {event.total} chunk{'' if event.total == 1 else 's'}")
            else:
                self._say(f"{phase}...")
            return
        if now - self._said < PLAIN_EVERY:
            return
        self._said = now
        elapsed = max(now - self._phase_start, 1e-9)
        if event.kind == "scan":
            self._say(f"scanning: {event.done} files seen")
        elif event.kind == "file" and event.total:
            rate = event.done / elapsed
            left = f", about {_minutes((event.total - event.done) / rate)} left" if rate > 0 else ""
            share = f"{100 * event.done / event.total:.0f}%"
            sent = "".join(f"; {SIDE_LINES[kind]}: {text}" for kind, text in self._side.items())
            self._say(
                f"indexing: {share} ({_megabytes(event.done)} of {_megabytes(event.total)}), {_rate(rate)}{left}{sent}"
            )
        elif event.kind == "graph":
            self._say(f"vector graph: {event.done} of {event.total} chunks")
        elif event.kind == "ocr":
            from semsearch.output import display_path, escape_name

            name = escape_name(display_path(event.path)) if event.path else ""
            self._say(f"OCR: {name}: page {event.done} of {event.total}")

    def _say(self, line: str) -> None:
        self.console.print(f"semsearch: {line}", style="dim", markup=False, highlight=False)


def _megabytes(amount: float) -> str:
    return f"{amount / 1e6:.1f} MB"


def _rate(per_second: float) -> str:
    """Bytes a second as people read them: text embeds at tens of kB/s on a CPU, not MB/s."""
    return f"{per_second / 1e6:.1f} MB/s" if per_second >= 1e6 else f"{per_second / 1e3:.1f} kB/s"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def exit_now(code: object) -> None:
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


def quiet_stdout() -> None:
    """The reader went away (`| head -1`): send what is left to /dev/null, say nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def interrupted() -> int:
    with contextlib.suppress(OSError):
        sys.stderr.write("semsearch: interrupted\n")
    return 130


def one_line_error(message: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(error_line(message) + "\n")


def click_exit_code(exc: Exception) -> int | None:
    """The exit code for one of click's exceptions, after saying what it says; None for others."""
    # typer vendors its own copy of click in newer releases: recognised by name.
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if "NoArgsIsHelpError" in kinds:
        exc.show()  # type: ignore[attr-defined]  # the help text, as click shows it
        return EXIT_ERROR
    if "UsageError" in kinds:
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "semsearch"
        one_line_error(f"{exc.format_message()} (see `{command} -h`)")  # type: ignore[attr-defined]
        return EXIT_ERROR
    if "ClickException" in kinds:
        one_line_error(exc.format_message())  # type: ignore[attr-defined]
        return EXIT_ERROR
    if "Abort" in kinds:
        return interrupted()
    return None


def answer(run: Callable[[], bool]) -> None:
    """Run a search command with grep's exit codes: 0 found, 1 nothing found, 2 an error (one
    line on stderr); a pipe closed early (``| head``) ends it quietly."""
    import typer

    from semsearch.errors import SemsearchError

    try:
        found = run()
    except BrokenPipeError:
        quiet_stdout()
        raise typer.Exit(EXIT_FOUND) from None
    except SemsearchError as exc:
        from semsearch.cli.messages import describe

        fail(describe(exc))
        return
    STATE.done_early = True
    raise typer.Exit(EXIT_FOUND if found else EXIT_NOT_FOUND)
