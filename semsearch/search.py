"""Query -> ranked hits: semantic (HNSW, cosine), lexical (FTS5 BM25), or both fused."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from semsearch.errors import InvalidOptionError
from semsearch.lexicon import CJK
from semsearch.lexicon import words as lexicon_words
from semsearch.models.hardware import usable_cpus
from semsearch.store import ChunkRecord, IndexReader

if TYPE_CHECKING:
    import numpy as np

    from semsearch.models import QueryEmbedder
    from semsearch.models.rerank import Reranker
    from semsearch.scope import Scope
    from semsearch.vectors import Subset

MODES = ("semantic", "lexical", "hybrid")
DEFAULT_MODE = "hybrid"  # chosen by measurement (benchmarks/RESULTS.md)
# Hybrid fusions. "convex": a blend of each side's score divided by that side's best score for
# the query (bm25 of a chunk outside the lexical candidates, or matching no word, counts 0),
# weighted by SearchOptions.alpha; it does not depend on how many candidates each side fetched.
# "ceiling": the same blend, but BM25 divided by what a chunk holding every word of the query
# three times would score (``bm25_ceiling``; or by the best candidate's score when that is higher), not
# by the best candidate's: a best keyword match made of common words stays small, so it no
# longer outranks a paraphrase that matches no word, while a match of the query's rare words
# counts fully. "rrf", reciprocal rank fusion, stays for comparison
# (benchmarks/RESULTS.md compares them).
FUSIONS = ("convex", "ceiling", "rrf")
DEFAULT_FUSION = "ceiling"  # chosen by measurement (benchmarks/RESULTS.md, issue 23)
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009)
BM25_K1 = 1.2  # FTS5's bm25() k1
_THRICE = 3 * (BM25_K1 + 1) / (3 + BM25_K1)  # BM25's part for a word 3 times in a chunk of average length
CANDIDATES_PER_HIT = 2  # each side of a hybrid search fetches this many candidates per wanted hit
MAX_QUERY_CHARS = 10_000
_CORES = usable_cpus()  # hybrid runs BM25 beside the embedding only with a second core
_WORD = re.compile(r"\w+", re.UNICODE)
# Re-ranking scores this many first-stage hits with a cross-encoder; when more are asked for,
# those below keep their first-stage order. Chosen by its cost: about 0.23 s a query on 2 cores
# with a MiniLM-L6 cross-encoder (benchmarks/RESULTS.md); its gain could not be measured here.
DEFAULT_RERANK_DEPTH = 20
MAX_RERANK_DEPTH = 1000
_NON_SPACE = re.compile(r"\S")  # where a chunk's first line (line_start) is
# A sentence ends at . ! ? followed by space and a capital, digit, quote or bracket; or at a
# newline. ("e.g. this" and "v1.2" do not end one.)
# Chinese and Japanese sentences end at 。！？ with no space after.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[*#])|(?<=[。！？])\s*|\n+")


@dataclass
class SearchOptions:
    """How one query is answered."""

    top_k: int = 10
    min_score: float | None = None  # cosine similarity
    mode: str = DEFAULT_MODE
    files_only: bool = False  # distinct files, each ranked by its best chunk
    fusion: str = DEFAULT_FUSION  # how hybrid mode blends the two sides (FUSIONS)
    alpha: float = 0.5  # convex fusion: the weight of the cosine side
    scope: Scope | None = None  # only files in this scope (paths, globs, types, times)
    # One hit per place: a chunk whose emphasized sentence is at a better hit's place (overlapping
    # chunks share sentences) is left out. False: every chunk as ranked.
    distinct_places: bool = True
    # Re-rank the first *rerank_depth* hits with a cross-encoder (models/rerank.py): rerank_model
    # names it (None: SEMSEARCH_RERANK_MODEL, else the default).
    rerank: bool = False
    rerank_model: str | None = None
    rerank_depth: int = DEFAULT_RERANK_DEPTH

    def validate(self) -> None:
        """Raise :class:`InvalidOptionError` for a value out of range or options that do not go
        together (*min_score* with the lexical mode)."""
        if self.top_k < 1:
            raise InvalidOptionError(f"{{top_k}} must be at least 1 (got {self.top_k})", options=("top_k",))
        if self.mode not in MODES:
            raise InvalidOptionError(f"{{mode}} must be one of {', '.join(MODES)} (got {self.mode})", options=("mode",))
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidOptionError(
                f"{{min_score}} must be between -1 and 1 (got {self.min_score})", options=("min_score",)
            )
        if self.min_score is not None and self.mode == "lexical":
            raise InvalidOptionError(
                "{min_score} filters on cosine similarity, which {mode} lexical does not compute "
                "(use semantic or hybrid)",
                options=("min_score", "mode"),
            )
        if self.fusion not in FUSIONS:
            raise InvalidOptionError(
                f"{{fusion}} must be one of {', '.join(FUSIONS)} (got {self.fusion})", options=("fusion",)
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidOptionError(f"{{alpha}} must be between 0 and 1 (got {self.alpha})", options=("alpha",))
        if not 1 <= self.rerank_depth <= MAX_RERANK_DEPTH:
            raise InvalidOptionError(
                f"{{rerank_depth}} must be between 1 and {MAX_RERANK_DEPTH} (got {self.rerank_depth})",
                options=("rerank_depth",),
            )


@dataclass
class Hit:
    """One ranked result: a chunk and how it scored."""

    rank: int  # 1 for the best
    # The score the hits are ranked by, so it never rises down the list: the cosine similarity
    # (semantic), the BM25 score (lexical) or the fused score (hybrid; 0-1, 1 = the best cosine
    # with a full keyword match). ``scores`` keeps each side's own: cosine (what min_score
    # filters on), bm25, fused.
    score: float
    chunk: ChunkRecord
    scores: dict[str, float] = field(default_factory=dict)  # each part: cosine, bm25, fused
    highlight: tuple[int, int] | None = None  # span of the sentence closest to the query


def _quiet(message: str) -> None:
    """The default note handler: notes are dropped."""


class Searcher:
    """Answers queries against one index; the query model is loaded on first need, once.

    Safe to share between threads: the model is loaded once under a lock, and the index's parts
    (SQLite in serialized mode, hnswlib searches, onnxruntime sessions) take concurrent readers.
    """

    def __init__(
        self,
        reader: IndexReader,
        load_embedder: Callable[[], QueryEmbedder],
        on_note: Callable[[str], None] = _quiet,
    ) -> None:
        self.reader = reader
        self._load_embedder = load_embedder
        self._embedder: QueryEmbedder | None = None
        self._rerankers: dict[str, Reranker] = {}
        self._on_note = on_note
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _worker(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semsearch-bm25")
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def embedder(self) -> QueryEmbedder:
        """The query model (loaded on the first call)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._load_embedder()
            return self._embedder

    def reranker(self, name: str | None) -> Reranker:
        """The re-ranking model called *name* (None: the default), loaded once."""
        from semsearch.models.rerank import load_reranker

        with self._lock:
            found = self._rerankers.get(name or "")
            if found is None:
                found = self._rerankers[name or ""] = load_reranker(name, on_note=self._on_note)
            return found

    def embed(self, query: str) -> np.ndarray:
        embedder = self.embedder()
        count = getattr(embedder, "count_tokens", None)
        limit = getattr(embedder, "max_tokens", 0)
        if count is not None and limit and len(query) > limit:
            n = count([query])[0]
            if n > limit:
                self._on_note(f"the query is {n} word-pieces long; the model reads only the first {limit}")
        return embedder.embed_queries([query])[0]

    def search(self, query: str, options: SearchOptions) -> list[Hit]:
        options.validate()
        query = query.strip()
        if not query:
            raise InvalidOptionError("empty {query}", options=("query",))
        query = query[:MAX_QUERY_CHARS]
        if options.rerank:
            return self._reranked(query, options)
        # With files_only, each wanted file asks for several chunks; when a few files' chunks
        # fill every candidate slot, ask again for more (the filter is applied inside each search).
        per_hit = 8 if options.files_only else 1
        # A scope becomes the set of chunks the search may return, handed to both sides: each
        # ranks only those (the filter is applied before the top-k cut, never after it).
        within = self.reader.subset(options.scope)
        if within is not None and len(within) == 0:
            return []
        qvec: np.ndarray | None = None  # embedded once, by the first round
        while True:
            cosines, bm25, fetched, qvec, top = self._candidates(query, options, per_hit, within, qvec)
            ranked = _rank(options, cosines, bm25, top)
            hits, merged = _collect(self.reader, ranked, cosines, bm25, options, query)
            exhausted = len(cosines) < fetched and len(bm25) < fetched
            # Ask again for more candidates when hits at the same place as a better one (or a
            # file's other chunks) left fewer than k.
            short = len(hits) < options.top_k and (options.files_only or merged > 0)
            if not short or exhausted or fetched >= self.reader.count:
                break
            per_hit *= 4 if options.files_only else 2
        return hits

    def _reranked(self, query: str, options: SearchOptions) -> list[Hit]:
        """The first stage's best ``rerank_depth`` hits (or k) ordered by the re-ranker's score of
        (query, passage); the hits below keep their order. Each re-ranked hit's ``score`` is the
        re-ranker's (``scores["rerank"]``); the first stage's stay in ``scores``."""
        depth = max(options.top_k, options.rerank_depth)
        hits = self.search(query, replace(options, rerank=False, top_k=depth))
        head, tail = hits[: options.rerank_depth], hits[options.rerank_depth :]
        reranker = self.reranker(options.rerank_model)
        scores = reranker.score(query, [_passage(hit.chunk) for hit in head])
        for hit, score in zip(head, scores, strict=True):
            hit.scores["rerank"] = hit.score = float(score)
        head.sort(key=lambda hit: -hit.score)  # stable: ties keep the first stage's order
        ranked = (head + tail)[: options.top_k]
        for rank, hit in enumerate(ranked, 1):
            hit.rank = rank
        return ranked

    def _candidates(
        self, query: str, options: SearchOptions, per_hit: int, within: Subset | None, qvec: np.ndarray | None
    ) -> tuple[dict[int, float], dict[int, float], int, np.ndarray | None, float]:
        """Each side's candidates: {chunk id: cosine} and {chunk id: bm25}, how many each side
        was asked for, the query's vector (*qvec* when given, else embedded here), and the
        query's ``bm25_ceiling`` (0 unless the "ceiling" fusion needs it)."""
        wanted = options.top_k * per_hit
        fetch = max(wanted * CANDIDATES_PER_HIT, 50) if options.mode == "hybrid" else wanted
        cosines: dict[int, float] = {}
        bm25: dict[int, float] = {}
        match = fts_query(query) if options.mode in ("lexical", "hybrid") else ""
        ceiling = options.mode == "hybrid" and options.fusion == "ceiling"

        def lexical() -> tuple[list[tuple[int, float]], float]:
            found = self.reader.lexical_search(match, fetch, within)
            return found, (bm25_ceiling(self.reader, match) if ceiling and found else 0.0)

        pending: Future[tuple[list[tuple[int, float]], float]] | None = None
        top = 0.0
        if match and options.mode == "hybrid" and _CORES > 1:
            # BM25 ranks in a worker thread while the query is embedded and the graph searched
            # (SQLite, onnxruntime and hnswlib release the GIL): hybrid then costs about what
            # its slower half costs, not the sum of both. Even beside a query model on two
            # threads (the MCP server) this measured faster than one after the other.
            pending = self._worker().submit(lexical)
        try:
            if options.mode in ("semantic", "hybrid"):
                if qvec is None:
                    qvec = self.embed(query)
                cosines = dict(self.reader.vector_search(qvec, fetch, within=within))
            if pending is not None:
                found, top = pending.result()
                bm25 = dict(found)
            elif match:
                found, top = lexical()
                bm25 = dict(found)
        finally:
            if pending is not None:
                wait([pending])  # never leave the worker reading after an error here
        if options.mode == "hybrid" and qvec is not None:
            # Exact cosines for lexical candidates the vector side did not return.
            missing = [cid for cid in bm25 if cid not in cosines]
            for cid, vec in self.reader.vectors(missing).items():
                cosines[cid] = float(vec @ qvec)
        return cosines, bm25, fetch, qvec, top


