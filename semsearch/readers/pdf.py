"""PDF, page by page, through pypdf (imported on first use); pages without a text layer through OCR.

Encrypted, broken or text-less PDFs raise. A page whose text layer is empty is rendered with
pypdfium2 and read by the OCR engine (``ocr`` "auto" or "images"), its result cached by the
rendered page's hash.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from semsearch.errors import ExtractError, NoTextError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import PAGE_SEPARATOR, Document, file_stem, normalize_text, one_line, replace_surrogates

KIND = "pdf"
_NOT_A_TITLE = re.compile(
    r"(?i)^(microsoft (word|powerpoint|excel) - )|\.(dvi|docx?|pptx?|xlsx?|tex|ps|pdf|rtf|odt|txt)$|^untitled"
)
SUFFIXES = frozenset({".pdf"})
_HEADER = re.compile(rb"%PDF-\d\.\d")
_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b")
# A page whose extracted text is over this many characters is a decompression bomb or garbage.
MAX_PAGE_CHARS = 2_000_000
MAX_PDF_CHARS = 20_000_000


def read_pdf(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """PDF through pypdf, page by page, OCR for pages without text (unless ``options.ocr`` is
    "off"). Raises ExtractError for encrypted, broken or empty PDFs."""
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
    blank = [i for i, p in enumerate(pages) if not p.strip()]
    if blank and options.ocr != "off":
        for i, text in _ocr_pages(path, data, blank, options).items():
            pages[i] = text
    if not any(p.strip() for p in pages):
        hint = "scanned images? --ocr auto reads them" if options.ocr == "off" else "OCR found none either"
        raise NoTextError(f"PDF has no extractable text ({len(pages)} pages; {hint})")
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
        if _NOT_A_TITLE.search(title):
            title = ""  # the name of the file it was printed from ("paper.dvi", "Microsoft Word - x.doc")
    except Exception:  # noqa: BLE001 - metadata of broken PDFs is optional
        title = ""
    return Document(
        text=PAGE_SEPARATOR.join(parts),
        kind="pdf",
        part_starts=starts,
        title=replace_surrogates(title) or file_stem(path),
    )


def _ocr_pages(path: Path, data: bytes, numbers: list[int], options: ReadOptions) -> dict[int, str]:
    """The OCR text of the pages *numbers* (0-based), rendered by pypdfium2 (imported here)."""
    from semsearch.readers import ocr

    try:
        import pypdfium2 as pdfium
    except ImportError as exc:
        raise ExtractError(f"cannot render scanned pages ({exc}); reinstall semsearch") from None
    out: dict[int, str] = {}
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # noqa: BLE001 - pdfium's errors (PdfiumError, OSError) vary
        raise ExtractError(f"cannot render scanned pages ({type(exc).__name__}: {one_line(exc)})") from None
    try:
        for done, i in enumerate(numbers):
            if options.on_ocr is not None:
                options.on_ocr(path, done, len(numbers))
            try:
                page = pdf[i]
                width, height = page.get_size()
                scale = min(RENDER_SCALE, ocr.RENDER_MAX_SIDE / max(width, height, 1.0))
                pixels = page.render(scale=scale).to_numpy()
            except Exception as exc:  # noqa: BLE001 - one page that cannot be rendered is passed over
                raise ExtractError(f"page {i + 1} cannot be rendered ({type(exc).__name__}: {one_line(exc)})") from None
            if pixels.ndim == 3 and pixels.shape[2] == 4:
                pixels = pixels[:, :, :3]  # pdfium renders BGR(x), the order the engine takes
            if pixels.size == 0 or int(pixels.min()) == int(pixels.max()):
                continue  # a blank page
            out[i] = normalize_text(ocr.recognize_cached(pixels, options.ocr_cache)).strip("\n")
        if options.on_ocr is not None:
            options.on_ocr(path, len(numbers), len(numbers))
    finally:
        pdf.close()
    return out


RENDER_SCALE = 200 / 72  # 200 dpi


def matches(path: Path, head: bytes) -> bool:
    return _is_pdf(head) or path.suffix.lower() in SUFFIXES


def _is_pdf(head: bytes) -> bool:
    """ "%PDF-1.7", then objects ("1 0 obj") or binary content: not text that merely starts with
    "%PDF-" (a note about the format)."""
    if _HEADER.match(head) is None:
        return False
    from semsearch.readers.text import looks_like_text

    return _OBJECT.search(head) is not None or not looks_like_text(head)


def _settings(options: ReadOptions) -> str:
    return "ocr" if options.ocr != "off" else ""


READER = Reader(KIND, matches, read_pdf, no_text="PDF has no extractable text", version=2, settings=_settings)
