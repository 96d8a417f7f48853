"""Formatters over hits: terminal view, PATH:LINE:SCORE:SNIPPET lines, JSON Lines, file lists."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from semsearch.search import Hit

SNIPPET_CHARS = 240
VIEW_LINES = 14
# C0 controls except tab/newline, DEL, C1 controls, and the Unicode bidi overrides that can
# disguise text on a terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")


def escape_controls(text: str, keep_newlines: bool = True) -> str:
    """Show control characters as escapes so a file name or document cannot drive the terminal."""
    if not keep_newlines:
        text = text.replace("\n", "\\n").replace("\t", " ")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text)


def display_path(path: Path, display: str) -> str:
    """The path relative to the current directory when below it (as grep shows it), else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return display
    shown = rel if not rel.startswith("..") else str(path)
    return os.fsencode(shown).decode("utf-8", errors="backslashreplace")


def location(hit: Hit) -> int:
    """The number shown after the path: the start line, or the page for PDFs."""
    c = hit.chunk
    return c.page_start if c.page_start is not None else c.line_start


def snippet(hit: Hit, width: int = SNIPPET_CHARS) -> str:
    """One line of the chunk, starting at the sentence closest to the query."""
    text = hit.chunk.text
    start = hit.highlight[0] if hit.highlight else 0
    piece = _SPACES.sub(" ", text[start:start + width * 2]).strip()
    if len(piece) > width:
        piece = piece[:width].rstrip() + "…"
    return escape_controls(piece, keep_newlines=False)


def format_line(hit: Hit) -> str:
    """``PATH:LINE:SCORE:SNIPPET``: what editors' quickfix lists and grep users read."""
    path = escape_controls(display_path(hit.chunk.path, hit.chunk.display), keep_newlines=False)
    return f"{path}:{location(hit)}:{hit.score:.4f}:{snippet(hit)}"


def hit_to_json(hit: Hit, query: str) -> dict:
    c = hit.chunk
    return {
        "query": query,
        "rank": hit.rank,
        "score": round(hit.score, 6),
        "path": display_path(c.path, c.display),
        "line_start": c.line_start,
        "line_end": c.line_end,
        "page": c.page_start,
        "page_end": c.page_end,
        "text": c.text,
        "title": c.title,
        "context": c.context,
        "char_start": c.char_start,
        "char_end": c.char_end,
        "chunk_id": c.id,
        "scores": {k: round(v, 6) for k, v in hit.scores.items()},
    }


# Line breaks other than \n that JSON leaves raw in strings but line splitters (Python's
# splitlines, older JavaScript) break on: escaped, so each object stays on one line for all.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_json_lines(out: IO[str], hits: Sequence[Hit], query: str) -> None:
    for hit in hits:
        out.write(json.dumps(hit_to_json(hit, query), ensure_ascii=False).translate(_LINE_BREAKS) + "\n")


def write_lines(out: IO[str], hits: Sequence[Hit]) -> None:
    for hit in hits:
        out.write(format_line(hit) + "\n")


def write_files(out: IO[str], hits: Sequence[Hit], null: bool = False) -> None:
    end = "\0" if null else "\n"
    for hit in hits:
        path = display_path(hit.chunk.path, hit.chunk.display)
        out.write((path if null else escape_controls(path, keep_newlines=False)) + end)


def render_terminal(console: Console, hits: Sequence[Hit], query: str, files_only: bool = False) -> None:
    """The readable view: path, lines or page, score, and the chunk with its best sentence emphasized."""
    from rich.padding import Padding
    from rich.text import Text

    if not hits:
        return
    for hit in hits:
        c = hit.chunk
        path = escape_controls(display_path(c.path, c.display), keep_newlines=False)
        where = f"page {c.page_start}" if c.page_start is not None else (
            f"lines {c.line_start}-{c.line_end}" if c.line_end != c.line_start else f"line {c.line_start}")
        if c.page_start is not None and c.page_end not in (None, c.page_start):
            where = f"pages {c.page_start}-{c.page_end}"
        header = Text()
        header.append(f"{hit.rank:>2}. ", style="dim")
        header.append(path, style="bold magenta")
        header.append(f"  {where}", style="green")
        header.append(f"  {hit.score:.3f}", style="cyan")
        console.print(header)
        if files_only:
            continue
        console.print(Padding(_body(hit), (0, 0, 1, 4)))


def _body(hit: Hit):  # -> rich.text.Text
    from rich.text import Text

    text = hit.chunk.text
    lo, hi = hit.highlight if hit.highlight else (0, 0)
    body = Text()
    body.append(escape_controls(text[:lo]), style="dim")
    body.append(escape_controls(text[lo:hi]), style="bold yellow")
    body.append(escape_controls(text[hi:]), style="dim")
    return Text("\n").join(_trim_lines(body))


def _trim_lines(body):  # -> list[rich.text.Text]
    lines = [line for line in body.split("\n")]
    # Drop blank runs and keep the view short, centred on the emphasized sentence.
    kept = []
    for line in lines:
        if not line.plain.strip() and (not kept or not kept[-1].plain.strip()):
            continue
        kept.append(line)
    while kept and not kept[-1].plain.strip():
        kept.pop()
    if len(kept) > VIEW_LINES:
        focus = next((i for i, line in enumerate(kept) if any(s.style == "bold yellow" for s in line.spans)), 0)
        start = max(0, min(focus - 3, len(kept) - VIEW_LINES))
        kept = kept[start:start + VIEW_LINES]
    return kept
