"""Export a sentence-transformers CrossEncoder to the ONNX folder :mod:`semsearch.models.rerank` runs, and verify it.

The same way as the embedder's export (:mod:`semsearch.models.onnx_export`): torch's exporter,
eager attention, a temporary folder moved into place only after the export scored sample pairs as
the CrossEncoder itself does. torch and sentence-transformers are imported only in here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch.models.onnx_export import export_graph, library_versions, staged, verification_texts
from semsearch.models.onnx_runtime import MODEL_FILE, TOKENIZER_FILE, OnnxExportError, sha256_file

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

FORMAT_VERSION = 1
MANIFEST_FILE = "rerank.json"
OUTPUT_NAME = "logits"
ACTIVATIONS = ("sigmoid", "identity")
# The largest difference from the CrossEncoder's own score an export may show on the sample pairs,
# relative to the score (at least 1).
MAX_SCORE_ERROR = 1e-3
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class RerankManifest:
    """The contents of ``rerank.json``: what runs ``model.onnx`` as the CrossEncoder does."""

    format_version: int
    input_names: list[str]
    max_seq_length: int
    activation: str  # applied to the logit: "sigmoid" (scores 0-1) or "identity"
    pad_token_id: int
    model_sha256: str
    tokenizer_sha256: str
    versions: dict[str, str]
    verification: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, folder: Path) -> RerankManifest:
        """The manifest of the export in *folder*; :class:`OnnxExportError` when it is not one."""
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise OnnxExportError(f"{folder}: no re-ranking export") from exc
        except (OSError, ValueError) as exc:
            raise OnnxExportError(f"{path}: unreadable ({exc})") from exc
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise OnnxExportError(f"{path}: not a re-ranking export of format {FORMAT_VERSION}; it will be made again")
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise OnnxExportError(f"{path}: unexpected or missing fields ({exc})") from exc
        if manifest.activation not in ACTIVATIONS:
            raise OnnxExportError(f"{path}: unknown activation {manifest.activation!r}")
        return manifest


def export_cross_encoder(model_dir: Path, dest_dir: Path) -> Path:
    """Export the CrossEncoder in *model_dir* to *dest_dir* and verify it; return *dest_dir*.

    Raises :class:`OnnxExportError` when the model is not a one-score cross-encoder (a
    Transformer with a sequence-classification head and one label), the export fails, or its
    scores differ from the CrossEncoder's on the sample pairs.
    """
    from semsearch.models.resolve import offline_environment

    offline_environment()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers
    from sentence_transformers import CrossEncoder

    # Our stderr is for our own progress and warnings: silence the stack's load-time chatter.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model = CrossEncoder(str(model_dir), device="cpu", local_files_only=True)
    except Exception as exc:
        raise OnnxExportError(f"{model_dir}: not a cross-encoder sentence-transformers can load ({exc})") from exc
    transformer = _inspect(model)
    with staged(dest_dir) as tmp_dir:
        manifest = _write(model, transformer, tmp_dir)
        from semsearch.models.rerank import OnnxReranker

        reranker = OnnxReranker.load(tmp_dir, name=str(model_dir))
        verification = _verify(model, reranker)
        manifest = RerankManifest(**{**asdict(manifest), "verification": verification})
        (tmp_dir / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        del reranker
        if verification["max_error"] > MAX_SCORE_ERROR:
            raise OnnxExportError(
                f"the ONNX export of {model_dir} does not score as the model does: "
                f"error {verification['max_error']:.2g} > {MAX_SCORE_ERROR} on {verification['pairs']} sample pairs"
            )
    return dest_dir


def _inspect(model: CrossEncoder) -> Any:
    """The model's one Transformer module, checked to give one relevance score per pair."""
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    if kinds != ["Transformer"]:
        raise OnnxExportError(f"cannot export a cross-encoder made of {' -> '.join(kinds)}; only one Transformer")
    transformer = modules[0]
    task = getattr(transformer, "transformer_task", "sequence-classification")
    if task != "sequence-classification":
        raise OnnxExportError(f"cannot export a cross-encoder with task {task!r}; only sequence-classification")
    if model.num_labels != 1:
        raise OnnxExportError(
            f"the model gives {model.num_labels} labels per pair, not one relevance score: not a re-ranker"
        )
    if not hasattr(transformer.tokenizer, "backend_tokenizer"):
        raise OnnxExportError("cannot export a model without a fast (tokenizers-backed) tokenizer")
    if getattr(model, "default_prompt_name", None) or any(getattr(model, "prompts", None) or {}):
        raise OnnxExportError("cannot export a cross-encoder with prompts")
    _activation(model)
    return transformer


def _activation(model: CrossEncoder) -> str:
    kind = type(getattr(model, "activation_fn", None)).__name__
    names = {"Sigmoid": "sigmoid", "Identity": "identity"}
    if kind not in names:
        raise OnnxExportError(f"cannot export a cross-encoder whose scores go through {kind}")
    return names[kind]


def _write(model: CrossEncoder, transformer: Any, out_dir: Path) -> RerankManifest:
    import onnxruntime
    import tokenizers

    hf_tokenizer = transformer.tokenizer
    input_names = [n for n in _KNOWN_INPUTS if n in getattr(hf_tokenizer, "model_input_names", _KNOWN_INPUTS)]
    if "input_ids" not in input_names or "attention_mask" not in input_names:
        raise OnnxExportError(f"cannot export: tokenizer inputs {input_names} lack input_ids/attention_mask")
    model_path = out_dir / MODEL_FILE
    export_graph(transformer.auto_model, hf_tokenizer, input_names, model_path, output_name=OUTPUT_NAME, pairs=True)
    extra = sorted(p.name for p in out_dir.iterdir() if p.name != MODEL_FILE)
    if extra:
        raise OnnxExportError(f"ONNX export wrote unexpected files {extra}; models over 2 GB are not supported")
    tokenizer_path = out_dir / TOKENIZER_FILE
    tokenizer_path.write_text(hf_tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
    max_length = int(model.max_seq_length or getattr(hf_tokenizer, "model_max_length", None) or 512)
    pad = getattr(hf_tokenizer, "pad_token_id", None)
    manifest = RerankManifest(
        format_version=FORMAT_VERSION,
        input_names=input_names,
        max_seq_length=min(max_length, 100_000),
        activation=_activation(model),
        pad_token_id=int(pad) if pad is not None else 0,
        model_sha256=sha256_file(model_path),
        tokenizer_sha256=sha256_file(tokenizer_path),
        versions=library_versions(onnxruntime.__version__, tokenizers.__version__),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _verify(model: CrossEncoder, reranker: Any) -> dict[str, Any]:
    """Score sample pairs (short and long past the limit, several scripts) both ways and compare."""
    texts = [t for t in verification_texts() if t.strip()]
    queries = ["How do I reset my password?", "mitochondria energy", "東京の人口"]
    pairs = [(q, t) for q in queries for t in texts]
    reference = np.asarray(model.predict(pairs, batch_size=8, show_progress_bar=False), dtype=np.float64)
    ours = np.concatenate([reranker.score(q, texts) for q in queries]).astype(np.float64)
    error = np.abs(ours - reference) / np.maximum(1.0, np.abs(reference))
    return {
        "pairs": len(pairs),
        "max_error": float(error.max()),
        "mean_error": float(error.mean()),
    }
