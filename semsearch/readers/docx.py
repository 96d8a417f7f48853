"""Word documents (.docx, .docm, .dotx, .dotm): the body in order, a part (section) per heading, tables as rows.

The zip is checked by :func:`safety.open_archive` and every XML member by
:func:`safety.refuse_xml_entities` before python-docx (imported on first use) sees a byte. python-docx
opens the package and resolves the styles; the body is walked at the XML level, so paragraphs
and tables come in document order, content controls (``w:sdt``) and tracked insertions are read,
deleted text and the fallback copies of text boxes are not. Headings are paragraphs whose style
is (or is based on) "Heading 1".."Heading 9" or "Title", or that carry an outline level; tables
of contents are passed over (they repeat the headings). Footnotes and endnotes follow the body
under a heading of their own. Headers, footers and comments are left out.

:func:`clean_text`, :func:`core_title` and :func:`sections_document`
serve the other office readers (pptx, odt) too.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, file_stem, one_line
from semsearch.readers.safety import open_archive, parse_xml, read_member, refuse_xml_entities, zip_member_under

KIND = "docx"
WHAT = "Word document"
SUFFIXES = frozenset({".docx", ".docm", ".dotx", ".dotm"})
# A "heading" longer than this is a paragraph styled as one by mistake: kept as text.
MAX_HEADING_CHARS = 300
MAX_TITLE_CHARS = 300
# Content types of the main part python-docx does not open by itself (macros, templates).
_MAIN_CONTENT_TYPES = (
    "application/vnd.ms-word.document.macroEnabled.main+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
)

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_P, _TBL, _TR, _TC, _T = f"{_W}p", f"{_W}tbl", f"{_W}tr", f"{_W}tc", f"{_W}t"
_SDT, _SDT_CONTENT, _CUSTOM_XML = f"{_W}sdt", f"{_W}sdtContent", f"{_W}customXml"
_PPR, _RPR, _TCPR, _VMERGE, _VAL = f"{_W}pPr", f"{_W}rPr", f"{_W}tcPr", f"{_W}vMerge", f"{_W}val"
_TABS = frozenset({f"{_W}tab", f"{_W}ptab"})
_BREAKS = frozenset({f"{_W}br", f"{_W}cr"})
_NO_BREAK_HYPHEN = f"{_W}noBreakHyphen"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# Never text: formatting, deleted or moved-away text, and the fallback copy of a text box
# (its mc:Choice holds the same text).
_SKIPPED = frozenset({_PPR, _RPR, f"{_W}del", f"{_W}moveFrom", _MC_FALLBACK, f"{_W}instrText"})
# Wrappers around blocks, rows or cells whose content is the document's own.
_WRAPPERS = frozenset({_SDT, _CUSTOM_XML})
_HEADING_STYLE = re.compile(r"heading ([1-9])")
_NOTE_SEPARATORS = frozenset({"separator", "continuationSeparator", "continuationNotice"})
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def matches(path: Path, head: bytes) -> bool:
    return zip_member_under(head, b"word/") or path.suffix.lower() in SUFFIXES


# --- helpers shared by the office readers ---


def clean_text(text: str) -> str:
    """A paragraph's text with each line's whitespace (tabs, no-break spaces) collapsed and
    empty lines dropped; vertical tabs and other breaks become line ends."""
    lines = (" ".join(line.split()) for line in _LINE_BREAKS.split(text))
    return "\n".join(line for line in lines if line)


def read_office_package(path: Path, data: bytes, what: str, read: Callable[[Path, bytes, str], Document]) -> Document:
    """An Office Open XML package (Word, PowerPoint) read by *read* (path, data, core title) once
    the archive guards and the entity check accepted it; any other failure of the parsing library
    on damaged XML is an ExtractError naming the package."""
    archive = open_archive(data, what)
    try:
        refuse_xml_entities(archive, what)
        title = core_title(archive, what)
        return read(path, data, title)
    except ExtractError:
        raise
    except Exception as exc:  # noqa: BLE001 - python-docx, python-pptx and lxml raise anything on damaged XML
        raise ExtractError(f"broken {what} ({type(exc).__name__}: {one_line(exc)})") from None
    finally:
        archive.close()


def core_title(archive: zipfile.ZipFile, what: str) -> str:
    """dc:title from docProps/core.xml, or "" (missing or damaged properties are no error)."""
    if "docProps/core.xml" not in archive.namelist():
        return ""
    try:
        root = parse_xml(read_member(archive, "docProps/core.xml", what), f"{what} properties")
    except ExtractError:
        return ""
    node = root.find("{http://purl.org/dc/elements/1.1/}title")
    text = " ".join("".join(node.itertext()).split()) if node is not None else ""
    return text[:MAX_TITLE_CHARS]


def sections_document(
    kind: str, items: Iterable[tuple[int, str]], notes: Iterable[tuple[str, list[str]]], title: str
) -> Document:
    """A document from (level, text) items: level 0 a paragraph or table row, 1.. a heading.

    Each heading begins a part ("section N"), and text before the first heading a part of its
    own; a document without headings has no parts (hits are located by line). The chunker cuts
    the sections apart: with chunks free to run on, the overlap put a chunk that begins at a
    heading in the section before it (40% of the chunks of the real test documents named the
    wrong section). *notes* are (heading, texts) appended at the end (footnotes, endnotes), each
    under its heading.
    """
    items = list(items)
    sectioned = any(level for level, _ in items)
    builder = DocumentBuilder()
    for level, text in items:
        if level:
            builder.start_part()
            builder.heading(text, level)
        else:
            if sectioned and not builder.part_starts:
                builder.start_part()
            builder.block(text)
    for heading, texts in notes:
        if texts:
            if sectioned:
                builder.start_part()
            builder.heading(heading, 1)
            for text in texts:
                builder.block(text)
    return builder.document(kind, title, part_kind="section", split_parts=True)


# --- Word ---


def read_docx(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """A Word document's body in order (see the module docstring). Raises ExtractError for a
    broken, encrypted or hostile file."""
    return read_office_package(path, data, WHAT, _read)


def _read(path: Path, data: bytes, title: str) -> Document:
    from docx.opc.constants import RELATIONSHIP_TYPE as RT
    from docx.opc.part import PartFactory
    from docx.package import Package
    from docx.parts.document import DocumentPart

    for content_type in _MAIN_CONTENT_TYPES:
        PartFactory.part_type_for.setdefault(content_type, DocumentPart)
    part = Package.open(io.BytesIO(data)).main_document_part
    if not isinstance(part, DocumentPart):
        raise ExtractError(f"not a {WHAT} (its main part is {part.content_type[:80]})")
    document = part.document
    levels = _StyleLevels(document.styles.element)
    body = document.element.body
    items = list(_blocks(body, levels)) if body is not None else []
    notes = []
    for name, reltype, tag in (("Footnotes", RT.FOOTNOTES, "footnote"), ("Endnotes", RT.ENDNOTES, "endnote")):
        for rel in part.rels.values():
            if rel.reltype == reltype and not rel.is_external:
                root = parse_xml(rel.target_part.blob, f"{WHAT} {name.lower()}")
                notes.append((name, _notes(root, f"{_W}{tag}", levels)))
    if not title:
        title = next((text for level, text in items if level == -1), "") or next(
            (text for level, text in items if level == 1), ""
        )
    items = [(1 if level == -1 else level, text) for level, text in items]
    return sections_document(KIND, items, notes, title[:MAX_TITLE_CHARS] or file_stem(path))


class _StyleLevels:
    """What a paragraph style makes of a paragraph: a heading level, the title, a TOC entry."""

    def __init__(self, styles: Any) -> None:
        self._styles: dict[str, tuple[str, str | None, str | None]] = {}
        for style in styles.iter(f"{_W}style") if styles is not None else ():
            if style.get(f"{_W}type") not in (None, "paragraph"):
                continue
            name = style.find(f"{_W}name")
            based = style.find(f"{_W}basedOn")
            outline = style.find(f"{_W}pPr/{_W}outlineLvl")
            self._styles[style.get(f"{_W}styleId") or ""] = (
                " ".join(((name.get(_VAL) if name is not None else "") or "").lower().split()),
                based.get(_VAL) if based is not None else None,
                outline.get(_VAL) if outline is not None else None,
            )
        self._cache: dict[str, int | str | None] = {}

    def of(self, style_id: str) -> int | str | None:
        """1..9 (heading level), "title", "toc" (skipped) or None (body text)."""
        if style_id not in self._cache:
            self._cache[style_id] = self._resolve(style_id)
        return self._cache[style_id]

    def _resolve(self, style_id: str) -> int | str | None:
        seen = set()
        current: str | None = style_id
        while current is not None and current in self._styles and current not in seen:
            seen.add(current)
            name, based, outline = self._styles[current]
            if name == "title":
                return "title"
            if name.startswith("toc ") or name == "toc heading":
                return "toc"
            match = _HEADING_STYLE.fullmatch(name)
            if match:
                return int(match.group(1))
            level = _outline_level(outline)
            if level is not None:
                return level or None
            current = based
        return None


def _outline_level(value: str | None) -> int | None:
    """w:outlineLvl 0..8 as a heading level 1..9; 9 (body text) as 0; anything else None."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 3:
        return None
    level = int(value)
    return level + 1 if level < 9 else 0


