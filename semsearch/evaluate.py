"""Information-retrieval evaluation helpers (BEIR-compatible), stdlib only.

This module is pure: it reads query and relevance-judgment files, scores a
ranked run against those judgments and summarises latencies. It performs no
retrieval itself and imports nothing heavy, so it is cheap to import from the
CLI and from tests.

Metric definitions follow BEIR / ``pytrec_eval``:

* **nDCG@k** -- graded, linear gains: ``DCG = sum(rel_i / log2(i + 1))`` over
  ranks ``i = 1..k`` of the run; the ideal DCG uses the query's judged
  relevances sorted in decreasing order, cut at ``k``. Judgments with
  ``rel <= 0`` contribute no gain.
* **Recall@k** -- relevant documents (``rel > 0``) in the top ``k`` divided by
  the number of relevant documents for the query.
* **MRR@k** -- ``1 / rank`` of the first relevant document in the top ``k``,
  else ``0``.

Means are taken over the evaluated queries: every query in the qrels that has
at least one relevant document. Queries judged but absent from the run score
zero; queries in the run but not in the qrels are ignored.

Differences from BEIR's ``EvaluateRetrieval.evaluate``: the run is taken as an
already-ranked list (no score sorting or tie-breaking), and documents whose id
equals the query id are *not* dropped (BEIR's ``ignore_identical_ids``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath

from semsearch.errors import InvalidOptionError

__all__ = [
    "EvalInputError",
    "EvalReport",
    "Query",
    "distinct_in_order",
    "doc_id_from_path",
    "evaluate_run",
    "latency_summary",
    "load_qrels",
    "load_queries",
]

#: k values that always get evaluated, because :class:`EvalReport` has fields for them.
_REQUIRED_KS = (10, 100)
_DOC_ID_MODES = ("stem", "name", "relpath")


class EvalInputError(ValueError):
    """A queries or qrels file is malformed. The message names the file and line."""


@dataclass(frozen=True)
class Query:
    """One evaluation query."""

    id: str
    text: str


@dataclass
class EvalReport:
    """Mean metrics over the evaluated queries, plus per-query values.

    ``per_query`` maps query id to metric name (``"ndcg@10"``, ``"recall@10"``,
    ``"recall@100"``, ``"mrr@10"`` and the same metrics for any extra k values)
    to that query's value. ``metrics`` holds the means under the same names.
    When no query has a relevant document, ``num_queries`` is 0 and every mean
    is 0.0.
    """

    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    num_queries: int
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-serialisable dict (deep copy) of the report."""
        return asdict(self)


# --------------------------------------------------------------------------- #
# Input parsing
# --------------------------------------------------------------------------- #


def _read_lines(path: Path) -> list[str]:
    """Read ``path`` as UTF-8 (optional BOM) and split into lines, CRLF or LF.

    Splits on ``\\n`` only (not :meth:`str.splitlines`) so characters such as
    U+2028 inside JSON strings do not break a record in two.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise EvalInputError(f"{path}:{line_no}: not valid UTF-8") from None
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def load_queries(path: Path) -> list[Query]:
    """Load BEIR queries: JSON Lines, one object per line with ``_id`` and ``text``.

    Other keys are ignored, blank lines skipped; CRLF and a UTF-8 BOM are
    tolerated. ``_id`` may be a JSON string or integer (integers are converted
    to strings). Order is preserved.

    Raises:
        EvalInputError: on invalid JSON, a non-object line, a missing or
            mistyped ``_id``/``text``, or a duplicate ``_id``.
    """
    queries: list[Query] = []
    seen: set[str] = set()
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise EvalInputError(f"{where}: expected a JSON object")
        qid = obj.get("_id")
        if isinstance(qid, int) and not isinstance(qid, bool):
            qid = str(qid)
        if not isinstance(qid, str) or not qid:
            raise EvalInputError(f"{where}: missing or invalid '_id'")
        text = obj.get("text")
        if not isinstance(text, str):
            raise EvalInputError(f"{where}: missing or invalid 'text'")
        if qid in seen:
            raise EvalInputError(f"{where}: duplicate query id {qid!r}")
        seen.add(qid)
        queries.append(Query(id=qid, text=text))
    return queries


def _parse_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Load relevance judgments as ``{query_id: {doc_id: relevance}}``.

    Two formats are accepted, chosen per line:

    * BEIR TSV (line contains a tab): ``query-id<TAB>corpus-id<TAB>score``.
    * TREC qrels (no tab): ``qid iteration docid rel``, whitespace separated;
      the iteration column is ignored.

    The first non-blank line is treated as a header (and skipped) if its score
    column is not an integer; anywhere else that is an error. Blank lines are
    skipped; CRLF and a UTF-8 BOM are tolerated. Relevance may be graded and
    ``<= 0`` means not relevant (such judgments are kept in the result).
    If a (query, doc) pair is repeated the last value wins, as in
    ``pytrec_eval``.

    Raises:
        EvalInputError: on a wrong column count, an empty id, or a
            non-integer score outside the header line.
    """
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        is_first, first = first, False
        if "\t" in line:
            cols = [c.strip() for c in line.split("\t")]
            if len(cols) != 3:
                raise EvalInputError(
                    f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}"
                )
            qid, doc_id, score_s = cols
        else:
            cols = line.split()
            if len(cols) != 4:
                raise EvalInputError(
                    f"{where}: expected 3 tab-separated columns or 4 "
                    f"whitespace-separated TREC columns (qid iter docid rel), "
                    f"got {len(cols)}"
                )
            qid, _iteration, doc_id, score_s = cols
        score = _parse_int(score_s)
        if score is None:
            if is_first:
                continue  # header line
            raise EvalInputError(f"{where}: score {score_s!r} is not an integer")
        if not qid or not doc_id:
            raise EvalInputError(f"{where}: empty query id or document id")
        qrels.setdefault(qid, {})[doc_id] = score
    return qrels


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


