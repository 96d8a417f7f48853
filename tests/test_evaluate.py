"""Tests for semsearch.evaluate, with hand-computed expected values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from semsearch.evaluate import (
    EvalInputError,
    EvalReport,
    Query,
    distinct_in_order,
    doc_id_from_path,
    evaluate_run,
    latency_summary,
    load_qrels,
    load_queries,
)

LOG2_3 = math.log2(3)  # 1.5849625...; 1/LOG2_3 = 0.6309297...

# A tiny judged set.
QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0},  # graded; d3 judged NOT relevant
    "q2": {"d4": 1},  # relevant doc sits at rank 11 in the run
    "q3": {"d5": 1},  # run retrieves nothing relevant
    "q4": {"d7": 0},  # no relevant docs -> skipped entirely
    "q5": {"d8": 1},  # relevant doc at rank 2
    "q6": {"d9": 1},  # absent from the run -> counts as zero
}
FILLER = [f"n{i}" for i in range(1, 11)]  # ten non-relevant docs
RUN = {
    "q1": ["d2", "d3", "d1", "n1"],
    "q2": [*FILLER, "d4"],
    "q3": ["n1", "n2"],
    "q4": ["d7"],
    "q5": ["n1", "d8"],
    "extra": ["d1"],  # not in qrels -> ignored
}


def test_per_query_metrics() -> None:
    rep = evaluate_run(RUN, QRELS)
    pq = rep.per_query

    # q1: gains by rank = [1 (d2), 0 (d3 rel=0), 2 (d1), 0]
    #   DCG  = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 0 + 1 = 2
    #   IDCG = 2/log2(2) + 1/log2(3)             = 2 + 0.6309 = 2.6309
    #   nDCG = 2 / 2.6309 = 0.76019
    assert pq["q1"]["ndcg@10"] == pytest.approx(2 / (2 + 1 / LOG2_3))
    assert pq["q1"]["ndcg@10"] == pytest.approx(0.7601875, abs=1e-6)
    assert pq["q1"]["recall@10"] == 1.0  # 2 of 2 relevant (d3 is rel 0)
    assert pq["q1"]["mrr@10"] == 1.0  # first relevant at rank 1

    # q2: d4 at rank 11 -> outside the top 10, inside the top 100
    assert pq["q2"]["ndcg@10"] == 0.0
    assert pq["q2"]["recall@10"] == 0.0
    assert pq["q2"]["recall@100"] == 1.0
    assert pq["q2"]["mrr@10"] == 0.0
    # nDCG@100 = (1/log2(12)) / (1/log2(2)) = 1/3.58496 = 0.27894
    assert pq["q2"]["ndcg@100"] == pytest.approx(1 / math.log2(12))

    # q3: nothing relevant retrieved
    assert pq["q3"] == {k: 0.0 for k in pq["q3"]}

    # q4 has no relevant docs -> not evaluated; "extra" is not judged
    assert "q4" not in pq and "extra" not in pq

    # q5: relevant at rank 2 -> DCG = 1/log2(3), IDCG = 1 -> nDCG = 0.6309; MRR = 1/2
    assert pq["q5"]["ndcg@10"] == pytest.approx(1 / LOG2_3)
    assert pq["q5"]["mrr@10"] == 0.5
    assert pq["q5"]["recall@10"] == 1.0

    # q6: missing from run -> zeros, but still counted
    assert pq["q6"]["ndcg@10"] == 0.0 and pq["q6"]["recall@100"] == 0.0


def test_means_over_evaluated_queries() -> None:
    rep = evaluate_run(RUN, QRELS)
    # evaluated: q1, q2, q3, q5, q6 (q4 skipped) -> n = 5
    assert rep.num_queries == 5
    # nDCG@10   = (0.76019 + 0 + 0 + 0.63093 + 0) / 5 = 0.27822
    assert rep.ndcg_at_10 == pytest.approx((2 / (2 + 1 / LOG2_3) + 1 / LOG2_3) / 5)
    assert rep.ndcg_at_10 == pytest.approx(0.2782235, abs=1e-6)
    # Recall@10 = (1 + 0 + 0 + 1 + 0) / 5 = 0.4
    assert rep.recall_at_10 == pytest.approx(0.4)
    # Recall@100 = (1 + 1 + 0 + 1 + 0) / 5 = 0.6
    assert rep.recall_at_100 == pytest.approx(0.6)
    # MRR@10    = (1 + 0 + 0 + 0.5 + 0) / 5 = 0.3
    assert rep.mrr_at_10 == pytest.approx(0.3)
    assert rep.metrics["recall@100"] == rep.recall_at_100


def test_partial_recall_and_graded_ideal_cut() -> None:
    # 3 relevant docs, one retrieved at rank 1 -> Recall@10 = 1/3
    # DCG = 3/1 = 3; IDCG = 3/1 + 2/log2(3) + 1/log2(4) = 3 + 1.26186 + 0.5 = 4.76186
    qrels = {"q": {"a": 3, "b": 2, "c": 1}}
    rep = evaluate_run({"q": ["a", "x"]}, qrels)
    assert rep.recall_at_10 == pytest.approx(1 / 3)
    assert rep.ndcg_at_10 == pytest.approx(3 / (3 + 2 / LOG2_3 + 0.5))
    # perfect ranking -> nDCG 1
    assert evaluate_run({"q": ["a", "b", "c"]}, qrels).ndcg_at_10 == pytest.approx(1.0)


def test_extra_k_values_and_to_dict() -> None:
    rep = evaluate_run(RUN, QRELS, k_values=(1, 10))
    assert rep.metrics["mrr@1"] == pytest.approx(1 / 5)  # only q1 hits at rank 1
    d = rep.to_dict()
    assert d["num_queries"] == 5 and d["recall_at_100"] == pytest.approx(0.6)
    json.dumps(d)  # serialisable


def test_evaluate_edge_cases() -> None:
    empty = evaluate_run({}, {"q": {"d": 0}})
    assert isinstance(empty, EvalReport)
    assert empty.num_queries == 0 and empty.ndcg_at_10 == 0.0
    with pytest.raises(ValueError, match="duplicate"):
        evaluate_run({"q": ["d", "d"]}, {"q": {"d": 1}})
    with pytest.raises(ValueError):
        evaluate_run({}, {}, k_values=(0,))


def test_load_queries_bom_crlf_blank_and_extra_keys(tmp_path: Path) -> None:
    p = tmp_path / "queries.jsonl"
    content = (
        '{"_id": "1", "text": "caf\u00e9 claim", "metadata": {}}\r\n'
        "\r\n"
        '{"_id": 2, "text": "second\u2028line"}\r\n'
    )
    p.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))
    assert load_queries(p) == [Query("1", "caf\u00e9 claim"), Query("2", "second\u2028line")]


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        '["_id", "text"]',
        '{"text": "no id"}',
        '{"_id": "x"}',
        '{"_id": "x", "text": 5}',
        '{"_id": "1", "text": "dup"}',
    ],
)
def test_load_queries_malformed(tmp_path: Path, bad_line: str) -> None:
    p = tmp_path / "q.jsonl"
    p.write_text('{"_id": "1", "text": "ok"}\n\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(EvalInputError, match=r"q\.jsonl:3: "):
        load_queries(p)


def test_load_queries_bad_utf8(tmp_path: Path) -> None:
    p = tmp_path / "q.jsonl"
    p.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "\xff"}\n')
    with pytest.raises(EvalInputError, match=r":2: not valid UTF-8"):
        load_queries(p)


def test_load_qrels_beir_tsv_crlf_header(tmp_path: Path) -> None:
    p = tmp_path / "train.tsv"
    p.write_bytes(
        b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\n"
        b"0\t31715818\t1\r\n"
        b"0\t999\t2\r\n"
        b"\r\n"
        b"5\t42\t0\r\n"
    )
    assert load_qrels(p) == {"0": {"31715818": 1, "999": 2}, "5": {"42": 0}}


def test_load_qrels_without_header_lf(tmp_path: Path) -> None:
    p = tmp_path / "q.tsv"
    p.write_text("a\tx\t1\nb\ty\t-1\n", encoding="utf-8")
    assert load_qrels(p) == {"a": {"x": 1}, "b": {"y": -1}}


def test_load_qrels_trec_style(tmp_path: Path) -> None:
    p = tmp_path / "qrels.trec"
    p.write_text("101 0 docA 2\n101  0 docB 0\n\n102 Q0 docC 1\n", encoding="utf-8")
    assert load_qrels(p) == {"101": {"docA": 2, "docB": 0}, "102": {"docC": 1}}


@pytest.mark.parametrize(
    "bad_line",
    [
        "q\td\tone",  # non-int score after the header
        "q\td\t1.5",
        "q\td",  # too few columns
        "q\td\t1\textra",
        "q d 1",  # 3 whitespace columns, no tabs
        "\td\t1",  # empty query id
    ],
)
def test_load_qrels_malformed(tmp_path: Path, bad_line: str) -> None:
    p = tmp_path / "bad.tsv"
    p.write_text("query-id\tcorpus-id\tscore\nq\td\t1\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(EvalInputError, match=r"bad\.tsv:3: "):
        load_qrels(p)


def test_latency_summary_linear_interpolation() -> None:
    # sorted [0.01, 0.02, 0.03, 0.04] s; positions (n-1)*q = 3*0.5 = 1.5 and 3*0.95 = 2.85
    # p50 = 0.02 + 0.5*(0.03-0.02) = 0.025 s = 25 ms
    # p95 = 0.03 + 0.85*(0.04-0.03) = 0.0385 s = 38.5 ms
    s = latency_summary([0.04, 0.01, 0.03, 0.02])
    assert s["p50_ms"] == pytest.approx(25.0)
    assert s["p95_ms"] == pytest.approx(38.5)
    assert s["mean_ms"] == pytest.approx(25.0)
    assert latency_summary([0.2])["p95_ms"] == pytest.approx(200.0)
    with pytest.raises(ValueError):
        latency_summary([])
    with pytest.raises(ValueError):
        latency_summary([0.1, -1.0])


def test_doc_id_from_path_and_distinct() -> None:
    assert doc_id_from_path("corpus/4983.txt") == "4983"
    assert doc_id_from_path("corpus/x.tar.gz", "stem") == "x.tar"
    assert doc_id_from_path("corpus/4983.txt", "name") == "4983.txt"
    assert doc_id_from_path("corpus/4983.txt", "relpath") == "corpus/4983.txt"
    assert doc_id_from_path("README", "stem") == "README"
    with pytest.raises(ValueError):
        doc_id_from_path("a.txt", "bogus")
    assert distinct_in_order(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
