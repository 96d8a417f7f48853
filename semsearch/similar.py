"""Passages and files like a given one, from the index alone: the stored vectors are the query.

``similar PATH:LINE`` starts from the chunk that holds that line (in a document of parts, ``:N``
and ``#N`` name part N, the number ``query`` prints for its hits: a PDF's page, a notebook's
cell, a slide, a section), ``PATH#PAGE`` from that part's chunks, and ``PATH`` from the whole file. No model is loaded: the vectors were stored at index time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch.errors import InvalidOptionError
from semsearch.search import Hit, SearchOptions, collect_hits

if TYPE_CHECKING:
    import numpy as np

    from semsearch.store import ChunkRecord, IndexReader
    from semsearch.vectors import Subset

# How a start of several chunks (a file, a page) is turned into a search:
# "mean": one query, the normalised mean of its chunk vectors;
# "max": each of its chunks searched on its own, a passage scored by its best cosine to any.
METHODS = ("mean", "max")
# "mean", measured on the FastAPI docs (a page's links to other pages as what is related):
# nDCG@10 0.458 against 0.446 for "max" (a difference inside the noise), at a fifth of the cost
# (benchmarks/quality/similar_eval.py, benchmarks/RESULTS.md).
DEFAULT_METHOD = "mean"
MAX_START_CHUNKS = 64  # "max" searches at most this many of a long file's chunks (evenly spread)
MAX_NUMBER_DIGITS = 18  # a line or page number longer than this is no line (and Python's int() refuses 4,300)
MAX_NUMBER = 10**MAX_NUMBER_DIGITS - 1
_LOCATION = re.compile(r"^(?P<path>.+?)(?:(?P<sep>[:#])(?P<num>\d+))$")


@dataclass(frozen=True)
class Target:
    """Where ``similar`` starts: a file, a line of it, or a page of it."""

    path: Path
    line: int | None = None
    page: int | None = None

    def __post_init__(self) -> None:
        for name, number in (("line", self.line), ("page", self.page)):
            if number is not None and not 1 <= number <= MAX_NUMBER:
                shown = str(number) if len(str(number)) <= 24 else f"{str(number)[:12]}... ({len(str(number))} digits)"
                raise InvalidOptionError(
                    f"{{{name}}} must be between 1 and {MAX_NUMBER} (got {shown})", options=(name,)
                )

    @classmethod
    def parse(cls, text: str) -> Target:
        """``PATH``, ``PATH:LINE`` or ``PATH#PAGE`` (a file whose name really ends so is taken whole)."""
        if not text:
            raise InvalidOptionError("empty {target}", options=("target",))
        match = _LOCATION.match(text)
        if match is None or os.path.lexists(text):
            return cls(Path(os.path.abspath(text)))
        path = Path(os.path.abspath(match["path"]))
        if len(match["num"].lstrip("0")) > MAX_NUMBER_DIGITS:
            shown = f"{match['num'][:12]}... ({len(match['num'])} digits)"
            raise InvalidOptionError(f"{{target}}: no file has a line or page {shown}", options=("target",))
        number = int(match["num"])
        if number < 1:
            raise InvalidOptionError(f"{{target}}: lines and pages count from 1 (got {text!r})", options=("target",))
        return cls(path, line=number) if match["sep"] == ":" else cls(path, page=number)

    def label(self) -> str:
        shown = os.fsencode(str(self.path)).decode("utf-8", "backslashreplace")
        if self.line is not None:
            return f"{shown}:{self.line}"
        return f"{shown}#{self.page}" if self.page is not None else shown


