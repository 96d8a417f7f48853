"""OpenDocument text (.odt, .ott): the body in order, a part (section) per heading, tables as rows.

content.xml is parsed with lxml through :func:`safety.parse_xml` (entities refused, no DTD, no
network) after :func:`safety.open_archive` checked the zip, rather than with odfpy: odfpy reads
every member of the zip into memory and builds its own tree of Python objects, slower and with
no limits of ours. ``text:h`` elements are headings (their outline level), a paragraph in the
"Title" style the title; lists, sections and text boxes are read in place, tables of contents
and other generated indexes passed over, tracked deletions and comments left out. Footnotes and
endnotes follow the body under a heading of their own. The title is meta.xml's dc:title, else
the first Title paragraph or level-1 heading, else the file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, file_stem, one_line
from semsearch.readers.docx import MAX_HEADING_CHARS, MAX_TITLE_CHARS, clean_text, sections_document
from semsearch.readers.safety import open_archive, parse_xml, read_member

KIND = "odt"
WHAT = "OpenDocument text"
SUFFIXES = frozenset({".odt", ".ott"})
MIMETYPE = b"application/vnd.oasis.opendocument.text"  # also -template and -master

_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"
_SVG = "{urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_H, _P, _LIST, _NOTE, _NOTE_BODY = f"{_TEXT}h", f"{_TEXT}p", f"{_TEXT}list", f"{_TEXT}note", f"{_TEXT}note-body"
_TABLE_TABLE, _ROW, _CELL = f"{_TABLE}table", f"{_TABLE}table-row", f"{_TABLE}table-cell"
_SPACES = frozenset({f"{_TEXT}s", f"{_TEXT}tab"})
_LINE_BREAK = f"{_TEXT}line-break"
# Generated content (it repeats the headings or the text), declarations, deleted text, comments.
_SKIPPED = frozenset(
    {
        f"{_TEXT}{name}"
        for name in (
            "table-of-content",
            "illustration-index",
            "table-index",
            "object-index",
            "user-index",
            "alphabetical-index",
            "tracked-changes",
            "sequence-decls",
            "variable-decls",
            "user-field-decls",
            "dde-connection-decls",
            "note-citation",
        )
    }
    | {f"{_OFFICE}annotation", f"{_OFFICE}forms", f"{_SVG}title", f"{_SVG}desc", f"{_TABLE}table-columns"}
    | {f"{_TABLE}table-column", f"{_TABLE}covered-table-cell"}
)


def matches(path: Path, head: bytes) -> bool:
    # The first member of an OpenDocument zip is "mimetype", stored, holding the type.
    return (head.startswith(b"PK\x03\x04") and MIMETYPE in head[:256]) or path.suffix.lower() in SUFFIXES


def read_odt(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """An OpenDocument text's body in order (see the module docstring). Raises ExtractError for
    a broken, encrypted or hostile file."""
    archive = open_archive(data, WHAT)
    try:
        if "META-INF/manifest.xml" in archive.namelist():
            manifest = read_member(archive, "META-INF/manifest.xml", WHAT)
            if b"encryption-data" in manifest:
                raise ExtractError(f"encrypted {WHAT} (password protected)")
        root = parse_xml(read_member(archive, "content.xml", WHAT), WHAT)
        title = _meta_title(archive)
        return _read(path, root, title)
    except ExtractError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, OSError, EOFError) as exc:
        raise ExtractError(f"broken {WHAT} ({type(exc).__name__}: {one_line(exc)})") from None
    finally:
        archive.close()


def _meta_title(archive: Any) -> str:
    if "meta.xml" not in archive.namelist():
        return ""
    try:
        meta = parse_xml(read_member(archive, "meta.xml", WHAT), f"{WHAT} properties")
    except ExtractError:
        return ""  # the properties are optional: damaged ones are passed over
    node = meta.find(f"{_OFFICE}meta/{_DC}title")
    return " ".join("".join(node.itertext()).split())[:MAX_TITLE_CHARS] if node is not None else ""


def _read(path: Path, root: Any, title: str) -> Document:
    body = root.find(f"{_OFFICE}body/{_OFFICE}text")
    if body is None:
        raise ExtractError(f"broken {WHAT} (content.xml has no text body)")
    reader = _Walker(root)
    reader.blocks(body, reader.items)
    items = reader.items
    if not title:
        title = next((text for level, text in items if level == -1), "") or next(
            (text for level, text in items if level == 1), ""
        )
    items = [(1 if level == -1 else level, text) for level, text in items]
    notes = [("Footnotes", reader.footnotes), ("Endnotes", reader.endnotes)]
    return sections_document(KIND, items, notes, title[:MAX_TITLE_CHARS] or file_stem(path))


class _Walker:
    """Collects (level, text) items of the body in order (-1: a Title paragraph), and the notes."""

    def __init__(self, root: Any) -> None:
        self.items: list[tuple[int, str]] = []
        self.footnotes: list[str] = []
        self.endnotes: list[str] = []
        # Automatic styles ("P1") name the style they derive from ("Title").
        self.parents: dict[str, str] = {}
        styles = root.find(f"{_OFFICE}automatic-styles")
        for style in styles.iter(f"{_STYLE}style") if styles is not None else ():
            name, parent = style.get(f"{_STYLE}name"), style.get(f"{_STYLE}parent-style-name")
            if name and parent:
                self.parents[name] = parent

    def blocks(self, element: Any, out: list[tuple[int, str]]) -> None:
        # Recursion is bounded: lxml refuses XML nested over 256 deep.
        for child in element:
            tag = child.tag
            if tag == _H:
                text = self.inline(child)
                if text:
                    level = _level(child.get(f"{_TEXT}outline-level"))
                    out.append((level, text) if len(text) <= MAX_HEADING_CHARS else (0, text))
            elif tag == _P:
                text = self.inline(child)
                if text:
                    style = child.get(f"{_TEXT}style-name") or ""
                    is_title = "Title" in (style, self.parents.get(style)) and len(text) <= MAX_HEADING_CHARS
                    out.append((-1 if is_title else 0, text))
            elif tag == _TABLE_TABLE:
                self.table(child, out)
            elif isinstance(tag, str) and tag not in _SKIPPED:
                self.blocks(child, out)  # lists, list items, sections, frames, ...

    def table(self, table: Any, out: list[tuple[int, str]]) -> None:
        for row in table.iter(_ROW):
            if _inside_other_table(row, table):
                continue  # a nested table's rows are read with the cell that holds them
            cells = []
            for cell in row:
                if cell.tag != _CELL:
                    continue
                inner: list[tuple[int, str]] = []
                self.blocks(cell, inner)
                text = " ".join(" ".join(text.split("\n")) for _, text in inner)
                if text:
                    cells.append(text)
            if cells:
                out.append((0, " | ".join(cells)))

    def inline(self, element: Any) -> str:
        out: list[str] = []
        self._collect(element, out)
        return clean_text("".join(out))

    def _collect(self, element: Any, out: list[str]) -> None:
        if element.text:
            out.append(element.text)
        for child in element:
            tag = child.tag
            if tag in _SPACES:
                out.append(" ")  # text:s c="N": whitespace is collapsed anyway
            elif tag == _LINE_BREAK:
                out.append("\n")
            elif tag == _NOTE:
                self._note(child)
            elif tag in (_P, _H):  # a paragraph in a text box: a line of its own
                out.append("\n")
                self._collect(child, out)
                out.append("\n")
            elif tag == _CELL:  # a table in a text box
                self._collect(child, out)
                out.append(" ")
            elif isinstance(tag, str) and tag not in _SKIPPED:
                self._collect(child, out)
            if child.tail:
                out.append(child.tail)

    def _note(self, note: Any) -> None:
        body = note.find(_NOTE_BODY)
        if body is None:
            return
        inner: list[tuple[int, str]] = []
        self.blocks(body, inner)
        text = "\n".join(text for _, text in inner)
        if text:
            (self.endnotes if note.get(f"{_TEXT}note-class") == "endnote" else self.footnotes).append(text)


def _inside_other_table(row: Any, table: Any) -> bool:
    parent = row.getparent()
    while parent is not None and parent is not table:
        if parent.tag == _TABLE_TABLE:
            return True
        parent = parent.getparent()
    return False


def _level(value: str | None) -> int:
    if not value or not value.isascii() or not value.isdigit() or len(value) > 3:
        return 1
    return min(max(int(value), 1), 10)


READER = Reader(KIND, matches, read_odt, no_text="OpenDocument text has no text", part_kind="section")
