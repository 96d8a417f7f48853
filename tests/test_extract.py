"""Reading text in any encoding, and PDFs page by page."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_pdf

from semsearch.errors import ExtractError
from semsearch.extract import decode_text, extract_pdf, extract_text


def test_decode_utf8_bom_utf16_and_legacy() -> None:
    assert decode_text("naïve café".encode()) == ("naïve café", "utf-8")
    assert decode_text("\ufeffhello".encode("utf-8"))[0] == "hello"
    assert decode_text("hello wörld".encode("utf-16"))[0] == "hello wörld"
    text, encoding = decode_text("déjà vu, façade, œuvre".encode("cp1252"))
    assert text == "déjà vu, façade, œuvre" and encoding == "cp1252"


def test_invalid_bytes_never_raise() -> None:
    data = b"good text " * 200 + b"\xff\xfe\x80 bad" + b" more good text" * 50
    text, encoding = decode_text(data)
    assert "good text" in text and "more good text" in text
    assert "replaced" in encoding


def test_extract_text_normalizes_line_ends_and_nul(tmp_path: Path) -> None:
    doc = extract_text(tmp_path / "a.md", b"# Title\r\nline\x00 two\rthree\n")
    assert doc.text == "# Title\nline two\nthree\n"
    assert doc.kind == "markdown" and doc.title == "Title"


def test_pdf_pages_are_located(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "p.pdf", ["First page about volcanoes.", "Second page about glaciers."])
    doc = extract_pdf(path, path.read_bytes())
    assert doc.kind == "pdf"
    assert doc.page_at(doc.text.index("volcanoes")) == 1
    assert doc.page_at(doc.text.index("glaciers")) == 2


def test_pdf_without_text_and_broken_pdf(tmp_path: Path) -> None:
    empty = make_pdf(tmp_path / "empty.pdf", ["", ""])
    with pytest.raises(ExtractError, match="no extractable text"):
        extract_pdf(empty, empty.read_bytes())
    with pytest.raises(ExtractError, match="broken PDF"):
        extract_pdf(tmp_path / "bad.pdf", b"%PDF-1.4\n garbage without structure")