def _unwrap(element: Any) -> Iterator[Any]:
    """Children of *element*, content controls and custom XML opened up (their content inline)."""
    for child in element:
        if child.tag in _WRAPPERS:
            content = child.find(_SDT_CONTENT) if child.tag == _SDT else child
            if content is not None:
                yield from _unwrap(content)
        else:
            yield child


def _blocks(container: Any, levels: _StyleLevels) -> Iterator[tuple[int, str]]:
    """(level, text) of each paragraph and table row, in order; level -1 is a Title paragraph."""
    for child in _unwrap(container):
        if child.tag == _P:
            item = _paragraph(child, levels)
            if item is not None:
                yield item
        elif child.tag == _TBL:
            for row in _table_rows(child):
                yield 0, row


def _paragraph(p: Any, levels: _StyleLevels) -> tuple[int, str] | None:
    text = clean_text(_inline_text(p))
    if not text:
        return None
    kind: int | str | None = None
    ppr = p.find(_PPR)
    if ppr is not None:
        style = ppr.find(f"{_W}pStyle")
        if style is not None:
            kind = levels.of(style.get(_VAL) or "")
        outline = ppr.find(f"{_W}outlineLvl")
        if outline is not None and kind not in ("title", "toc"):
            direct = _outline_level(outline.get(_VAL))
            if direct is not None:
                kind = direct or None
    if kind == "toc":
        return None
    if kind is None or len(text) > MAX_HEADING_CHARS:
        return 0, text
    return (-1 if kind == "title" else int(kind)), text


