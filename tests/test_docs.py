"""The documents that are made from the code are up to date."""

from __future__ import annotations

from pathlib import Path

from semsearch.cli.reference import markdown

ROOT = Path(__file__).resolve().parent.parent


def test_the_cli_reference_is_the_commands_own_help() -> None:
    made = markdown()
    written = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == made, "docs/cli.md is stale: python -m semsearch.cli.reference > docs/cli.md"
    for command in ("index", "query", "similar", "duplicates", "topics", "eval", "status", "mcp", "serve"):
        assert f"## semsearch {command}\n" in made
    assert "--map FILE" in made and "-h, --help" in made
