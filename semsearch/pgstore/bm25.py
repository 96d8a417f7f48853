"""BM25 in PostgreSQL, ranked as the local index's FTS5 ranks: k1 1.2, b 0.75, IDF
log((N - n + 0.5) / (n + 0.5)) at least 1e-6, document length the chunk's terms (text and context),
a query word of several terms (``err_disk_4711``) a phrase whose n is its rarest term's.

A query's terms are read from the postings table (term, chunk, count, chunk length), by an
index-only scan of each term's rows, as FTS5 reads its posting lists; a phrase's chunks are
checked for its words in order (``<->``) against their stored tsvector. (A build of schema 1 has
no postings: its candidates come from the GIN index on each chunk's tsvector, each reduced to the
query's terms and unnested: 10-20x slower, benchmarks/RESULTS.md. Its next update adds them.)

Common words match a large share of the chunks. The top k are found as MaxScore does (Turtle and
Flood 1995): the query's words by IDF, rarest first; only chunks holding one of the rarest few are
scored (over all the query's words), and more words are taken in while the k-th score so far does
not beat what the words left out could add to a chunk holding none of the taken ones (each at
most IDF x (k1 + 1)). The result is the same top k as scoring every match.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semsearch.lexicon import phrase, quote

K1, B = 1.2, 0.75
FIRST_ROWS = 50_000  # the rarest words whose postings together are at most about this many are scored first
TSVECTOR_ROWS = 2_000  # the same for a build of schema 1, where each candidate's tsvector is read


@dataclass(frozen=True)
class Word:
    terms: tuple[str, ...]  # in order (a phrase when several)
    n: int  # chunks holding it (its rarest term's count)
    idf: float

    @property
    def bound(self) -> float:
        """The most this word adds to a chunk's score."""
        return self.idf * (K1 + 1)

    def tsquery(self) -> str:
        return "(" + " <-> ".join(quote(t) for t in self.terms) + ")"


def words_of(match: str, term_docs: Callable[[Sequence[str]], list[int]], total: int) -> list[Word]:
    """The words of *match* (quoted words joined by OR) that some chunk holds, rarest first."""
    groups = [tuple(t) for t in (phrase(w.strip().strip('"')) for w in match.split(" OR ")) if t] if match else []
    flat = sorted({t for g in groups for t in g})
    docs = dict(zip(flat, term_docs(flat), strict=True))
    words = []
    for terms in groups:  # two words of the same terms ("runs running") count twice, as in FTS5
        n = min(docs.get(t, 0) for t in terms)
        if n > 0:
            words.append(Word(terms, n, max(math.log((total - n + 0.5) / (n + 0.5)), 1e-6)))
    return sorted(words, key=lambda w: (-w.idf, w.terms))


def ceiling(words: Sequence[Word]) -> float:
    """The sum of the words' IDF (``search.bm25_ceiling``'s, before its factor)."""
    return sum(w.idf for w in words)


_QUERY = (
    "WITH q AS (SELECT * FROM unnest(%(grp)s::int[], %(term)s::text[], %(idf)s::float8[], %(size)s::int[]) "
    "AS q(grp, term, idf, size))"
)
# Summed in the words' order: chunks of the same terms get the very same score (a tie, as in FTS5).
_SCORE = f"sum(idf * tf * {K1 + 1} / (tf + {K1} * ({1 - B} + {B}::float8 * len / %(avg)s::float8)) ORDER BY grp)"


