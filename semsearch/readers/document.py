"""A document as the readers give it: text with locations (lines, pages, headings), and decoding helpers."""

from __future__ import annotations

import bisect
import codecs
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

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
    refers to this text. A document in numbered parts (pages, notebook cells, slides, chapters or
    sections) has ``part_starts[i]``, the offset where part ``i + 1`` begins, and ``part_kind``
    says what a part is (one of :data:`PART_KINDS`); a hit's location is then its part, else its
    line. With ``split_parts`` the chunker cuts the parts apart first (no chunk spans two pages,
    slides or chapters); without, a chunk may run on into the next part (short notebook cells
    belong with their neighbours) and is located by the part it starts in. ``headings`` are
    (offset, level, title) of the document's section headings, in order: chunks carry the heading
    path they fall under.
    """

    text: str
    kind: str  # the reader's kind: "text", "markdown", "pdf", ...
    encoding: str = "utf-8"
    part_starts: list[int] = field(default_factory=list)
    title: str = ""
    headings: list[tuple[int, int, str]] = field(default_factory=list)
    part_kind: str = "page"
    split_parts: bool = True
    notes: list[str] = field(default_factory=list)  # what the reader passed over, for one warning line

    def part_at(self, offset: int) -> int | None:
        """The 1-based part (page, cell, slide, section) holding character ``offset`` (None: no parts)."""
        if not self.part_starts:
            return None
        return max(1, bisect.bisect_right(self.part_starts, offset))


# What a document's numbered parts are; a hit in a document without parts is located by line.
PART_KINDS = ("page", "cell", "slide", "section")


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
            return data[len(bom) :].decode(encoding, errors="replace"), encoding
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


def replace_surrogates(text: str) -> str:
    """Lone surrogates (from broken character maps) as U+FFFD: they cannot be stored as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def file_stem(path: Path) -> str:
    """A file's name without suffix, as text (bytes that are not UTF-8 shown escaped)."""
    return os.fsencode(path.stem).decode("utf-8", errors="backslashreplace")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    text = " ".join(str(exc).split())
    return text[:200]


class DocumentBuilder:
    """Assembles the text of a structured document (Word, HTML, EPUB, slides, notebooks) block by block.

    Blocks are separated by a blank line. A heading is written as a Markdown ATX line
    (``## Title``), so the chunker cuts before it as it does in Markdown, and recorded in
    ``headings`` for the context line. ``start_part`` begins the next numbered part (a slide, a
    cell, a chapter): empty parts keep their number, so slide 7 is always the seventh slide.
    """

    def __init__(self, max_chars: int = 20_000_000) -> None:
        self._pieces: list[str] = []
        self._length = 0
        self.headings: list[tuple[int, int, str]] = []
        self.part_starts: list[int] = []
        self.max_chars = max_chars

    def _append(self, text: str) -> int:
        if self._pieces:
            self._pieces.append(PAGE_SEPARATOR)
            self._length += len(PAGE_SEPARATOR)
        at = self._length
        self._pieces.append(text)
        self._length += len(text)
        if self._length > self.max_chars:
            from semsearch.errors import ExtractError

            raise ExtractError("document yields implausibly much text (decompression bomb?)")
        return at

    def start_part(self) -> None:
        """The text added from here on belongs to the next part."""
        self.part_starts.append(self._length + (len(PAGE_SEPARATOR) if self._pieces else 0))

    def block(self, text: str) -> None:
        """A paragraph, table row or code block (whitespace-only text is dropped)."""
        text = normalize_text(text).strip("\n")
        if text.strip():
            self._append(text)

    def heading(self, title: str, level: int = 1) -> None:
        title = " ".join(normalize_text(title).split())
        if not title:
            return
        level = min(max(level, 1), 6)
        at = self._append(f"{'#' * level} {title}")
        self.headings.append((at, level, title))

    def text(self) -> str:
        return "".join(self._pieces)

    def has_text(self) -> bool:
        return self._length > 0

    def document(self, kind: str, title: str, part_kind: str = "page", split_parts: bool = True) -> Document:
        text = self.text()
        # Parts begun but left empty at the end (trailing empty cells or slides) start at the end.
        self.part_starts = [min(start, len(text)) for start in self.part_starts]
        return Document(
            text=text,
            kind=kind,
            title=title,
            headings=self.headings,
            part_starts=self.part_starts,
            part_kind=part_kind,
            split_parts=split_parts,
        )
