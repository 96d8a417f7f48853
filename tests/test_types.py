"""File type names: the documentation and markup formats a notes or docs folder holds (rst,
AsciiDoc, Org, LaTeX, ...) are indexed as text and have names of their own; an unknown name's
one-line error lists the known ones (an MCP client cannot run --type-list)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch import InvalidOptionError, Scope
from semsearch.cli import app
from semsearch.cli.messages import describe
from semsearch.scope import expand_types, type_names

# One file of each markup/documentation type, with a word of its own to find it by.
FILES = {
    "guide.rst": ("rst", "Installation\n============\n\nRun the installer; the walrus waits.\n"),
    "manual.adoc": ("asciidoc", "= Manual\n\n== Setup\n\nThe walrus reads AsciiDoc.\n"),
    "book.asciidoc": ("asciidoc", "= Book\n\nA walrus chapter.\n"),
    "todo.org": ("org", "* TODO feed the walrus\n** DONE buy fish\n"),
    "paper.tex": ("tex", "\\documentclass{article}\n\\begin{document}\nThe walrus theorem.\n\\end{document}\n"),
    "refs.bib": ("tex", "@article{walrus2020,\n  title={On the walrus},\n  year={2020}\n}\n"),
    "thesis.sty": ("tex", "\\ProvidesPackage{walrus}\n\\newcommand{\\walrus}{tusks}\n"),
    "notes.typ": ("typst", "= Notes\n\nThe walrus in Typst.\n"),
    "spec.textile": ("textile", "h1. Spec\n\nThe walrus in Textile.\n"),
    "Module.pod": ("pod", "=head1 NAME\n\nWalrus - a module\n"),
    "README.rdoc": ("rdoc", "= Walrus\n\nRDoc about the walrus.\n"),
    "page.wiki": ("wiki", "== Walrus ==\nA wiki page on the walrus.\n"),
    "fix.patch": ("diff", "--- a/walrus.py\n+++ b/walrus.py\n@@ -1 +1 @@\n-tusk = 1\n+tusk = 2\n"),
    "plain.txt": ("text", "The walrus in plain text.\n"),
}


def test_new_names_aliases_and_extensions_are_accepted() -> None:
    for name in ("rst", "asciidoc", "adoc", "org", "tex", "latex", "typst", "txt", "markdown", "yml", ".tex"):
        assert expand_types([name], "types")
    assert expand_types(["adoc"], "types") == {"asciidoc"}
    assert expand_types(["rst", "md"], "types") == {"rst", "md"}
    assert {"rst", "asciidoc", "org", "tex"} <= expand_types(["docs"], "types")
    assert expand_types(["text"], "types") == {"text"}


@pytest.mark.parametrize("bad", ["rs2", "asciidocs", "nope"])
def test_an_unknown_type_lists_the_known_ones_in_one_line(bad: str) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        Scope.make(types=[bad])
    message = describe(caught.value)
    assert "\n" not in message and message.startswith(f"unknown file type {bad!r} for --type")
    assert "(known: " + ", ".join(type_names()) + ")" in message
    if bad == "rs2":
        assert "did you mean rust or rst?" in message
    if bad == "asciidocs":
        assert "did you mean asciidoc" in message


def test_markup_files_are_indexed_and_filtered_by_their_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel
) -> None:
    for name, (_, text) in FILES.items():
        write(tmp_path / "notes" / name, text)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["index", "notes"])
    assert result.exit_code == 0 and f"indexed {len(FILES)} files" in result.stderr, result.output
    for type_name in sorted({t for t, _ in FILES.values()}):
        result = runner.invoke(app, ["query", "walrus", "-t", type_name, "-l", "-k", "50"])
        expected = sorted(f"notes/{name}" for name, (t, _) in FILES.items() if t == type_name)
        assert result.exit_code == 0 and sorted(result.stdout.splitlines()) == expected, (type_name, result.output)
    result = runner.invoke(app, ["query", "walrus", "-t", "rst", "-t", "adoc", "-l"])
    assert sorted(result.stdout.splitlines()) == ["notes/book.asciidoc", "notes/guide.rst", "notes/manual.adoc"]
    result = runner.invoke(app, ["query", "walrus", "-t", "rs2"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "did you mean rust or rst?" in result.stderr and "known: md, pdf," in result.stderr
