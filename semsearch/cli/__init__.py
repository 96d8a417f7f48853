"""The command line: flags and environment -> one library call -> formatted results.

Exit codes follow grep: 0 found, 1 nothing found, 2 error.
"""

from __future__ import annotations

import sys

from semsearch.cli import console
from semsearch.cli.app import app
from semsearch.cli.console import EXIT_ERROR, EXIT_FOUND

__all__ = ["app", "main"]


def main(fast_exit: bool = True) -> None:
    """Console-script entry point: run the app; errors are one line, a closed pipe ends quietly.

    After a query has written its results (and closed the index), the process ends with
    ``os._exit`` once stdout and stderr are flushed: the interpreter's teardown (freeing the
    onnxruntime session, modules, threads) does nothing a reader needs. Other commands exit
    normally. ``fast_exit=False`` for callers that go on.
    """
    state = console.STATE
    state.done_early = False  # a query run earlier in this process (tests, forks) must not end this one
    state.interrupt_reported = False
    code: object
    try:
        code = app(standalone_mode=False)
    except BrokenPipeError:
        console.quiet_stdout()
        code = EXIT_FOUND
    except KeyboardInterrupt:
        code = console.interrupted()
    except Exception as exc:
        code = console.click_exit_code(exc)
        if code is None:
            raise
    if not isinstance(code, int):
        code = EXIT_FOUND if code is None else EXIT_ERROR
    if code == 130 and not state.interrupt_reported:
        console.interrupted()  # typer turns Ctrl-C inside a command into exit code 130, silently
    if fast_exit and state.done_early:
        console.exit_now(code)
    sys.exit(code)
