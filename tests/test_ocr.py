"""Offline OCR: scanned PDF pages and images through the bundled RapidOCR models, the cache by
page hash, the --ocr modes, and what a change of mode re-reads. Images are drawn by Pillow, and a
scanned PDF is Pillow's picture saved as PDF (an image, no text layer)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import pytest
from conftest import FakeModel, make_pdf
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch import Index
from semsearch.errors import ExtractError
from semsearch.readers import ReadOptions, detect_kind, read_document
from semsearch.readers import ocr as ocr_module
from semsearch.readers.ocr import SqliteOcrCache

LINES = ("The lighthouse keeper logged", "seventeen storms in March 1911.", "Invoice number QX-4471 was paid.")


def picture(lines: tuple[str, ...] = LINES, size: tuple[int, int] = (1100, 260)):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=36)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 60 * i), line, fill="black", font=font)
    return image


def png_bytes(image, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    image.convert(mode).save(out, format="PNG")
    return out.getvalue()


def scanned_pdf(path: Path, pages: list[tuple[str, ...]]) -> Path:
    images = [picture(lines) for lines in pages]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


def test_image_text_is_recognized_offline_line_by_line() -> None:
    doc = read_document(Path("scan.png"), png_bytes(picture()), "image", ReadOptions(ocr="images"))
    assert doc.text.splitlines() == list(LINES)
    assert doc.part_starts == []  # one picture: located by line


def test_palette_and_grey_images_read_like_colour_ones() -> None:
    for mode in ("P", "L"):
        doc = read_document(Path("scan.png"), png_bytes(picture(), mode), "image", ReadOptions(ocr="images"))
        assert words(LINES[2]) <= words(doc.text), mode


def test_images_are_taken_only_with_ocr_images() -> None:
    head = png_bytes(picture())[:8192]
    assert detect_kind(Path("scan.png"), head, ReadOptions(ocr="images")) == "image"
    assert detect_kind(Path("scan.png"), head, ReadOptions(ocr="auto")) is None
    assert detect_kind(Path("scan.png"), head, ReadOptions(ocr="off")) is None
    assert detect_kind(Path("renamed.dat"), head, ReadOptions(ocr="images")) == "image"  # by content


def test_scanned_pdf_pages_are_read_by_ocr_in_auto_and_not_when_off(tmp_path: Path) -> None:
    pdf = scanned_pdf(tmp_path / "scan.pdf", [LINES, ("Second page about tidal charts",)])
    data = pdf.read_bytes()
    doc = read_document(pdf, data, "pdf", ReadOptions(ocr="auto"))
    assert doc.part_at(doc.text.index("lighthouse")) == 1
    assert doc.part_at(doc.text.index("tidal")) == 2
    with pytest.raises(ExtractError, match=r"no extractable text.*--ocr auto"):
        read_document(pdf, data, "pdf", ReadOptions(ocr="off"))


def test_ocr_results_are_cached_by_page_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_bytes(picture())
    cache = SqliteOcrCache(tmp_path / "ocr-cache.sqlite")
    options = ReadOptions(ocr="images", ocr_cache=cache)
    first = read_document(Path("a.png"), data, "image", options).text
    assert (cache.hits, cache.misses) == (0, 1)

    def fail(pixels: object) -> str:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(ocr_module, "recognize", fail)
    again = read_document(Path("copy-under-another-name.png"), data, "image", options).text
    assert again == first and cache.hits == 1
    cache.close()
    reopened = SqliteOcrCache(tmp_path / "ocr-cache.sqlite")
    assert read_document(Path("b.png"), data, "image", ReadOptions(ocr="images", ocr_cache=reopened)).text == first
    reopened.close()


def test_a_broken_cache_file_never_stops_a_read(tmp_path: Path) -> None:
    bad = tmp_path / "ocr-cache.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    cache = SqliteOcrCache(bad)
    doc = read_document(Path("a.png"), png_bytes(picture()), "image", ReadOptions(ocr="images", ocr_cache=cache))
    assert words(LINES[0]) <= words(doc.text)


def test_decompression_bomb_image_is_refused_with_a_clear_message() -> None:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A PNG that declares 40000 x 40000 pixels (1.6 G, over Pillow's limit) in a few bytes.
    header = struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExtractError, match="too large to decode"):
            read_document(Path("bomb.png"), data, "image", ReadOptions(ocr="images"))


def test_broken_image_is_an_extract_error() -> None:
    data = png_bytes(picture())
    with pytest.raises(ExtractError, match="broken image"):
        read_document(Path("cut.png"), data[: len(data) // 3], "image", ReadOptions(ocr="images"))


def _index(root: Path, **settings: object) -> Index:
    return Index.create(root / ".semsearch", provider=FakeModel(), exist_ok=True, **settings)


def test_index_ocr_modes_cache_and_rereading(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    scanned_pdf(docs / "scan.pdf", [LINES])
    (docs / "whiteboard.png").write_bytes(png_bytes(picture(("Whiteboard: ship the parser on Friday",))))
    make_pdf(docs / "typed.pdf", ["A typed page about volcanoes."])

    # OCR off: the scanned PDF has no text, the image is not taken.
    with _index(tmp_path, ocr="off") as index:
        summary = index.update([docs])
        assert summary.no_text == 1 and summary.pages_ocr == 0
        assert index.search("lighthouse storms", mode="lexical") == []

    # auto (the default, remembered from now): the scanned page is read again, and found.
    with _index(tmp_path, ocr="auto") as index:
        summary = index.update([docs])
        # Every PDF is read again (its reader changed), but the typed one's vector is reused.
        assert summary.pages_ocr == 1 and summary.indexed == 2 and summary.chunks_reused == 1
        hits = index.search("lighthouse keeper storms", mode="lexical")
        assert hits and hits[0].chunk.path.name == "scan.pdf" and hits[0].chunk.page_start == 1
        assert index.search("whiteboard parser Friday", mode="lexical") == []

    # images: the picture joins; the PDF's page comes from the cache.
    with _index(tmp_path, ocr="images") as index:
        summary = index.update([docs])
        assert summary.indexed == 1  # the image
        hits = index.search("whiteboard parser Friday", mode="lexical")
        assert hits and hits[0].chunk.path.name == "whiteboard.png"
        assert index.status().walk["ocr"] == "images"

    # A plain update keeps the index's mode; a rebuild OCRs nothing again (the cache survives it).
    with _index(tmp_path) as index:
        assert index.update([docs]).indexed == 0
        summary = index.update([docs], rebuild=True)
        assert summary.pages_ocr == 2 and summary.pages_ocr_cached == 2

    # Back to auto: the image leaves the index.
    with _index(tmp_path, ocr="auto") as index:
        summary = index.update([docs])
        assert summary.removed == 1
        assert index.search("whiteboard parser Friday", mode="lexical") == []
        assert index.search("lighthouse keeper storms", mode="lexical")

    # Off: the scanned page has no text again, and leaves the search (it is not kept as damaged).
    with _index(tmp_path, ocr="off") as index:
        summary = index.update([docs])
        assert summary.no_text == 1 and summary.skipped["broken or refused"] == 0
        assert index.search("lighthouse keeper storms", mode="lexical") == []


def test_unknown_ocr_mode_is_an_option_error(tmp_path: Path) -> None:
    from semsearch.errors import InvalidOptionError

    (tmp_path / "a.txt").write_text("hello there\n")
    with _index(tmp_path, ocr="sometimes") as index, pytest.raises(InvalidOptionError, match="ocr"):
        index.update([tmp_path / "a.txt"])


def test_an_index_from_before_the_new_readers_reads_their_files_again(tmp_path: Path) -> None:
    """HTML and notebooks were read as plain text, and no reader signatures were recorded."""
    import sqlite3

    from semsearch.store import IndexReader

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.html").write_text(
        "<html><head><title>Kilns</title></head><body><p>Fire the kiln slowly.</p></body></html>"
    )
    (docs / "notes.txt").write_text("Glaze recipes need testing on small tiles first.\n")
    with _index(tmp_path) as index:
        index.update([docs])
    with IndexReader(tmp_path / ".semsearch") as reader:
        db = reader.db_path
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET kind = 'text' WHERE display LIKE '%page.html'")
    conn.execute("DELETE FROM state WHERE key = 'readers'")
    conn.commit()
    conn.close()
    with _index(tmp_path) as index:
        summary = index.update([docs])
        assert summary.indexed == 1 and summary.unchanged == 1  # the HTML page, read by its reader now
        hits = index.search("fire the kiln", mode="lexical")
        assert hits[0].chunk.kind == "html" and "<p>" not in hits[0].chunk.text


@given(st.binary(max_size=4096))
@settings(max_examples=60, deadline=None)
def test_image_reader_on_arbitrary_bytes_raises_only_extract_errors(data: bytes) -> None:
    for head in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"GIF89a"):
        with contextlib.suppress(ExtractError):
            read_document(Path("x.png"), head + data, "image", ReadOptions(ocr="images"))


def _box(left: float, top: float, right: float, bottom: float) -> list[list[float]]:
    return [[left, top], [right, top], [right, bottom], [left, bottom]]


def test_two_text_columns_are_read_one_after_the_other() -> None:
    from semsearch.readers.ocr import _reading_order

    texts = ["A Paper Title Across The Page"]
    boxes = [_box(100, 20, 900, 50)]
    for row in range(6):
        y = 100 + 40 * row
        texts += [f"left line {row}", f"right line {row}"]
        boxes += [_box(50, y, 470, y + 30), _box(530, y, 950, y + 30)]
    lines = _reading_order(texts, boxes, 1000).splitlines()
    assert lines[0] == "A Paper Title Across The Page"
    assert lines[1:7] == [f"left line {r}" for r in range(6)]
    assert lines[7:] == [f"right line {r}" for r in range(6)]


def test_a_table_of_narrow_cells_keeps_its_rows() -> None:
    from semsearch.readers.ocr import _reading_order

    texts, boxes = [], []
    for row in range(8):
        y = 100 + 40 * row
        texts += [f"01Aug2018 item {row}", f"{row}.00"]
        boxes += [_box(40, y, 300, y + 30), _box(700, y, 780, y + 30)]
    assert _reading_order(texts, boxes, 1000).splitlines()[0] == "01Aug2018 item 0 0.00"


def test_a_first_run_cut_short_keeps_its_ocr(tmp_path: Path) -> None:
    from semsearch.store import find_index_dir

    docs = tmp_path / "docs"
    docs.mkdir()
    scanned_pdf(docs / "scan.pdf", [LINES])
    model = FakeModel()

    def interrupted(texts: object) -> object:
        raise KeyboardInterrupt

    model.embedder_instance.embed_documents = interrupted  # type: ignore[method-assign]
    with Index.create(tmp_path / ".semsearch", provider=model) as index, pytest.raises(KeyboardInterrupt):
        index.update([docs])
    # No index was made (nothing hides an index further up), but the recognised page is kept.
    assert find_index_dir(tmp_path) is None
    # (and the tag that marks the folder as semsearch's, so that the next run may use it)
    assert sorted(p.name for p in (tmp_path / ".semsearch").iterdir()) == ["ocr-cache.sqlite", "semsearch-index.tag"]
    assert (tmp_path / ".semsearch" / "ocr-cache.sqlite").stat().st_mode & 0o077 == 0
    with _index(tmp_path) as index:
        summary = index.update([docs])
        assert summary.pages_ocr == 1 and summary.pages_ocr_cached == 1
        assert index.search("lighthouse keeper", mode="lexical")


def test_a_damaged_cache_is_replaced_once_with_a_one_line_warning(tmp_path: Path) -> None:
    bad = tmp_path / "ocr-cache.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    (tmp_path / "ocr-cache.sqlite-journal").write_bytes(b"a journal of the damaged file")
    warned: list[str] = []
    cache = SqliteOcrCache(bad, warned.append)
    assert cache.get("k") is None
    cache.put("k", "recognized text")
    assert cache.get("k") == "recognized text"
    cache.close()
    assert len(warned) == 1 and "\n" not in warned[0]
    assert warned[0].startswith("damaged OCR cache (file is not a database); replaced it with a new one")
    assert not (tmp_path / "ocr-cache.sqlite-journal").exists()
    again = SqliteOcrCache(bad, warned.append)
    assert again.get("k") == "recognized text" and len(warned) == 1
    again.close()


def test_a_cache_name_that_is_a_link_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "my-notes.txt"
    mine.write_bytes(b"the user's own file, not a database")
    (tmp_path / "index").mkdir()
    link = tmp_path / "index" / "ocr-cache.sqlite"
    link.symlink_to(mine)
    warned: list[str] = []
    cache = SqliteOcrCache(link, warned.append)
    assert cache.get("k") is None
    cache.put("k", "text")
    cache.close()
    assert mine.read_bytes() == b"the user's own file, not a database" and link.is_symlink()
    assert len(warned) == 1 and "OCR runs without it" in warned[0]


def test_a_damaged_cache_does_not_survive_a_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch.indexing import IndexEvent, IndexOptions, WalkChoices, build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "whiteboard.png").write_bytes(png_bytes(picture(("Whiteboard: ship the parser on Friday",))))
    recognized: list[int] = []

    def counting(pixels: object) -> str:
        recognized.append(1)
        return "Whiteboard: ship the parser on Friday"

    monkeypatch.setattr(ocr_module, "recognize", counting)
    index_dir = tmp_path / ".semsearch"

    def rebuild() -> list[IndexEvent]:
        events: list[IndexEvent] = []
        options = IndexOptions(roots=[docs], index_dir=index_dir, walk=WalkChoices(ocr="images"), rebuild=True)
        build_index(options, FakeModel(), events.append)
        return [e for e in events if e.kind == "warning"]

    assert rebuild() == [] and len(recognized) == 1
    (index_dir / "ocr-cache.sqlite").write_bytes(b"garbled" * 500)
    warnings = rebuild()
    assert len(recognized) == 2
    assert [(w.path.name if w.path else None, w.text.split(";")[0]) for w in warnings] == [
        ("ocr-cache.sqlite", "damaged OCR cache (file is not a database)")
    ]
    assert rebuild() == [] and len(recognized) == 2  # from the new cache
