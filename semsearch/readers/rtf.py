"""Rich Text Format: the text through striprtf (imported on first use), a block per paragraph, no parts.

striprtf is a regular-expression converter whose expressions backtrack: a line of unclosed
hyperlink fields takes minutes, a font table without ``;`` hours, and every open brace costs a
stack entry. So the markup is first rewritten in one linear pass (:func:`prepare_rtf`) into an
equivalent that striprtf reads in linear time: groups nested over :data:`MAX_DEPTH` deep are
refused; pictures, embedded objects and ``\\bin`` data are dropped (their hex is most of a
large RTF's bytes); each font table is rewritten to its font numbers and character sets; a line
end goes before every group (so no expression can span two groups: hyperlink fields then read
as their visible text); ``\\u`` and ``\\uc`` values are made valid. The title is the document's
``\\title`` property, else the file name (a first line is too often "Dear ..." or a date).
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, file_stem, one_line

KIND = "rtf"
SUFFIXES = frozenset({".rtf"})
MAX_DEPTH = 1000  # real documents nest a few dozen groups deep
MAX_PREPARED_CHARS = 16 * 1024 * 1024  # markup and text once pictures are dropped (striprtf: ~1 s per MB of text)
MAX_FONTS = 10_000
MAX_TITLE_CHARS = 300
_LEADING = b"\xef\xbb\xbf \t\r\n"  # a BOM or blank lines before the header
_HEADER = re.compile(rb"\{\\rtf(?![A-Za-z])")

# Tokens of the rewriting pass; anything else is copied as it is.
_TOKEN = re.compile(
    r"\\bin(?:(-?\d{1,12})\d* ?|(?![a-z]))"  # 1: \binN and its N bytes of binary data
    r"|\\([\\{}])"  # 2: an escaped backslash or brace
    r"|([{}])"  # 3: a group begins or ends
    r"|\\(pict|objdata|themedata|colorschememapping|datastore|fonttbl)(?![a-z])"  # 4: a destination
    r"|\\(uc|u)(?:(-?\d{1,12})\d*|(?![a-z]))"  # 5, 6: a Unicode character or skip count
)
# Destinations whose content is data, never text: dropped with the rest of their group.
_DROPPED = frozenset({"pict", "objdata", "themedata", "colorschememapping", "datastore"})
_FONT_NUMBER = re.compile(r"\\f(\d{1,10})(?!\d)")
_FONT_CHARSET = re.compile(r"\\fcharset(\d{1,10})(?!\d)")
_TITLE = re.compile(r"\{\\title ?([^{}]{1,1000})\}")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f]")  # from \'xx escapes or stray bytes: never text


def matches(path: Path, head: bytes) -> bool:
    # The control word \rtf itself ("{\rtf1"), not one that starts the same ("{\rtfamily" in TeX).
    return _HEADER.match(head.lstrip(_LEADING)) is not None or path.suffix.lower() in SUFFIXES


def read_rtf(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """An RTF document's text, a block per paragraph (see the module docstring). Raises
    ExtractError for a file that is not RTF, or broken or hostile."""
    from striprtf.striprtf import rtf_to_text

    data = data.lstrip(_LEADING)
    if not data.startswith(b"{\\rtf"):
        raise ExtractError("not an RTF document (no {\\rtf header)")
    # RTF is 7-bit with escapes; stray 8-bit bytes are most likely Windows-1252. One byte stays
    # one character, so \binN lengths keep counting right.
    prepared = prepare_rtf(data.decode("cp1252", errors="replace"))
    if len(prepared) > MAX_PREPARED_CHARS:
        raise ExtractError(f"RTF has over {MAX_PREPARED_CHARS >> 20} MB of text and markup besides pictures: refused")
    try:
        plain = rtf_to_text(prepared, encoding="cp1252", errors="replace")
        match = _TITLE.search(prepared)
        title = rtf_to_text("{\\rtf1\\ansi " + match.group(1) + "}", errors="replace") if match else ""
    except Exception as exc:  # noqa: BLE001 - striprtf's int(), chr() and codecs raise on odd values
        raise ExtractError(f"broken RTF ({type(exc).__name__}: {one_line(exc)})") from None
    builder = DocumentBuilder()
    for line in _CONTROL.sub("", _join_surrogates(plain)).split("\n"):
        builder.block(_table_row(" ".join(line.split())))
    title = " ".join(_join_surrogates(title).split())[:MAX_TITLE_CHARS]
    return builder.document(KIND, title or file_stem(path))


def prepare_rtf(text: str) -> str:
    """RTF markup that striprtf reads in linear time, with the same text (see the module docstring).

    Raises ExtractError for groups nested over :data:`MAX_DEPTH` deep.
    """
    out: list[str] = []
    pos = 0
    depth = 0
    dropping_below: int | None = None  # inside a dropped group: until depth falls below this
    font_depth: int | None = None  # inside a font table that began at this depth
    font_start = 0
    while True:
        match = _TOKEN.search(text, pos)
        if match is None:
            break
        copying = dropping_below is None and font_depth is None
        if copying:
            out.append(text[pos : match.start()])
        pos = match.end()
        binary, escaped, brace, word, unicode = match.group(1, 2, 3, 4, 5)
        if match.group(0).startswith("\\bin"):
            pos += max(int(binary), 0) if binary else 0
        elif escaped is not None:
            if copying:
                # An escaped backslash as its hex code: no literal "\fonttbl" text for striprtf to find.
                out.append("\\'5c" if escaped == "\\" else "\\" + escaped)
        elif brace == "{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExtractError(f"RTF nests groups over {MAX_DEPTH} deep: refused")
            if copying:
                out.append("\n{")
        elif brace == "}":
            depth -= 1
            if dropping_below is not None and depth < dropping_below:
                dropping_below = None
            if font_depth is not None and depth < font_depth:
                out.append(_font_table(text[font_start : match.start()]))
                font_depth = None
            if dropping_below is None and font_depth is None:
                out.append("}")
            if depth <= 0:
                return "".join(out)  # the document's group is closed: striprtf (and Word) read no further
        elif word is not None:
            if not copying:
                continue
            if word == "fonttbl":
                out.append("\\fonttbl")
                font_depth, font_start = depth, pos
            else:
                dropping_below = depth
        elif copying:
            out.append(_unicode(unicode, match.group(6)))
    if dropping_below is None and font_depth is None:
        out.append(text[pos:])
    elif font_depth is not None:
        out.append(_font_table(text[font_start:]))
    return "".join(out)


def _unicode(word: str, value: str | None) -> str:
    """\\u with a code point striprtf can decode (U+FFFD for one out of range), \\uc with a sane count."""
    if word == "uc":
        return f"\\uc{min(int(value), 10) if value and value[0] != '-' else 1}"
    if value is None:
        return "\\u"
    code = int(value)
    if code < 0:
        code += 0x10000  # RTF writes code points over 32767 as negative 16-bit numbers
    return f"\\u{code if 0 <= code <= 0x10FFFF else 0xFFFD}"


def _font_table(raw: str) -> str:
    """A font table reduced to what striprtf uses, each font's number and character set."""
    from striprtf import striprtf

    charsets = getattr(striprtf, "charset_map", {})
    entries = []
    for segment in raw.split(";", MAX_FONTS)[:MAX_FONTS]:
        number, charset = _FONT_NUMBER.search(segment), _FONT_CHARSET.search(segment)
        if number is None or charset is None:
            continue
        value = charset.group(1)
        encoding = charsets.get(int(value))
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                value = "0"  # a character set Python has no codec for: read as the default
        entries.append(f"\n{{\\f{number.group(1)}\\fcharset{value} f;}}")
    return "".join(entries)


def _join_surrogates(text: str) -> str:
    """\\u pairs of UTF-16 surrogates as the one character they encode; lone ones as U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _table_row(line: str) -> str:
    """striprtf ends each table cell with "|": a row's cells joined by " | " instead."""
    if not line.endswith("|"):
        return line
    return " | ".join(cell for cell in (c.strip() for c in line[:-1].split("|")) if cell)


READER = Reader(KIND, matches, read_rtf, no_text="RTF document has no text")
