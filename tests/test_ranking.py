"""How hits are ranked and shown (issue 23): the score shown is the one that ranks, so it never
rises down the list, in every mode, through the API, the CLI and MCP; and a place shown once,
even when overlapping chunks share its sentence. The fake model, the real chunker."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch import Index
from semsearch.cli import app
from semsearch.output import snippet_line
from semsearch.store import IndexReader

QUESTION = "how is the model server stopped"
SENTENCE = "To stop the model server, run the stop command."
LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<score>-?\d+\.\d{4}):(?P<snippet>.*)$")
TOPICS = [
    "The garden needs water every morning in the summer.",
    "Bread rises best in a warm kitchen.",
    "A rocket engine burns fuel to make thrust.",
    "The library opens at nine on weekdays.",
    "Old maps show rivers that have since moved.",
    "Tea tastes bitter when the water is too hot.",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    """An index whose chunks overlap by half (64/32 tokens), with SENTENCE in two of them."""
    lines = []
    for i in range(12):
        lines.append(f"{TOPICS[i % len(TOPICS)]} Note {i} adds a few more words here.")
        if i == 6:
            lines.append(SENTENCE)
    write(tmp_path / "docs" / "guide.md", "# Guide\n\n" + "\n".join(lines) + "\n")
    write(tmp_path / "docs" / "other.md", "# Other\n\nThe server keeps the model loaded between queries.\n")
    write(tmp_path / "docs" / "third.md", "# Third\n\nStop words are dropped from the keyword query.\n")
    write(tmp_path / "docs" / "fourth.md", "# Fourth\n\nA stopped clock is right twice a day, the model says.\n")
    monkeypatch.chdir(tmp_path)
    with Index.create(tmp_path / ".semsearch", provider=fake_cli, chunk_tokens=64, overlap_tokens=32) as index:
        index.update([tmp_path / "docs"])
    with IndexReader(tmp_path / ".semsearch") as reader:
        chunks = reader.fetch_chunks(list(range(1, 100))).values()
        text = (tmp_path / "docs" / "guide.md").read_text()
        guide = [c for c in chunks if c.path.name == "guide.md"]
    # The premise: the chunker's overlap put the sentence in two chunks, and a chunk's text is
    # the file's text at its offsets (what same-place detection compares).
    assert sum(SENTENCE in c.text for c in guide) == 2
    assert all(text[c.char_start : c.char_end] == c.text for c in guide)
    return tmp_path


def _place(hit: Any) -> tuple[str, int]:
    return hit.chunk.path.name, snippet_line(hit)


@pytest.mark.parametrize("mode", ["semantic", "lexical", "hybrid"])
def test_overlapping_chunks_give_one_hit_per_place_and_still_k_hits(project: Path, mode: str) -> None:
    with Index.open(project / ".semsearch") as index:
        for k in (3, 4, 6):
            hits = index.search(QUESTION, k=k, mode=mode)
            places = [_place(h) for h in hits]
            # k distinct places come back when there are k (only 4 chunks' places have a word of
            # the question, for lexical mode)
            assert len(hits) == (min(k, 4) if mode == "lexical" else k), places
            assert len(set(places)) == len(hits), places
            assert sum(SENTENCE in h.chunk.text[slice(*h.highlight)] for h in hits if h.highlight) == 1
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        # Asked for every chunk as ranked, both chunks holding the sentence come back.
        raw = index.search(QUESTION, k=20, mode=mode, distinct_places=False)
        assert sum(SENTENCE in h.chunk.text for h in raw) == 2
        # The one kept is the better of the two: nothing left out ranks above it.
        every = index.search(QUESTION, k=20, mode=mode)
        kept = next(h for h in every if h.highlight and SENTENCE in h.chunk.text[slice(*h.highlight)])
        twin = [h for h in every if SENTENCE in h.chunk.text and h.chunk.id != kept.chunk.id]
        assert all(h.score <= kept.score for h in twin)


def _non_increasing(scores: list[float]) -> bool:
    return all(a >= b for a, b in itertools.pairwise(scores))


@pytest.mark.parametrize("mode", ["semantic", "lexical", "hybrid"])
@pytest.mark.parametrize("files_only", [False, True])
def test_the_score_shown_is_the_one_that_ranks_in_every_mode(project: Path, mode: str, files_only: bool) -> None:
    fusions = ("convex", "rrf") if mode == "hybrid" else ("convex",)
    with Index.open(project / ".semsearch") as index:
        for fusion in fusions:
            for query in (QUESTION, "water the garden", "stop words model", "rocket fuel thrust bread"):
                hits = index.search(query, k=8, mode=mode, fusion=fusion, files_only=files_only)
                assert hits, query
                assert _non_increasing([h.score for h in hits]), (query, [h.scores for h in hits])
                for hit in hits:
                    side = {"semantic": "cosine", "lexical": "bm25", "hybrid": "fused"}[mode]
                    assert hit.score == pytest.approx(hit.scores[side])
                    if mode != "lexical":
                        assert "cosine" in hit.scores


def test_min_score_filters_on_the_cosine_in_hybrid_mode(project: Path) -> None:
    with Index.open(project / ".semsearch") as index:
        every = index.search(QUESTION, k=20, mode="hybrid")
        floor = sorted(h.scores["cosine"] for h in every)[len(every) // 2]
        kept = index.search(QUESTION, k=20, mode="hybrid", min_score=floor)
    assert kept and all(h.scores["cosine"] >= floor for h in kept)
    assert [h.chunk.id for h in kept] == [h.chunk.id for h in every if h.scores["cosine"] >= floor]
    assert _non_increasing([h.score for h in kept])


def test_cli_lines_and_json_show_each_place_once_with_the_ranking_score(project: Path) -> None:
    runner = CliRunner()
    plain = runner.invoke(app, ["query", QUESTION, "-k", "3", "-t", "md"])
    assert plain.exit_code == 0, plain.output
    lines = [LINE.match(line) for line in plain.stdout.splitlines()]
    assert len(lines) == 3 and all(lines), plain.stdout
    assert len({(m["path"], m["line"]) for m in lines if m}) == 3, plain.stdout
    assert _non_increasing([float(m["score"]) for m in lines if m]), plain.stdout
    as_json = runner.invoke(app, ["query", QUESTION, "-k", "3", "--json"])
    assert as_json.exit_code == 0, as_json.output
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len({(o["path"], o["line"]) for o in objects}) == 3
    assert _non_increasing([o["score"] for o in objects])
    for o in objects:
        assert o["score"] == pytest.approx(o["scores"]["fused"], abs=1e-6)
        assert "cosine" in o["scores"]  # the cosine stays in scores, for --min-score
    # The same order and scores as the plain lines, which print them with 4 decimals.
    assert [f"{o['score']:.4f}" for o in objects] == [m["score"] for m in lines if m]
    for mode in ("semantic", "lexical"):
        shown = runner.invoke(app, ["query", QUESTION, "-k", "4", "--mode", mode, "--json"])
        assert shown.exit_code == 0, shown.output
        hits = [json.loads(line) for line in shown.stdout.splitlines()]
        assert len({(o["path"], o["line"]) for o in hits}) == len(hits) == 4
        assert _non_increasing([o["score"] for o in hits])


def test_mcp_search_shows_each_place_once_with_the_ranking_score(project: Path) -> None:
    from semsearch.cli.mcp_server import build_server

    server = build_server(project / ".semsearch")

    async def call(arguments: dict[str, Any]) -> Any:
        return await server.call_tool("search", arguments)

    for mode in ("semantic", "lexical", "hybrid"):
        result = anyio.run(call, {"query": QUESTION, "k": 3, "mode": mode})
        assert not result.is_error, result.content
        hits = result.structured_content["hits"]
        places = [(h["path"], h["location"]["line"]) for h in hits]
        assert len(hits) == 3 and len(set(places)) == 3, places
        assert _non_increasing([h["score"] for h in hits]), hits


def test_ceiling_fusion_lets_a_strong_semantic_match_survive_a_common_word_match() -> None:
    from semsearch.search import SearchOptions, _rank

    # Chunk 1 says it in other words (top cosine, no keyword); chunk 2 shares the question's
    # common words (lower cosine, the best BM25 of the candidates, but a sixth of what a chunk
    # holding the query's words would score).
    cosines = {1: 0.62, 2: 0.50, 3: 0.55}
    bm25 = {2: 2.0}
    convex = [cid for cid, _ in _rank(SearchOptions(mode="hybrid", fusion="convex"), cosines, bm25)]
    ceiling = [cid for cid, _ in _rank(SearchOptions(mode="hybrid", fusion="ceiling"), cosines, bm25, 12.0)]
    assert convex[0] == 2  # the old blend: any keyword hit overtakes the paraphrase
    assert ceiling[0] == 1
    # A keyword match worth the query's words still counts fully, and no part exceeds 1.
    strong = _rank(SearchOptions(mode="hybrid", fusion="ceiling"), cosines, {2: 2.0, 3: 24.0}, 12.0)
    assert strong[0][0] == 3 and strong[0][1] == pytest.approx(0.5 * 0.55 / 0.62 + 0.5)
    # Without a ceiling (unknown), the ceiling fusion is the convex one.
    assert _rank(SearchOptions(mode="hybrid", fusion="ceiling"), cosines, bm25, 0.0) == _rank(
        SearchOptions(mode="hybrid", fusion="convex"), cosines, bm25
    )


def test_bm25_ceiling_uses_the_index_term_counts(tmp_path: Path, fake_model: FakeModel) -> None:
    import math

    from semsearch.search import BM25_K1, bm25_ceiling, fts_query

    for i in range(9):
        write(tmp_path / "docs" / f"d{i}.txt", f"The deployment failed again, note {i}.")
    write(tmp_path / "docs" / "code.txt", "Status ERR_DISK_4711 means the quota is used up; deployments stop.")
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        index.update([tmp_path / "docs"])
    thrice = 3 * (BM25_K1 + 1) / (3 + BM25_K1)

    def idf(n: int, total: int = 10) -> float:
        return max(math.log((total - n + 0.5) / (n + 0.5)), 1e-6)

    with IndexReader(tmp_path / ".semsearch") as reader:
        # "deployment" and "deployments" stem alike (10 chunks); err_disk_4711 is one word of
        # three terms, counted once with its rarest term's count (1 chunk).
        got = bm25_ceiling(reader, fts_query("deployments ERR_DISK_4711"))
        assert got == pytest.approx((idf(10) + idf(1)) * thrice)
        # A word no chunk holds cannot be matched: it does not raise the ceiling.
        assert bm25_ceiling(reader, fts_query("zeppelin")) == 0.0
        assert bm25_ceiling(reader, fts_query("zeppelin ERR_DISK_4711")) == pytest.approx(idf(1) * thrice)
        # The best real match stays under the ceiling's scale: a chunk with the rare word once.
        best = reader.lexical_search(fts_query("deployments ERR_DISK_4711"), 1)[0][1]
        assert 0.3 < best / got <= 1.0

