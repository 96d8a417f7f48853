"""The HTML, EPUB and notebook readers: real files written with each format's own tools, content
detection, hostile input, and arbitrary or damaged bytes (only a Document or ExtractError)."""

from __future__ import annotations

import base64
import functools
import io
import random
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import make_epub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch.chunk import ChunkSettings, chunk_document
from semsearch.errors import ExtractError
from semsearch.readers import Document, ReadOptions, detect_kind
from semsearch.readers import epub as epub_reader
from semsearch.readers import html as html_reader
from semsearch.readers import notebook as notebook_reader
from semsearch.readers.epub import read_epub
from semsearch.readers.html import read_html
from semsearch.readers.notebook import read_notebook
from semsearch.readers.safety import MAX_MEMBER_RATIO

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- HTML -------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tide Pools of the North Coast</title>
  <style>body { color: red; } .junk-style { }</style>
  <script>var junkScript = "menu tracking code";</script>
</head>
<body>
  <header><a href="/">SiteLogo Banner</a> <a href="/about">About us</a></header>
  <nav><ul><li><a href="/a">Nav Home</a></li><li><a href="/b">Nav Archive</a></li></ul></nav>
  <div role="navigation"><a href="/c">Role Nav Link</a></div>
  <main>
    <h1>Tide Pools</h1>
    <p>Anemones cling to the rocks where the <em>tide</em> retreats twice a day.</p>
    <div>Loose text straight in a div must survive.</div>
    <h2>Creatures</h2>
    <ul><li>Sea stars with five arms</li><li>Hermit crabs in borrowed shells</li></ul>
    <aside><p>A side note of prose: limpets return to the same spot.</p></aside>
    <h2>Measurements</h2>
    <table>
      <tr><th>Species</th><th>Count</th></tr>
      <tr><td>Ochre star</td><td>12</td></tr>
    </table>
    <form><label>Search the site</label><input value="Junk input"><button>Junk button</button></form>
    <p>First line<br>second line</p>
    <noscript>Enable JavaScript junk</noscript>
    <template><p>Template junk</p></template>
    <p hidden>Hidden junk paragraph</p>
  </main>
  <aside><a href="/x">Sidebar related link one</a> <a href="/y">Sidebar related link two</a></aside>
  <footer>Copyright footer junk</footer>
  <script>document.write("late junk")</script>
