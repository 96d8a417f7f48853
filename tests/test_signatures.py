"""Content signatures: text that starts like a binary format stays text; real files of the format
(written by the format's own library) are still recognised by their content, under any name."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import make_pdf, write
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.readers import ReadOptions, detect_kind
from semsearch.walk import Skip, WalkOptions, walk

IMAGES = ReadOptions(ocr="images")

# The first lines of SciFact abstracts that were taken for BMP images (issue 23, point 13), and
# others that start like a signature.
SCIFACT_TITLES = (
    "BMI-1 Autoantibody as a New Potential Biomarker for Cervical Carcinoma",
    "BMAL1 and CLOCK, Two Essential Components of the Circadian Clock, Are Involved in Glucose Homeostasis",
    "BMP/SMAD1 signaling sets a threshold for the left/right pathway in lateral plate mesoderm",
    "BMP receptor ALK3 controls collecting system development.",
    "BMP receptor IA is required in mammalian neural crest cells for development of the cardiac outflow tract",
    "PKD1 Inhibits AMPKα2 through Phosphorylation of Serine 491 and Impairs Insulin Signaling",
    "GITR, a member of the TNF receptor superfamily, is costimulatory to mouse T lymphocyte subpopulations.",
    "RIG-I-mediated antiviral responses to single-stranded RNA bearing 5'-phosphates.",
)
LOOKALIKES = (
    "BM",
    "BMW service intervals\n\nChange the oil every 15,000 km.\n",
    "GIF89a is the format of animated pictures; the header says so.\n",
    "GIF87a, the older one, has no extensions!\n",
    "%PDF-1.7 is the version line every PDF file starts with.\n",
    "%PDF-\n",
    "RIFF1234WEBP is how a WebP file starts, followed by a VP8 chunk.\n",
    "II* is not a TIFF header\n",
    "MM* marks the other byte order\n",
    "PK zip archives begin with a local file header.\n",
)


@pytest.mark.parametrize(
    "text", [f"{title}\n\nAbstract text follows.\n" for title in SCIFACT_TITLES] + list(LOOKALIKES)
)
@pytest.mark.parametrize("name", ["doc", "doc.txt", "abstract.md"])
def test_text_that_starts_like_a_signature_is_text(text: str, name: str) -> None:
    head = text.encode()
    for options in (IMAGES, ReadOptions()):
        assert detect_kind(Path(name), head, options) in ("text", "markdown"), (text, name)


def test_tex_that_starts_like_rtf_is_text() -> None:
    head = b"{\\rtfamily Roman text} and more\n"
    assert detect_kind(Path("chapter.tex"), head) == "text"
    assert detect_kind(Path("note"), b"{\\rtf1\\ansi{\\fonttbl\\f0 Times;}\\f0 Hello}") == "rtf"


def test_scifact_files_starting_with_bm_are_indexed_not_skipped_as_images(tmp_path: Path) -> None:
    for number, title in enumerate(SCIFACT_TITLES):
        write(tmp_path / f"{number}.txt", f"{title}\n\nThe abstract.\n")
    skips: list[Skip] = []
    for ocr in ("auto", "images"):
        found = list(walk([tmp_path], WalkOptions(ocr=ocr), skips.append))
        assert len(found) == len(SCIFACT_TITLES) and {e.kind for e in found} == {"text"}
    assert skips == []


def _pillow_image(fmt: str, mode: str, **save: object) -> bytes:
    from PIL import Image

    picture = Image.new(mode, (37, 23), 1 if mode in ("1", "P", "L") else (200, 30, 40, 255)[: len(mode)])
    out = io.BytesIO()
    picture.save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "save"),
    [
        ("BMP", "1", {}),
        ("BMP", "L", {}),
        ("BMP", "P", {}),
        ("BMP", "RGB", {}),
        ("BMP", "RGBA", {}),  # a V3/V4 header with bit fields
        ("GIF", "P", {}),
        ("GIF", "L", {}),
        ("GIF", "RGB", {}),
        ("TIFF", "RGB", {}),
        ("TIFF", "L", {"compression": "tiff_lzw"}),
        ("WEBP", "RGB", {}),
        ("WEBP", "RGBA", {"lossless": True}),
        ("PNG", "RGB", {}),
        ("JPEG", "RGB", {}),
    ],
)
def test_real_images_are_still_recognised_by_content(fmt: str, mode: str, save: dict[str, object]) -> None:
    data = _pillow_image(fmt, mode, **save)
    for name in ("picture", "picture.dat", f"picture.{fmt.lower()}"):
        assert detect_kind(Path(name), data[:8192], IMAGES) == "image", (fmt, mode, name)
        assert detect_kind(Path(name), data[:8192]) is None  # images only with --ocr images


def test_big_endian_tiff_and_a_bmp_with_a_core_header_are_images() -> None:
    # Pillow writes neither: the headers by hand.
    big = b"MM\x00*" + (8).to_bytes(4, "big") + bytes(64)
    assert detect_kind(Path("scan"), big, IMAGES) == "image"
    core = b"BM" + (26 + 6).to_bytes(4, "little") + bytes(4) + (26).to_bytes(4, "little") + (12).to_bytes(4, "little")
    core += (1).to_bytes(2, "little") * 2 + (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + bytes(4)
    assert detect_kind(Path("icon"), core, IMAGES) == "image"


def test_a_real_pdf_is_recognised_by_content_under_any_name(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "a.pdf", ["Harbour charts and tide tables."]).read_bytes()
    for name in ("report", "report.txt", "report.pdf"):
        assert detect_kind(Path(name), data[:8192]) == "pdf"
    ascii_pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    assert detect_kind(Path("plain"), ascii_pdf) == "pdf"


def test_real_office_files_are_recognised_by_content(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Minutes of the harbour committee.")
    document.save(str(tmp_path / "minutes.docx"))
    data = (tmp_path / "minutes.docx").read_bytes()
    assert detect_kind(Path("minutes"), data[:8192]) == "docx"


@pytest.mark.parametrize("name", ["index.php", "App.vue", "base.jinja2", "page.erb", "layout.hbs"])
def test_templates_that_start_like_a_page_are_read_as_text(name: str) -> None:
    head = (
        b"<!DOCTYPE html>\n<html><body><?php echo render_menu($items); ?>{% block body %}{% endblock %}</body></html>\n"
    )
    assert detect_kind(Path(name), head) == "text"
    assert detect_kind(Path("page"), head) == "html"  # a page without a name that says otherwise


def test_an_image_name_and_its_signature_make_an_image_even_with_an_odd_header() -> None:
    odd = b"BM" + b"\xff" * 4 + b"\x01\x00\x00\x00" + bytes(8)  # a BMP with a wrong size and reserved field
    assert detect_kind(Path("scan.bmp"), odd, IMAGES) == "image"  # Pillow decides; a broken one is named
    assert detect_kind(Path("scan.dat"), odd, IMAGES) is None  # without the name: not enough
    assert detect_kind(Path("notes.bmp"), b"BMW service intervals\n", IMAGES) == "image"


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["BM", "GIF89a", "GIF87a", "%PDF-1.7", "RIFF", "II*", "MM*", "{\\rtfamily", "PK"]),
    rest=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=300),
)
def test_printable_text_after_any_short_signature_is_text(prefix: str, rest: str) -> None:
    head = (prefix + rest + "\n").encode()
    assert detect_kind(Path("doc"), head[:8192], IMAGES) == "text"