def collect_hits(
    reader: IndexReader,
    ranked: list[tuple[int, float]],
    cosines: dict[int, float],
    bm25: dict[int, float],
    options: SearchOptions,
) -> list[Hit]:
    """The hits of a ranking ([(chunk id, rank score)], best first): chunks read from *reader*,
    ``options.min_score`` and ``files_only`` applied, ranked 1..k."""
    return _collect(reader, ranked, cosines, bm25, options, None)[0]


def _collect(
    reader: IndexReader,
    ranked: list[tuple[int, float]],
    cosines: dict[int, float],
    bm25: dict[int, float],
    options: SearchOptions,
    query: str | None,
) -> tuple[list[Hit], int]:
    """``collect_hits``, and with a *query* each hit's emphasized sentence found
    (``best_sentence``) and a hit at the same place as a better one left out (``same_place``).
    Returns the hits and how many were left out as the same place."""
    hits: list[Hit] = []
    files: set[int] = set()
    places: dict[int, list[tuple[int, int, int]]] = {}  # file id -> (line, start, end) of each hit
    merged = 0
    # Texts are read page by page, only as far down the ranking as the hits need (a hybrid
    # search ranks several times more candidates than it returns).
    start, page = 0, max(2 * options.top_k, 20)
    while start < len(ranked) and len(hits) < options.top_k:
        part = ranked[start : start + page]
        start, page = start + page, page * 2
        records = reader.fetch_chunks([cid for cid, _ in part])
        for cid, score in part:
            record = records.get(cid)
            if record is None:
                continue
            cosine = cosines.get(cid)
            if options.min_score is not None and (cosine is None or cosine < options.min_score):
                continue
            if options.files_only:
                if record.file_id in files:
                    continue  # a file ranks by its best chunk (max beat sum of top 2)
                files.add(record.file_id)
            highlight = best_sentence(record.text, query) if query is not None else None
            if query is not None and options.distinct_places and not options.files_only:
                place = place_of(record, highlight)
                seen = places.setdefault(record.file_id, [])
                if any(same_place(place, other) for other in seen):
                    merged += 1
                    continue  # the better hit at this place is already in (overlapping chunks)
                seen.append(place)
            parts = {"cosine": cosine} if cosine is not None else {}
            if cid in bm25:
                parts["bm25"] = bm25[cid]
            if options.mode == "hybrid":
                parts["fused"] = score
            scores = {k: float(v) for k, v in parts.items() if v is not None}
            hits.append(Hit(0, float(score), record, scores, highlight))
            if len(hits) == options.top_k:
                break
    for rank, hit in enumerate(hits, 1):
        hit.rank = rank
    return hits, merged


