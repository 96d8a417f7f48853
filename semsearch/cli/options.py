"""The options that `query`, `similar`, `duplicates`, `eval`, `status` and `mcp` share, declared once."""

from __future__ import annotations

import typer

INDEX_HELP = "Index folder or PostgreSQL URL [default: nearest .semsearch above]."

# The filters of `query`, `similar`, `duplicates` and `eval`.
SCOPE_PATHS = typer.Argument(
    None, metavar="[PATH]...", show_default=False, help="Only files under these files or folders."
)
GLOB = typer.Option(
    None, "-g", "--glob", metavar="GLOB", help="Only paths matching GLOB (gitignore-style; !GLOB excludes). Repeatable."
)
TYPE = typer.Option(None, "-t", "--type", metavar="TYPE", help="Only files of TYPE (md, pdf, py, code...). Repeatable.")
TYPE_NOT = typer.Option(None, "-T", "--type-not", metavar="TYPE", help="No files of TYPE. Repeatable.")
CHANGED_WITHIN = typer.Option(
    None, "--changed-within", metavar="DURATION", help="Only files modified within DURATION (7d, 12h, 2w)."
)
CHANGED_BEFORE = typer.Option(
    None,
    "--changed-before",
    metavar="DATE",
    help="Only files modified before DATE (2026-11-01, '2026-11-01 14:30') or DURATION ago (30d).",
)
TYPE_LIST = typer.Option(False, "--type-list", help="List the file types and their patterns, and exit.")
INDEX = typer.Option(None, "--index", envvar="SEMSEARCH_INDEX", help=INDEX_HELP)
JSON = typer.Option(False, "--json", help="JSON Lines, one object per hit.")
FILES_ONLY = typer.Option(False, "-l", "--files-only", help="Only the distinct files, best first.")
NULL = typer.Option(False, "-0", "--null", help="With -l: end each file name with NUL (for xargs -0).")
TOP = typer.Option(10, "-k", "--top", help="How many hits.")
# Re-ranking (`query`, `eval`; `mcp` and `serve` take the model).
RERANK = typer.Option(
    False,
    "--rerank",
    envvar="SEMSEARCH_RERANK",
    help="Score the best hits again with a cross-encoder and order them by it (slower; see --rerank-model).",
)
RERANK_MODEL = typer.Option(
    None,
    "--rerank-model",
    envvar="SEMSEARCH_RERANK_MODEL",
    metavar="NAME_OR_PATH",
    help="The cross-encoder: a sentence-transformers CrossEncoder folder, a name in the local Hugging Face "
    "cache, or a /rerank URL (#MODEL after it names the server's model) "
    "[default: cross-encoder/ms-marco-MiniLM-L6-v2].",
)
RERANK_DEPTH = typer.Option(
    None, "--rerank-depth", metavar="N", help="How many of the first hits to re-rank [default: 20]."
)
