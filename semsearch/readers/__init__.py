"""Readers: a file's bytes -> text with locations, one module per kind of document, behind a registry.

A new format is one module that defines ``READER`` (a :class:`Reader`) and one line in
``BUILTIN_READERS``, or a :func:`register_reader` call from outside. The first reader whose
``matches`` accepts a file reads it, so specific formats come before the plain-text fallback.
Reader modules import their parsing libraries inside ``read``: detecting a file's kind is cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, OCR_MODES, OcrCache, Reader, ReadOptions
from semsearch.readers.document import PART_KINDS, Document

__all__ = [
    "BUILTIN_READERS",
    "OCR_MODES",
    "PART_KINDS",
    "SNIFF_BYTES",
    "Document",
    "OcrCache",
    "ReadOptions",
    "Reader",
    "detect_kind",
    "kind_wanted",
    "part_kind",
    "read_document",
    "reader_for",
    "reader_signatures",
    "register_reader",
    "unregister_reader",
    "unwanted_kind",
]

BUILTIN_READERS = (
    "semsearch.readers.pdf",
    "semsearch.readers.docx",
    "semsearch.readers.pptx",
    "semsearch.readers.odt",
    "semsearch.readers.epub",
    "semsearch.readers.image",
    "semsearch.readers.notebook",
    "semsearch.readers.rtf",
    "semsearch.readers.html",
    "semsearch.readers.markdown",
    "semsearch.readers.text",  # the fallback for any text: keep last
)
# How much of a file's start detection sees (the walker reads this much to sniff each file).
SNIFF_BYTES = 8192
_readers: list[Reader] = []


def _registry() -> list[Reader]:
    if not _readers:
        _readers.extend(importlib.import_module(name).READER for name in BUILTIN_READERS)
    return _readers


def register_reader(reader: Reader, *, before: str | None = "text") -> None:
    """Add a reader ahead of the reader of kind *before* (default: ahead of the plain-text
    fallback; None: last). A reader of the same kind is replaced."""
    readers = _registry()
    reader = _with_options(reader)
    readers[:] = [r for r in readers if r.kind != reader.kind]
    kinds = [r.kind for r in readers]
    readers.insert(kinds.index(before) if before in kinds else len(readers), reader)


def _with_options(reader: Reader) -> Reader:
    """A reader whose ``read`` takes (path, data) only, as before ``ReadOptions``, wrapped to take them."""
    import dataclasses
    import inspect

    try:
        params = inspect.signature(reader.read).parameters.values()
    except (TypeError, ValueError):
        return reader
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return reader
    read_two = reader.read

    def read(path: Path, data: bytes, options: ReadOptions) -> Document:
        return read_two(path, data)  # type: ignore[call-arg]

    return dataclasses.replace(reader, read=read)


def unregister_reader(kind: str) -> None:
    """Remove the reader of *kind* (a built-in one comes back only with a new process)."""
    readers = _registry()
    readers[:] = [r for r in readers if r.kind != kind]


def _matching(path: Path, head: bytes) -> Reader | None:
    """The first reader whose ``matches`` accepts the file, wanted or not."""
    return next((reader for reader in _registry() if reader.matches(path, head)), None)


def detect_kind(path: Path, head: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> str | None:
    """The kind of the first reader that accepts a file (its name and first bytes), or None: binary
    (or a kind these options leave out, such as images without ``ocr="images"``)."""
    reader = _matching(path, head)
    return reader.kind if reader is not None and reader.wanted(options) else None


def kind_wanted(kind: str, options: ReadOptions = DEFAULT_READ_OPTIONS) -> bool:
    """Whether files of *kind* are read under these options (a known reader, wanted)."""
    return any(reader.kind == kind and reader.wanted(options) for reader in _registry())


def part_kind(kind: str) -> str:
    """What the numbered parts of a document of *kind* are: "page", "cell", "slide" or "section"
    ("page" for a kind no reader of this process knows: PDF was the only one with parts before)."""
    for reader in _registry():
        if reader.kind == kind:
            return reader.part_kind
    return "page"


def unwanted_kind(path: Path, head: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> str | None:
    """The kind of the reader that would take a file these options leave out (an image without
    ``ocr="images"``), or None."""
    reader = _matching(path, head)
    return reader.kind if reader is not None and not reader.wanted(options) else None


def reader_signatures(options: ReadOptions = DEFAULT_READ_OPTIONS) -> dict[str, str]:
    """Each reader's kind and signature (its version and the options it depends on)."""
    return {reader.kind: reader.signature(options) for reader in _registry()}


def reader_for(kind: str) -> Reader:
    for reader in _registry():
        if reader.kind == kind:
            return reader
    raise ExtractError(f"no reader for files of kind {kind!r}")


def read_document(
    path: Path, data: bytes, kind: str | None = None, options: ReadOptions = DEFAULT_READ_OPTIONS
) -> Document:
    """Read a file's bytes with the reader of *kind* (None: detected from the name and content).

    Raises :class:`ExtractError` for a file that cannot be read as its kind (or that no reader takes).
    """
    if kind is None:
        kind = detect_kind(path, data[:SNIFF_BYTES], options)
        if kind is None:
            raise ExtractError("binary content")
    return reader_for(kind).read(path, data, options)
