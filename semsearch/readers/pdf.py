"""PDF, page by page, through pypdf (imported on first use). Encrypted, broken or text-less PDFs raise."""

from __future__ import annotations

import io
from pathlib import Path

from semsearch.errors import ExtractError
from semsearch.readers.base import Reader
from semsearch.readers.document import PAGE_SEPARATOR, Document, file_stem, normalize_text, one_line, replace_surrogates

KIND = "pdf"
SUFFIXES = frozenset({".pdf"})
# A page whose extracted text is over this many characters is a decompression bomb or garbage.
MAX_PAGE_CHARS = 2_000_000
MAX_PDF_CHARS = 20_000_000


def read_pdf(path: Path, data: bytes) -> Document:
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
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        OSError,
        RecursionError,
        AssertionError,
        ZeroDivisionError,
        MemoryError,
    ) as exc:
        raise ExtractError(f"broken PDF ({type(exc).__name__}: {one_line(exc)})") from None
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
    return Document(
        text=PAGE_SEPARATOR.join(parts),
        kind="pdf",
        page_starts=starts,
        title=replace_surrogates(title) or file_stem(path),
    )


def matches(path: Path, head: bytes) -> bool:
    return head.startswith(b"%PDF-") or path.suffix.lower() in SUFFIXES


READER = Reader(KIND, matches, read_pdf, no_text="PDF has no extractable text")
