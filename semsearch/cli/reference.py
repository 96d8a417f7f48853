"""The command-line reference (docs/cli.md), made from the typer app itself: every command's
``--help``, so the reference cannot say what the commands do not do. A test fails when the file
is stale; make it again with::

    python -m semsearch.cli.reference > docs/cli.md
"""

from __future__ import annotations

import sys

WIDTH = 100


def markdown() -> str:
    """The reference as Markdown: the commands in ``--help``'s order, each one's help text."""
    import click
    import typer

    from semsearch.cli.app import app

    root = typer.main.get_command(app)
    context = root.make_context("semsearch", [], resilient_parsing=True, max_content_width=WIDTH, terminal_width=WIDTH)
    assert isinstance(root, click.Group)
    names = root.list_commands(context)
    parts = [
        "# Command-line reference",
        "",
        "Made from the commands' own `--help` by `python -m semsearch.cli.reference > docs/cli.md`;",
        "a test fails when it is out of date. The guide by task is [README.md](../README.md).",
        "",
        "Commands: " + ", ".join(f"[`{name}`](#semsearch-{name})" for name in names) + ".",
        "",
        "```text",
        root.get_help(context),
        "```",
    ]
    for name in names:
        command = root.get_command(context, name)
        assert command is not None
        sub = command.make_context(
            name, [], parent=context, resilient_parsing=True, max_content_width=WIDTH, terminal_width=WIDTH
        )
        parts += ["", f"## semsearch {name}", "", "```text", command.get_help(sub), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