</body>
</html>
"""

JUNK = [
    "junkScript",
    "junk-style",
    "SiteLogo",
    "Nav Home",
    "Role Nav Link",
    "Search the site",
    "Junk input",
    "Junk button",
    "Enable JavaScript",
    "Template junk",
    "Hidden junk",
    "Sidebar related",
    "Copyright footer",
    "late junk",
]


def test_html_page_main_text_headings_and_sections(tmp_path: Path) -> None:
    path = tmp_path / "tides.html"
    path.write_text(PAGE, encoding="utf-8")
    doc = read_html(path, path.read_bytes())
    for junk in JUNK:
        assert junk not in doc.text, junk
    assert doc.title == "Tide Pools of the North Coast"
    assert [(level, title) for _, level, title in doc.headings] == [
        (1, "Tide Pools"),
        (2, "Creatures"),
        (2, "Measurements"),
    ]
    assert doc.text.startswith("# Tide Pools\n\nAnemones cling to the rocks where the tide retreats twice a day.")
    order = [
        "Anemones cling",
        "Loose text straight in a div must survive.",
        "## Creatures",
        "Sea stars with five arms",
        "Hermit crabs in borrowed shells",
        "limpets return to the same spot",
        "## Measurements",
        "Species | Count",
        "Ochre star | 12",
        "First line\nsecond line",
    ]
    positions = [doc.text.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert "Sea stars with five arms\n\nHermit crabs" in doc.text  # list items are blocks
    # A part (section) starts at each heading; the location is the section's number.
    assert (doc.part_kind, doc.split_parts) == ("section", False)
    assert doc.part_at(doc.text.index("Anemones")) == 1
    assert doc.part_at(doc.text.index("Hermit crabs")) == 2
    assert doc.part_at(doc.text.index("Ochre star")) == 3
    for offset, _, title in doc.headings:
        assert doc.text[offset:].lstrip("#").startswith(" " + title)


def test_html_without_main_drops_banner_sidebar_and_has_no_parts(tmp_path: Path) -> None:
    page = """<html><head></head><body>
    <header><h1>Site Banner Heading</h1></header>
    <div role="banner">Banner role junk</div>
    <div class="content"><div>Marmots whistle when hawks circle overhead.</div>
    <div><span>Inline</span> text <b>joined</b> well.</div></div>
    <aside><ul><li><a href="/1">Link list junk one</a></li><li><a href="/2">Link list junk two</a></li></ul></aside>
    <div role="contentinfo">Content info junk</div>
    </body></html>"""
    doc = read_html(tmp_path / "marmots.htm", page.encode())
    assert doc.text == "Marmots whistle when hawks circle overhead.\n\nInline text joined well."
    assert doc.part_starts == [] and doc.headings == []
    assert doc.title == "marmots"  # no <title>, no heading: the file's name


def test_html_title_falls_back_to_first_h1(tmp_path: Path) -> None:
    doc = read_html(
        tmp_path / "x.html", b"<html><body><article><h1>Glacier Caves</h1><p>Blue ice.</p></article></body></html>"
    )
    assert doc.title == "Glacier Caves"
    assert doc.part_at(doc.text.index("Blue ice")) == 1


def test_html_text_before_first_heading_is_a_part_of_its_own(tmp_path: Path) -> None:
    doc = read_html(
        tmp_path / "x.html", b"<html><body><p>Preface words.</p><h2>Later</h2><p>Body words.</p></body></html>"
    )
    assert doc.part_starts == [0, doc.text.index("## Later")]
    assert doc.part_at(doc.text.index("Body words")) == 2


def test_xhtml_empty_elements(tmp_path: Path) -> None:
    page = b"""<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title/><script src="a.js"/>
      </head><body><p>Gannets plunge<br/>into the sea.</p></body></html>"""
    doc = read_html(tmp_path / "gannets.xhtml", page)
    assert (doc.text, doc.title) == ("Gannets plunge\ninto the sea.", "gannets")


def test_html_declared_charset_and_its_lies(tmp_path: Path) -> None:
    path = tmp_path / "x.html"
    latin = "<html><head><meta charset='windows-1252'></head><body><p>Café crème</p></body></html>"
    assert "Café crème" in read_html(path, latin.encode("cp1252")).text
    # A lie: UTF-8 declared, cp1252 bytes. Another: UTF-16 declared in ASCII bytes (read as
    # UTF-8, as browsers do). A charset that is no text encoding, and a megabyte-long one.
    lie = latin.replace("windows-1252", "utf-8").encode("cp1252")
    assert "Café crème" in read_html(path, lie).text
    utf16 = b"<html><head><meta charset=utf-16></head><body><p>Plain words</p></body></html>"
    assert read_html(path, utf16).text == "Plain words"
    for charset in (b"zlib", b"base64", b"utf-7", b"x" * 1_000_000):
        data = b'<html><head><meta charset="' + charset + b'"></head><body><p>Still read</p></body></html>'
        start = time.perf_counter()
        assert read_html(path, data).text == "Still read"
        assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "markup",
    [
        "<div>" * 100_000 + "deep",
        "<div/>" * 100_000 + "deep",
        "<ul><li>" * 60_000 + "deep",
        "<span><div>" * 50_000 + "deep",
        "<div>" * 3000 + "<p>x</p>" * 100_000,
    ],
    ids=["divs", "self-closing-divs", "lists", "spans-and-divs", "wide-at-depth"],
)
def test_html_hostile_nesting_is_refused_quickly(tmp_path: Path, markup: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExtractError, match="nests"):
        read_html(tmp_path / "deep.html", ("<html><body>" + markup).encode())
    assert time.perf_counter() - start < 5


def test_html_deep_but_plausible_nesting_reads_without_recursion(tmp_path: Path) -> None:
    markup = "<html><body>" + "<div>" * 2000 + "<p>Bottom of the well.</p>" + "</div>" * 2000 + "<p>After.</p>"
    svg = "<svg>" + "<path d='M0 0'/>" * 10_000 + "</svg>"  # self-closing counts inside SVG
    doc = read_html(tmp_path / "deep.html", (markup + svg + "</body></html>").encode())
    assert doc.text == "Bottom of the well.\n\nAfter."


def test_html_detection_by_content_and_suffix() -> None:
    assert html_reader.matches(Path("page"), b"\xef\xbb\xbf  <!DOCTYPE HTML>\n<html>")
    assert html_reader.matches(Path("page"), b"<!-- saved from url=(0014)about:internet -->\n<HTML lang=en>")
    assert html_reader.matches(Path("page"), b'<?xml version="1.0"?>\n<!DOCTYPE html>')
    assert html_reader.matches(Path("page.htm"), b"<p>fragment</p>")
    assert not html_reader.matches(Path("page"), b"<p>fragment</p>")
    assert not html_reader.matches(Path("page"), b"<htmlx>")
    assert not html_reader.matches(Path("page.html"), b"\x00\x01\x02" * 100)


def test_html_without_extension_is_detected_as_html(tmp_path: Path) -> None:
    path = tmp_path / "index"
    path.write_text(PAGE, encoding="utf-8")
    assert detect_kind(path, path.read_bytes()[:8192]) == "html"


# --- EPUB -------------------------------------------------------------------------------------

CHAPTERS = [
    ("The Lighthouse", "Keepers trimmed the wick every evening before the storm."),
    ("The Shipwreck", "Barnacles had already claimed the hull of the sunken schooner."),
    ("The Rescue", "A rowing boat reached the survivors just after dawn."),
]


def test_epub_chapters_in_spine_order_as_parts(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "sea.epub", CHAPTERS)
    doc = read_epub(path, path.read_bytes())
    assert doc.title == "Stories of the Sea"
    assert (doc.kind, doc.part_kind, doc.split_parts) == ("epub", "section", True)
    assert [title for _, _, title in doc.headings] == [name for name, _ in CHAPTERS]
    assert len(doc.part_starts) == 3  # the table of contents (nav) is not a chapter
    positions = [doc.text.index(sentence) for _, sentence in CHAPTERS]
    assert positions == sorted(positions)
    for number, (_, sentence) in enumerate(CHAPTERS, 1):
        assert doc.part_at(doc.text.index(sentence)) == number
    chunks = chunk_document(doc, ChunkSettings())
    second = [c for c in chunks if CHAPTERS[1][1] in c.text]
    assert second and all(c.page_start == 2 for c in second)
    assert all(c.page_start == c.page_end for c in chunks)  # chapters are cut apart


def test_epub_chapter_without_heading_gets_its_toc_title(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "plain.epub", CHAPTERS, headings=False)
    doc = read_epub(path, path.read_bytes())
    assert [title for _, _, title in doc.headings] == [name for name, _ in CHAPTERS]
    start = doc.part_starts[1]
    assert doc.text[start:].startswith("# The Shipwreck\n\nBarnacles")


def test_epub_detected_by_content_under_another_name(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "sea.epub", CHAPTERS)
    renamed = tmp_path / "book.bin"
    path.rename(renamed)
    head = renamed.read_bytes()[:8192]
    assert epub_reader.matches(renamed, head)
    assert not epub_reader.matches(Path("x.zip"), b"PK\x03\x04" + b"\x00" * 26 + b"word/document.xml")
    assert detect_kind(renamed, head) == "epub"


CONTAINER = b"""<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def opf(items: list[tuple[str, str]], spine: list[str], *, prolog: str = "", title: str = "Raw Book") -> bytes:
    manifest = "".join(f'<item id="{i}" href="{h}" media-type="application/xhtml+xml"/>' for i, h in items)
    refs = "".join(f'<itemref idref="{r}"/>' for r in spine)
    return (
        f'<?xml version="1.0"?>{prolog}<package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></metadata>'
        f"<manifest>{manifest}</manifest><spine>{refs}</spine></package>"
    ).encode()


