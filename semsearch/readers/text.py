"""Plain text and source code, in any common encoding; the fallback reader for every text file."""

from __future__ import annotations

import os
import re
from pathlib import Path

from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, decode_text, file_stem, normalize_text

KIND = "text"
# Extensions whose content is never text worth reading; content sniffing still decides the rest.
BINARY_EXTENSIONS = frozenset(
    [
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".bmp",
        ".ico",
        ".webp",
        ".tif",
        ".tiff",
        ".mp3",
        ".mp4",
        ".wav",
        ".ogg",
        ".flac",
        ".avi",
        ".mov",
        ".mkv",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".zst",
        ".7z",
        ".rar",
        ".jar",
        ".war",
        ".whl",
        ".egg",
        ".so",
        ".dll",
        ".dylib",
        ".exe",
        ".o",
        ".a",
        ".class",
        ".pyc",
        ".pyo",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".sqlite",
        ".db",
        ".bin",
        ".dat",
        ".npy",
        ".npz",
        ".pt",
        ".onnx",
        ".safetensors",
        ".hnsw",
        ".parquet",
        ".doc",
        ".xls",
        ".ppt",
        ".docx",
        ".xlsx",
        ".pptx",
        ".odt",
        ".iso",
        ".dmg",
    ]
)
PLAIN_SUFFIXES = frozenset({"", ".txt", ".text"})
_TITLE_LINE = re.compile(r"\A\s*([^\n]{1,200})\n[ \t]*\n")


# Control bytes that text does not hold (tab, line breaks, form feed, escape and NUL aside).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27, 0))


def looks_like_text(head: bytes) -> bool:
    """Guess from the first bytes whether content is text (any common encoding) or binary."""
    if not head:
        return True
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    nul = head.count(0)
    # A few stray NULs in otherwise readable text are tolerated (and dropped when read);
    # UTF-16 without a BOM or real binary formats have NULs everywhere.
    if nul > max(1, len(head) // 200):
        return False
    control = len(head) - len(head.translate(None, _CONTROL))  # counted in C, not byte by byte
    return control <= len(head) // 20


def matches(path: Path, head: bytes) -> bool:
    return path.suffix.lower() not in BINARY_EXTENSIONS and looks_like_text(head)


def text_title(path: Path, text: str) -> str:
    """A plain-text file's first line when a blank line sets it apart (a title line), else its
    name; a code file's name (it says what the file holds)."""
    if path.suffix.lower() in PLAIN_SUFFIXES:
        match = _TITLE_LINE.match(text[:400].replace("\r\n", "\n"))
        if match and len(match.group(1).split()) >= 2:
            return match.group(1).strip()
        return file_stem(path)
    return os.fsencode(path.name).decode("utf-8", errors="backslashreplace")


def read_text(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    text, encoding = decode_text(data)
    return Document(text=normalize_text(text), kind=KIND, encoding=encoding, title=text_title(path, text))


READER = Reader(KIND, matches, read_text)
