"""Output formats: real bytes of file names in pipes, lossless JSON paths, the snippet's line."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch import output
from semsearch.chunk import ChunkSettings, chunk_document
from semsearch.cli import app
from semsearch.readers import Document
from semsearch.readers.document import LineIndex
from semsearch.search import Hit
from semsearch.store import ChunkRecord

ODD = b"non-utf8-\xff\xfe.md"


def make_hit(path: Path, text: str = "Some text about pangolins.\n", *, line_start: int = 1,
             highlight: tuple[int, int] | None = None, page: int | None = None, rank: int = 1) -> Hit:
    record = ChunkRecord(
        id=rank, file_id=rank, path=path, display=output.display_path(path), kind="pdf" if page else "text",
        title="", ordinal=0, text=text, char_start=0, char_end=len(text), line_start=line_start,
        line_end=line_start + text.strip().count("\n"), page_start=page, page_end=page,
    )
    return Hit(rank=rank, score=0.5, chunk=record, highlight=highlight)


def binary_stdout() -> tuple[io.TextIOWrapper, io.BytesIO]:
    """A text stream over bytes, as sys.stdout is."""
    raw = io.BytesIO()
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n"), raw


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_file_list_with_null_is_the_exact_bytes(in_tmp: Path) -> None:
    out, raw = binary_stdout()
    hits = [make_hit(in_tmp / os.fsdecode(ODD)), make_hit(in_tmp / os.fsdecode(b"sub/new\nline\x1b.txt"), rank=2)]
    output.write_files(out, hits, null=True)
    out.flush()
    assert raw.getvalue() == ODD + b"\0" + b"sub/new\nline\x1b.txt\0"


def test_file_list_without_null_escapes_controls_but_not_other_bytes(in_tmp: Path) -> None:
    out, raw = binary_stdout()
    hits = [make_hit(in_tmp / os.fsdecode(ODD)), make_hit(in_tmp / os.fsdecode(b"new\nline\x1b-\xe9.txt"), rank=2),
            make_hit(in_tmp / "tab\tname.txt", rank=3)]
    output.write_files(out, hits)
    out.flush()
    assert raw.getvalue() == ODD + b"\n" + b"new\\nline\\x1b-\xe9.txt\n" + b"tab\\tname.txt\n"  # a tab is not a space


def test_path_outside_the_current_directory_is_absolute(in_tmp: Path) -> None:
    out, raw = binary_stdout()
    elsewhere = in_tmp.parent / os.fsdecode(ODD)
    output.write_files(out, [make_hit(elsewhere), make_hit(in_tmp / "..name.txt", rank=2)], null=True)
    out.flush()
    assert raw.getvalue() == os.fsencode(elsewhere) + b"\0" + b"..name.txt\0"


def test_lines_write_raw_path_bytes_in_order_with_text_around(in_tmp: Path) -> None:
    out, raw = binary_stdout()
    out.write("# first query\n")  # text still in the wrapper's buffer when the bytes are written
    output.write_lines(out, [make_hit(in_tmp / os.fsdecode(ODD), "Café and pangolins.\n", line_start=7)])
    out.write("# second query\n")
    output.write_lines(out, [make_hit(in_tmp / "plain.txt", rank=2)])
    out.flush()
    assert raw.getvalue() == (b"# first query\n" + ODD + ":7:0.5000:Café and pangolins.".encode()
                              + b"\n# second query\nplain.txt:1:0.5000:Some text about pangolins.\n")


def test_string_streams_get_the_surrogate_escaped_name(in_tmp: Path) -> None:
    out = io.StringIO()
    output.write_files(out, [make_hit(in_tmp / os.fsdecode(ODD))], null=True)
    assert os.fsencode(out.getvalue()) == ODD + b"\0"
    out = io.StringIO()
    output.write_lines(out, [make_hit(in_tmp / os.fsdecode(ODD))])
    assert os.fsencode(out.getvalue()).startswith(ODD + b":1:")


def test_json_path_is_lossless_and_the_rest_stays_readable(in_tmp: Path) -> None:
    out, raw = binary_stdout()
    text = "Café\u2028line and the pangolin.\n"
    output.write_json_lines(out, [make_hit(in_tmp / os.fsdecode(ODD), text)], "pangolin")
    out.flush()
    line = raw.getvalue().decode("utf-8")  # valid UTF-8: no raw surrogate reached the stream
    assert line.endswith("\n") and line.count("\n") == 1
    assert '"path": "non-utf8-\\udcff\\udcfe.md"' in line
    assert "Café" in line and "\\u2028" in line  # ensure_ascii stays off; line breaks still escaped
    obj = json.loads(line)
    assert os.fsencode(obj["path"]) == ODD and obj["text"] == text


def test_json_guards_against_surrogates_in_text(in_tmp: Path) -> None:
    line = output.json_line(make_hit(in_tmp / "a.txt", "broken \ud800 map\n"), "q")
    line.encode("utf-8")
    assert json.loads(line)["text"] == "broken \ud800 map\n"


def test_terminal_view_shows_an_escaped_readable_name(in_tmp: Path) -> None:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None, highlight=False, markup=False)
    output.render_terminal(console, [make_hit(in_tmp / os.fsdecode(ODD))], "pangolins")
    shown = buffer.getvalue()
    assert "non-utf8-\\xff\\xfe.md" in shown
    shown.encode("utf-8")


def test_location_is_the_line_where_the_snippet_starts(in_tmp: Path) -> None:
    # line_start counts from the chunk's first non-space character: leading blank lines are not
    # lines of the chunk.
    text = "\n\nFirst line here.\nSecond line.\nThe pangolin sentence.\n"
    start = text.index("The pangolin")
    hit = make_hit(in_tmp / "a.txt", text, line_start=10, highlight=(start, len(text) - 1))
    assert output.location(hit) == output.snippet_line(hit) == 12
    assert output.format_line(hit).startswith("a.txt:12:0.5000:The pangolin sentence.")
    obj = json.loads(output.json_line(hit, "pangolin"))
    assert (obj["line"], obj["line_start"], obj["line_end"]) == (12, 10, 12)
    no_highlight = make_hit(in_tmp / "a.txt", text, line_start=10)
    assert output.location(no_highlight) == 10


def test_pdf_location_is_the_page(in_tmp: Path) -> None:
    text = "Intro.\nThe pangolin page.\n"
    hit = make_hit(in_tmp / "a.pdf", text, line_start=40, page=3, highlight=(7, 25))
    assert output.location(hit) == 3 and output.format_line(hit).startswith("a.pdf:3:")
    data = json.loads(output.json_line(hit, "q"))
    assert data["line"] is None and data["page"] == 3  # a line of extracted PDF text means nothing to a reader


def test_snippet_line_matches_the_document_for_every_start(in_tmp: Path) -> None:
    """For chunks as chunk_document cuts them (overlapping, with leading blank lines), the
    computed line of any non-space character is its line in the document."""
    paragraphs = [f"Paragraph {i} line one.\nIts second line, {i}.\n\n\n" for i in range(40)]
    doc = Document(text="\n\n" + "".join(paragraphs), kind="text")
    lines = LineIndex(doc.text)
    chunks = chunk_document(doc, ChunkSettings(chunk_tokens=32, overlap_tokens=8, context=False))
    assert len(chunks) > 5
    for chunk in chunks:
        hit = make_hit(in_tmp / "a.txt", chunk.text, line_start=chunk.line_start)
        for offset, char in enumerate(chunk.text):
            if not char.isspace():
                hit.highlight = (offset, offset + 1)
                assert output.snippet_line(hit) == lines.line_at(chunk.char_start + offset)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def odd_project(in_tmp: Path, fake_cli: FakeModel) -> Path:
    write(in_tmp / "docs" / os.fsdecode(ODD), "# Notes\n\nThe pangolin has scales.\n")
    write(in_tmp / "docs" / "space.md", "# Rockets\n\nIntro.\n\nA rocket engine burns fuel to make thrust.\n")
    result = run("index", "docs")
    assert result.exit_code == 0, result.output
    return in_tmp


def test_cli_file_list_feeds_xargs(odd_project: Path) -> None:
    result = run("query", "pangolin scales", "-l", "-0", "-k", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"docs/" + ODD + b"\0"
    counted = subprocess.run(["xargs", "-0", "wc", "-c"], input=result.stdout_bytes, capture_output=True,
                             cwd=odd_project, check=True)
    assert counted.stdout.startswith(b"34 docs/" + ODD), counted


def test_cli_lines_and_json_carry_the_real_name(odd_project: Path) -> None:
    result = run("query", "pangolin scales", "-k", "1")
    assert result.stdout_bytes.startswith(b"docs/" + ODD + b":3:")
    result = run("query", "pangolin scales", "-k", "1", "--json")
    obj = json.loads(result.stdout_bytes)
    assert os.fsencode(obj["path"]) == b"docs/" + ODD
    assert os.path.isfile(os.fsencode(obj["path"]))


def test_cli_line_is_where_the_snippet_starts(odd_project: Path) -> None:
    result = run("query", "rocket thrust fuel", "-k", "1")
    assert result.stdout.startswith("docs/space.md:5:"), result.stdout
    assert "A rocket engine burns fuel" in result.stdout
    obj = json.loads(run("query", "rocket thrust fuel", "-k", "1", "--json").stdout)
    assert (obj["line"], obj["line_start"], obj["line_end"]) == (5, 1, 5)