def chapter(text: str) -> bytes:
    return f"<html><body><h1>Heading</h1><p>{text}</p></body></html>".encode()


def raw_epub(members: dict[str, bytes], package: bytes | None = None) -> bytes:
    """An EPUB zip made by hand (for what no EPUB tool would write)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", CONTAINER)
        archive.writestr("OEBPS/content.opf", package if package is not None else opf([("c1", "c1.xhtml")], ["c1"]))
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def test_epub_missing_and_escaping_spine_entries_are_passed_over() -> None:
    package = opf(
        [("c1", "c1.xhtml"), ("evil", "../../etc/passwd"), ("gone", "nowhere.xhtml"), ("c2", "c2.xhtml")],
        ["c1", "evil", "no-such-id", "gone", "c2", "c1"],
    )
    data = raw_epub({"OEBPS/c1.xhtml": chapter("Otters float."), "OEBPS/c2.xhtml": chapter("Seals bask.")}, package)
    doc = read_epub(Path("raw.epub"), data)
    assert doc.title == "Raw Book"
    assert doc.part_at(doc.text.index("Otters float.")) == 1
    assert doc.part_at(doc.text.index("Seals bask.")) == 2
    assert len(doc.part_starts) == 2  # c1 listed twice is read once
    assert "root:" not in doc.text
    assert doc.notes and "3 spine entries" in doc.notes[0]


def test_epub_xhtml_empty_elements_and_split_chapters() -> None:
    # <title/> and <script/> are empty in XHTML; read as HTML they would swallow the chapter.
    first = b"""<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title/>
      <script src="x.js"/></head><body><h1>Chapter One</h1><p>Puffins<a id="p3"/> dig burrows.</p></body></html>"""
    # A converter's split of a long chapter: the second file continues the first one's chapter.
    second = b"<html><body><p>Continued: the burrows are lined with grass.</p></body></html>"
    package = opf([("c1", "c1.xhtml"), ("c2", "c2.xhtml")], ["c1", "c2"])
    doc = read_epub(Path("split.epub"), raw_epub({"OEBPS/c1.xhtml": first, "OEBPS/c2.xhtml": second}, package))
    assert doc.text.startswith("# Chapter One\n\nPuffins dig burrows.")
    assert doc.text[doc.part_starts[1] :] == "# Chapter One\n\nContinued: the burrows are lined with grass."
    assert doc.part_at(doc.text.index("Continued")) == 2


def test_epub_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.epub"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", CONTAINER)
        archive.writestr("OEBPS/content.opf", opf([("c1", "c1.xhtml")], ["c1"]))
        with archive.open("OEBPS/c1.xhtml", "w", force_zip64=True) as member:
            block = b"<p>" + b"a" * (1 << 20) + b"</p>"
            for _ in range(64):  # 64 MB of text, written (and compressed) a megabyte at a time
                member.write(block)
    info = zipfile.ZipFile(path).getinfo("OEBPS/c1.xhtml")
    assert info.file_size > MAX_MEMBER_RATIO * info.compress_size
    start = time.perf_counter()
    with pytest.raises(ExtractError, match="zip bomb"):
        read_epub(path, path.read_bytes())
    assert time.perf_counter() - start < 2


LAUGHS = (
    '<!DOCTYPE package [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)


def test_epub_entity_declarations_are_refused() -> None:
    package = opf([("c1", "c1.xhtml")], ["c1"], prolog=LAUGHS, title="&lol9;")
    with pytest.raises(ExtractError, match="entit"):
        read_epub(Path("laughs.epub"), raw_epub({"OEBPS/c1.xhtml": chapter("x")}, package))
    content = (
        "<?xml version='1.0'?>" + LAUGHS.replace("package", "html") + "<html><body><p>&lol9;</p></body></html>"
    ).encode()
    with pytest.raises(ExtractError, match="entit"):
        read_epub(Path("laughs.epub"), raw_epub({"OEBPS/c1.xhtml": content}))


def test_epub_spine_of_implausible_length_is_refused() -> None:
    package = opf([("c1", "c1.xhtml")], ["c1"] * (epub_reader.MAX_SPINE_ITEMS + 1))
    with pytest.raises(ExtractError, match="spine lists"):
        read_epub(Path("long.epub"), raw_epub({"OEBPS/c1.xhtml": chapter("x")}, package))


def test_epub_member_outside_the_archive_is_refused() -> None:
    data = raw_epub({"OEBPS/c1.xhtml": chapter("x"), "../x": b"escape"})
    with pytest.raises(ExtractError, match="outside the archive"):
        read_epub(Path("evil.epub"), data)


def test_epub_truncated_or_not_a_zip(tmp_path: Path) -> None:
    data = make_epub(tmp_path / "sea.epub", CHAPTERS).read_bytes()
    for damaged in (data[: len(data) // 2], data[:100], b"", b"not a zip at all"):
        with pytest.raises(ExtractError):
            read_epub(Path("cut.epub"), damaged)


def test_epub_without_container_or_package() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr("OEBPS/c1.xhtml", chapter("x"))
    with pytest.raises(ExtractError, match="no package document"):
        read_epub(Path("bare.epub"), buf.getvalue())


def test_epub_drm_encrypted_content_is_refused() -> None:
    encryption = b"""<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
      xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
      <enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <enc:CipherData><enc:CipherReference URI="OEBPS/c1.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>"""
    data = raw_epub({"OEBPS/c1.xhtml": b"\x8f\x02 scrambled", "META-INF/encryption.xml": encryption})
    with pytest.raises(ExtractError, match="encrypted EPUB"):
        read_epub(Path("drm.epub"), data)


