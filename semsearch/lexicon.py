"""Words as the lexical index reads them: FTS5's ``porter unicode61 remove_diacritics 2`` tokenizer
(the local index's), run in an in-memory SQLite database. The PostgreSQL engine stores and queries
the same terms, so both engines rank by the same BM25."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

TOKENIZE = "porter unicode61 remove_diacritics 2"
# Chinese, Japanese and Korean are written without spaces between words, and FTS5's unicode61
# reads a whole run of such characters as one token: no word inside it could be found. Each run
# is read as its overlapping pairs of characters instead (Lucene's CJK bigrams): "图书馆" holds
# "图书" and "书馆", and a query word is the phrase of its pairs.
CJK_RANGES = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f"
CJK = re.compile(f"[{CJK_RANGES}]+")


def _pairs(run: re.Match[str]) -> str:
    text = run.group()
    if len(text) == 1:
        return f" {text} "
    return " " + " ".join(text[i : i + 2] for i in range(len(text) - 1)) + " "


def words(text: str) -> str:
    """*text* as the lexical index reads it: each run of CJK characters as its overlapping pairs
    (every other text unchanged)."""
    if not text or not CJK.search(text):
        return text
    return CJK.sub(_pairs, text)


MAX_POSITION = 16383  # a tsvector's largest position

_LOCAL = threading.local()  # per thread: in-memory FTS5 tables
RENEW_AFTER = 10_000  # words tokenized by one thread's tables before they are made afresh


def _fresh() -> object:
    """An in-memory database with the FTS5 tables the tokenizer runs in."""
    import sqlite3

    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute(f"CREATE VIRTUAL TABLE words USING fts5(x, tokenize='{TOKENIZE}')")
    conn.execute("CREATE VIRTUAL TABLE terms USING fts5vocab(words, row)")
    conn.execute(f"CREATE VIRTUAL TABLE docs USING fts5(text, context, tokenize='{TOKENIZE}')")
    conn.execute("CREATE VIRTUAL TABLE spots USING fts5vocab(docs, instance)")
    return conn


def _conn() -> object:
    """This thread's tables for one query word at a time, made afresh now and then: FTS5 keeps
    traces of deleted rows, and every later read goes through them."""
    conn = getattr(_LOCAL, "conn", None)
    uses = getattr(_LOCAL, "uses", 0)
    if conn is None or uses >= RENEW_AFTER:
        if conn is not None:
            conn.close()
        conn, uses = _fresh(), 0
        _LOCAL.conn = conn
    _LOCAL.uses = uses + 1
    return conn


def stemmed(text: str) -> list[str]:
    """The distinct terms FTS5 makes of *text* (in no particular order)."""
    conn = _conn()
    conn.execute("INSERT INTO words(rowid, x) VALUES (1, ?)", (words(text),))  # type: ignore[attr-defined]
    try:
        return [term for (term,) in conn.execute("SELECT term FROM terms")]  # type: ignore[attr-defined]
    finally:
        conn.execute("DELETE FROM words")  # type: ignore[attr-defined]


def phrase(word: str) -> list[str]:
    """The terms of one query word in order (``err_disk_4711`` -> err, disk, 4711: a phrase)."""
    conn = _conn()
    conn.execute("INSERT INTO docs(rowid, text, context) VALUES (1, ?, '')", (words(word),))  # type: ignore[attr-defined]
    try:
        rows = conn.execute("SELECT term, offset FROM spots ORDER BY offset").fetchall()  # type: ignore[attr-defined]
    finally:
        conn.execute("DELETE FROM docs")  # type: ignore[attr-defined]
    return [term for term, _ in rows]


def tsvectors(rows: Sequence[tuple[str, str]]) -> list[tuple[str, int]]:
    """For each (text, context), a tsvector literal of its terms with their positions (the context's
    after the text's, one position apart, so no phrase spans the two) and its number of terms:
    FTS5's document length, which BM25 divides by."""
    out: list[tuple[str, int]] = []
    for start in range(0, len(rows), 512):
        part = rows[start : start + 512]
        # Tables of their own for each batch, dropped after: deleting the rows instead left FTS5's
        # traces of them, and the query words tokenized later in the same thread took 1.4 ms each
        # instead of 0.01 after a 20,000-chunk load (a hybrid search 100 ms instead of 15).
        conn = _fresh()
        try:
            conn.executemany(  # type: ignore[attr-defined]
                "INSERT INTO docs(rowid, text, context) VALUES (?, ?, ?)",
                [(i + 1, words(text), words(context)) for i, (text, context) in enumerate(part)],
            )
            # Each document's text terms, then its context's ("text" > "context": DESC), in order.
            spots = conn.execute("SELECT doc, col, offset, term FROM spots ORDER BY doc, col DESC, offset").fetchall()  # type: ignore[attr-defined]
        finally:
            conn.close()  # type: ignore[attr-defined]
        by_doc: list[dict[str, list[int]]] = [{} for _ in part]
        lengths = [0] * len(part)
        text_end = 0  # the current document's text length in terms
        current = 0
        for doc, col, offset, term in spots:
            if doc != current:
                current, text_end = doc, 0
            if col == "text":
                position = offset + 1
                text_end = position
            else:
                position = text_end + 2 + offset
            found = by_doc[doc - 1].get(term)
            if found is None:
                by_doc[doc - 1][term] = [min(position, MAX_POSITION)]
            else:
                found.append(min(position, MAX_POSITION))
            lengths[doc - 1] += 1
        out.extend((literal(terms), length) for terms, length in zip(by_doc, lengths, strict=True))
    return out


_QUOTED: dict[str, str] = {}


def quote(term: str) -> str:
    """A term as a quoted tsvector / tsquery lexeme."""
    quoted = _QUOTED.get(term)
    if quoted is None:
        quoted = "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"
        if len(_QUOTED) < 200_000:
            _QUOTED[term] = quoted
    return quoted


def literal(terms: dict[str, list[int]]) -> str:
    """A tsvector's text form: 'term':1,5 ... (positions ascending and distinct; at most 256 a
    term, as PostgreSQL keeps)."""
    parts = []
    for term, positions in terms.items():
        if positions[-1] == MAX_POSITION:  # clamped: several may have become the same
            positions = sorted(set(positions))
        parts.append(f"{quote(term)}:{','.join(map(str, positions[:256]))}")
    return " ".join(parts)
