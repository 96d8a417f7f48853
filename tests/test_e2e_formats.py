"""Every document format end to end: real files written by each format's own library, the real
bundled model, the installed console script in a new process; the right file and location first,
hostile files reported in one line each and skipped."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import make_epub
from test_e2e import run
from test_ocr import picture, scanned_pdf

pytestmark = pytest.mark.model


def write_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Field guide to the garden"
    document.add_heading("Soil", level=1)
    document.add_paragraph("Loam holds water and air in balance; add compost every autumn to keep it crumbly.")
    document.add_heading("Pests", level=1)
    document.add_paragraph(
        "Aphids cluster on the undersides of young leaves. Spray them off with water, or let ladybirds eat them."
    )
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Pest", "Remedy"
    table.cell(1, 0).text, table.cell(1, 1).text = "Slugs", "Beer traps at dusk"
    document.save(str(path))


def write_pptx(path: Path) -> None:
    from pptx import Presentation

    deck = Presentation()
    for title, body in [
        ("Quarterly review", "Agenda for the meeting"),
        ("Revenue", "Subscriptions grew in every region except the north."),
        ("Hiring plan", "We will hire two site reliability engineers to cut the on-call load."),
    ]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(str(path))


def write_epub(path: Path) -> None:
    make_epub(
        path,
        [
            ("Departure", "The ship left the harbour at dawn with a cargo of salt and timber."),
            ("The storm", "On the ninth night a gale tore the mainsail and the crew bailed water until morning."),
            ("Landfall", "They sighted a volcanic island whose black beaches steamed in the rain."),
        ],
        title="Voyages of the Meridian",
    )


def write_notebook(path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# Cleaning sensor data"),
        new_code_cell("import pandas as pd\ndf = pd.read_csv('sensors.csv')"),
        new_markdown_cell("Readings above 120 degrees are faulty thermocouples; we drop them before averaging."),
        new_code_cell("df = df[df.temperature < 120]\ndf.groupby('station').temperature.mean()"),
    ]
    nbformat.write(nb, str(path))


def write_odt(path: Path) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Bread"))
    document.text.addElement(P(text="Knead the dough for ten minutes until it springs back when pressed."))
    document.text.addElement(H(outlinelevel=1, text="Cheese"))
    document.text.addElement(P(text="Curdle warm milk with rennet, cut the curd and press it into moulds."))
    document.save(str(path))


HTML = """<!doctype html><html><head><title>Tuning the garbage collector</title><script>var x = 1;</script>
<style>body { color: red }</style></head><body><nav><a href="/">Home</a> <a href="/blog">Blog</a></nav>
<main><h1>Tuning the garbage collector</h1><p>Generational collectors assume most objects die young.</p>
<h2>Pause times</h2><p>Raise the young generation size to cut how often minor collections pause the
application threads.</p></main><footer>Copyright 2026 Example Corp</footer></body></html>"""

RTF = (
    r"{\rtf1\ansi\deff0{\fonttbl{\f0 Times;}}\f0\fs24 Warranty terms\par "
    r"The warranty covers manufacturing defects of the espresso machine for two years from purchase.\par}"
)


def zip_bomb(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(64):
                member.write(block)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("e2e-formats")
    docs = root / "docs"
    docs.mkdir()
    write_docx(docs / "garden.docx")
    write_pptx(docs / "review.pptx")
    write_epub(docs / "meridian.epub")
    write_notebook(docs / "sensors.ipynb")
    write_odt(docs / "dairy.odt")
    (docs / "gc.html").write_text(HTML)
    (docs / "warranty.rtf").write_text(RTF)
    scanned_pdf(docs / "scanned-letter.pdf", [("Dear tenant, the boiler", "will be serviced on Tuesday.")])
    picture(("Whiteboard: ship the parser", "before the Friday demo")).save(docs / "whiteboard.png")
    # Hostile and broken files: each one warning line, and the run goes on.
    zip_bomb(docs / "bomb.docx")
    (docs / "cut.epub").write_bytes((docs / "meridian.epub").read_bytes()[:2000])
    (docs / "broken.ipynb").write_text('{"cells": [ {"cell_type": "markdown", "source": "unterminated')
    (docs / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4000)
    env = {**os.environ, "SEMSEARCH_CACHE": str(root / "cache"), "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    result = run(["index", "docs", "--ocr", "images"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return root, env, result


def top(root: Path, env: dict[str, str], question: str) -> dict:
    result = run(["query", question, "--json", "-k", "3"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout.decode().splitlines()[0])


@pytest.mark.parametrize(
    ("question", "name", "location"),
    [
        ("how do I get rid of aphids on young leaves", "garden.docx", {"kind": "section", "section": 2}),
        ("how many reliability engineers will we hire", "review.pptx", {"kind": "slide", "slide": 3}),
        ("the crew bailed water after the gale tore the sail", "meridian.epub", {"kind": "section", "section": 2}),
        ("why are temperature readings above 120 dropped", "sensors.ipynb", {"kind": "cell"}),
        ("how long should bread dough be kneaded", "dairy.odt", {"kind": "section", "section": 1}),
        ("reduce garbage collection pause times", "gc.html", {"kind": "section"}),
        ("how long is the espresso machine warranty", "warranty.rtf", {"kind": "line"}),
        ("when will the boiler be serviced", "scanned-letter.pdf", {"kind": "page", "page": 1}),
        ("what must ship before the demo", "whiteboard.png", {"kind": "line"}),
    ],
)
def test_each_format_finds_the_right_file_and_place(
    library: tuple[Path, dict[str, str], subprocess.CompletedProcess], question: str, name: str, location: dict
) -> None:
    root, env, _ = library
    hit = top(root, env, question)
    assert Path(hit["path"]).name == name
    assert location.items() <= hit["location"].items(), hit["location"]


def test_notebook_hit_names_the_cell(library: tuple[Path, dict[str, str], subprocess.CompletedProcess]) -> None:
    root, env, _ = library
    hit = top(root, env, "why are temperature readings above 120 dropped")
    assert hit["location"]["cell"] in (3, 4)
    line = run(["query", "why are temperature readings above 120 dropped", "-k", "1"], cwd=root, env=env)
    assert line.stdout.decode().split(":")[1] == str(hit["location"]["cell"])


def test_context_line_carries_title_and_headings(
    library: tuple[Path, dict[str, str], subprocess.CompletedProcess],
) -> None:
    root, env, _ = library
    hit = top(root, env, "how do I get rid of aphids on young leaves")
    # The chunk begins with its own heading; the line in front of it names the document above it.
    assert hit["text"].startswith("# Pests") and hit["context"] == "Field guide to the garden"
    assert top(root, env, "the crew bailed water after the gale tore the sail")["title"] == "Voyages of the Meridian"


def test_hostile_files_get_one_line_each_and_nothing_else_is_lost(
    library: tuple[Path, dict[str, str], subprocess.CompletedProcess],
) -> None:
    _, _, result = library
    err = result.stderr.decode()
    for name, words in [
        ("bomb.docx", "zip bomb"),
        ("cut.epub", "broken"),
        ("broken.ipynb", "invalid JSON"),
        ("locked.docx", "encrypted"),
    ]:
        lines = [line for line in err.splitlines() if name in line]
        assert len(lines) == 1 and words in lines[0], (name, lines)
    assert "indexed 9 files" in err