# --- Notebooks --------------------------------------------------------------------------------

PNG_MARK = "iVBORw0KGgo"  # how a base64 PNG begins


def make_notebook(path: Path, png_bytes: int = 300) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    png = PNG_MARK + base64.b64encode(random.Random(0).randbytes(png_bytes)).decode()
    cells = [
        new_markdown_cell("# Salmon Runs\n\nRivers fill with salmon every autumn.\n\n```python\n# not a heading\n```"),
        new_code_cell(
            "# count the fish\nfish = count_salmon()\nprint(fish)",
            outputs=[
                new_output("stream", name="stdout", text="4210 salmon counted upstream\n"),
                new_output("display_data", data={"image/png": png, "text/plain": "<Figure size 640x480>"}),
                new_output("execute_result", data={"text/plain": "'ladder result'"}, execution_count=1),
            ],
        ),
        new_markdown_cell(""),
        new_markdown_cell("## Spawning Grounds\n\nGravel beds shelter the eggs."),
        new_code_cell("```\nodd fence in code\n```"),
    ]
    nbformat.write(
        new_notebook(
            cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
        ),
        path,
    )
    return path


def test_notebook_cells_are_parts_and_outputs_off_by_default(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "salmon.ipynb")
    doc = read_notebook(path, path.read_bytes())
    assert (doc.kind, doc.part_kind, doc.split_parts, doc.title) == ("notebook", "cell", False, "Salmon Runs")
    assert len(doc.part_starts) == 5  # one per cell, the empty one too
    assert doc.part_at(doc.text.index("Rivers fill")) == 1
    assert doc.part_at(doc.text.index("fish = count_salmon()")) == 2
    assert doc.part_at(doc.text.index("Gravel beds")) == 4
    assert doc.part_at(doc.text.index("odd fence")) == 5
    assert [(level, title) for _, level, title in doc.headings] == [(1, "Salmon Runs"), (2, "Spawning Grounds")]
    assert "```python\n# count the fish\nfish = count_salmon()\nprint(fish)\n```" in doc.text
    assert "````python\n```\nodd fence in code\n```\n````" in doc.text  # a longer fence around a fence
    assert "4210 salmon" not in doc.text and "ladder result" not in doc.text
    assert PNG_MARK not in doc.text