def _dcg(gains: Iterable[float]) -> float:
    """Sum of ``gain / log2(rank + 1)`` with ranks starting at 1."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def _query_metrics(ranked: Sequence[str], judged: Mapping[str, int], ks: Sequence[int]) -> dict[str, float]:
    relevant = {doc: rel for doc, rel in judged.items() if rel > 0}
    ideal = sorted(relevant.values(), reverse=True)
    gains = [max(judged.get(doc, 0), 0) for doc in ranked[: max(ks)]]
    first_hit = next((i for i, g in enumerate(gains, start=1) if g > 0), None)

    out: dict[str, float] = {}
    for k in ks:
        idcg = _dcg(ideal[:k])
        out[f"ndcg@{k}"] = _dcg(gains[:k]) / idcg if idcg > 0 else 0.0
    for k in ks:
        hits = sum(1 for g in gains[:k] if g > 0)
        out[f"recall@{k}"] = hits / len(relevant)
    for k in ks:
        out[f"mrr@{k}"] = 1.0 / first_hit if first_hit is not None and first_hit <= k else 0.0
    return out


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    k_values: Sequence[int] = (10, 100),
) -> EvalReport:
    """Score a ranked run against qrels (see the module docstring for metrics).

    Args:
        run: query id -> ranked list of distinct document ids, best first.
        qrels: query id -> {document id: relevance}; ``rel <= 0`` is not relevant.
        k_values: cut-offs to compute nDCG, Recall and MRR at. 10 and 100 are
            always included because the report has fixed fields for them.

    Returns:
        An :class:`EvalReport` with means over queries that have at least one
        relevant document; judged queries missing from ``run`` score 0.

    Raises:
        ValueError: if a k is not a positive integer or a ranked list contains
            a document id twice (deduplicate first, e.g. with
            :func:`distinct_in_order`).
    """
    for k in k_values:
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k values must be positive integers, got {k!r}")
    ks = sorted(set(k_values) | set(_REQUIRED_KS))

    per_query: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        if not any(rel > 0 for rel in judged.values()):
            continue
        ranked = run.get(qid, ())
        if len(set(ranked)) != len(ranked):
            raise ValueError(f"run for query {qid!r} contains duplicate document ids")
        per_query[qid] = _query_metrics(ranked, judged, ks)

    n = len(per_query)
    names = [f"{m}@{k}" for m in ("ndcg", "recall", "mrr") for k in ks]
    means = {name: (math.fsum(q[name] for q in per_query.values()) / n if n else 0.0) for name in names}
    return EvalReport(
        ndcg_at_10=means["ndcg@10"],
        recall_at_10=means["recall@10"],
        recall_at_100=means["recall@100"],
        mrr_at_10=means["mrr@10"],
        num_queries=n,
        per_query=per_query,
        metrics=means,
    )


# --------------------------------------------------------------------------- #
# Latency and id helpers
# --------------------------------------------------------------------------- #


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default ``method="linear"``)."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Summarise per-query latencies given in seconds.

    Percentiles use linear interpolation between closest ranks, the same as
    ``numpy.percentile``'s default (position ``(n - 1) * q`` in the sorted
    values). Returns ``{"p50_ms", "p95_ms", "mean_ms"}`` in milliseconds.

    Raises:
        ValueError: if ``seconds`` is empty or holds a negative or non-finite value.
    """
    if not seconds:
        raise ValueError("latency_summary needs at least one measurement")
    values = sorted(float(s) for s in seconds)
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError("latencies must be finite and non-negative")
    return {
        "p50_ms": _percentile(values, 0.50) * 1000.0,
        "p95_ms": _percentile(values, 0.95) * 1000.0,
        "mean_ms": math.fsum(values) / len(values) * 1000.0,
    }


def doc_id_from_path(path: str, mode: str = "stem") -> str:
    """Map a hit's file path to a corpus document id.

    Modes: ``"stem"`` -- file name without its last extension
    (``"a/12.txt"`` -> ``"12"``, ``"a/x.tar.gz"`` -> ``"x.tar"``);
    ``"name"`` -- file name (``"12.txt"``); ``"relpath"`` -- the path exactly
    as given. Separators follow the running OS (``pathlib.PurePath``).

    Raises:
        ValueError: for an unknown mode.
    """
    if mode == "relpath":
        return str(path)
    if mode == "stem":
        return PurePath(path).stem
    if mode == "name":
        return PurePath(path).name
    raise InvalidOptionError(
        f"{{id_mode}} must be one of {', '.join(_DOC_ID_MODES)} (got {mode})", options=("id_mode",)
    )


def distinct_in_order(ids: Iterable[str]) -> list[str]:
    """Drop repeated ids, keeping each one's first (best) position.

    Use it to turn chunk-level hits (several per file) into the ranked list of
    distinct documents that :func:`evaluate_run` expects.
    """
    return list(dict.fromkeys(ids))
