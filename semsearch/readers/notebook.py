"""Jupyter notebooks: a part per cell (its 1-based number in the notebook), Markdown headings kept.

Parsed with :mod:`json`, not nbformat: nbformat takes long to import and its validation refuses
notebooks that are slightly off (a missing field, an unknown minor version) that are still
perfectly readable. Format 4 (``cells``) and format 3 (``worksheets[].cells``, code in ``input``,
heading cells) are read. Markdown cells keep their text, their ATX headings (outside fences)
becoming the document's headings; code cells are fenced as code (`````python``), so a hit reads
as code and a ``# comment`` in it does not look like a heading; raw cells are kept as they are.
Outputs are left out unless ``ReadOptions.notebook_outputs``: then the text ones only (streams and
``text/plain`` results), each cut to :data:`MAX_OUTPUT_CHARS`; pictures and other encoded data
never.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, decode_text, file_stem, one_line

KIND = "notebook"
SUFFIXES = frozenset({".ipynb"})
MAX_OUTPUT_CHARS = 10_000
MAX_CELLS = 100_000
MAX_TITLE_CHARS = 300
_FENCE_RUN = re.compile(r"`{3,}")
# As semsearch.readers.markdown reads headings, line by line (its regexes are for whole files).
_ATX = re.compile(r"(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"(```|~~~)")
_ANCHOR = re.compile(r"\s*\{\s*#[^}]*\}\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in stream output


_V4_START = re.compile(
    rb'\A\{\s*"cells"\s*:\s*\[\s*(\]|\{\s*"(cell_type|attachments|execution_count|id|metadata|outputs|source)")'
)


def matches(path: Path, head: bytes) -> bool:
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if path.suffix.lower() in SUFFIXES:
        return body.startswith(b"{")
    # Without the name: Jupyter writes "cells" first, its cells' keys sorted (as nbformat does).
    return _V4_START.match(body) is not None


def _joined(value: Any) -> str:
    """A notebook's multi-line string: a string, or a list of strings (anything else: empty)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(piece for piece in value if isinstance(piece, str))
    return ""


def _cells(notebook: dict[str, Any]) -> list[Any]:
    if isinstance(notebook.get("cells"), list):
        return notebook["cells"]
    worksheets = notebook.get("worksheets")
    if isinstance(worksheets, list):
        cells: list[Any] = []
        for sheet in worksheets:
            if isinstance(sheet, dict) and isinstance(sheet.get("cells"), list):
                cells.extend(sheet["cells"])
        return cells
    raise ExtractError("not a Jupyter notebook (JSON without cells)")


def _language(notebook: dict[str, Any]) -> str:
    meta = notebook.get("metadata")
    if not isinstance(meta, dict):
        return ""
    for key in ("language_info", "kernelspec"):
        info = meta.get(key)
        if isinstance(info, dict):
            name = info.get("name") if key == "language_info" else info.get("language")
            if isinstance(name, str) and name.isidentifier():
                return name.lower()
    return ""


def markdown_lines(source: str) -> list[tuple[int, str]]:
    """A Markdown cell as (level, text): its ATX headings outside code fences (level 1-6), and
    the text between them (level 0). One pass over the lines."""
    out: list[tuple[int, str]] = []
    lines: list[str] = []
    fenced = False
    for line in source.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            match = _ATX.match(line)
            title = _ANCHOR.sub("", match.group(2)).strip() if match else ""
            if title and match:
                out.append((0, "\n".join(lines)))
                out.append((len(match.group(1)), title))
                lines = []
                continue
        lines.append(line)
    out.append((0, "\n".join(lines)))
    return [(level, text) for level, text in out if text.strip()]


def _add_markdown(builder: DocumentBuilder, source: str) -> None:
    for level, text in markdown_lines(source):
        if level:
            builder.heading(text, level)
        else:
            builder.block(text)


def _fenced(code: str, language: str) -> str:
    longest = max((len(run) for run in _FENCE_RUN.findall(code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.strip(chr(10))}\n{fence}"


def _output_texts(cell: dict[str, Any]) -> list[str]:
    """The text outputs of a code cell (format 4 and 3), each cut to MAX_OUTPUT_CHARS."""
    outputs = cell.get("outputs")
    texts: list[str] = []
    if not isinstance(outputs, list):
        return texts
    for output in outputs:
        if not isinstance(output, dict):
            continue
        kind = output.get("output_type")
        if kind == "stream":
            text = _joined(output.get("text"))
        elif kind in ("execute_result", "display_data", "pyout"):
            data = output.get("data")
            text = _joined(data.get("text/plain")) if isinstance(data, dict) else _joined(output.get("text"))
        else:
            continue
        text = _ANSI.sub("", text[: MAX_OUTPUT_CHARS * 2])[:MAX_OUTPUT_CHARS]
        if text.strip():
            texts.append(text)
    return texts


def read_notebook(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """A notebook's cells, a part each (see the module docstring)."""
    source, encoding = decode_text(data)
    try:
        notebook = json.loads(source)
    except RecursionError:
        raise ExtractError("broken notebook (invalid JSON: nested too deep)") from None
    except ValueError as exc:  # json.JSONDecodeError, and numbers too long to convert
        raise ExtractError(f"broken notebook (invalid JSON: {one_line(exc)})") from None
    if not isinstance(notebook, dict):
        raise ExtractError("not a Jupyter notebook (JSON that is not an object)")
    cells = _cells(notebook)
    if len(cells) > MAX_CELLS:
        raise ExtractError(f"notebook has {len(cells)} cells (over {MAX_CELLS}): refused")
    language = _language(notebook)
    builder = DocumentBuilder()
    first_markdown: str | None = None
    for cell in cells:
        builder.start_part()  # every cell, empty or not: part n is cell n
        if not isinstance(cell, dict):
            continue
        kind = cell.get("cell_type")
        text = _joined(cell.get("source", cell.get("input")))
        if kind == "markdown":
            if first_markdown is None:
                first_markdown = text
            _add_markdown(builder, text)
        elif kind == "heading":  # format 3
            level = cell.get("level")
            builder.heading(text, level if isinstance(level, int) else 1)
            if first_markdown is None:
                first_markdown = "# " + text
        elif kind == "code":
            if text.strip():
                builder.block(_fenced(text, language))
            if options.notebook_outputs:
                for output in _output_texts(cell):
                    builder.block(output)
        elif text.strip():  # raw cells, and kinds of cell this reader does not know
            builder.block(text)
    doc = builder.document(
        KIND, _title(notebook, first_markdown) or file_stem(path), part_kind="cell", split_parts=False
    )
    doc.encoding = encoding
    # Parts that stay empty at the end start past the text; they start at its end instead.
    doc.part_starts = [min(start, len(doc.text)) for start in doc.part_starts]
    return doc


def _title(notebook: dict[str, Any], first_markdown: str | None) -> str:
    meta = notebook.get("metadata")
    title = meta.get("title") if isinstance(meta, dict) else None
    if isinstance(title, str) and title.strip():
        return " ".join(title.split())[:MAX_TITLE_CHARS]
    if first_markdown:
        heading = next((text for level, text in markdown_lines(first_markdown) if level), "")
        return " ".join(heading.split())[:MAX_TITLE_CHARS]
    return ""


def _settings(options: ReadOptions) -> str:
    return "outputs" if options.notebook_outputs else ""


READER = Reader(KIND, matches, read_notebook, no_text="notebook has no text", part_kind="cell", settings=_settings)
