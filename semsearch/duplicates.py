"""Near-duplicate passages and files, found through the vector index's neighbours (no all-pairs scan).

Every chunk in scope asks the vector index for its nearest neighbours (one batched, multi-threaded
search); pairs of chunks of different files at cosine >= ``min_score`` are joined into groups
(union-find, so copies of copies group together), the most text per file first (see
:func:`_weight`: a long passage copied between two pages comes before a short notice repeated in
sixty files, which the largest-first order put on top). Two files are a pair when
they share such passages; a pair's ``share`` is the part of the smaller file's passages that have a
copy in the other.
"""

from __future__ import annotations

import hashlib
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch.errors import InvalidOptionError

if TYPE_CHECKING:
    from semsearch.scope import Scope
    from semsearch.store import ChunkRecord, IndexReader

# Cosine at which two passages count as copies, measured on the FastAPI docs with 20 pages copied
# and edited (benchmarks/quality/duplicates_eval.py): at 0.93 every reported pair that involves a planted
# copy is one, 22 of the 25 planted file pairs are found, and 9 of the 11 pairs reported in the
# docs without copies are real repeated text; below it false alarms grow fast (15 pairs at 0.92,
# 27 at 0.90), above it edited passages are missed (passage recall 0.88 at 0.93, 0.84 at 0.95).
DEFAULT_MIN_SCORE = 0.93
TEXT_CHECK_FLOOR = 0.80  # pairs from here up to min_score are copies when they share their words
SHARED_RUNS = 0.5  # ... at least this share of the 5-word runs of the shorter passage
_WORD = re.compile(r"\w+")
MIN_EXACT_CHARS = 40  # chunks of the same text (spaces aside) at least this long are copies
NEIGHBOURS = 16  # neighbours asked per chunk: a passage with more copies than this still joins
# its group through the copies' own neighbours.


@dataclass(frozen=True)
class DuplicateGroup:
    """Passages that are copies of each other (each linked to another at >= the threshold)."""

    chunks: list[ChunkRecord]
    scores: list[float]  # each chunk's highest cosine to another of the group
    score: float  # the highest cosine between two of them
    min_score: float  # the lowest cosine of the links that join them

    @property
    def files(self) -> int:
        """How many files its passages are in."""
        return len({chunk.path for chunk in self.chunks})


@dataclass(frozen=True)
class FilePair:
    """Two files that share near-duplicate passages."""

    a: Path
    b: Path
    shared: int  # passages of the smaller file with a copy in the other
    chunks: int  # passages of the smaller file
    score: float  # the highest cosine between their passages

    @property
    def share(self) -> float:
        """The share of the smaller file's passages that have a copy in the other (0 to 1)."""
        return self.shared / self.chunks if self.chunks else 0.0


@dataclass(frozen=True)
class Duplicates:
    """Near-duplicate passages grouped (most text per file first), and the pairs of files that
    share them (the largest share of the smaller file first)."""

    groups: list[DuplicateGroup]
    files: list[FilePair]
    chunks_checked: int