def test_notebook_text_outputs_on_request(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "salmon.ipynb")
    doc = read_notebook(path, path.read_bytes(), ReadOptions(notebook_outputs=True))
    assert doc.part_at(doc.text.index("4210 salmon counted upstream")) == 2
    assert "'ladder result'" in doc.text and "<Figure size 640x480>" in doc.text
    assert PNG_MARK not in doc.text
    reader = notebook_reader.READER
    assert reader.signature(ReadOptions()) != reader.signature(ReadOptions(notebook_outputs=True))


def test_notebook_huge_base64_output_is_never_indexed(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "big.ipynb", png_bytes=4 * 1024 * 1024)
    assert path.stat().st_size > 5_000_000
    for options in (ReadOptions(), ReadOptions(notebook_outputs=True)):
        start = time.perf_counter()
        doc = read_notebook(path, path.read_bytes(), options)
        assert time.perf_counter() - start < 5
        assert PNG_MARK not in doc.text and len(doc.text) < 1000


def test_notebook_output_is_capped(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("spam()", outputs=[new_output("stream", name="stdout", text="spam " * 100_000)])
    path = tmp_path / "spam.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    doc = read_notebook(path, path.read_bytes(), ReadOptions(notebook_outputs=True))
    assert notebook_reader.MAX_OUTPUT_CHARS - 10 < doc.text.count("spam") * 5 <= notebook_reader.MAX_OUTPUT_CHARS + 10


def test_notebook_format_3_and_string_sources() -> None:
    v3 = b"""{"nbformat": 3, "metadata": {"name": ""}, "worksheets": [{"cells": [
      {"cell_type": "heading", "level": 1, "source": ["Old Format"]},
      {"cell_type": "markdown", "source": "Prose in a string."},
      {"cell_type": "code", "input": ["x = 1\\n", "x"], "language": "python",
       "outputs": [{"output_type": "pyout", "text": ["1"], "png": "iVBORw0KGgoAAAA"}]},
      {"cell_type": "raw", "source": "raw text"}]}]}"""
    doc = read_notebook(Path("old.ipynb"), v3, ReadOptions(notebook_outputs=True))
    assert doc.title == "Old Format"
    assert doc.part_at(doc.text.index("Prose in a string.")) == 2
    assert doc.part_at(doc.text.index("x = 1\nx")) == 3
    assert doc.part_at(doc.text.index("raw text")) == 4
    assert PNG_MARK not in doc.text


def test_notebook_trailing_empty_cells_keep_their_numbers() -> None:
    data = b'{"nbformat": 4, "cells": [{"cell_type": "markdown", "source": "Only words."}, {"cell_type": "code", "source": ""}, {"cell_type": "markdown", "source": []}]}'
    doc = read_notebook(Path("t.ipynb"), data)
    assert doc.text == "Only words."
    assert len(doc.part_starts) == 3 and all(start <= len(doc.text) for start in doc.part_starts)
    assert doc.part_at(doc.text.index("words")) == 1


def test_notebook_title_from_metadata(tmp_path: Path) -> None:
    data = b'{"metadata": {"title": "Declared Title"}, "nbformat": 4, "cells": [{"cell_type": "markdown", "source": "# Other"}]}'
    assert read_notebook(Path("t.ipynb"), data).title == "Declared Title"
    assert read_notebook(Path("t.ipynb"), b'{"nbformat": 4, "cells": []}').title == "t"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"cells": [', "invalid JSON"),
        (b"\xff\xfe\x00garbage", "invalid JSON"),
        (b"[" * 200_000, "invalid JSON"),
        (b'{"cells": [' + b"1" * 10_000 + b"]}", "invalid JSON"),
        (b'{"name": "not a notebook"}', "not a Jupyter notebook"),
        (b"[1, 2, 3]", "not a Jupyter notebook"),
    ],
)
def test_notebook_broken_or_foreign_json(data: bytes, message: str) -> None:
    with pytest.raises(ExtractError, match=message):
        read_notebook(Path("bad.ipynb"), data)


