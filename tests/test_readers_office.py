"""The office readers (Word, PowerPoint, OpenDocument text, RTF) on real files made with each
format's own library: text in order, headings, parts, titles, detection by content, hostile files."""

from __future__ import annotations

import functools
import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch.chunk import ChunkSettings, chunk_document
from semsearch.errors import ExtractError
from semsearch.readers import Document, detect_kind, read_document
from semsearch.readers import docx as docx_reader
from semsearch.readers import odt as odt_reader
from semsearch.readers import pptx as pptx_reader
from semsearch.readers import rtf as rtf_reader
from semsearch.readers.safety import OLE_MAGIC

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def section_of(doc: Document, needle: str) -> int | None:
    return doc.part_at(doc.text.index(needle))


def chunk_in(doc: Document, needle: str, part: int) -> bool:
    """Whether a chunk holding *needle* is located in *part* (small chunks: a chunk per section)."""
    chunks = chunk_document(doc, ChunkSettings(chunk_tokens=16, overlap_tokens=0))
    return any(needle in chunk.text and chunk.page_start == part for chunk in chunks)


# --- Word ---


def make_docx(title: str = "Field Guide to Herons") -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_paragraph("Preface about wading birds, before any heading.")
    document.add_heading("Herons", level=1)
    document.add_paragraph("Grey herons\tstalk fish in shallow water.")
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(
        table.rows[:2], (["Species", "Wingspan", "Habitat"], ["Grey heron", "185 cm", "Rivers"]), strict=True
    ):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    merged = table.cell(2, 0).merge(table.cell(2, 1))
    merged.text = "Merged note on plumage"
    table.cell(2, 2).text = "Marsh"
    document.add_paragraph("After the table: egrets grow long breeding plumes.")
    document.add_heading("Nesting", level=2)
    paragraph = document.add_paragraph("Herons nest in colonies")
    paragraph.add_run().add_break()
    paragraph.add_run("called heronries.")
    document.add_paragraph("   ")  # empty paragraphs are dropped
    document.add_heading("Feeding", level=1)
    document.add_paragraph("They swallow fish whole.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_body_in_order_with_sections(tmp_path: Path) -> None:
    path = tmp_path / "herons.docx"
    path.write_bytes(make_docx())
    doc = docx_reader.read_docx(path, path.read_bytes())
    assert doc.kind == "docx" and doc.title == "Field Guide to Herons"
    order = [
        "Preface about wading birds",
        "# Herons",
        "Grey herons stalk fish",  # the tab is a space
        "Species | Wingspan | Habitat",
        "Grey heron | 185 cm | Rivers",
        "Merged note on plumage | Marsh",  # a merged cell once
        "After the table: egrets",
        "## Nesting",
        "Herons nest in colonies\ncalled heronries.",
        "# Feeding",
    ]
    positions = [doc.text.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert "\t" not in doc.text and "\n\n\n" not in doc.text
    assert [(level, title) for _, level, title in doc.headings] == [(1, "Herons"), (2, "Nesting"), (1, "Feeding")]
    for offset, level, title in doc.headings:
        assert doc.text[offset:].startswith("#" * level + " " + title)
    # A part before the first heading (the preface), then one per heading.
    assert doc.part_kind == "section" and doc.split_parts
    assert len(doc.part_starts) == 4 and doc.part_starts[0] == 0
    assert section_of(doc, "Preface") == 1
    assert section_of(doc, "Herons") == 2 and section_of(doc, "Grey heron | 185") == 2
    assert section_of(doc, "heronries") == 3
    assert section_of(doc, "whole") == 4
    assert chunk_in(doc, "heronries", 3) and chunk_in(doc, "whole", 4) and chunk_in(doc, "Preface", 1)


def test_docx_title_without_properties_and_without_headings(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("The Heron Almanac", level=0)  # the "Title" style
    document.add_paragraph("Body text.")
    out = io.BytesIO()
    document.save(out)
    doc = docx_reader.read_docx(tmp_path / "almanac.docx", out.getvalue())
    assert doc.title == "The Heron Almanac"
    assert doc.headings[0][1:] == (1, "The Heron Almanac")

    document = docx.Document()
    document.add_paragraph("Only a paragraph.")
    document.add_paragraph("And another one.")
    out = io.BytesIO()
    document.save(out)
    doc = docx_reader.read_docx(tmp_path / "plain-notes.docx", out.getvalue())
    assert doc.title == "plain-notes"
    assert doc.part_starts == [] and doc.headings == []
    assert doc.text == "Only a paragraph.\n\nAnd another one."


def _with_members(data: bytes, replace: dict[str, bytes]) -> bytes:
    """A copy of a zip with some members replaced or added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename not in replace:
                dst.writestr(info, src.read(info))
        for name, content in replace.items():
            dst.writestr(name, content)
    return out.getvalue()


def test_docx_content_controls_tracked_changes_toc_and_footnotes(tmp_path: Path) -> None:
    import docx
    from docx.oxml import parse_xml

    document = docx.Document()
    document.add_heading("Kingfishers", level=1)
    body = document.element.body
    w = f'xmlns:w="{W_NS}"'
    extra = [
        f"<w:sdt {w}><w:sdtContent><w:p><w:r><w:t>Inside a content control.</w:t></w:r></w:p></w:sdtContent></w:sdt>",
        f"<w:p {w}><w:r><w:t>Kept </w:t></w:r><w:ins><w:r><w:t>inserted</w:t></w:r></w:ins>"
        "<w:del><w:r><w:delText>deleted</w:delText></w:r></w:del><w:r><w:t> text.</w:t></w:r>"
        '<w:r><w:footnoteReference w:id="1"/></w:r></w:p>',
        f'<w:p {w}><w:pPr><w:pStyle w:val="TOC1"/></w:pPr><w:r><w:t>Kingfishers ..... 1</w:t></w:r></w:p>',
        f'<w:p {w}><w:pPr><w:outlineLvl w:val="2"/></w:pPr><w:r><w:t>Outline heading</w:t></w:r></w:p>',
    ]
    for xml in extra:
        body.insert(len(body) - 1, parse_xml(xml))  # before the final w:sectPr
    # python-docx's template has a "toc 1" style? Give the TOC style a name either way.
    out = io.BytesIO()
    document.save(out)
    data = out.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        rels = z.read("word/_rels/document.xml.rels").decode()
        types = z.read("[Content_Types].xml").decode()
        styles = z.read("word/styles.xml").decode()
    rels = rels.replace(
        "</Relationships>",
        '<Relationship Id="rIdFn" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/footnotes"'
        ' Target="footnotes.xml"/></Relationships>',
    )
    types = types.replace(
        "</Types>",
        '<Override PartName="/word/footnotes.xml" ContentType='
        '"application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"/></Types>',
    )
    if 'w:styleId="TOC1"' not in styles:
        styles = styles.replace(
            "</w:styles>", '<w:style w:type="paragraph" w:styleId="TOC1"><w:name w:val="toc 1"/></w:style></w:styles>'
        )
    footnotes = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:footnotes {w}>'
        '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        '<w:footnote w:id="1"><w:p><w:r><w:t>Footnote about the Alcedinidae.</w:t></w:r></w:p></w:footnote>'
        "</w:footnotes>"
    )
    data = _with_members(
        data,
        {
            "word/_rels/document.xml.rels": rels.encode(),
            "[Content_Types].xml": types.encode(),
            "word/styles.xml": styles.encode(),
            "word/footnotes.xml": footnotes.encode(),
        },
    )
    doc = docx_reader.read_docx(tmp_path / "k.docx", data)
    assert "Inside a content control." in doc.text
    assert "Kept inserted text." in doc.text and "deleted" not in doc.text
    assert "....." not in doc.text  # the table of contents repeats the headings
    assert [(level, title) for _, level, title in doc.headings] == [
        (1, "Kingfishers"),
        (3, "Outline heading"),
        (1, "Footnotes"),
    ]
    assert doc.text.endswith("# Footnotes\n\nFootnote about the Alcedinidae.")
    assert section_of(doc, "Alcedinidae") == 3


def test_docx_macro_and_template_kinds_are_read(tmp_path: Path) -> None:
    data = make_docx()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        types = z.read("[Content_Types].xml").decode()
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    for content_type in (
        "application/vnd.ms-word.document.macroEnabled.main+xml",
        main.replace("document.main", "template.main"),
    ):
        changed = _with_members(data, {"[Content_Types].xml": types.replace(main, content_type).encode()})
        doc = docx_reader.read_docx(tmp_path / "m.docm", changed)
        assert "heronries" in doc.text


# --- PowerPoint ---


def make_pptx(title: str = "") -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    prs.core_properties.title = title
    first = prs.slides.add_slide(prs.slide_layouts[1])  # title and content
    first.shapes.title.text = "Migration routes"
    body = first.placeholders[1].text_frame
    body.text = "Swallows fly south in autumn"
    line = body.add_paragraph()
    line.text = "across the"
    line.add_line_break()
    line.add_run().text = "Sahara desert"
    first.notes_slide.notes_text_frame.text = "Mention the\ttailwinds."
    prs.slides.add_slide(prs.slide_layouts[6])  # blank: an empty slide keeps its number
    third = prs.slides.add_slide(prs.slide_layouts[5])  # title only
    third.shapes.title.text = "Wingspan table"
    table = third.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, values in enumerate((["Bird", "Wingspan"], ["Albatross", "340 cm"], ["Merged footnote", ""])):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    table.cell(2, 0).merge(table.cell(2, 1))
    group = third.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1)).text_frame.text = "Grouped caption on feathers"
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def test_pptx_a_part_per_slide(tmp_path: Path) -> None:
    path = tmp_path / "birds.pptx"
    path.write_bytes(make_pptx())
    doc = pptx_reader.read_pptx(path, path.read_bytes())
    assert doc.kind == "pptx" and doc.part_kind == "slide" and doc.split_parts
    assert doc.title == "Migration routes"  # no core title: the first slide's
    assert len(doc.part_starts) == 3  # the empty middle slide counts
    assert [(level, title) for _, level, title in doc.headings] == [(2, "Migration routes"), (2, "Wingspan table")]
    for offset, _, title in doc.headings:
        assert doc.text[offset:].startswith("## " + title)
    assert "Swallows fly south in autumn\nacross the\nSahara desert" in doc.text  # \v line break
    assert "Notes: Mention the tailwinds." in doc.text
    assert "Bird | Wingspan" in doc.text and "Albatross | 340 cm" in doc.text
    assert "Merged footnote |" not in doc.text and "Merged footnote" in doc.text
    assert doc.text.count("Migration routes") == 1  # the title shape is not read twice
    assert section_of(doc, "Swallows") == 1 and section_of(doc, "Notes:") == 1
    assert section_of(doc, "Albatross") == 3 and section_of(doc, "Grouped caption") == 3
    assert doc.text.index("Albatross") < doc.text.index("Grouped caption")
    parts = {chunk.page_start for chunk in chunk_document(doc, ChunkSettings())}
    assert parts == {1, 3}
    assert any("Albatross" in c.text and c.page_start == 3 for c in chunk_document(doc, ChunkSettings()))


def test_pptx_core_title_and_show_kind(tmp_path: Path) -> None:
    data = make_pptx(title="Bird Migration Lecture")
    assert pptx_reader.read_pptx(tmp_path / "b.pptx", data).title == "Bird Migration Lecture"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        types = z.read("[Content_Types].xml").decode()
    show = types.replace("presentationml.presentation.main+xml", "presentationml.slideshow.main+xml")
    doc = pptx_reader.read_pptx(tmp_path / "b.ppsx", _with_members(data, {"[Content_Types].xml": show.encode()}))
    assert "Albatross" in doc.text


# --- OpenDocument text ---


def make_odt(title: str = "Owls of the Night") -> bytes:
    from odf import dc
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, LineBreak, List, ListItem, Note, NoteBody, NoteCitation, P, S, Span, Tab

    doc = OpenDocumentText()
    if title:
        doc.meta.addElement(dc.Title(text=title))
    doc.text.addElement(P(text="Opening words about nocturnal birds."))
    doc.text.addElement(H(outlinelevel=1, text="Barn owls"))
    p = P(text="Barn owls")
    p.addElement(S(c=4))
    p.addText("hunt")
    p.addElement(Tab())
    p.addElement(Span(text="by sound"))
    p.addElement(LineBreak())
    p.addText("alone.")
    note = Note(id="ftn1", noteclass="footnote")
    note.addElement(NoteCitation(text="1"))
    body = NoteBody()
    body.addElement(P(text="Footnote on owl pellets."))
    note.addElement(body)
    p.addElement(note)
    doc.text.addElement(p)
    table = Table(name="Owls")
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for values in (["Owl", "Weight"], ["Barn owl", "500 g"]):
        row = TableRow()
        for value in values:
            cell = TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    doc.text.addElement(table)
    doc.text.addElement(H(outlinelevel=2, text="Tawny owls"))
    items = List()
    for value in ("Hoots at dusk", "Nests in tree holes"):
        item = ListItem()
        item.addElement(P(text=value))
        items.addElement(item)
    doc.text.addElement(items)
    out = io.BytesIO()
    doc.write(out)
    return out.getvalue()


def test_odt_body_in_order_with_sections(tmp_path: Path) -> None:
    path = tmp_path / "owls.odt"
    path.write_bytes(make_odt())
    doc = odt_reader.read_odt(path, path.read_bytes())
    assert doc.kind == "odt" and doc.title == "Owls of the Night"
    order = [
        "Opening words",
        "# Barn owls",
        "Barn owls hunt by sound\nalone.",
        "Owl | Weight",
        "Barn owl | 500 g",
        "## Tawny owls",
        "Hoots at dusk",
        "Nests in tree holes",
        "# Footnotes",
        "Footnote on owl pellets.",
    ]
    positions = [doc.text.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert "alone.1" not in doc.text  # the note's citation mark stays out of the sentence
    assert [(level, title) for _, level, title in doc.headings] == [
        (1, "Barn owls"),
        (2, "Tawny owls"),
        (1, "Footnotes"),
    ]
    assert len(doc.part_starts) == 4
    assert section_of(doc, "Opening") == 1 and section_of(doc, "500 g") == 2
    assert section_of(doc, "tree holes") == 3 and section_of(doc, "pellets") == 4
    assert chunk_in(doc, "Hoots", 3) and chunk_in(doc, "500 g", 2)


def test_odt_title_falls_back_to_first_heading(tmp_path: Path) -> None:
    doc = odt_reader.read_odt(tmp_path / "owls.odt", make_odt(title=""))
    assert doc.title == "Barn owls"


# --- RTF ---

RTF = (
    r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\froman\fcharset0 Times New Roman;}{\f1\fswiss\fcharset0 Arial;}}"
    r"{\colortbl;\red255\green0\blue0;}{\info{\title Notes on Puffins}{\author Someone}}"
    r"\pard\f0\fs24 Puffins nest in burrows on sea cliffs.\par "
    r"They eat sand eels \'96 lots of them.\par "
    r"{\pict\pngblip\picw10\pich10 89504e470d0a1a0a0000000d49484452}"
    r"Caf\'e9 au lait and \u8364? coins, a bird \u-10179?\u-8704?.\par "
    r"\trowd\cellx2000\cellx4000\intbl Species\cell Colonies\cell\row"
    r"\intbl Atlantic puffin\cell Iceland\cell\row\pard "
    r'See {\field{\*\fldinst{HYPERLINK "http://example.org/puffins"}}{\fldrslt{\ul the puffin page}}} today.\par '
    r"A literal \{brace\} and a backslash \\fonttbl here.\par}"
)


def test_rtf_text_title_and_tables(tmp_path: Path) -> None:
    doc = rtf_reader.read_rtf(tmp_path / "puffins.rtf", RTF.encode("ascii"))
    assert doc.kind == "rtf" and doc.title == "Notes on Puffins"
    assert doc.part_starts == [] and doc.headings == []
    blocks = doc.text.split("\n\n")
    assert blocks[:3] == [
        "Puffins nest in burrows on sea cliffs.",
        "They eat sand eels – lots of them.",
        "Café au lait and € coins, a bird 😀.",
    ]
    assert "Species | Colonies" in blocks and "Atlantic puffin | Iceland" in blocks
    assert "See the puffin page today." in blocks
    assert "A literal {brace} and a backslash \\fonttbl here." in blocks
    assert "89504e" not in doc.text and "Arial" not in doc.text and "Someone" not in doc.text
    chunks = chunk_document(doc, ChunkSettings())
    assert chunks and all(chunk.page_start is None for chunk in chunks)


def test_rtf_without_title_uses_the_file_name(tmp_path: Path) -> None:
    doc = rtf_reader.read_rtf(tmp_path / "field-notes.rtf", rb"{\rtf1 Just text.\par}")
    assert doc.title == "field-notes" and doc.text == "Just text."


def test_prepared_rtf_reads_as_striprtf_reads_the_original() -> None:
    """The rewriting pass changes nothing striprtf would read (hyperlink fields aside, which striprtf
    writes as "text(url)")."""
    from striprtf.striprtf import rtf_to_text

    plain = RTF.replace(RTF[RTF.index("See {") : RTF.index("A literal")], "")
    assert rtf_to_text(rtf_reader.prepare_rtf(plain), errors="replace") == rtf_to_text(plain, errors="replace")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{\\rtf1 " + b"{" * 5_000_000, "nests groups over"),
        (b"hello, not rtf", "not an RTF document"),
    ],
)
def test_rtf_hostile_refused(data: bytes, message: str) -> None:
    with pytest.raises(ExtractError, match=message):
        rtf_reader.read_rtf(Path("x.rtf"), data)


@pytest.mark.parametrize(
    "data",
    [
        b"{\\rtf1 " + os.urandom(5_000_000),
        b"{\\rtf1 " + b"}" * 5_000_000,
        # Unclosed hyperlink fields: striprtf alone backtracks for minutes on a few dozen KB.
        b"{\\rtf1 " + b'{\\field{\\*\\fldinst{HYPERLINK "x}}}' * 10_000 + b"}",
        b"{\\rtf1 " + b'{\\field{\\*\\fldinst{HYPERLINK "' * 300 + b"}" * 900 + b"}",
        # A font table without ";": hours for striprtf alone.
        b"{\\rtf1{\\fonttbl" + b"\\f1\\fcharset0 x" * 50_000 + b"}hello}",
        b"{\\rtf1{\\fonttbl" + b"\\f1\\fcharset0 x" * 50_000,
        b"{\\rtf1 \\u99999999999 \\u-9999999 \\uc \\uc99999999 \\ansicpg99999 \\'zz \\'e9{\\f1\\fcharset78 j;}\\bin}",
        b"{\\rtf1 {\\pict\\bin999999999 ab} x}",
        b"{\\rtf1 {\\fonttbl{\\f1\\fcharset78 J;}}\\f1 \\'82\\'a0 text}",
    ],
    ids=[
        "random",
        "closing-braces",
        "hyperlinks",
        "open-hyperlinks",
        "font-table",
        "open-font-table",
        "bad-values",
        "bin",
        "charset",
    ],
)
def test_rtf_hostile_read_quickly(data: bytes) -> None:
    doc = rtf_reader.read_rtf(Path("x.rtf"), data)
    assert isinstance(doc, Document)
    assert not re.search("[\x00-\x08\ud800-\udfff]", doc.text)


# --- detection ---


@pytest.mark.parametrize(
    "kind, make",
    [("docx", make_docx), ("pptx", make_pptx), ("odt", make_odt), ("rtf", lambda: RTF.encode())],
)
def test_detected_by_content_under_any_name(kind: str, make, tmp_path: Path) -> None:
    data = make()
    module = {"docx": docx_reader, "pptx": pptx_reader, "odt": odt_reader, "rtf": rtf_reader}[kind]
    head = data[:8192]
    assert module.matches(Path("renamed.bin"), head)
    assert detect_kind(Path("renamed.bin"), head) == kind
    assert detect_kind(Path(f"x.{kind}"), head) == kind
    assert read_document(Path("renamed.bin"), data).kind == kind
    others = [m for m in (docx_reader, pptx_reader, odt_reader, rtf_reader) if m is not module]
    assert not any(other.matches(Path("renamed.bin"), head) for other in others)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("a.docx", "docx"),
        ("a.DOCM", "docx"),
        ("a.dotx", "docx"),
        ("a.pptx", "pptx"),
        ("a.ppsx", "pptx"),
        ("a.potx", "pptx"),
        ("a.odt", "odt"),
        ("a.ott", "odt"),
        ("a.rtf", "rtf"),
    ],
)
def test_matched_by_suffix(name: str, kind: str) -> None:
    assert detect_kind(Path(name), b"") == kind


# --- hostile archives ---

ZIP_READERS = [
    (docx_reader.read_docx, make_docx, "word/document.xml", "x.docx"),
    (pptx_reader.read_pptx, make_pptx, "ppt/slides/slide1.xml", "x.pptx"),
    (odt_reader.read_odt, make_odt, "content.xml", "x.odt"),
]
ZIP_IDS = ["docx", "pptx", "odt"]


@functools.cache
def valid(make) -> bytes:
    return make()


def _plus_member(data: bytes, name: str, write) -> bytes:
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as z, z.open(name, "w", force_zip64=True) as member:
        write(member)
    return out.getvalue()


@pytest.mark.parametrize("read, make, xml_name, name", ZIP_READERS, ids=ZIP_IDS)
def test_zip_bomb_refused(read, make, xml_name: str, name: str) -> None:
    zeros = bytes(1 << 20)

    def write(member) -> None:
        for _ in range(16):  # 16 MB of zeros in 16 KB: over MAX_MEMBER_RATIO
            member.write(zeros)

    data = _plus_member(valid(make), "media/zeros.xml", write)
    assert len(data) < 1 << 20
    with pytest.raises(ExtractError, match="zip bomb"):
        read(Path(name), data)


@pytest.mark.parametrize("read, make, xml_name, name", ZIP_READERS, ids=ZIP_IDS)
def test_a_blank_picture_that_compresses_well_is_no_bomb(read, make, xml_name: str, name: str) -> None:
    zeros = bytes(1 << 20)

    def write(member) -> None:
        for _ in range(18):  # an 18 MB blank bitmap: a thousand times smaller deflated
            member.write(zeros)

    doc = read(Path(name), _plus_member(valid(make), "media/image1.bmp", write))
    assert doc.text.strip()


@pytest.mark.parametrize("read, make, xml_name, name", ZIP_READERS, ids=ZIP_IDS)
def test_traversal_name_refused(read, make, xml_name: str, name: str) -> None:
    data = _plus_member(valid(make), "../../evil.txt", lambda member: member.write(b"evil"))
    with pytest.raises(ExtractError, match="outside the archive"):
        read(Path(name), data)


@pytest.mark.parametrize("read, make, xml_name, name", ZIP_READERS, ids=ZIP_IDS)
def test_entity_declarations_refused(read, make, xml_name: str, name: str) -> None:
    data = valid(make)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        xml = z.read(xml_name).decode()
    laughs = (
        '<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i + 1} "{("&lol" + (str(i) if i else "") + ";") * 10}">' for i in range(9))
        + "]>"
    )
    root = xml.index("<", xml.index("?>") if "?>" in xml else 0)
    hostile = xml[:root] + laughs + xml[root:].replace(">", ">&lol9;", 1)
    with pytest.raises(ExtractError, match="entities"):
        read(Path(name), _with_members(data, {xml_name: hostile.encode()}))


@pytest.mark.parametrize("read, make, xml_name, name", ZIP_READERS, ids=ZIP_IDS)
def test_truncated_and_encrypted_refused(read, make, xml_name: str, name: str) -> None:
    data = valid(make)
    with pytest.raises(ExtractError, match="broken"):
        read(Path(name), data[: len(data) // 2])
    central = data.rindex(b"PK\x01\x02")  # a "version needed to extract" zipfile does not know
    with pytest.raises(ExtractError, match="broken"):
        read(Path(name), data[: central + 6] + b"\xff\x00" + data[central + 8 :])
    ole = OLE_MAGIC + os.urandom(4096)
    assert detect_kind(Path(name), ole[:8192]) == name.rsplit(".", 1)[1]  # still ours: the error says why
    with pytest.raises(ExtractError, match="encrypted"):
        read(Path(name), ole)


def test_not_taken_for_a_document() -> None:
    """A zip whose names merely contain "word/" or "ppt/" (a .jar's packages) is not a document."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("org/example/keyword/Main.class", b"\xca\xfe\xba\xbe")
        z.writestr("org/example/ppt/Slides.class", b"\xca\xfe\xba\xbe")
    head = out.getvalue()[:8192]
    assert b"word/" in head and not docx_reader.matches(Path("app.jar"), head)
    assert not pptx_reader.matches(Path("app.jar"), head)
    assert detect_kind(Path("app.jar"), head) is None


def test_encrypted_odt_refused() -> None:
    manifest = (
        b'<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        b'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">'
        b'<manifest:encryption-data manifest:checksum-type="SHA1/1K"/></manifest:file-entry></manifest:manifest>'
    )
    data = _with_members(valid(make_odt), {"META-INF/manifest.xml": manifest})
    assert detect_kind(Path("x.bin"), data[:8192]) == "odt"
    with pytest.raises(ExtractError, match="encrypted OpenDocument text"):
        odt_reader.read_odt(Path("x.odt"), data)


def test_wrong_office_kind_refused(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="not a Word document"):
        docx_reader.read_docx(tmp_path / "x.docx", valid(make_pptx))
    with pytest.raises(ExtractError, match="not a PowerPoint presentation"):
        pptx_reader.read_pptx(tmp_path / "x.pptx", valid(make_docx))
    with pytest.raises(ExtractError, match="broken OpenDocument text"):
        odt_reader.read_odt(tmp_path / "x.odt", valid(make_docx))


# --- properties: only ExtractError, or a Document ---

ALL_READERS = [
    (docx_reader.read_docx, make_docx, "x.docx"),
    (pptx_reader.read_pptx, make_pptx, "x.pptx"),
    (odt_reader.read_odt, make_odt, "x.odt"),
    (rtf_reader.read_rtf, lambda: RTF.encode(), "x.rtf"),
]
ALL_IDS = ["docx", "pptx", "odt", "rtf"]


def _read_or_refuse(read, name: str, data: bytes) -> None:
    try:
        doc = read(Path(name), data)
    except ExtractError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(doc, Document)
    for offset, _, title in doc.headings:
        assert doc.text[offset:].lstrip("#").startswith(" " + title)
    assert doc.part_starts == sorted(doc.part_starts)


@pytest.mark.parametrize("read, make, name", ALL_READERS, ids=ALL_IDS)
@PROPERTY
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(read, make, name: str, data: bytes) -> None:
    _read_or_refuse(read, name, data)
    _read_or_refuse(read, name, b"PK\x03\x04" + data if name != "x.rtf" else b"{\\rtf1 " + data)


EDITS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=6)


def _edited(data: bytes, edits: list[tuple[float, bytes]]) -> bytes:
    out = bytearray(data)
    for where, junk in edits:
        at = int(where * len(out))
        out[at : at + len(junk)] = junk
    return bytes(out)


@pytest.mark.parametrize("read, make, name", ALL_READERS, ids=ALL_IDS)
@PROPERTY
@given(edits=EDITS, cut=st.none() | st.floats(0.05, 1))
def test_damaged_valid_file(read, make, name: str, edits: list[tuple[float, bytes]], cut: float | None) -> None:
    data = _edited(valid(make), edits)
    _read_or_refuse(read, name, data if cut is None else data[: max(1, int(cut * len(data)))])


@pytest.mark.parametrize("read, make, name", ALL_READERS[:3], ids=ALL_IDS[:3])
@settings(PROPERTY, max_examples=30)
@given(member=st.integers(0, 1000), edits=EDITS, replacement=st.none() | st.text(max_size=300))
def test_damaged_xml_member(
    read, make, name: str, member: int, edits: list[tuple[float, bytes]], replacement: str | None
) -> None:
    """A well-formed zip with one XML member damaged, or replaced by garbage."""
    data = valid(make)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = [n for n in z.namelist() if n.endswith((".xml", ".rels"))]
        target = names[member % len(names)]
        content = z.read(target)
    damaged = _edited(content, edits) if replacement is None else replacement.encode()
    _read_or_refuse(read, name, _with_members(data, {target: damaged}))


@PROPERTY
@given(
    pieces=st.lists(
        st.sampled_from([*"{}\\abcfnu01;'*- \n", "\\par ", "\\u-3 ", "\\bin3 ", "\\pict", "\\fonttbl", "\\uc"]),
        max_size=200,
    )
)
def test_rtf_markup_soup(pieces: list[str]) -> None:
    _read_or_refuse(rtf_reader.read_rtf, "x.rtf", ("{\\rtf1 " + "".join(pieces)).encode())