def postings_statement(where: str, words: Sequence[Word], taken: int) -> str:
    """The k best chunks holding one of the words taken, scored over all the query's words, from
    the postings (``grp``/``term``/``idf``/``size``/``taken``: see :func:`params`). *where* limits
    the postings ``p`` read (visibility, scope). With words left out, their postings are read for
    the taken words' chunks only."""
    rows = (
        "SELECT p.chunk, q.grp, max(q.idf) AS idf, min(p.tf) AS tf, max(p.len) AS len, max(q.size) AS size "
        "FROM q JOIN postings p ON p.term = q.term WHERE {cond}" + where + " GROUP BY p.chunk, q.grp "
        "HAVING count(*) = max(q.size)"
    )
    if taken >= len(words):
        body = f", h AS ({rows.format(cond='true')})"
    else:
        body = (
            f", t AS ({rows.format(cond='q.grp < %(taken)s')}), "
            f"r AS ({rows.format(cond='q.grp >= %(taken)s AND p.chunk IN (SELECT chunk FROM t)')}), "
            "h AS (SELECT * FROM t UNION ALL SELECT * FROM r)"
        )
    holds = "bool_or(grp < %(taken)s AND size = 1)"
    if any(len(w.terms) > 1 for w in words[:taken]):  # a phrase: its words in order
        holds += (
            " OR (bool_or(grp < %(taken)s) AND EXISTS (SELECT 1 FROM chunks c WHERE c.id = h.chunk "
            "AND c.lex @@ %(tsq)s::tsquery))"
        )
    return f"{_QUERY}{body} SELECT chunk, {_SCORE} AS s FROM h GROUP BY chunk HAVING {holds} ORDER BY s DESC, chunk LIMIT %(k)s"


def statement(visible: str, where: str) -> str:
    """A build of schema 1 (no postings): the k best chunks holding one of the words taken
    (``tsq``), scored over all the query's words from their tsvectors."""
    return (
        "WITH q AS (SELECT * FROM unnest(%(grp)s::int[], %(term)s::text[], %(idf)s::float8[], %(size)s::int[]) "
        "AS q(grp, term, idf, size)), "
        f"hit AS (SELECT c.id, c.lex_len, ts_filter(setweight(c.lex, 'A', %(terms)s), '{{a}}') AS lex "
        f"FROM chunks c WHERE c.lex @@ %(tsq)s::tsquery AND {visible}{where}), "
        "g AS (SELECT h.id, h.lex_len, q.grp, max(q.idf) AS idf, min(array_length(u.positions, 1)) AS tf, "
        "count(*) AS n, max(q.size) AS size FROM hit h CROSS JOIN LATERAL unnest(h.lex) AS u "
        "JOIN q ON q.term = u.lexeme GROUP BY h.id, h.lex_len, q.grp) "
        f"SELECT id, sum(idf * tf * {K1 + 1} / (tf + {K1} * ({1 - B} + {B} * lex_len / %(avg)s))) AS s "
        "FROM g WHERE n = size GROUP BY id ORDER BY s DESC, id LIMIT %(k)s"
    )


def params(words: Sequence[Word], taken: int, k: int, avg: float, extra: Mapping[str, Any]) -> dict[str, Any]:
    grp, term, idf, size = [], [], [], []
    for g, word in enumerate(words):
        distinct = list(dict.fromkeys(word.terms))
        for t in distinct:
            grp.append(g)
            term.append(t)
            idf.append(word.idf)
            size.append(len(distinct))
    return {
        **extra, "grp": grp, "term": term, "idf": idf, "size": size, "terms": sorted(set(term)),
        "tsq": " | ".join(w.tsquery() for w in words[:taken]), "avg": avg, "k": k, "taken": taken,
    }  # fmt: skip


def first_taken(words: Sequence[Word], budget: int = FIRST_ROWS) -> int:
    """How many of the rarest words to score first: at least one, while their chunks together
    stay within *budget*."""
    taken, rows = 0, 0
    for word in words:
        if taken and rows + word.n > budget:
            break
        taken += 1
        rows += word.n
    return taken


def enough(found: Sequence[tuple[int, float]], k: int, words: Sequence[Word], taken: int) -> bool:
    """Whether the top k are known: all words taken, or the k-th score beats what the words
    left out could give a chunk that holds none of the taken ones."""
    if taken >= len(words):
        return True
    return len(found) >= k and found[k - 1][1] > sum(w.bound for w in words[taken:])


def more(words: Sequence[Word], taken: int, budget: int = FIRST_ROWS) -> int:
    """Take in words until the scored chunks about double (at least one more word)."""
    rows = sum(w.n for w in words[:taken])
    target = max(2 * rows, budget)
    while taken < len(words) and (rows < target or taken == 0):
        rows += words[taken].n
        taken += 1
        if rows >= target:
            break
    return taken