def test_notebook_detection() -> None:
    assert notebook_reader.matches(Path("a.ipynb"), b'\xef\xbb\xbf\n {"cells": []}')
    assert not notebook_reader.matches(Path("a.ipynb"), b"PK\x03\x04")
    assert not notebook_reader.matches(Path("a.json"), b'{"name": "x", "cells": []}')  # not the cells-first layout


# --- Arbitrary and damaged bytes ----------------------------------------------------------------


@functools.cache
def valid_samples() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        return {
            "html": PAGE.encode(),
            "epub": make_epub(Path(folder) / "s.epub", CHAPTERS).read_bytes(),
            "notebook": make_notebook(Path(folder) / "s.ipynb").read_bytes(),
        }


READ = {"html": read_html, "epub": read_epub, "notebook": read_notebook}


def read_or_refuse(kind: str, data: bytes) -> None:
    for options in (ReadOptions(), ReadOptions(notebook_outputs=True)):
        try:
            doc = READ[kind](Path(f"sample.{kind}"), data, options)
        except ExtractError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(doc, Document)
            assert all(0 <= s <= len(doc.text) for s in doc.part_starts)


@pytest.mark.parametrize("kind", sorted(READ))
@PROPERTY
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(kind: str, data: bytes) -> None:
    read_or_refuse(kind, data)


