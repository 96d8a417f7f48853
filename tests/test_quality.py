"""Retrieval quality plumbing: hybrid search, FTS consistency, and the evaluation runner."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from semsearch import search as search_module
from semsearch.evalrun import ranked_documents, run_evaluation
from semsearch.evaluate import Query
from semsearch.indexing import IndexOptions, build_index
from semsearch.search import Searcher, SearchOptions, fts_query
from semsearch.store import IndexReader
from tests.conftest import FakeEmbedder, FakeModel, check_fts, write


def _index(root: Path, model: FakeModel) -> Path:
    index_dir = root.parent / ".semsearch"
    build_index(IndexOptions(roots=[root], index_dir=index_dir), model)
    return index_dir


def _searcher(reader: IndexReader) -> Searcher:
    embedder = FakeEmbedder()
    return Searcher(reader, lambda: embedder)


def _files(reader: IndexReader, query: str, mode: str, k: int = 10) -> list[str]:
    hits = _searcher(reader).search(query, SearchOptions(top_k=k, mode=mode, files_only=True))
    return [hit.chunk.path.name for hit in hits]


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_hybrid_finds_exact_identifier_that_semantic_ranks_low(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    # Many files talk about the query's ordinary words; one mentions the error code, once,
    # among unrelated words. Bag-of-words similarity favours the chatty files.
    for i in range(12):
        write(root / f"guide{i:02d}.txt",
              f"How to fix a failed deployment error in the service, part {i}. "
              "When the deployment fails, check the service logs and fix the error, then deploy again.")
    write(root / "codes.txt",
          "Reference table for the storage driver. Status ERR_DISK_4711 means quota exhausted on the "
          "volume; increase the quota or prune old snapshots. Retention defaults are listed below.")
    index_dir = _index(root, FakeModel())
    query = "how to fix deployment error ERR_DISK_4711"
    with IndexReader(index_dir) as reader:
        semantic = _files(reader, query, "semantic", k=13)
        hybrid = _files(reader, query, "hybrid", k=13)
        lexical = _files(reader, query, "lexical", k=13)
    assert lexical[0] == "codes.txt"
    assert semantic.index("codes.txt") >= 5, semantic  # semantic alone buries it
    assert hybrid.index("codes.txt") < 3, hybrid  # fused, the exact identifier surfaces


def test_hybrid_scores_carry_cosine_and_parts_and_rank_by_the_fused_score(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "a.txt", "alpha beta gamma delta")
    write(root / "b.txt", "epsilon zeta eta theta")
    index_dir = _index(root, FakeModel())
    with IndexReader(index_dir) as reader:
        hits = _searcher(reader).search("alpha gamma", SearchOptions(top_k=2, mode="hybrid"))
    assert hits[0].chunk.path.name == "a.txt"
    assert set(hits[0].scores) >= {"cosine", "bm25", "fused"}
    # The score shown is the one the hits are ranked by (issue 23): the fused one.
    assert [h.score for h in hits] == [h.scores["fused"] for h in hits]


def test_hybrid_bm25_in_a_worker_thread_gives_the_one_thread_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "docs"
    words = ["river", "stone", "bridge", "lantern", "orchard", "harbor", "meadow", "copper", "violin", "glacier"]
    for i in range(30):
        write(root / f"f{i:02d}.txt", " ".join(words[(i * j) % len(words)] for j in range(1, 9)) + f" note{i}")
    index_dir = _index(root, FakeModel())
    queries = ["river lantern note7", "copper glacier", "meadow harbor violin note21"]
    with IndexReader(index_dir) as reader:
        monkeypatch.setattr(search_module, "_CORES", 1)
        alone = _searcher(reader)
        one = [[(h.chunk.id, h.scores) for h in alone.search(q, SearchOptions(top_k=8))] for q in queries]
        assert alone._pool is None  # one core: BM25 ran in the caller's thread
        monkeypatch.setattr(search_module, "_CORES", 2)
        beside = _searcher(reader)
        two = [[(h.chunk.id, h.scores) for h in beside.search(q, SearchOptions(top_k=8))] for q in queries]
        assert beside._pool is not None  # two cores: BM25 ran in the worker
        beside.close()
    assert one == two
    assert all(len(hits) == 8 for hits in two)


def test_hybrid_error_in_the_embedding_waits_for_the_worker_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "docs"
    write(root / "a.txt", "alpha beta gamma delta")
    index_dir = _index(root, FakeModel())
    monkeypatch.setattr(search_module, "_CORES", 2)
    calls: list[str] = []
    real = IndexReader.lexical_search

    def slow_lexical(self: IndexReader, match: str, k: int, within: object = None) -> list[tuple[int, float]]:
        calls.append(f"start {match}")
        time.sleep(0.2)  # still reading when the embedding fails
        found = real(self, match, k)
        calls.append("done")
        return found

    monkeypatch.setattr(IndexReader, "lexical_search", slow_lexical)

    def broken() -> FakeEmbedder:
        raise RuntimeError("model failed to load")

    with IndexReader(index_dir) as reader:
        searcher = Searcher(reader, broken)
        with pytest.raises(RuntimeError, match="model failed"):
            searcher.search("alpha", SearchOptions(mode="hybrid"))
        assert calls == ['start "alpha"', "done"]  # the worker finished before the error came out
        searcher.close()


def test_fts_stays_in_step_after_edit_and_delete(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    a = write(root / "a.txt", "The zebracorn migrates north in winter.")
    b = write(root / "b.txt", "Notes about the quillfeather parser and its flags.")
    write(root / "c.txt", "Unrelated text about gardening and tomatoes.")
    model = FakeModel()
    index_dir = _index(root, model)
    with IndexReader(index_dir) as reader:
        assert _files(reader, "zebracorn", "lexical") == ["a.txt"]
        assert _files(reader, "quillfeather", "lexical") == ["b.txt"]

    write(a, "The okapiberry ripens in late summer.")
    _touch_later(a)
    b.unlink()
    build_index(IndexOptions(roots=[root], index_dir=index_dir), model)
    with IndexReader(index_dir) as reader:
        assert _files(reader, "zebracorn", "lexical") == []
        assert _files(reader, "quillfeather", "lexical") == []
        assert _files(reader, "okapiberry", "lexical") == ["a.txt"]
        assert _files(reader, "okapiberry", "hybrid")[0] == "a.txt"
        assert _files(reader, "tomatoes", "lexical") == ["c.txt"]
    check_fts(index_dir)

    # Delete the edited file too: its new words go as well; a later rebuild agrees.
    a.unlink()
    build_index(IndexOptions(roots=[root], index_dir=index_dir), model)
    with IndexReader(index_dir) as reader:
        assert _files(reader, "okapiberry", "lexical") == []
        assert _files(reader, "tomatoes", "hybrid") == ["c.txt"]
    check_fts(index_dir)


def test_fts_query_is_safe_and_skips_stopwords() -> None:
    assert fts_query('the "NEAR" OR x*') == '"near" OR "x"'
    assert fts_query("the of and") != ""  # only stopwords: keep them rather than match nothing
    assert fts_query("...") == ""


def _eval_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write(root / "d1.txt", "apple banana smoothie recipe")
    write(root / "d2.txt", "apple cherry pie")
    write(root / "d3.txt", "grape harvest season")
    write(root / "sub" / "d4.md", "# Citrus\n\nlemon lime orange")
    return _index(root, FakeModel())


def test_run_evaluation_lexical_known_metrics(tmp_path: Path) -> None:
    index_dir = _eval_corpus(tmp_path)
    queries = [
        Query("q1", "grape"),  # d3 first: perfect
        Query("q2", "apple banana"),  # d1 (both words) before d2 (judged relevant): rank 2
        Query("q3", "kiwi"),  # nothing matches
        Query("q4", "lemon"),  # d4 in a sub folder, .md
        Query("q5", "apple"),  # not judged: not run
    ]
    qrels = {"q1": {"d3": 1}, "q2": {"d2": 1, "d1": 0}, "q3": {"d1": 1}, "q4": {"d4": 2}}
    with IndexReader(index_dir) as reader:
        result = run_evaluation(reader, _searcher(reader), queries, qrels, mode="lexical")
    report = result.report
    assert report.num_queries == 4
    assert result.queries_run == 4 and len(result.latencies) == 4
    assert result.run["q1"] == ["d3"]
    assert result.run["q2"][:2] == ["d1", "d2"]
    assert result.run["q3"] == []
    assert report.per_query["q2"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert report.per_query["q2"]["mrr@10"] == pytest.approx(0.5)
    assert report.ndcg_at_10 == pytest.approx((1 + 1 / math.log2(3) + 0 + 1) / 4)
    assert report.recall_at_10 == pytest.approx(3 / 4)
    assert report.recall_at_100 == pytest.approx(3 / 4)
    assert report.mrr_at_10 == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    summary = result.summary()
    assert summary["queries"] == 4 and summary["mode"] == "lexical"
    assert summary["p95_ms"] >= summary["p50_ms"] >= 0
    assert "per_query" not in result.to_dict() and "per_query" in result.to_dict(per_query=True)
    assert result.not_asked == 0


def test_run_evaluation_scores_only_the_judged_queries_asked(tmp_path: Path) -> None:
    index_dir = _eval_corpus(tmp_path)
    qrels = {"q1": {"d3": 1}, "q2": {"d2": 1, "d1": 0}, "q3": {"d1": 1}, "q9": {"d1": 0}}
    with IndexReader(index_dir) as reader:
        half = run_evaluation(reader, _searcher(reader), [Query("q1", "grape")], qrels, mode="lexical")
    # q2 and q3 are judged but not asked: reported, not averaged in as zeros (q9 has nothing relevant).
    assert half.not_asked == 2 and half.to_dict()["judged_not_asked"] == 2
    assert half.report.num_queries == 1
    assert half.report.ndcg_at_10 == pytest.approx(1.0)


def test_run_evaluation_id_modes_and_distinct_documents(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    # One long file cut into many chunks that all match: it must count once.
    write(root / "long.txt", "\n\n".join(f"Paragraph {i} about apple orchards and apple trees." for i in range(60)))
    write(root / "short.txt", "an apple a day")
    index_dir = _index(root, FakeModel())
    with IndexReader(index_dir) as reader:
        chunks = sum(1 for _ in reader.chunks())
        assert chunks > 3
        searcher = _searcher(reader)
        for mode in ("semantic", "lexical", "hybrid"):
            ids = ranked_documents(reader, searcher, "apple", mode=mode)
            assert sorted(ids) == ["long", "short"], (mode, ids)
        assert sorted(ranked_documents(reader, searcher, "apple", mode="lexical", id_mode="name")) == [
            "long.txt", "short.txt"]
        assert sorted(ranked_documents(reader, searcher, "apple", mode="lexical", id_mode="relpath")) == [
            "corpus/long.txt", "corpus/short.txt"]
        result = run_evaluation(reader, searcher, [Query("q", "apple trees")], {"q": {"long": 1}}, mode="hybrid")
    assert result.report.ndcg_at_10 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        run_evaluation(reader, searcher, [], {}, mode="fuzzy")
