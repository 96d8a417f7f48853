"""Export a sentence-transformers model to the ONNX folder :mod:`semsearch.models.onnx_runtime` runs, and verify it.

torch and sentence-transformers are imported only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch.models.onnx_runtime import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    MIN_COSINE,
    MODEL_FILE,
    SUPPORTED_POOLING,
    TOKENIZER_FILE,
    OnnxEmbedder,
    OnnxExportError,
    OnnxExportManifest,
    sha256_file,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_OUTPUT_NAME = "token_embeddings"
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_ONNX_OPSET = 17


@dataclass(frozen=True)
class _ModelSpec:
    """What the export needs to know about a loaded SentenceTransformer."""

    transformer: Any
    dim: int
    max_seq_length: int
    pooling_mode: str
    include_prompt: bool
    has_normalize: bool
    lowercase: bool


def export_onnx(model: SentenceTransformer, dest_dir: Path, *, min_cosine: float = MIN_COSINE) -> Path:
    """Export a loaded SentenceTransformer to an ONNX folder at *dest_dir* and verify it; return *dest_dir*.

    The export is built in a temporary folder next to *dest_dir* and moved into place only after it
    has been verified: the sample texts (short, long past the truncation limit, code, non-Latin
    scripts) are embedded by both *model* and :class:`OnnxEmbedder`, and the lowest cosine is recorded in
    ``export.json``. An existing export at *dest_dir* is replaced.

    Raises:
        OnnxExportError: the model's architecture is not supported (pooling other than
            mean/cls/max/lasttoken, extra modules such as Dense), the export fails, or the lowest
            cosine is below *min_cosine* (the failed export is deleted).
    """
    dest_dir = Path(dest_dir)
    spec = _inspect_model(model)
    with staged(dest_dir) as tmp_dir:
        manifest = _write_export(model, spec, tmp_dir)
        embedder = OnnxEmbedder.load(tmp_dir)
        verification = _verify(model, embedder, manifest)
        manifest = replace(manifest, verification=verification)
        (tmp_dir / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        del embedder  # release the session (and its file) before moving the folder
        if verification["min_cosine"] < min_cosine:
            raise OnnxExportError(
                f"ONNX export does not match the model: lowest cosine {verification['min_cosine']:.6f} "
                f"< {min_cosine} on {verification['texts']} sample texts"
            )
    return dest_dir


@contextlib.contextmanager
def staged(dest_dir: Path) -> Iterator[Path]:
    """A temporary folder beside *dest_dir* to build an export in: moved into *dest_dir*'s place
    when the block ends (an export already there replaced), deleted when it raises."""
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
    try:
        yield tmp_dir
        move_into_place(tmp_dir, dest_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _inspect_model(model: SentenceTransformer) -> _ModelSpec:
    """Check that *model* is Transformer -> Pooling [-> Normalize] and read what the runtime must mirror."""
    modules: list[Any] = list(model)
    kinds = [type(m).__name__ for m in modules]
    has_normalize = kinds[-1:] == ["Normalize"]
    core = kinds[:-1] if has_normalize else kinds
    if core != ["Transformer", "Pooling"]:
        raise OnnxExportError(
            f"cannot export a model made of {' -> '.join(kinds)}; "
            "only Transformer -> Pooling [-> Normalize] is supported"
        )
    transformer, pooling = modules[0], modules[1]

    task = getattr(transformer, "transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise OnnxExportError(f"cannot export a Transformer with task {task!r}; only feature-extraction")
    for attr in ("query_length", "document_length"):
        if getattr(transformer, attr, None) is not None:
            raise OnnxExportError(f"cannot export a Transformer with a task-specific {attr}")
    tokenizer = transformer.tokenizer
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise OnnxExportError("cannot export a model without a fast (tokenizers-backed) tokenizer")

    pooling_config: dict[str, Any] = pooling.get_config_dict()
    pooling_mode = _pooling_mode(pooling_config)
    if pooling_mode not in SUPPORTED_POOLING:
        raise OnnxExportError(f"cannot export pooling mode {pooling_mode!r}; supported: {', '.join(SUPPORTED_POOLING)}")
    include_prompt = bool(pooling_config.get("include_prompt", True))

    max_seq_length = model.max_seq_length or getattr(tokenizer, "model_max_length", None)
    if not isinstance(max_seq_length, int) or not 0 < max_seq_length < 1_000_000:
        raise OnnxExportError(f"cannot export: the model has no usable max_seq_length ({max_seq_length!r})")
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get_dim()
    if not isinstance(dim, int):
        raise OnnxExportError(f"cannot export: the model has no embedding dimension ({dim!r})")
    return _ModelSpec(
        transformer=transformer,
        dim=dim,
        max_seq_length=int(max_seq_length),
        pooling_mode=pooling_mode,
        include_prompt=include_prompt,
        has_normalize=has_normalize,
        # sentence-transformers < 6 lowercases in Python; 6+ also puts it in the backend tokenizer.
        lowercase=bool(getattr(transformer, "do_lower_case", False)),
    )


def _pooling_mode(config: dict[str, Any]) -> str:
    """Read the single pooling mode from a Pooling config, new (``pooling_mode``) or legacy (booleans) style."""
    mode = config.get("pooling_mode")
    if mode is None:
        legacy = {
            "pooling_mode_cls_token": "cls",
            "pooling_mode_max_tokens": "max",
            "pooling_mode_mean_tokens": "mean",
            "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens": "weightedmean",
            "pooling_mode_lasttoken": "lasttoken",
        }
        active = [name for key, name in legacy.items() if config.get(key)]
        mode = active[0] if len(active) == 1 else tuple(active)
    if isinstance(mode, (list, tuple)):
        if len(mode) != 1:
            raise OnnxExportError(f"cannot export combined pooling modes {list(mode)}")
        mode = mode[0]
    return str(mode)


def _resolve_prompt_names(prompts: dict[str, str]) -> tuple[str | None, str | None]:
    """Pick the prompt names used for queries and for documents: the first that holds a non-empty prompt."""
    query = "query" if prompts.get("query") else None
    document = next((name for name in _DOCUMENT_PROMPT_NAMES if prompts.get(name)), None)
    return query, document


def _write_export(model: SentenceTransformer, spec: _ModelSpec, out_dir: Path) -> OnnxExportManifest:
    """Write model.onnx, tokenizer.json and a first export.json (without verification) into *out_dir*."""
    import onnxruntime
    import tokenizers

    hf_tokenizer = spec.transformer.tokenizer
    input_names = [n for n in _KNOWN_INPUTS if n in getattr(hf_tokenizer, "model_input_names", _KNOWN_INPUTS)]
    if "input_ids" not in input_names or "attention_mask" not in input_names:
        raise OnnxExportError(f"cannot export: tokenizer inputs {input_names} lack input_ids/attention_mask")

    model_path = out_dir / MODEL_FILE
    export_graph(spec.transformer.auto_model, hf_tokenizer, input_names, model_path)
    extra = sorted(p.name for p in out_dir.iterdir() if p.name != MODEL_FILE)
    if extra:  # external weight files (models over 2 GB) would escape the checksum
        raise OnnxExportError(f"ONNX export wrote unexpected files {extra}; models over 2 GB are not supported")

    tokenizer_path = out_dir / TOKENIZER_FILE
    tokenizer_path.write_text(hf_tokenizer.backend_tokenizer.to_str(), encoding="utf-8")

    prompts = {str(k): str(v) for k, v in (getattr(model, "prompts", None) or {}).items() if v is not None}
    query_name, document_name = _resolve_prompt_names(prompts)
    pad_token_id = getattr(hf_tokenizer, "pad_token_id", None)
    manifest = OnnxExportManifest(
        format_version=FORMAT_VERSION,
        dim=spec.dim,
        max_seq_length=spec.max_seq_length,
        input_names=input_names,
        output_name=_OUTPUT_NAME,
        pooling_mode=spec.pooling_mode,
        include_prompt=spec.include_prompt,
        normalize=True,  # always: the index stores unit vectors and scores by dot product
        model_has_normalize=spec.has_normalize,
        lowercase=spec.lowercase,
        truncation_side=str(getattr(hf_tokenizer, "truncation_side", "right")),
        pad_token_id=int(pad_token_id) if pad_token_id is not None else 0,
        prompts=prompts,
        default_prompt_name=getattr(model, "default_prompt_name", None),
        query_prompt_name=query_name,
        document_prompt_name=document_name,
        model_sha256=sha256_file(model_path),
        tokenizer_sha256=sha256_file(tokenizer_path),
        onnx_opset=_ONNX_OPSET,
        versions=library_versions(onnxruntime.__version__, tokenizers.__version__),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def library_versions(onnxruntime_version: str, tokenizers_version: str) -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    return {
        "onnxruntime": onnxruntime_version,
        "tokenizers": tokenizers_version,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def export_graph(
    auto_model: Any,
    hf_tokenizer: Any,
    input_names: list[str],
    path: Path,
    *,
    output_name: str = _OUTPUT_NAME,
    pairs: bool = False,
) -> None:
    """Trace the Hugging Face model with torch's TorchScript-based ONNX exporter into *path*: its
    first output (the last hidden state, or a classifier's logits) as *output_name*. *pairs*:
    trace it on text pairs (a cross-encoder's input)."""
    import torch

    class _TokenEmbeddings(torch.nn.Module):
        """Call the model with named inputs and return only its first output."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(input_names, inputs, strict=True)), return_dict=True)[0]

    param = next(auto_model.parameters())
    if param.dtype != torch.float32:
        raise OnnxExportError(f"cannot export a {param.dtype} model; load it in float32")
    # Two rows of different lengths so the traced graph takes the padded-attention-mask path.
    texts = ["semsearch onnx export", "a longer second sample sentence, so that the first row is padded"]
    second = ["a passage", "a second passage of the pair"] if pairs else None
    sample = hf_tokenizer(texts, second, padding=True, return_tensors="pt")
    args = tuple(sample[name].to(param.device) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[output_name] = {0: "batch"} if pairs else {0: "batch", 1: "sequence"}
    was_training = auto_model.training
    auto_model.eval()
    previous_attention = use_eager_attention(auto_model)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings about the legacy exporter
            torch.onnx.export(
                _TokenEmbeddings(auto_model),
                args,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=[output_name],
                dynamic_axes=axes,
                opset_version=_ONNX_OPSET,
                do_constant_folding=True,
            )
    except OnnxExportError:
        raise
    except Exception as exc:
        raise OnnxExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        auto_model.train(was_training)
        if previous_attention is not None:
            auto_model.set_attn_implementation(previous_attention)


def use_eager_attention(auto_model: Any) -> str | None:
    """Switch a Hugging Face model to eager attention for tracing; return the setting to restore, if changed.

    The traced eager graph is smaller than the SDPA one (no data-dependent mask branches) and runs
    faster in onnxruntime (benchmarks/RESULTS.md). Models that cannot switch are traced as they are;
    the verification against sentence-transformers judges the result either way.
    """
    previous = getattr(getattr(auto_model, "config", None), "_attn_implementation", None)
    setter = getattr(auto_model, "set_attn_implementation", None)
    if previous in (None, "eager") or setter is None:
        return None
    try:
        setter("eager")
    except Exception:  # noqa: BLE001 - an unsupported switch is not fatal
        return None
    return previous if auto_model.config._attn_implementation == "eager" else None


def verification_texts() -> list[str]:
    """Sample texts for the export check: short, long past 256 word-pieces, code, several scripts."""
    paragraph = (
        "Semantic search ranks passages by the meaning of a query rather than by shared keywords. "
        "Each passage is embedded once when the index is built, and every query is embedded when it "
        "is asked, so the query path must start quickly and run on an ordinary laptop CPU. "
    )
    code = (
        "def chunk_text(text: str, max_tokens: int = 256) -> list[str]:\n"
        "    out, cur = [], []\n"
        "    for word in text.split():\n"
        "        cur.append(word)\n"
        "        if len(cur) >= max_tokens:\n"
        "            out.append(' '.join(cur)); cur = []\n"
        "    return out + ([' '.join(cur)] if cur else [])\n"
    )
    return [
        "hello",
        "",
        "   ",
        "How do I reset my password?",
        "Where does the index store its vectors?",
        "error: could not open file 'config.toml' (permission denied)",
        "The mitochondria is the powerhouse of the cell.",
        "SELECT id, title FROM docs WHERE score > 0.5 ORDER BY score DESC LIMIT 10;",
        'fn main() { println!("{}", std::env::args().count()); }',
        code,
        "import numpy as np\nx = np.linalg.norm(v, axis=1, keepdims=True)",
        "Ünïcödé façade naïve café — “quoted” ‘text’ … résumé",
        "東京は日本の首都です。人口は約一千四百万人です。",
        "Москва — столица России, крупнейший по численности населения город страны.",
        "مرحبا بالعالم، هذا نص عربي قصير للاختبار.",
        "emoji 🚀🔥 and symbols ∑∫√∞ ≠ ≤ ≥ ±",
        "Ελληνικά: η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
        "हिन्दी में एक छोटा वाक्य।",
        "https://example.com/path?query=semantic+search&lang=en#section-2",
        "CAPITALS AND lowercase AND MiXeD CaSe words",
        "1234567890 3.14159 2.71828 6.022e23 -42",
        "a " * 300,
        paragraph,
        paragraph * 3,
        paragraph * 8,
        code * 4,
        "東京 " * 200,
        "word-pieces: unbelievably antidisestablishmentarianism hyperparameterization " * 30,
        "Tabs\tand\nnewlines\r\nmixed   spacing",
        "The quick brown fox jumps over the lazy dog.",
        "# Heading\n\n- item one\n- item two\n\n```python\nprint('hi')\n```",
        "Patients receiving the treatment showed a 35% reduction in symptoms after 12 weeks (p < 0.01).",
    ]


def _verify(model: SentenceTransformer, embedder: OnnxEmbedder, manifest: OnnxExportManifest) -> dict[str, Any]:
    """Embed the sample texts with both *model* and *embedder* and summarise their cosine similarities."""
    texts = verification_texts()
    tokens = embedder.count_tokens(texts)
    cosines: list[np.ndarray] = []
    # Queries one at a time (no padding) and documents in small batches of mixed lengths (padding),
    # each with the prompt the embedder applies for it.
    checks = (
        (manifest.query_prompt, embedder.embed_queries(texts, batch_size=1)),
        (manifest.document_prompt, embedder.embed_documents(texts, batch_size=8)),
    )
    for prompt, ours in checks:
        reference = model.encode(
            texts,
            prompt=prompt or None,
            batch_size=8,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        cosines.append(np.sum(np.asarray(reference, dtype=np.float32) * ours, axis=1))
    allc = np.concatenate(cosines)
    return {
        "texts": len(texts),
        "longest_tokens": max(tokens),
        "min_cosine": float(allc.min()),
        "mean_cosine": float(allc.mean()),
    }


def move_into_place(tmp_dir: Path, dest_dir: Path) -> None:
    """Rename the finished export to *dest_dir*, replacing (then deleting) any export already there."""
    if not dest_dir.exists():
        os.replace(tmp_dir, dest_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".old", dir=dest_dir.parent))
    os.replace(dest_dir, old / dest_dir.name)
    os.replace(tmp_dir, dest_dir)
    shutil.rmtree(old, ignore_errors=True)