@pytest.mark.parametrize("kind", sorted(READ))
@PROPERTY
@given(
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(min_value=0.0, max_value=1.0), st.integers(0, 255)), max_size=8),
)
def test_damaged_valid_file(kind: str, cut: float, flips: list[tuple[float, int]]) -> None:
    data = bytearray(valid_samples()[kind])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    read_or_refuse(kind, bytes(data[: max(1, int(cut * len(data)))] if cut < 0.99 else data))


def test_a_notebook_without_its_suffix_is_still_a_notebook(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from semsearch.readers import detect_kind

    nb = new_notebook()
    nb.cells = [new_markdown_cell("# Title"), new_code_cell("print(1)")]
    path = tmp_path / "exported.json"
    nbformat.write(nb, str(path))
    assert detect_kind(path, path.read_bytes()[:8192]) == "notebook"
    assert detect_kind(tmp_path / "config.json", b'{"cells": 3, "name": "x"}') == "text"


def test_a_pages_own_table_of_contents_is_left_out() -> None:
    page = (
        "<html><head><title>Guide</title></head><body><main><h1>Guide</h1>"
        '<div id="table_of_contents"><h2>Table of contents</h2><ul><li><a href="#a">Install</a></li>'
        '<li><a href="#b">Use</a></li></ul></div>'
        '<ul><li><a href="#a">Install</a></li><li><a href="#b">Use</a></li><li><a href="#c">Help</a></li></ul>'
        '<h2 id="a">Install</h2><p>Run the installer and accept the licence.</p>'
        '<h2 id="b">Use</h2><p>Open a terminal and type the command.</p>'
        '<h2 id="c">Help</h2><p>Ask on the forum; see also <a href="#a">Install</a>.</p></main></body></html>'
    )
    doc = read_html(Path("guide.html"), page.encode())
    assert [h[2] for h in doc.headings] == ["Guide", "Install", "Use", "Help"]
    assert doc.text.count("Install") == 2  # its heading, and the link in the last paragraph


def test_what_a_reader_passed_over_is_one_warning_of_the_run(tmp_path: Path) -> None:
    from conftest import FakeModel

    from semsearch.indexing import IndexOptions, build_index

    package = opf([("c1", "c1.xhtml"), ("gone", "nowhere.xhtml")], ["c1", "gone"])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "raw.epub").write_bytes(raw_epub({"OEBPS/c1.xhtml": chapter("Otters float.")}, package))
    events = []
    summary = build_index(
        IndexOptions(roots=[tmp_path / "docs"], index_dir=tmp_path / ".semsearch"), FakeModel(), events.append
    )
    assert summary.indexed == 1
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and "raw.epub" in warnings[0] and "1 spine entries" in warnings[0]