def find_duplicates(
    reader: IndexReader, *, min_score: float = DEFAULT_MIN_SCORE, scope: Scope | None = None
) -> Duplicates:
    """Near-duplicate passages among the chunks in *scope*, in different files: cosine >= *min_score*,
    the same text, or cosine >= 0.80 with half their 5-word runs in common."""
    import numpy as np

    if not -1.0 <= min_score <= 1.0:
        raise InvalidOptionError(f"{{min_score}} must be between -1 and 1 (got {min_score})", options=("min_score",))
    within = reader.subset(scope)
    allowed = within.contains() if within is not None else None
    owner: dict[int, int] = {}
    pairs: list[tuple[int, int, float]] = []
    checked = 0
    near: list[tuple[int, int, float]] = []  # under min_score: copies only if their words say so
    floor = min(min_score, TEXT_CHECK_FLOOR)
    first_with_text: dict[bytes, int] = {}
    for ids, owners, vectors, texts in reader.chunk_vectors(within):
        checked += len(ids)
        owner.update(zip(ids.tolist(), owners.tolist(), strict=True))
        # The same text is a copy whatever its vector: a chunk is embedded with its file's title
        # or name in front, so a copy under another name can sit below the threshold.
        for cid, text in zip(ids.tolist(), texts, strict=True):
            if len(text.strip()) >= MIN_EXACT_CHARS:
                digest = hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).digest()
                seen = first_with_text.setdefault(digest, cid)
                if seen != cid:
                    pairs.append((cid, seen, 1.0))
        found, cosines = reader.neighbours(vectors, NEIGHBOURS + 1)
        rows, cols = np.nonzero((cosines >= floor) & (found >= 0) & (found != ids[:, None]))
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            other = int(found[r, c])
            if allowed is None or allowed(other):
                cos = float(cosines[r, c])
                (pairs if cos >= min_score else near).append((int(ids[r]), other, cos))

    # Every chunk in scope has been read by now, so each pair's files are known.
    def across(found: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
        return [(a, b, s) for a, b, s in found if b in owner and owner[a] != owner[b]]

    pairs = across(pairs) + _same_words(reader, across(near))
    return Duplicates(_groups(reader, pairs), _file_pairs(reader, pairs, owner), checked)


def _same_words(reader: IndexReader, near: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Of the pairs under the threshold, those whose texts share most of their 5-word runs: a
    passage copied into a page of another title (embedded with that title in front, and cut at
    other places) scores 0.80-0.93 by cosine, yet is a copy."""
    if not near:
        return []
    records = reader.fetch_chunks(sorted({x for a, b, _ in near for x in (a, b)}))
    shingles = {cid: _shingles(record.text) for cid, record in records.items()}
    kept = []
    for a, b, cos in near:
        sa, sb = shingles.get(a), shingles.get(b)
        if sa and sb and len(sa & sb) >= SHARED_RUNS * min(len(sa), len(sb)):
            kept.append((a, b, cos))
    return kept


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


def _groups(reader: IndexReader, pairs: list[tuple[int, int, float]]) -> list[DuplicateGroup]:
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, set[int]] = {}
    for x in parent:
        members.setdefault(root(x), set()).add(x)
    best: dict[int, float] = {}
    worst: dict[int, float] = {}
    own: dict[int, float] = {}
    for a, b, s in pairs:
        r = root(a)
        best[r] = max(best.get(r, -1.0), s)
        worst[r] = min(worst.get(r, 2.0), s)
        own[a] = max(own.get(a, -1.0), s)
        own[b] = max(own.get(b, -1.0), s)
    records = reader.fetch_chunks([x for group in members.values() for x in group])
    groups = []
    for r, ids in members.items():
        chunks = sorted((records[i] for i in ids if i in records), key=lambda c: (c.display, c.ordinal))
        if len(chunks) > 1:
            scores = [min(own[c.id], 1.0) for c in chunks]
            groups.append(DuplicateGroup(chunks, scores, min(best[r], 1.0), min(worst[r], 1.0)))
    groups.sort(key=lambda g: (-_weight(g), -len(g.chunks), g.chunks[0].display, g.chunks[0].ordinal))
    return groups


def _weight(group: DuplicateGroup) -> float:
    """How much a group is worth reading first: the length of its passages (their median, in
    characters, spaces aside) times its best cosine, over log2(1 + the files it spreads over).

    A copied page's passages are pairs of long chunks; boilerplate (a licence header, a
    "feedback welcome" footer, a repeated console snippet) is one passage in many files. On the
    FastAPI docs with a licence header and a footer added to 60 pages and 6 pages copied and edited,
    largest-first put the header's group (63 passages) first and the footer's fourth; this order
    puts the planted copies in 24 of the top 25 groups (the other: real repeated text), the header
    at 201 and the footer's groups at 146, 184 and 202 of 202 (issue 23)."""
    chars = statistics.median(len(" ".join(chunk.text.split())) for chunk in group.chunks)
    return chars * group.score / math.log2(1 + group.files)


def _file_pairs(reader: IndexReader, pairs: list[tuple[int, int, float]], owner: dict[int, int]) -> list[FilePair]:
    matched: dict[tuple[int, int], tuple[set[int], set[int], float]] = {}
    for a, b, s in pairs:
        fa, fb = owner[a], owner[b]
        key = (fa, fb) if fa < fb else (fb, fa)
        first, second, best = matched.get(key, (set(), set(), -1.0))
        (first if fa == key[0] else second).add(a)
        (second if fa == key[0] else first).add(b)
        matched[key] = (first, second, max(best, s))
    counts = reader.file_chunk_counts({f for key in matched for f in key})
    out = []
    for (fa, fb), (in_a, in_b, best) in matched.items():
        (pa, na), (pb, nb) = counts[fa], counts[fb]
        shared, smaller = (len(in_a), na) if na <= nb else (len(in_b), nb)
        if str(pb) < str(pa):
            pa, pb = pb, pa
        out.append(FilePair(pa, pb, shared, smaller, min(best, 1.0)))
    out.sort(key=lambda p: (-p.share, -p.shared, -p.score, str(p.a), str(p.b)))
    return out
