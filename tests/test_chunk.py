"""Chunker: token limits, overlap, boundaries, locations."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from semsearch.chunk import ChunkSettings, chunk_document, get_encoding, split_spans
from semsearch.errors import InvalidOptionError
from semsearch.readers import Document

PROSE = "\n\n".join(
    f"Paragraph {p}. " + " ".join(f"Sentence {p}.{s} talks about topic {p * s} in plain words." for s in range(8))
    for p in range(12)
)


def _tokens(text: str) -> int:
    return len(get_encoding().encode(text, disallowed_special=()))


def test_spans_respect_size_and_cover_text() -> None:
    settings = ChunkSettings(chunk_tokens=64, overlap_tokens=16)
    spans = split_spans(PROSE, settings)
    assert len(spans) > 5
    assert spans[0].start == 0 and spans[-1].end == len(PROSE)
    for a, b in itertools.pairwise(spans):
        assert b.start <= a.end, "a gap between chunks"
        assert b.start > a.start, "no progress"
    for span in spans:
        assert span.tokens <= 64
        assert _tokens(PROSE[span.start:span.end]) <= 64 + 1


def test_overlap_is_bounded_and_present() -> None:
    settings = ChunkSettings(chunk_tokens=64, overlap_tokens=16)
    spans = split_spans(PROSE, settings)
    overlaps = [_tokens(PROSE[b.start:a.end]) for a, b in itertools.pairwise(spans) if b.start < a.end]
    assert overlaps, "expected overlapping chunks"
    assert all(o <= 16 + 1 for o in overlaps)
    assert sum(overlaps) / len(overlaps) >= 6


def test_no_overlap_means_adjacent_chunks() -> None:
    spans = split_spans(PROSE, ChunkSettings(chunk_tokens=64, overlap_tokens=0))
    assert all(b.start == a.end for a, b in itertools.pairwise(spans))


def test_cuts_prefer_sentence_or_paragraph_ends() -> None:
    spans = split_spans(PROSE, ChunkSettings(chunk_tokens=64, overlap_tokens=0))
    for span in spans[:-1]:
        tail = PROSE[span.start:span.end].rstrip(" ")
        assert tail.endswith((".", "\n")), repr(tail[-30:])


def test_model_limit_shrinks_chunks() -> None:
    # A "model" that counts every character as a token forces cuts far below the cl100k size.
    spans = split_spans(PROSE, ChunkSettings(chunk_tokens=128, overlap_tokens=0), measure=len, limit=100)
    assert all(span.model_tokens is not None and span.model_tokens <= 100 for span in spans)
    assert "".join(PROSE[s.start:s.end] for s in spans) == PROSE


def test_locations_lines_and_pages() -> None:
    text = "alpha line one\nbeta line two\n\ngamma line four\n" * 30
    doc = Document(text=text, kind="text")
    chunks = chunk_document(doc, ChunkSettings(chunk_tokens=32, overlap_tokens=8))
    for chunk in chunks:
        assert text[chunk.char_start:chunk.char_end] == chunk.text
        first_line = text[: chunk.char_start + len(chunk.text) - len(chunk.text.lstrip())].count("\n") + 1
        assert chunk.line_start == first_line
        assert chunk.line_end >= chunk.line_start
        assert chunk.page_start is None
    pdf = Document(text="page one text\n\npage two text", kind="pdf", part_starts=[0, 15])
    chunks = chunk_document(pdf, ChunkSettings(chunk_tokens=16, overlap_tokens=0))
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 2


def test_whitespace_only_and_empty_give_no_chunks() -> None:
    assert chunk_document(Document(text="", kind="text"), ChunkSettings()) == []
    assert chunk_document(Document(text=" \n\n \t\n", kind="text"), ChunkSettings()) == []


def test_text_without_any_boundary_is_still_cut() -> None:
    text = "x" * 20000
    spans = split_spans(text, ChunkSettings(chunk_tokens=50, overlap_tokens=10))
    assert all(s.tokens <= 50 for s in spans)
    assert spans[-1].end == len(text)


@pytest.mark.parametrize("size,overlap", [(8, 0), (64, 40), (64, -1)])
def test_invalid_settings_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(InvalidOptionError):
        ChunkSettings(chunk_tokens=size, overlap_tokens=overlap).validate()


# -- the context line embedded in front of each chunk -------------------------------------------------


def test_markdown_chunks_carry_their_heading_path() -> None:
    from semsearch.chunk import ChunkSettings, chunk_document
    from semsearch.readers import read_document

    body = "Words about the topic at hand. " * 30
    text = (f"# Guide\n\nIntro {body}\n\n## Install {{ #install }}\n\n{body}\n\n### On Windows\n\n{body}\n\n"
            f"```\n# not a heading\n```\n\n{body}\n\n## Use\n\n{body}\n")
    doc = read_document(Path("guide.md"), text.encode())
    chunks = chunk_document(doc, ChunkSettings(chunk_tokens=64, overlap_tokens=8))
    def context_at(heading: str, end: str | None) -> set[str]:
        lo, hi = text.index(heading) + len(heading), text.index(end) if end else len(text)
        return {c.context for c in chunks if lo < c.char_start < hi}

    assert chunks[0].context == ""  # the first chunk holds its own title
    assert context_at("# Guide", "## Install") == {"Guide"}
    assert context_at("## Install", "### On Windows") == {"Guide > Install"}  # the anchor is not a title
    assert context_at("### On Windows", "## Use") == {"Guide > Install > On Windows"}  # fenced '#' is code
    assert context_at("## Use", None) == {"Guide > Use"}
    assert all(c.embedding_text() == (f"{c.context}\n{c.text}" if c.context else c.text) for c in chunks)


def test_plain_text_title_line_and_code_file_names() -> None:
    from semsearch.chunk import ChunkSettings, chunk_document
    from semsearch.readers import read_document

    body = "Cells divide and grow in many interesting ways every single day. " * 40
    doc = read_document(Path("12345.txt"), f"Cell division in yeast\n\n{body}".encode())
    assert doc.title == "Cell division in yeast"
    chunks = chunk_document(doc, ChunkSettings(chunk_tokens=64, overlap_tokens=8))
    assert chunks[0].context == "" and all(c.context == "Cell division in yeast" for c in chunks[1:])
    assert read_document(Path("notes.txt"), body.encode()).title == "notes"  # no title line
    assert read_document(Path("src/retry.py"), b"import time\n\ndef f():\n    pass\n").title == "retry.py"
    plain = chunk_document(doc, ChunkSettings(chunk_tokens=64, overlap_tokens=8, context=False))
    assert all(c.context == "" for c in plain)


@pytest.mark.parametrize("mode", ["prefer", "strict"])
def test_section_cuts(mode: str) -> None:
    sections = [f"## Part {i}\n\n" + f"Sentence {i} about topic {i}. " * (3 + 7 * i) for i in range(5)]
    text = "\n\n".join(sections) + "\n"
    spans = split_spans(text, ChunkSettings(chunk_tokens=64, overlap_tokens=16, section_cuts=mode))
    assert spans[0].start == 0 and spans[-1].end == len(text)
    assert all(b.start <= a.end for a, b in itertools.pairwise(spans))  # every character covered
    assert all(s.tokens <= 64 for s in spans)
    crossing = [s for s in spans if "\n## " in text[s.start:s.end].rstrip()]
    if mode == "strict":
        assert crossing == []  # no chunk spans two sections
        assert all(text[s.start:s.end].startswith("## ") for s in spans if "## " in text[s.start:s.end])
    else:
        assert crossing  # a heading in a window's front half does not force a cut
