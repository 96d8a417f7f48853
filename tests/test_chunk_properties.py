"""Property-based tests: the chunker's guarantees and the text readers' "never raise"."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import re
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from semsearch.chunk import ChunkSettings, chunk_document, split_spans, token_offsets
from semsearch.readers import Document, read_document
from semsearch.readers.document import LineIndex, decode_text

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text with the boundaries the chunker cares about: words, sentence ends, newlines, headings,
# plus arbitrary unicode (combining marks, emoji, CJK) that tokenizers split oddly.
PIECES = st.sampled_from(["word", "longerword", ". ", "! ", "\n", "\n\n", "# Heading\n", "  ", "\t", "é", "😀",
                          "漢字", "a\u0301", "x" * 40, ",", "1234567890"])
TEXTS = st.one_of(
    st.lists(PIECES, max_size=300).map("".join),
    st.text(max_size=1500),
)
CHUNKING = st.builds(
    lambda size, frac: ChunkSettings(chunk_tokens=size, overlap_tokens=int(size // 2 * frac)),
    st.integers(16, 80), st.floats(0, 1),
)


@FAST
@given(TEXTS, CHUNKING)
# Found by this test: tokens inside one astral character share its offset, and the next window
# started at the previous one's offset again.
@example("\U00010000" + "0:\x1f\x810:\x81\U00010000", ChunkSettings(chunk_tokens=16, overlap_tokens=8))
def test_spans_cover_every_character_within_limits(text: str, chunking: ChunkSettings) -> None:
    spans = split_spans(text, chunking)
    if not text:
        assert spans == []
        return
    # Tokens as the chunker counts them: those of the whole text (a piece cut out and tokenized
    # alone can differ where a cut falls inside a multi-byte character).
    starts = token_offsets(text)[:-1]

    def tokens_in(lo: int, hi: int) -> int:
        # A character split over several tokens: its tokens all start at its offset, and a cut
        # can only fall before the character, so those before the chunker's cut count too.
        shared_at_lo = bisect.bisect_right(starts, lo) - bisect.bisect_left(starts, lo)
        return bisect.bisect_left(starts, hi) - bisect.bisect_left(starts, lo) - max(0, shared_at_lo - 1)

    assert spans[0].start == 0 and spans[-1].end == len(text)
    for a, b in itertools.pairwise(spans):
        assert a.start < b.start <= a.end, "a gap, or no progress"
        assert tokens_in(b.start, a.end) <= chunking.overlap_tokens, "overlap over the configured one"
    for span in spans:
        assert 0 <= span.start < span.end <= len(text)
        assert span.tokens <= chunking.chunk_tokens
        assert tokens_in(span.start, span.end) <= chunking.chunk_tokens


@FAST
@given(TEXTS, CHUNKING, st.integers(8, 60))
def test_model_limit_is_respected(text: str, chunking: ChunkSettings, limit: int) -> None:
    def measure(piece: str) -> int:
        return len(piece.split()) + 2

    for span in split_spans(text, chunking, measure, limit):
        if span.model_tokens is not None and span.end - span.start > 1 and span.tokens > 1:
            assert span.model_tokens <= limit or span.tokens == 1


@FAST
@given(TEXTS, CHUNKING, st.lists(st.integers(0, 1500), max_size=4))
def test_chunks_map_back_to_the_source(text: str, chunking: ChunkSettings, page_cuts: list[int]) -> None:
    text = text.replace("\r", "")
    starts = sorted({0, *(min(c, len(text)) for c in page_cuts)}) if page_cuts else []
    doc = Document(text=text, kind="text", part_starts=starts)
    chunks = chunk_document(doc, chunking)
    lines = LineIndex(text)
    covered = [False] * len(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.char_start:chunk.char_end]
        assert chunk.text.strip(), "whitespace-only chunks are dropped"
        first = chunk.char_start + (len(chunk.text) - len(chunk.text.lstrip()))
        assert chunk.line_start == lines.line_at(first)
        assert 1 <= chunk.line_start <= chunk.line_end <= text.count("\n") + 1
        if starts:
            assert chunk.page_start is not None and 1 <= chunk.page_start <= chunk.page_end <= len(starts)
        for i in range(chunk.char_start, chunk.char_end):
            covered[i] = True
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for i, ch in enumerate(text):
        if not ch.isspace():
            assert covered[i], f"character {i} ({ch!r}) is in no chunk"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_decode_text_never_raises(data: bytes) -> None:
    text, encoding = decode_text(data)
    assert isinstance(text, str) and isinstance(encoding, str)
    text.encode("utf-8")  # storable: no lone surrogates


BOMS = st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"])


@settings(max_examples=200, deadline=None)
@given(BOMS, st.binary(max_size=2000), st.sampled_from(["a.txt", "b.md", "c.py", "d"]))
def test_extract_text_never_raises(bom: bytes, data: bytes, name: str) -> None:
    doc = read_document(Path(name), bom + data, "markdown" if name.endswith(".md") else "text")
    assert "\x00" not in doc.text and "\r" not in doc.text
    doc.text.encode("utf-8")
    doc.title.encode("utf-8")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_extract_pdf_garbage_raises_only_extract_error(data: bytes) -> None:
    from semsearch.errors import ExtractError

    with contextlib.suppress(ExtractError):
        read_document(Path("x.pdf"), b"%PDF-1.4\n" + data, "pdf")


@FAST
@given(st.binary(max_size=1500), CHUNKING)
def test_any_bytes_read_and_chunk(data: bytes, chunking: ChunkSettings) -> None:
    doc = read_document(Path("x.txt"), data, "text")
    for chunk in chunk_document(doc, chunking):
        assert re.search(r"\S", chunk.text)
