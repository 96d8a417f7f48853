"""Markdown (and reStructuredText by name): the first H1 as the title, ATX headings as heading paths."""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from semsearch.readers import text
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, decode_text, file_stem, normalize_text

KIND = "markdown"
SUFFIXES = frozenset({".md", ".markdown", ".mdx", ".rst"})
_H1 = re.compile(r"^#\s+(.+)$", re.MULTILINE)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
_ANCHOR = re.compile(r"\s*\{\s*#[^}]*\}\s*$")


def matches(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in SUFFIXES and text.looks_like_text(head)


def markdown_headings(source: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of each ATX heading outside fenced code blocks."""
    fences = [m.start() for m in _FENCE.finditer(source)]
    out = []
    for match in _HEADING.finditer(source):
        inside = bisect.bisect_left(fences, match.start()) % 2 == 1
        if not inside:
            title = _ANCHOR.sub("", match.group(2)).strip()  # "Title { #anchor }" -> "Title"
            if title:
                out.append((match.start(), len(match.group(1)), title))
    return out


def read_markdown(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    decoded, encoding = decode_text(data)
    match = _H1.search(decoded[:4000])
    title = match.group(1).strip() if match else file_stem(path)
    body = normalize_text(decoded)
    return Document(text=body, kind=KIND, encoding=encoding, title=title, headings=markdown_headings(body))


READER = Reader(KIND, matches, read_markdown)
