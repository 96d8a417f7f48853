"""The questions an index answers: search, similar passages, near-duplicates, scores on judged
queries. :class:`IndexQueries` is a base of :class:`semsearch.api.Index`, which opens the
snapshot (the reader and the query model) these read."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from semsearch.errors import InvalidOptionError

if TYPE_CHECKING:
    from semsearch.duplicates import Duplicates
    from semsearch.evalrun import EvalResult
    from semsearch.evaluate import Query
    from semsearch.scope import Scope
    from semsearch.search import Hit, Searcher
    from semsearch.topics import Topic, Topics

__all__ = ["MAX_HITS", "IndexQueries"]

# A k (or eval's depth) over this returns the same as this: every passage of any index there
# can be. Larger ones overflowed SQLite's integers (a traceback for -k 99999999999999999999).
MAX_HITS = 1 << 31


class IndexQueries:
    """The searches of :class:`semsearch.api.Index`. Several may run from several threads at once."""

    def _open_searcher(self) -> Searcher:
        """The searcher over the index's current snapshot (:class:`semsearch.api.Index` opens it)."""
        raise NotImplementedError

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: str | None = None,
        min_score: float | None = None,
        files_only: bool = False,
        fusion: str | None = None,
        alpha: float = 0.5,
        distinct_places: bool = True,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        globs: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        types_not: Sequence[str] | None = None,
        changed_within: Any = None,
        changed_before: Any = None,
        scope: Scope | None = None,
        rerank: bool = False,
        rerank_model: str | None = None,
        rerank_depth: int | None = None,
    ) -> list[Hit]:
        """The *k* passages (or files, with *files_only*) that best match *query*, best first.

        *mode*: "hybrid" (default: cosine blended with BM25), "semantic" or "lexical". Each
        hit's ``score`` is the one it is ranked by (hybrid: the blend, ``scores["fused"]``);
        ``scores`` has each side's. *min_score* drops hits under that cosine similarity
        (``scores["cosine"]``), in every mode. A place is returned once: of hits whose emphasized
        sentence is at the same place (overlapping chunks), the better is kept (*distinct_places*
        False: every chunk as ranked). *fusion* ("ceiling", the default: BM25 over what a chunk
        holding each of the query's words three times would score; "convex": over the best
        candidate's; or "rrf") and *alpha* (the cosine side's weight) say how hybrid mode blends
        the two sides.

        Filters (applied before the top-*k* cut, so *k* hits come back whenever *k* chunks pass):
        *paths*, files or folders (relative to the current folder) the hits must be in; *globs*,
        gitignore-style patterns on the path below the index's folder (``!`` excludes); *types*
        and *types_not*, file type names (:data:`semsearch.scope.TYPES`, ``code``, ``docs``);
        *changed_within*, a duration ("7d", seconds, a timedelta) and *changed_before*, a date
        ("2026-11-01", a datetime) or a duration back from now, on the modification time
        recorded at index time; or a ready :class:`semsearch.scope.Scope` as *scope*.

        *rerank*: score the best *rerank_depth* hits (default
        :data:`semsearch.search.DEFAULT_RERANK_DEPTH`) again with a cross-encoder, *rerank_model*
        (a sentence-transformers CrossEncoder folder or cached name, or a ``/rerank`` URL; None:
        ``SEMSEARCH_RERANK_MODEL``, else :data:`semsearch.models.rerank.DEFAULT_RERANK_MODEL`), and
        order them by it (``score`` and ``scores["rerank"]``); :mod:`semsearch.models.rerank`.

        Raises :class:`InvalidOptionError` for bad arguments, :class:`IndexNotFoundError` /
        :class:`IndexCorruptError` for the index, :class:`ModelError` for a re-ranker that cannot
        be loaded or reached.
        """
        return self._open_searcher().search(
            query,
            self._search_options(
                k,
                mode=mode,
                min_score=min_score,
                files_only=files_only,
                fusion=fusion,
                alpha=alpha,
                distinct_places=distinct_places,
                scope=_scope(scope, paths, globs, types, types_not, changed_within, changed_before),
                **_rerank_options(rerank, rerank_model, rerank_depth),
            ),
        )

    @staticmethod
    def _search_options(k: int, **given: Any) -> Any:
        from semsearch.search import DEFAULT_MODE, SearchOptions

        if k < 1:
            raise InvalidOptionError(f"{{k}} must be at least 1 (got {k})", options=("k",))
        given["mode"] = given.get("mode") or DEFAULT_MODE
        if given.get("fusion") is None:
            given.pop("fusion", None)  # SearchOptions' default
        options = SearchOptions(top_k=min(k, MAX_HITS), **given)
        options.validate()
        return options

    def similar(
        self,
        target: str | os.PathLike[str],
        *,
        line: int | None = None,
        page: int | None = None,
        k: int = 10,
        min_score: float | None = None,
        files_only: bool = False,
        include_self: bool = False,
        method: str | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        globs: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        types_not: Sequence[str] | None = None,
        changed_within: Any = None,
        changed_before: Any = None,
        scope: Scope | None = None,
    ) -> list[Hit]:
        """Passages (or files) like the one at *target*: ``PATH``, ``PATH:LINE`` or ``PATH#PAGE``
        (or give *line* / *page*). A line means the chunk that holds it, a page that page's
        chunks, a bare path the whole file. Only the index is read: no model is loaded. The
        file itself is left out unless *include_self*; filters as for :meth:`search`.
        *method* ("mean" or "max") says how a start of several chunks becomes one search
        (:mod:`semsearch.similar`)."""
        from semsearch.similar import DEFAULT_METHOD, Target, similar

        where = Target.parse(os.fspath(target))
        if line is not None or page is not None:
            where = Target(where.path, line=line, page=page)
        options = self._search_options(
            k,
            mode="semantic",
            min_score=min_score,
            files_only=files_only,
            scope=_scope(scope, paths, globs, types, types_not, changed_within, changed_before),
        )
        reader = self._open_searcher().reader
        return similar(reader, where, options, include_self=include_self, method=method or DEFAULT_METHOD)

    def duplicates(
        self,
        *,
        min_score: float | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        globs: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        types_not: Sequence[str] | None = None,
        changed_within: Any = None,
        changed_before: Any = None,
        scope: Scope | None = None,
    ) -> Duplicates:
        """Near-duplicate passages of different files (cosine >= *min_score*, default
        :data:`semsearch.duplicates.DEFAULT_MIN_SCORE`), grouped, most text per file first, and the
        pairs of files that share them; only among files in the filters' scope."""
        from semsearch.duplicates import DEFAULT_MIN_SCORE, find_duplicates

        reader = self._open_searcher().reader
        return find_duplicates(
            reader,
            min_score=DEFAULT_MIN_SCORE if min_score is None else min_score,
            scope=_scope(scope, paths, globs, types, types_not, changed_within, changed_before),
        )

    def topics(
        self,
        *,
        files: bool = False,
        min_size: int | None = None,
        depth: int = 1,
        seed: int | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        globs: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        types_not: Sequence[str] | None = None,
        changed_within: Any = None,
        changed_before: Any = None,
        scope: Scope | None = None,
    ) -> Topics:
        """The passages in the filters' scope (or their files, with *files*) grouped into topics,
        largest first, each named by its distinctive words, with its most central passages and its
        files; what fits no topic is counted apart. *min_size*: the fewest members of a topic
        (default: about 1 in 100, 5 to 100); *depth* 2 splits each topic into subtopics; *seed*
        fixes the random choices (the same index and options give the same topics). Read from
        the stored vectors: no model is loaded (:mod:`semsearch.topics`)."""
        from semsearch.topics import SEED, TopicOptions, find_topics

        options = TopicOptions(files=files, min_size=min_size, depth=depth, seed=SEED if seed is None else seed)
        reader = self._open_searcher().reader
        return find_topics(
            reader, options, scope=_scope(scope, paths, globs, types, types_not, changed_within, changed_before)
        )

    def topic_hits(self, topic: Topic) -> Iterator[Hit]:
        """A topic's passages (from :meth:`topics`), most central first, as hits whose score is
        the cosine to the topic's centre (passages removed since are left out)."""
        from semsearch.search import Hit

        reader = self._open_searcher().reader
        for start in range(0, len(topic.members), 1000):
            ids = topic.members[start : start + 1000]
            records = reader.fetch_chunks(ids)
            for k, cid in enumerate(ids):
                if cid in records:
                    yield Hit(rank=start + k + 1, score=topic.scores[start + k], chunk=records[cid])

    def topic_map(self, topics: Topics, path: str | os.PathLike[str], *, title: str = "Topics") -> int:
        """Draw *topics* (from :meth:`topics` on this index) to *path*: a self-contained HTML page
        (hover a point to read it, click to copy ``PATH:LINE``) or an SVG; the points drawn."""
        from pathlib import Path

        from semsearch.topicmap import write_map

        return write_map(self._open_searcher().reader, topics, Path(path), title=title)

    def search_many(self, queries: Iterable[str], **options: Any) -> Iterator[tuple[str, list[Hit]]]:
        """(query, hits) for each query, the model loaded once; *options* as for :meth:`search`."""
        if isinstance(queries, str):
            queries = [queries]  # one query, not its characters
        for query in queries:
            yield query, self.search(query, **options)

    def load_model(self) -> None:
        """Load the query model now (a search loads it on first need)."""
        self._open_searcher().embedder()

    def evaluate(
        self,
        queries: Sequence[Query] | Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        mode: str | None = None,
        id_mode: str = "stem",
        depth: int = 100,
        fusion: str | None = None,
        scope: Scope | None = None,
        rerank: bool = False,
        rerank_model: str | None = None,
        rerank_depth: int | None = None,
    ) -> EvalResult:
        """Score the index on judged queries (BEIR style): nDCG@10, recall, MRR, latency.

        *queries*: {query id: text}, or :class:`semsearch.evaluate.Query` objects (what
        :func:`semsearch.evaluate.load_queries` reads from a BEIR file); *qrels*: {query id:
        {document id: relevance}} (:func:`semsearch.evaluate.load_qrels`). A hit's document id is
        its file name without extension (*id_mode* "name" keeps it, "relpath" is the path below
        the index's folder). *rerank*, *rerank_model* and *rerank_depth* as for :meth:`search`.
        """
        from semsearch.evalrun import run_evaluation
        from semsearch.evaluate import Query
        from semsearch.search import DEFAULT_FUSION, DEFAULT_MODE

        if isinstance(queries, Mapping):
            queries = [Query(str(qid), str(text)) for qid, text in queries.items()]

        searcher = self._open_searcher()
        try:
            return run_evaluation(
                searcher.reader,
                searcher,
                queries,
                qrels,
                mode=mode or DEFAULT_MODE,
                id_mode=id_mode,
                depth=min(depth, MAX_HITS),
                fusion=fusion or DEFAULT_FUSION,
                scope=scope,
                rerank=_rerank_options(rerank, rerank_model, rerank_depth),
            )
        except InvalidOptionError:
            raise
        except ValueError as exc:
            raise InvalidOptionError(str(exc)) from None


def _rerank_options(rerank: bool, model: str | None, depth: int | None) -> dict[str, Any]:
    """The SearchOptions fields of a re-ranking (none when *rerank* is off)."""
    if not rerank:
        if model is not None or depth is not None:
            raise InvalidOptionError("{rerank_model} and {rerank_depth} need {rerank}", options=("rerank",))
        return {}
    given: dict[str, Any] = {"rerank": True, "rerank_model": model}
    if depth is not None:
        given["rerank_depth"] = depth
    return given


def _scope(scope: Scope | None, *filters: Any) -> Scope | None:
    from semsearch.scope import scope_of

    return scope_of(*filters, scope=scope)
