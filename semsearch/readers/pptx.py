"""PowerPoint presentations (.pptx and its macro, show and template kinds): a part per slide.

The zip is checked by :func:`safety.open_archive` and its XML by
:func:`semsearch.readers.safety.refuse_xml_entities` before python-pptx (imported on first use)
sees a byte. Every slide begins a part, an empty one too, so "slide 7" is PowerPoint's seventh
slide (hidden slides count, as PowerPoint numbers them). A slide gives its title as a heading,
then the text of its shapes in order (groups opened, tables as rows of " | "-joined cells), then
its speaker notes. Charts, SmartArt and pictures give no text.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, file_stem
from semsearch.readers.docx import MAX_TITLE_CHARS, clean_text, read_office_package
from semsearch.readers.safety import zip_member_under

KIND = "pptx"
# Titles that PowerPoint templates leave in a deck's properties.
PLACEHOLDER_TITLES = frozenset(
    {
        "powerpoint presentation",
        "presentation title goes here",
        "presentation title",
        "title",
        "slide 1",
        "click to add title",
    }
)
WHAT = "PowerPoint presentation"
SUFFIXES = frozenset({".pptx", ".pptm", ".ppsx", ".ppsm", ".potx", ".potm"})
MAX_GROUP_DEPTH = 50  # groups within groups; lxml already stops XML at 256 levels


def matches(path: Path, head: bytes) -> bool:
    return zip_member_under(head, b"ppt/") or path.suffix.lower() in SUFFIXES


def read_pptx(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """A presentation's text, slide by slide (see the module docstring). Raises ExtractError for
    a broken, encrypted or hostile file."""
    return read_office_package(path, data, WHAT, _read)


def _read(path: Path, data: bytes, title: str) -> Document:
    from pptx.package import Package
    from pptx.parts.presentation import PresentationPart

    # Package.open rather than pptx.Presentation, which refuses shows (.ppsx) and templates.
    part = Package.open(io.BytesIO(data)).main_document_part
    if not isinstance(part, PresentationPart):
        raise ExtractError(f"not a {WHAT} (its main part is {part.content_type[:80]})")
    builder = DocumentBuilder()
    first_title = ""
    for number, slide in enumerate(part.presentation.slides, 1):
        builder.start_part()
        title_shape = slide.shapes.title
        heading = _one_line(_frame_text(title_shape)) if title_shape is not None else ""
        if heading:
            builder.heading(heading, 2)
            if number == 1:
                first_title = heading
        skip = title_shape.element if title_shape is not None else None
        for text in _shape_texts(slide.shapes, skip, 0):
            builder.block(text)
        if slide.has_notes_slide:
            notes = clean_text(_frame_text(slide.notes_slide.notes_placeholder))
            if notes:
                builder.block(f"Notes: {notes}")
    if title.strip().lower() in PLACEHOLDER_TITLES:
        title = ""  # a template's leftover, not this deck's title
    title = (title or first_title)[:MAX_TITLE_CHARS] or file_stem(path)
    return builder.document(KIND, title, part_kind="slide", split_parts=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _frame_text(shape: Any) -> str:
    """A shape's text, a line per paragraph (line breaks kept), or "" (no text frame)."""
    if shape is None or not shape.has_text_frame:
        return ""
    return "\n".join(paragraph.text for paragraph in shape.text_frame.paragraphs)


def _shape_texts(shapes: Any, skip: Any, depth: int) -> Iterator[str]:
    """The text of each shape in order, groups opened up; the shape of element *skip* (the title) left out."""
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            if depth < MAX_GROUP_DEPTH:
                yield from _shape_texts(shape.shapes, skip, depth + 1)
        elif getattr(shape, "has_table", False):
            for row in shape.table.rows:
                cells = [_one_line(cell.text) for cell in row.cells if not cell.is_spanned]
                line = " | ".join(cell for cell in cells if cell)
                if line:
                    yield line
        elif shape.element is not skip:
            text = clean_text(_frame_text(shape))
            if text:
                yield text


READER = Reader(KIND, matches, read_pptx, no_text="presentation has no text", part_kind="slide")