def _inline_text(element: Any) -> str:
    out: list[str] = []
    _collect(element, out)
    return "".join(out)


def _collect(element: Any, out: list[str]) -> None:
    # Recursion is bounded: lxml refuses XML nested over 256 deep.
    for child in element:
        tag = child.tag
        if tag == _T:
            out.append(child.text or "")
        elif tag in _TABS:
            out.append(" ")
        elif tag in _BREAKS:
            out.append("\n")
        elif tag == _NO_BREAK_HYPHEN:
            out.append("-")
        elif tag == _P:  # a paragraph in a text box: a line of its own
            out.append("\n")
            _collect(child, out)
            out.append("\n")
        elif tag == _TC:  # a cell of a table in a text box
            _collect(child, out)
            out.append(" ")
        elif isinstance(tag, str) and tag not in _SKIPPED:
            _collect(child, out)


def _table_rows(table: Any) -> Iterator[str]:
    """Each row's cells joined by " | " (a cell merged down from the row above is not repeated)."""
    for row in _unwrap(table):
        if row.tag != _TR:
            continue
        cells = []
        for cell in _unwrap(row):
            if cell.tag != _TC:
                continue
            props = cell.find(_TCPR)
            merge = props.find(_VMERGE) if props is not None else None
            if merge is not None and merge.get(_VAL, "continue") != "restart":
                continue
            text = " ".join(clean_text(_inline_text(cell)).split("\n"))
            if text:
                cells.append(text)
        if cells:
            yield " | ".join(cells)


def _notes(root: Any, tag: str, levels: _StyleLevels) -> list[str]:
    """The text of each footnote (or endnote), separators left out."""
    out = []
    for note in root.iter(tag):
        if note.get(f"{_W}type") in _NOTE_SEPARATORS:
            continue
        text = "\n".join(text for _, text in _blocks(note, levels))
        if text:
            out.append(text)
    return out


READER = Reader(KIND, matches, read_docx, no_text="Word document has no text", part_kind="section")
