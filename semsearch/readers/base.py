"""The reader protocol: what one kind of document module gives the registry, and how files are read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from semsearch.readers.document import Document

OCR_MODES = ("off", "auto", "images")


class OcrCache(Protocol):
    """Text recognized before, by the hash of a page image (so no page is read twice)."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, text: str) -> None: ...


@dataclass(frozen=True)
class ReadOptions:
    """How files are read: the settings an index keeps, and the run's cache and progress hook.

    ``ocr``: "off" (no OCR), "auto" (PDF pages without a text layer) or "images" (those, and
    image files). ``notebook_outputs``: also index the text outputs of notebook cells.
    ``on_ocr(path, done, total)`` reports pages recognized; called from the reading thread.
    """

    ocr: str = "auto"
    notebook_outputs: bool = False
    ocr_cache: OcrCache | None = None
    on_ocr: Callable[[Path, int, int], None] | None = None


DEFAULT_READ_OPTIONS = ReadOptions()


def _always(options: ReadOptions) -> bool:
    return True


def _no_settings(options: ReadOptions) -> str:
    return ""


@dataclass(frozen=True)
class Reader:
    """One kind of document: how to recognise it and how to read it.

    ``matches(path, head)`` sees the file's name and its first bytes (the walker's sniff): content
    first where the format has a signature, the name where it has none. ``read(path, data,
    options)`` returns the text with its locations, or raises
    :class:`semsearch.errors.ExtractError` for a file that is broken, encrypted or hostile (the
    run goes on). ``wanted(options)`` says whether the reader takes files under these options
    (images only with ``ocr="images"``). ``version`` and ``settings(options)`` make the
    reader's signature, recorded in the index: when it changes (a better reader, OCR turned on),
    the files of this kind are read again. ``part_kind`` names the numbered parts of its
    documents (pages, cells, slides, sections), which hits are located by.
    """

    kind: str
    matches: Callable[[Path, bytes], bool]
    read: Callable[[Path, bytes, ReadOptions], Document]
    no_text: str = "no text"  # the warning for a file that yields no text
    version: int = 1
    part_kind: str = "page"  # what the numbered parts of its documents are (see Document.part_kind)
    wanted: Callable[[ReadOptions], bool] = _always
    settings: Callable[[ReadOptions], str] = _no_settings

    def signature(self, options: ReadOptions) -> str:
        extra = self.settings(options)
        return f"{self.version}:{extra}" if extra else str(self.version)
