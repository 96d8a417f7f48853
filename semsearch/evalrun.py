"""Run judged queries against an index and score the ranked distinct documents (no printing).

Intended CLI (wired in ``semsearch/cli.py``)::

    semsearch eval --queries QUERIES.jsonl --qrels QRELS.tsv
                   [--mode semantic|lexical|hybrid]   (default: search.DEFAULT_MODE)
                   [--id-mode stem|name|relpath]      (how a hit's file maps to a document id;
                                                       default stem: file name without extension)
                   [--depth 100]                      (distinct documents ranked per query)
                   [--rerank [--rerank-model M] [--rerank-depth N]]
                   [--index DIR] [--json]

It prints nDCG@10, Recall@10, Recall@100, MRR@10, the number of evaluated queries and the
query latency p50/p95 (ms); ``--json`` prints :meth:`EvalResult.to_dict` instead.

Each query runs through :meth:`Searcher.search` with ``files_only=True``, exactly as
``semsearch query -l`` would, so the measured latency is what users get (the query model is
loaded before timing starts). Hits are mapped to document ids with
:func:`semsearch.evaluate.doc_id_from_path` (paths relative to the folder that holds the index
for ``relpath``) and scored with :func:`semsearch.evaluate.evaluate_run`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from semsearch.errors import InvalidOptionError
from semsearch.evaluate import EvalReport, Query, distinct_in_order, doc_id_from_path, evaluate_run, latency_summary
from semsearch.scope import Scope
from semsearch.search import DEFAULT_FUSION, DEFAULT_MODE, MODES, Searcher, SearchOptions
from semsearch.store import IndexReader

__all__ = ["EvalResult", "ranked_documents", "run_evaluation"]


@dataclass
class EvalResult:
    """Metrics of one evaluation run plus what it cost per query."""

    report: EvalReport
    latencies: list[float]  # seconds per query, in query order
    mode: str
    depth: int
    id_mode: str
    queries_run: int
    run: dict[str, list[str]] = field(default_factory=dict)  # query id -> ranked distinct doc ids
    not_asked: int = 0  # judged queries (with a relevant document) that the queries file lacks
    ids_matched: int = -1  # distinct ranked document ids found among the judged ones (0: wrong --id-mode?)
    reranker: str = ""  # the re-ranking model, when the hits were re-ranked

    @property
    def latency(self) -> dict[str, float]:
        """{"p50_ms", "p95_ms", "mean_ms"}; zeros when no query ran."""
        if not self.latencies:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "mean_ms": 0.0}
        return latency_summary(self.latencies)

    def summary(self) -> dict[str, float | int | str]:
        """The headline figures (what the CLI prints)."""
        r = self.report
        return {
            "mode": self.mode + (" + rerank" if self.reranker else ""),
            "ndcg@10": r.ndcg_at_10,
            "recall@10": r.recall_at_10,
            "recall@100": r.recall_at_100,
            "mrr@10": r.mrr_at_10,
            "queries": r.num_queries,
            **self.latency,
        }

    def to_dict(self, per_query: bool = False) -> dict[str, object]:
        """JSON-serialisable result; per-query metrics only when asked (they are long)."""
        out: dict[str, object] = {
            **self.summary(),
            "depth": self.depth,
            "id_mode": self.id_mode,
            **({"reranker": self.reranker} if self.reranker else {}),
            "queries_run": self.queries_run,
            "judged_not_asked": self.not_asked,
            "metrics": dict(self.report.metrics),
        }
        if per_query:
            out["per_query"] = self.report.per_query
        return out


def ranked_documents(
    reader: IndexReader,
    searcher: Searcher,
    text: str,
    *,
    mode: str,
    id_mode: str = "stem",
    depth: int = 100,
    fusion: str = DEFAULT_FUSION,
    scope: Scope | None = None,
    rerank: Mapping[str, Any] | None = None,
) -> list[str]:
    """Distinct document ids for one query, best first (at most ``depth``); *rerank*: the
    SearchOptions fields of a re-ranking."""
    options = SearchOptions(top_k=depth, mode=mode, files_only=True, fusion=fusion, scope=scope, **(rerank or {}))
    hits = searcher.search(text, options)
    root = reader.index_dir.parent
    ids = []
    for hit in hits:
        path = str(hit.chunk.path)
        if id_mode == "relpath":
            path = os.path.relpath(path, root)
        ids.append(doc_id_from_path(path, id_mode))
    return distinct_in_order(ids)[:depth]


def run_evaluation(
    reader: IndexReader,
    searcher: Searcher,
    queries: Sequence[Query],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    mode: str = DEFAULT_MODE,
    id_mode: str = "stem",
    depth: int = 100,
    fusion: str = DEFAULT_FUSION,
    scope: Scope | None = None,
    rerank: Mapping[str, Any] | None = None,
    only_judged: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run every (judged) query, rank distinct documents, and score them against ``qrels``.

    Queries without a relevant judgment are skipped when ``only_judged`` (they cannot change
    the means). The means are over the judged queries that were asked: judged queries missing
    from ``queries`` (e.g. a held-out subset of the query file) are counted in ``not_asked``,
    not scored as failures (BEIR and trec_eval without -c do the same). Raises ValueError for
    an unknown mode or id mode, or a depth below 10 (InvalidOptionError, a ValueError).
    *rerank*: re-rank each query's hits (the SearchOptions fields ``rerank``, ``rerank_model``,
    ``rerank_depth``); the re-ranker is loaded before the timed part too.
    """
    if mode not in MODES:
        raise InvalidOptionError(f"{{mode}} must be one of {', '.join(MODES)} (got {mode})", options=("mode",))
    doc_id_from_path("x", id_mode)  # validates id_mode
    if depth < 10:
        raise InvalidOptionError(f"{{depth}} must be at least 10 (got {depth})", options=("depth",))
    relevant = {qid for qid, judged in qrels.items() if any(rel > 0 for rel in judged.values())}
    todo = [q for q in queries if not only_judged or q.id in relevant]
    if todo and mode != "lexical":
        searcher.embed(todo[0].text)  # load the query model outside the timed part
    reranker = ""
    if rerank:
        reranker = searcher.reranker(rerank.get("rerank_model")).name  # loaded outside the timed part too
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    for number, query in enumerate(todo, 1):
        if not query.text.strip():
            run[query.id] = []
            continue
        started = time.perf_counter()
        run[query.id] = ranked_documents(
            reader, searcher, query.text, mode=mode, id_mode=id_mode, depth=depth, fusion=fusion, scope=scope,
            rerank=rerank,
        )  # fmt: skip
        latencies.append(time.perf_counter() - started)
        if on_progress is not None:
            on_progress(number, len(todo))
    asked = {q.id for q in queries}
    report = evaluate_run(run, {qid: judged for qid, judged in qrels.items() if qid in asked})
    judged_ids = {doc for judged in qrels.values() for doc in judged}
    matched = len({doc for docs in run.values() for doc in docs} & judged_ids)
    return EvalResult(
        report, latencies, mode, depth, id_mode, len(todo), run, len(relevant - asked), matched, reranker
    )  # fmt: skip