def _passage(chunk: ChunkRecord) -> str:
    """A chunk's text as it was embedded: with its title / heading line when it has one."""
    return f"{chunk.context}\n{chunk.text}" if chunk.context else chunk.text


def snippet_line(chunk: ChunkRecord, highlight: tuple[int, int] | None) -> int:
    """The 1-based line where a hit's snippet starts: the chunk's first line plus the line breaks
    between the chunk's first non-space character (where ``line_start`` counts from) and the
    start of the emphasized sentence (*highlight*, offsets in the chunk's text)."""
    first = _NON_SPACE.search(chunk.text)
    lead = first.start() if first else 0
    start = highlight[0] if highlight else 0
    return chunk.line_start + (chunk.text.count("\n", lead, start) if start > lead else 0)


def place_of(chunk: ChunkRecord, highlight: tuple[int, int] | None) -> tuple[int, int, int]:
    """Where a hit points in its file: the snippet's line, and the emphasized sentence's span in
    the file's text (empty without one)."""
    if highlight is None:
        return snippet_line(chunk, None), -1, -1
    return snippet_line(chunk, highlight), chunk.char_start + highlight[0], chunk.char_start + highlight[1]


def same_place(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Whether two hits of one file point at the same place: the same snippet line (what
    ``PATH:LINE`` shows), or emphasized sentences that overlap (overlapping chunks share
    sentences, and a chunk that starts inside one emphasizes its tail)."""
    return a[0] == b[0] or (a[1] >= 0 and b[1] >= 0 and a[1] < b[2] and b[1] < a[2])


def _rank(
    options: SearchOptions, cosines: dict[int, float], bm25: dict[int, float], ceiling: float = 0.0
) -> list[tuple[int, float]]:
    """The candidates ranked, best first, with the score they rank by. *ceiling*: the "ceiling"
    fusion's divisor of BM25 (``bm25_ceiling``; 0: the best candidate's score)."""
    if options.mode == "semantic":
        return sorted(cosines.items(), key=lambda kv: -kv[1])
    if options.mode == "lexical":
        return sorted(bm25.items(), key=lambda kv: -kv[1])
    fused: dict[int, float] = {}
    if options.fusion == "rrf":
        for scores in (cosines, bm25):
            for position, cid in enumerate(sorted(scores, key=lambda c: -scores[c]), 1):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + position)
    else:
        top_cos = max(max(cosines.values(), default=0.0), 1e-9)
        top_bm25 = max(max(bm25.values(), default=0.0), 1e-9)
        if options.fusion == "ceiling" and ceiling > 0:
            top_bm25 = max(ceiling, top_bm25)  # never above 1 (the IDFs are FTS5's, N is ours)
        for cid in cosines.keys() | bm25.keys():
            cos = max(cosines.get(cid, 0.0), 0.0) / top_cos
            lex = max(bm25.get(cid, 0.0), 0.0) / top_bm25
            fused[cid] = options.alpha * cos + (1.0 - options.alpha) * lex
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def bm25_ceiling(reader: IndexReader, match: str) -> float:
    """What FTS5's BM25 gives *match* (an ``fts_query``) for a chunk of average length that holds
    each of its words three times: the sum of the words' IDF (FTS5's: log((N - n + 0.5) / (n + 0.5)),
    at least 1e-6, n the chunks holding the word; a word FTS5 reads as several terms, such as
    ``err_disk_4711``, counts once, with its rarest term's; a word no chunk holds, not at all)
    times BM25's part for three
    occurrences, 3 (k1 + 1) / (3 + k1). A chunk matching only the query's common words scores a
    small share of it, one holding its rare words about all of it. 0 when unknown. Reads FTS5's
    own term counts (``reader.term_docs``): a few index lookups."""
    import sqlite3

    from semsearch.lexicon import stemmed

    total = max(reader.count, 1)
    idf = 0.0
    try:
        for word in match.split(" OR "):
            n = min(reader.term_docs(stemmed(word.strip('"'))), default=0)
            if n > 0:  # a word no chunk holds cannot be matched: it adds nothing to reach
                idf += max(math.log((total - n + 0.5) / (n + 0.5)), 1e-6)
    except sqlite3.Error:  # the tokenizer's in-memory database could not be made
        return 0.0
    return idf * _THRICE


# Lucene's English stop words (what BM25 baselines such as BEIR's Elasticsearch drop).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)


def fts_query(query: str) -> str:
    """An FTS5 query that matches any word of the text (each quoted, so no syntax leaks in).

    Stop words are dropped (they add matches to score and nothing to the ranking), unless the
    query has nothing else.
    """
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    words = ([w for w in words if w not in STOPWORDS] or words)[:64]
    # A word of CJK characters is the phrase of its pairs, as the index reads it (lexicon.words).
    return " OR ".join('"' + " ".join(lexicon_words(w).split()) + '"' for w in words)


def best_sentence(text: str, query: str) -> tuple[int, int] | None:
    """The span of the sentence in ``text`` sharing the most query words (rarer words weigh more).

    Lexical on purpose: a query must not embed any document text.
    """
    terms = {w.lower() for w in _WORD.findall(lexicon_words(query)) if len(w) > 2 or CJK.match(w)}
    if not terms:
        return None
    prefixes = {t[:5] for t in terms if len(t) > 5}  # w.startswith(t[:5]) <=> w[:5] == t[:5]
    best: tuple[float, int, int] | None = None
    start = 0
    for cut in [*_SENTENCE_BREAK.finditer(text), None]:
        end = cut.start() if cut is not None else len(text)
        sentence = text[start:end]
        words = {w.lower() for w in _WORD.findall(lexicon_words(sentence))}
        score = sum(len(w) for w in words if w in terms or w[:5] in prefixes)
        if score and (best is None or score > best[0]):
            lead = len(sentence) - len(sentence.lstrip())
            best = (score, start + lead, start + len(sentence.rstrip()))
        if cut is not None:
            start = cut.end()
    return (best[1], best[2]) if best else None