def start_chunks(reader: IndexReader, target: Target) -> list[ChunkRecord]:
    """The chunks ``similar`` starts from (raises InvalidOptionError naming what is not indexed)."""
    chunks = reader.file_chunks(target.path)
    if chunks is None:
        raise InvalidOptionError(f"{target.path} is not in the index", options=("target",), path=target.path)
    if not chunks:
        raise InvalidOptionError(f"{target.path} has no text in the index", options=("target",), path=target.path)
    paged = chunks[0].page_start is not None
    page = target.page if target.page is not None else (target.line if paged else None)
    if page is not None:
        if not paged:
            raise InvalidOptionError(f"{target.path} has no pages (give :LINE)", options=("target",))
        from semsearch.readers import part_kind

        on_page = [c for c in chunks if (c.page_start or 0) <= page <= (c.page_end or c.page_start or 0)]
        if not on_page:
            last = max(c.page_end or c.page_start or 0 for c in chunks)
            word = part_kind(chunks[0].kind)
            raise InvalidOptionError(
                f"{target.path} has no {word} {page} with text in the index ({word}s 1-{last})", options=("target",)
            )
        return on_page
    line = target.line
    if line is not None:
        last = max(c.line_end for c in chunks)
        if line > last:
            raise InvalidOptionError(
                f"{target.path} has no line {line} in the index (its text ends at line {last})",
                options=("target",),
            )

        # The chunk that holds the line; of two that overlap there, the one it is more central
        # to; a line between chunks (blank) takes the nearest.
        def distance(c: ChunkRecord) -> tuple[int, float]:
            outside = max(c.line_start - line, line - c.line_end, 0)
            return (outside, abs(line - (c.line_start + c.line_end) / 2))

        return [min(chunks, key=distance)]
    return chunks


def similar(
    reader: IndexReader,
    target: Target,
    options: SearchOptions,
    *,
    include_self: bool = False,
    method: str = DEFAULT_METHOD,
) -> list[Hit]:
    """The passages (or files, with ``options.files_only``) most like *target*, best first."""
    import numpy as np

    options.validate()
    if method not in METHODS:
        raise InvalidOptionError(f"{{method}} must be one of {', '.join(METHODS)} (got {method})", options=("method",))
    start = start_chunks(reader, target)
    stored = reader.vectors([c.id for c in start])
    vectors = np.stack([stored[c.id] for c in start if c.id in stored])
    scope = options.scope
    if not include_self:
        from semsearch.scope import Scope

        scope = (scope or Scope()).without(start[0].path)
    within = reader.subset(scope)
    if within is not None and len(within) == 0:
        return []
    start_ids = {c.id for c in start}
    # With files_only, a long file's chunks can fill every candidate slot: ask again for more
    # until k files come back or the candidates run out.
    per_hit = 8 if options.files_only else 1
    while True:
        wanted = options.top_k * per_hit + len(start)
        scored = _scores(reader, vectors, wanted, within, method)
        ranked = sorted(((c, s) for c, s in scored.items() if c not in start_ids), key=lambda kv: (-kv[1], kv[0]))
        hits = collect_hits(reader, ranked, scored, {}, options)
        if len(hits) >= options.top_k or not options.files_only or len(scored) < wanted or wanted >= reader.count:
            return hits
        per_hit *= 4


def _scores(
    reader: IndexReader, vectors: np.ndarray, wanted: int, within: Subset | None, method: str
) -> dict[int, float]:
    """Candidate chunks and their cosine to the start (mean: to its mean; max: to its nearest chunk)."""
    import numpy as np

    if method == "mean" or len(vectors) == 1:
        return dict(reader.vector_search(mean_vector(vectors), wanted, within=within))
    scored: dict[int, float] = {}
    picks = np.unique(np.linspace(0, len(vectors) - 1, MAX_START_CHUNKS).round().astype(int))
    for vec in vectors[picks]:
        for cid, cos in reader.vector_search(vec, wanted, within=within):
            scored[cid] = max(cos, scored.get(cid, -1.0))
    return scored


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """The normalised mean of unit vectors (the "mean" method's query)."""
    import numpy as np

    query = vectors.mean(axis=0)
    return (query / max(float(np.linalg.norm(query)), 1e-12)).astype(np.float32)
