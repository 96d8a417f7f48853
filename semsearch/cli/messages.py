"""The library's errors in the command line's words: flags for argument names, commands for remedies."""

from __future__ import annotations

import os
from pathlib import Path

from semsearch.errors import REMEDIES as LIBRARY_REMEDIES
from semsearch.errors import IndexLockedError, SemsearchError

# The flag (or argument) of the CLI that sets each library argument.
FLAGS = {
    "top_k": "--top",
    "mode": "--mode",
    "min_score": "--min-score",
    "chunk_tokens": "--chunk-tokens",
    "overlap_tokens": "--overlap-tokens",
    "wait": "--wait",
    "precision": "--precision",
    "device": "--device",
    "id_mode": "--id-mode",
    "depth": "--depth",
    "k": "--top",
    "max_file_size": "--max-file-size",
    "path": "--index",
    "paths": "a PATH",
    "globs": "--glob",
    "types": "--type",
    "types_not": "--type-not",
    "changed_within": "--changed-within",
    "changed_before": "--changed-before",
    "target": "PATH[:LINE]",
    "ocr": "--ocr",
    "model": "--model",
    "api_base": "--api-base",
    "api_key_env": "--api-key-env",
    "api_concurrency": "--api-concurrency",
    "api_batch": "--api-batch",
    "api_timeout": "--api-timeout",
    "api_retries": "--api-retries",
}
REMEDIES = {
    "rebuild": "{message}; run `semsearch index --rebuild`",
    "repair": "{message}; run `semsearch index` to repair it (from the stored vectors: nothing is embedded again)",
    "upgrade_or_rebuild": "{message}; upgrade semsearch or run `semsearch index --rebuild`",
    "index_first": "{message} (run `semsearch index PATH` first)",
    "finish_build": "{message} (run `semsearch index` there to finish it)",
    "use_fp32": "{message}; run with --precision fp32",
}


def in_cli_words(text: str) -> str:
    """*text* with each remedy in the library's words (``Index.update(rebuild=True)``) put in the
    CLI's: for lines the library hands over as text (``status --verify``'s problems, notes)."""
    for code, library in LIBRARY_REMEDIES.items():
        before, _, after = library.partition("{message}")
        ours_before, _, ours_after = REMEDIES[code].partition("{message}")
        if after and after in text:
            text = text.replace(after, ours_after)
        if before and text.startswith(before):
            text = ours_before + text[len(before) :]
    return text


def describe(exc: SemsearchError) -> str:
    """The one-line message the CLI prints for a library error."""
    if isinstance(exc, IndexLockedError):
        after = (
            f"it did not finish within --wait {exc.waited:g} s"
            if exc.waited > 0
            else "try again when it ends, or wait for it with --wait SECONDS"
        )
        if exc.holder.startswith("postgresql"):  # a writer of a PostgreSQL index, on any machine
            return f"another `semsearch index` is updating {exc.holder}; {after}"
        return f"another `semsearch index` (pid {exc.holder}) is updating {exc.path}; {after}"
    text = exc.render(FLAGS, REMEDIES)
    if exc.path is not None and os.path.isabs(exc.path):
        # The path at fault as the user gave it where it is near (../notes/a.md, not /home/...).
        from semsearch.output import display_path

        shown = display_path(Path(exc.path))
        if shown.startswith(os.pardir):  # in a sibling folder given as ../x (others as before)
            text = text.replace(str(exc.path), shown)
    return text
