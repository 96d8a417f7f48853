"""The documents: those made from the code are up to date, links lead somewhere, and the README's
test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semsearch.cli import api_reference
from semsearch.cli.reference import markdown

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def test_the_cli_reference_is_the_commands_own_help() -> None:
    made = markdown()
    written = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == made, "docs/cli.md is stale: python -m semsearch.cli.reference > docs/cli.md"
    for command in ("index", "query", "similar", "duplicates", "topics", "eval", "status", "mcp", "serve"):
        assert f"## semsearch {command}\n" in made
    assert "--map FILE" in made and "-h, --help" in made


def test_the_api_reference_is_the_packages_own_docstrings() -> None:
    made = api_reference.markdown()
    written = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert written == made, "docs/api.md is stale: python -m semsearch.cli.api_reference > docs/api.md"
    import semsearch

    for name in semsearch.__all__:  # every public name is in it
        if name != "__version__":
            assert f"`{name}`" in made, name
    for method in ("Index.open", "Index.update", "Index.search", "Index.similar", "Index.topics", "Index.status"):
        assert f"#### {method}\n" in made
    assert "mode: str | None = None" in made and "- `rank: int`" in made


def test_the_api_reference_needs_every_public_method_and_docstring() -> None:
    class Undocumented:
        """A class whose method has no docstring."""

        def shown(self) -> None:
            pass

    entry = api_reference.Entry(__name__, "Undocumented", ("shown",), fields=False)
    globals()["Undocumented"] = Undocumented
    try:
        with pytest.raises(AssertionError, match=r"Undocumented\.shown has no docstring"):
            list(api_reference._entry(entry))
        with pytest.raises(AssertionError, match="not in the reference: shown"):
            list(api_reference._entry(api_reference.Entry(__name__, "Undocumented", (), all_public=True)))
    finally:
        del globals()["Undocumented"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's Markdown: the text as shown (links' text, no emphasis
    or code marks), lower case, punctuation but ``-`` and ``_`` dropped, spaces as ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file has: its headings' slugs (a repeated one numbered -1, -2, ...)
    and explicit ``<a id=...>`` ones."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set(_HTML_ANCHOR.findall(text))
    for heading in _HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code blocks and code spans."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return _LINK.findall(text)


def test_the_slugs_are_githubs() -> None:
    assert slug("A search page, an HTTP API and remote MCP: `semsearch serve`") == (
        "a-search-page-an-http-api-and-remote-mcp-semsearch-serve"
    )
    assert slug("`semsearch serve` under load") == "semsearch-serve-under-load"
    assert slug("Index.for_update") == "indexfor_update"
    assert slug("The [index](x.md) folder") == "the-index-folder"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(document: Path) -> None:
    broken = []
    for target in links(document):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
            continue  # http:, https:, mailto:
        where, _, anchor = target.partition("#")
        file = (document.parent / where).resolve() if where else document
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readmes_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2, commands
    run, test = commands
    assert "semsearch index docs" in run and "semsearch query" in run
    assert test.endswith("&& python -m pytest"), test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in [line.strip() for line in ci.splitlines()], f".ci/run does not run the README's test command verbatim: {test}"
