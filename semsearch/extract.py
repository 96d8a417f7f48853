"""Turn a file's bytes into text with locations: line numbers for text, pages for PDF."""

from __future__ import annotations

import bisect
import codecs
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from semsearch.errors import ExtractError

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx", ".rst"})
PAGE_SEPARATOR = "\n\n"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass
class Document:
    """The extracted text of one file.

    ``text`` has line ends normalized to ``\\n``; every character span recorded for a chunk
    refers to this text. For PDFs, ``page_starts[i]`` is the offset where page ``i + 1`` begins.
    """

    text: str
    kind: str  # "text", "markdown" or "pdf"
    encoding: str = "utf-8"
    page_starts: list[int] = field(default_factory=list)
    title: str = ""

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding character ``offset`` (None outside PDFs)."""
        if not self.page_starts:
            return None
        return bisect.bisect_right(self.page_starts, offset)


class LineIndex:
    """Maps character offsets to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_at(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)


# In a string decoded with surrogateescape: a character from a valid multi-byte UTF-8 sequence,
# and a run of bytes that are not UTF-8 (each kept as a lone surrogate U+DC80..U+DCFF).
_UTF8_CHAR = re.compile("[^\x00-\x7f\ud800-\udfff]")
_BAD_RUN = re.compile("[\udc80-\udcff]+")
# Damaged UTF-8 wins when its valid multi-byte characters number at least a quarter of its
# damaged spots (see _looks_like_damaged_utf8).
UTF8_VALID_PER_DAMAGE = 0.25


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown encoding; never raises. Returns (text, encoding used).

    BOMs decide first; then strict UTF-8; then UTF-8 with replacement when the invalid bytes look
    like damage to a UTF-8 file (see ``_looks_like_damaged_utf8``), else cp1252 (the usual legacy
    encoding of Western text).
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if _looks_like_damaged_utf8(data):
        return data.decode("utf-8", errors="replace"), "utf-8 (with invalid bytes replaced)"
    return data.decode("cp1252", errors="replace"), "cp1252"


def _looks_like_damaged_utf8(data: bytes) -> bool:
    """Whether bytes that are not valid UTF-8 are still better read as UTF-8 than as cp1252.

    Counted: valid multi-byte characters, and damaged spots (runs of consecutive invalid bytes:
    a splice of junk or a cut-off character is one spot, however many bytes it spans). In cp1252
    text every accented letter, curly quote or euro sign is a lone high byte, so each is a spot;
    a valid-looking pair happens only by accident (an accented capital or "ß" right before a
    symbol byte such as "»", "…" or a no-break space, or old mojibake such as "Ã©"), about one per
    ten spots or fewer in real paragraphs. A UTF-8 file hit by a few bad bytes keeps its own
    accented letters valid, so a quarter as many valid characters as spots is a wide margin on
    both sides. Left to chance: a short cp1252 text with one such accidental pair and at most
    four accented letters reads as UTF-8.

    A long file with at most one spot per 500 bytes also reads as UTF-8, valid characters or not
    (a stray bad byte in ASCII text); a legacy text whose only high bytes are that sparse (curly
    quotes in English prose, say) then loses them to U+FFFD.
    """
    probe = data.decode("utf-8", errors="surrogateescape")
    valid = len(_UTF8_CHAR.findall(probe))
    spots = len(_BAD_RUN.findall(probe))
    return valid >= spots * UTF8_VALID_PER_DAMAGE or spots <= len(data) // 500


_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_text(text: str) -> str:
    """Normalize line ends and drop NUL characters, which no reader wants; lone surrogates (from
    broken PDF character maps) become U+FFFD, since they cannot be stored as UTF-8."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return _SURROGATE.sub("\ufffd", text)


def _stem(path: Path) -> str:
    """A file's name without suffix, as text (bytes that are not UTF-8 shown escaped)."""
    return os.fsencode(path.stem).decode("utf-8", errors="backslashreplace")


def extract_text(path: Path, data: bytes) -> Document:
    """Plain text, Markdown or source code."""
    text, encoding = decode_text(data)
    kind = "markdown" if path.suffix.lower() in MARKDOWN_SUFFIXES else "text"
    return Document(text=normalize_text(text), kind=kind, encoding=encoding, title=_title(path, text, kind))


PLAIN_SUFFIXES = frozenset({"", ".txt", ".text"})
_TITLE_LINE = re.compile(r"\A\s*([^\n]{1,200})\n[ \t]*\n")


def _title(path: Path, text: str, kind: str) -> str:
    """A document's title: Markdown's first H1; a plain-text file's first line when a blank line
    sets it apart (a title line); else the file name (a code file's name says what it holds)."""
    if kind == "markdown":
        match = re.search(r"^#\s+(.+)$", text[:4000], flags=re.MULTILINE)
        if match:
            return match.group(1).strip()
        return _stem(path)
    if path.suffix.lower() in PLAIN_SUFFIXES:
        match = _TITLE_LINE.match(text[:400].replace("\r\n", "\n"))
        if match and len(match.group(1).split()) >= 2:
            return match.group(1).strip()
        return _stem(path)
    return os.fsencode(path.name).decode("utf-8", errors="backslashreplace")


# A page whose extracted text is over this many characters is a decompression bomb or garbage.
MAX_PAGE_CHARS = 2_000_000
MAX_PDF_CHARS = 20_000_000


def extract_pdf(path: Path, data: bytes) -> Document:
    """PDF through pypdf, page by page. Raises ExtractError for encrypted, broken or empty PDFs."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    # pypdf logs every recoverable oddity of real-world PDFs; our warnings are our own.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                unlocked = reader.decrypt("")
            except Exception as exc:  # noqa: BLE001 - pypdf raises several types for crypto
                raise ExtractError(f"encrypted PDF ({exc})") from None
            if not unlocked:
                raise ExtractError("encrypted PDF (password required)")
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            if len(text) > MAX_PAGE_CHARS:
                raise ExtractError("a page yields implausibly much text (decompression bomb?)")
            total += len(text)
            if total > MAX_PDF_CHARS:
                raise ExtractError("PDF yields implausibly much text (decompression bomb?)")
            pages.append(normalize_text(text).strip("\n"))
    except ExtractError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, AssertionError, ZeroDivisionError, MemoryError) as exc:
        raise ExtractError(f"broken PDF ({type(exc).__name__}: {_one_line(exc)})") from None
    if not any(p.strip() for p in pages):
        raise ExtractError(f"PDF has no extractable text ({len(pages)} pages; scanned images?)")
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for text in pages:
        starts.append(offset)
        parts.append(text)
        offset += len(text) + len(PAGE_SEPARATOR)
    title = ""
    try:
        meta = reader.metadata
        title = str(meta.title).strip() if meta and meta.title else ""
    except Exception:  # noqa: BLE001 - metadata of broken PDFs is optional
        title = ""
    return Document(text=PAGE_SEPARATOR.join(parts), kind="pdf", page_starts=starts, title=_SURROGATE.sub("\ufffd", title) or _stem(path))


def extract(path: Path, data: bytes, kind: str) -> Document:
    """Dispatch on the kind the walker sniffed."""
    if kind == "pdf":
        return extract_pdf(path, data)
    return extract_text(path, data)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200]
