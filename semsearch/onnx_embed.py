"""ONNX export of a sentence-transformers model, and a light embedder that runs it.

Building an index may load the full sentence-transformers stack, but answering a query should not:
a fresh ``import sentence_transformers`` costs seconds. :func:`export_onnx` turns a loaded
``SentenceTransformer`` into a folder of plain parts, and :class:`OnnxEmbedder` embeds with only
``onnxruntime``, ``tokenizers`` and ``numpy``.

The export folder (format version :data:`FORMAT_VERSION`)::

    model.onnx      the transformer only: inputs input_ids, attention_mask (and token_type_ids when the
                    model uses them), dynamic batch and sequence axes; output token_embeddings
                    (batch, sequence, hidden)
    tokenizer.json  the model's fast tokenizer (padding and truncation are set at load time)
    export.json     manifest: format version, dim, max_seq_length, pooling, prompts, checksums,
                    library versions and the verification result against sentence-transformers

Pooling and L2 normalisation run in numpy after the graph, so a prompt can be left out of pooling
(``include_prompt: false``) exactly as sentence-transformers does. Output vectors are always
L2-normalised float32.

Nothing heavy is imported at module level: torch and sentence-transformers are imported only inside
:func:`export_onnx`; onnxruntime and tokenizers only inside :meth:`OnnxEmbedder.load`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch.embed import usable_cpus
from semsearch.errors import ModelError

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers
    from sentence_transformers import SentenceTransformer

__all__ = [
    "FORMAT_VERSION",
    "MIN_COSINE",
    "OnnxEmbedder",
    "OnnxExportError",
    "OnnxExportManifest",
    "export_onnx",
    "quantize_int8",
    "read_export_manifest",
]

FORMAT_VERSION = 1
"""Version of the export folder layout; :meth:`OnnxEmbedder.load` refuses any other."""

MIN_COSINE = 0.999
"""The lowest cosine similarity to sentence-transformers that an export may show on the sample texts."""

MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model-int8.onnx"
INT8_RECORD_FILE = "model-int8.json"
INT8_MIN_COSINE = 0.97
"""The lowest cosine to the float32 export that the int8 graph may show on the sample texts."""
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "export.json"

SUPPORTED_POOLING = ("mean", "mean_sqrt_len_tokens", "cls", "max", "lasttoken")
_OUTPUT_NAME = "token_embeddings"
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_HASH_CHUNK = 1 << 20  # 1 MiB
_ONNX_OPSET = 17
# Inputs per onnxruntime call. Small batches of similar length keep the activations in cache:
# on a 2-core AVX-512 CPU, int8 MiniLM ran 12.4k tokens/s at 8 against 9-10k at 32 (fp32: equal).
BATCH_SIZE = 8


class OnnxExportError(ModelError):
    """An ONNX export cannot be made, is missing, damaged, of another version, or does not match its model."""


@dataclass(frozen=True)
class OnnxExportManifest:
    """The contents of ``export.json``: everything needed to run ``model.onnx`` like the original model."""

    format_version: int
    dim: int
    max_seq_length: int
    input_names: list[str]
    output_name: str
    pooling_mode: str
    include_prompt: bool
    normalize: bool
    model_has_normalize: bool
    lowercase: bool
    truncation_side: str
    pad_token_id: int
    prompts: dict[str, str]
    default_prompt_name: str | None
    query_prompt_name: str | None
    document_prompt_name: str | None
    model_sha256: str
    tokenizer_sha256: str
    onnx_opset: int
    versions: dict[str, str]
    verification: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Return the manifest as indented JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> OnnxExportManifest:
        """Parse ``export.json`` text; raise :class:`OnnxExportError` naming *source* if it is not valid."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OnnxExportError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict):
            raise OnnxExportError(f"{source}: expected a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise OnnxExportError(
                f"{source}: ONNX export format version {version!r} is not supported "
                f"(this semsearch reads version {FORMAT_VERSION}); re-export the model"
            )
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise OnnxExportError(f"{source}: unexpected or missing fields ({exc})") from exc
        if manifest.pooling_mode not in SUPPORTED_POOLING:
            raise OnnxExportError(f"{source}: unsupported pooling mode {manifest.pooling_mode!r}")
        return manifest

    @property
    def query_prompt(self) -> str:
        """The text put before every query ("" when the model defines none)."""
        return self.prompts.get(self.query_prompt_name, "") if self.query_prompt_name else ""

    @property
    def document_prompt(self) -> str:
        """The text put before every document ("" when the model defines none)."""
        return self.prompts.get(self.document_prompt_name, "") if self.document_prompt_name else ""


# --------------------------------------------------------------------------------------------------
# Runtime
# --------------------------------------------------------------------------------------------------


class OnnxEmbedder:
    """Embed texts with an exported model using onnxruntime and the ``tokenizers`` library only.

    Create one with :meth:`load`. Outputs are float32 arrays of shape ``(n, dim)``, L2-normalised.
    """

    dim: int
    """Length of each embedding vector."""
    max_tokens: int
    """Word-pieces per input (special tokens and any prompt included); longer inputs are truncated."""
    prompts: dict[str, str]
    """The model's named prompts, as sentence-transformers defines them (may be empty strings)."""

    def __init__(
        self,
        manifest: OnnxExportManifest,
        session: onnxruntime.InferenceSession,
        tokenizer: tokenizers.Tokenizer,
    ) -> None:
        """Wrap a ready session and tokenizer; use :meth:`load` instead of calling this directly."""
        self.manifest = manifest
        self.dim = manifest.dim
        self.max_tokens = manifest.max_seq_length
        self.prompts = dict(manifest.prompts)
        self._session = session
        self._tokenizer = tokenizer
        self._untruncated: tokenizers.Tokenizer | None = None
        self._prompt_lengths: dict[str, int] = {}

    @classmethod
    def load(cls, export_dir: Path, variant: str = "fp32", threads: int | None = None) -> OnnxEmbedder:
        """Load an export folder written by :func:`export_onnx`, after checking its version and checksums.

        ``variant`` "int8" runs the quantized graph made by :func:`quantize_int8` (same tokenizer,
        pooling and manifest; its own checksum in ``model-int8.json``). ``threads``: onnxruntime's
        intra-op threads (default: one per usable core; a short query runs fastest on one).

        Raises:
            OnnxExportError: a file is missing, the format version is unknown, or ``model.onnx`` /
                ``tokenizer.json`` do not match the checksums in ``export.json``.
        """
        export_dir = Path(export_dir)
        model_path = export_dir / MODEL_FILE
        tokenizer_path = export_dir / TOKENIZER_FILE
        manifest = read_export_manifest(export_dir)
        model_sha256 = manifest.model_sha256
        if variant == "int8":
            model_path = export_dir / INT8_MODEL_FILE
            model_sha256 = _read_int8_record(export_dir, manifest)["sha256"]
        elif variant != "fp32":
            raise OnnxExportError(f"unknown ONNX variant {variant!r} (fp32 or int8)")
        if not model_path.is_file():
            raise OnnxExportError(f"{model_path}: missing from the ONNX export")

        # Hashing the model (~0.1 s for 90 MB) overlaps with building the session (~0.3 s): both
        # release the GIL. The session is thrown away if the checksum then fails.
        model_check = _ChecksumThread(model_path, model_sha256)
        model_check.start()
        try:
            _check_sha256(tokenizer_path, manifest.tokenizer_sha256)
            tokenizer = _load_tokenizer(tokenizer_path, manifest)
            session = _create_session(model_path, threads)
        except OnnxExportError:
            model_check.join()
            model_check.raise_if_failed()  # a damaged model is better reported as such
            raise
        model_check.join()
        model_check.raise_if_failed()
        names = [i.name for i in session.get_inputs()]
        if sorted(names) != sorted(manifest.input_names):
            raise OnnxExportError(f"{model_path}: graph inputs {names} do not match {MANIFEST_FILE}")
        return cls(manifest, session, tokenizer)

    @property
    def document_prompt_tokens(self) -> int:
        """Word-pieces the document prompt adds to every document (0 without a prompt)."""
        return self._prompt_length(self.manifest.document_prompt)

    def embed_queries(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Embed search queries, putting the model's ``"query"`` prompt before each when it has one."""
        return self._embed(texts, self.manifest.query_prompt, batch_size)

    def embed_documents(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Embed documents, putting the model's document/passage prompt before each when it has one.

        Inputs are sorted by token count so each batch pads little, and the result is in input order.
        """
        return self._embed(texts, self.manifest.document_prompt, batch_size)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Count each text's word-pieces, special tokens included, without truncation or prompt."""
        _check_texts(texts)
        if self._untruncated is None:
            from tokenizers import Tokenizer

            untruncated = Tokenizer.from_str(self._tokenizer.to_str())
            untruncated.no_truncation()
            untruncated.no_padding()
            self._untruncated = untruncated
        encodings = self._untruncated.encode_batch([self._prepare(t) for t in texts])
        return [len(e.ids) for e in encodings]

    # -- internals ---------------------------------------------------------------------------------

    def _prepare(self, text: str) -> str:
        return text.lower() if self.manifest.lowercase else text

    def _prompt_length(self, prompt: str) -> int:
        """Word-pieces of *prompt* at the start of an input, as sentence-transformers counts them."""
        if not prompt:
            return 0
        if prompt not in self._prompt_lengths:
            encoding = self._tokenizer.encode(self._prepare(prompt))
            length = len(encoding.ids)
            # sentence-transformers drops a trailing special token ([SEP], </s>) from the prompt length.
            if length and encoding.special_tokens_mask[-1]:
                length -= 1
            self._prompt_lengths[prompt] = length
        return self._prompt_lengths[prompt]

    def _embed(self, texts: Sequence[str], prompt: str, batch_size: int) -> np.ndarray:
        _check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([self._prepare(prompt + t) for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")  # longest first: padding stays within similar lengths
        skip = 0 if self.manifest.include_prompt else self._prompt_length(prompt)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._embed_batch([encodings[i] for i in rows], int(lengths[rows].max()), skip)
        return out

    def _embed_batch(self, encodings: list[tokenizers.Encoding], width: int, skip: int) -> np.ndarray:
        """Run one right-padded batch through the graph, then pool and normalise."""
        n = len(encodings)
        input_ids = np.full((n, width), self.manifest.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((n, width), dtype=np.int64)
        token_type_ids = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            input_ids[row, :k] = enc.ids
            attention_mask[row, :k] = enc.attention_mask
            token_type_ids[row, :k] = enc.type_ids
        available = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feeds = {name: available[name] for name in self.manifest.input_names}
        (token_embeddings,) = self._session.run([self.manifest.output_name], feeds)
        pooling_mask = attention_mask
        if skip:
            pooling_mask = attention_mask.copy()
            pooling_mask[:, :skip] = 0
        pooled = _pool(np.asarray(token_embeddings, dtype=np.float32), pooling_mask, self.manifest.pooling_mode)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


def read_export_manifest(export_dir: Path) -> OnnxExportManifest:
    """An export folder's ``export.json``, parsed and version-checked (no graph is loaded)."""
    manifest_path = Path(export_dir) / MANIFEST_FILE
    try:
        manifest_text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise OnnxExportError(f"{export_dir}: no ONNX export here ({MANIFEST_FILE} is missing)") from exc
    except OSError as exc:
        raise OnnxExportError(f"{manifest_path}: cannot read ({exc.strerror})") from exc
    return OnnxExportManifest.from_json(manifest_text, manifest_path)


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a sequence of strings, got a single str")


def _pool(token_embeddings: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool ``(batch, seq, hidden)`` token embeddings as sentence-transformers' ``Pooling`` does (right padding)."""
    maskf = mask.astype(np.float32)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = np.einsum("bsh,bs->bh", token_embeddings, maskf)
        counts = np.maximum(maskf.sum(axis=1, keepdims=True), 1e-9)
        return summed / (counts if mode == "mean" else np.sqrt(counts))
    rows = np.arange(token_embeddings.shape[0])
    if mode == "cls":
        return token_embeddings[rows, mask.argmax(axis=1)]  # the first token that is pooled
    if mode == "max":
        masked = np.where(mask[:, :, None] > 0, token_embeddings, -np.inf)
        return masked.max(axis=1)
    if mode == "lasttoken":
        seq = mask.shape[1]
        flipped = mask[:, ::-1]
        last = seq - 1 - flipped.argmax(axis=1)
        last = np.where(flipped.max(axis=1) == 0, seq - 1, last)
        return token_embeddings[rows, last] * mask[rows, last][:, None]
    raise OnnxExportError(f"unsupported pooling mode {mode!r}")


def _sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    """Raise :class:`OnnxExportError` if *path* is missing, unreadable or not the file with that checksum."""
    try:
        actual = _sha256_file(path)
    except FileNotFoundError as exc:
        raise OnnxExportError(f"{path}: missing from the ONNX export") from exc
    except OSError as exc:
        raise OnnxExportError(f"{path}: cannot read ({exc.strerror})") from exc
    if actual != expected:
        raise OnnxExportError(f"{path}: checksum mismatch (file damaged or replaced); re-export the model")


class _ChecksumThread(threading.Thread):
    """Run :func:`_check_sha256` in the background and keep its error for the caller's thread."""

    def __init__(self, path: Path, expected: str) -> None:
        super().__init__(name="semsearch-sha256", daemon=True)
        self._path = path
        self._expected = expected
        self._error: OnnxExportError | None = None

    def run(self) -> None:
        try:
            _check_sha256(self._path, self._expected)
        except OnnxExportError as exc:
            self._error = exc

    def raise_if_failed(self) -> None:
        """Re-raise the checksum error, if there was one (call after :meth:`join`)."""
        if self._error is not None:
            raise self._error


def _load_tokenizer(path: Path, manifest: OnnxExportManifest) -> tokenizers.Tokenizer:
    """Load ``tokenizer.json`` without padding, truncating to the model's ``max_seq_length``."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception on a bad file
        raise OnnxExportError(f"{path}: cannot load tokenizer ({exc})") from exc
    # tokenizer.json files often carry their own padding/truncation (MiniLM's: 128); ST uses neither.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=manifest.max_seq_length, direction=manifest.truncation_side)
    return tokenizer


def _create_session(model_path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """Create a CPU onnxruntime session with full graph optimisation (default: a thread per usable core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cpus()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise OnnxExportError(f"{model_path}: onnxruntime cannot load it ({exc})") from exc


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


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
    parent = dest_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=parent))
    try:
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
        _move_into_place(tmp_dir, dest_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return dest_dir


def _inspect_model(model: SentenceTransformer) -> _ModelSpec:
    """Check that *model* is Transformer -> Pooling [-> Normalize] and read what the runtime must mirror."""
    modules = list(model)
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

    pooling_config = pooling.get_config_dict()
    pooling_mode = _pooling_mode(pooling_config)
    if pooling_mode not in SUPPORTED_POOLING:
        raise OnnxExportError(f"cannot export pooling mode {pooling_mode!r}; supported: {', '.join(SUPPORTED_POOLING)}")
    include_prompt = bool(pooling_config.get("include_prompt", True))

    max_seq_length = model.max_seq_length or getattr(tokenizer, "model_max_length", None)
    if not isinstance(max_seq_length, int) or not 0 < max_seq_length < 1_000_000:
        raise OnnxExportError(f"cannot export: the model has no usable max_seq_length ({max_seq_length!r})")
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return _ModelSpec(
        transformer=transformer,
        dim=int(get_dim()),
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
    _export_graph(spec.transformer.auto_model, hf_tokenizer, input_names, model_path)
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
        model_sha256=_sha256_file(model_path),
        tokenizer_sha256=_sha256_file(tokenizer_path),
        onnx_opset=_ONNX_OPSET,
        versions=_library_versions(onnxruntime.__version__, tokenizers.__version__),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _library_versions(onnxruntime_version: str, tokenizers_version: str) -> dict[str, str]:
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


def _export_graph(auto_model: Any, hf_tokenizer: Any, input_names: list[str], path: Path) -> None:
    """Trace the Hugging Face model with torch's TorchScript-based ONNX exporter into *path*."""
    import torch

    class _TokenEmbeddings(torch.nn.Module):
        """Call the model with named inputs and return only the last hidden state."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(input_names, inputs, strict=True)), return_dict=True)[0]

    param = next(auto_model.parameters())
    if param.dtype != torch.float32:
        raise OnnxExportError(f"cannot export a {param.dtype} model; load it in float32")
    # Two rows of different lengths so the traced graph takes the padded-attention-mask path.
    sample = hf_tokenizer(
        ["semsearch onnx export", "a longer second sample sentence, so that the first row is padded"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[name].to(param.device) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*input_names, _OUTPUT_NAME]}
    was_training = auto_model.training
    auto_model.eval()
    previous_attention = _use_eager_attention(auto_model)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings about the legacy exporter
            torch.onnx.export(
                _TokenEmbeddings(auto_model),
                args,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=[_OUTPUT_NAME],
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


def _use_eager_attention(auto_model: Any) -> str | None:
    """Switch a Hugging Face model to eager attention for tracing; return the setting to restore, if changed.

    The traced eager graph is smaller than the SDPA one (no data-dependent mask branches) and ran 8%
    faster in onnxruntime on a 2-core AVX2 CPU. Models that cannot switch are traced as they are;
    the verification against sentence-transformers judges the result either way.
    """
    previous = getattr(getattr(auto_model, "config", None), "_attn_implementation", None)
    setter = getattr(auto_model, "set_attn_implementation", None)
    if previous in (None, "eager") or setter is None:
        return None
    try:
        setter("eager")
    except Exception:  # an unsupported switch is not fatal
        return None
    return previous if auto_model.config._attn_implementation == "eager" else None


def _verification_texts() -> list[str]:
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
        "Ünïcödé façade naïve café — “quoted” ‘text’ … résumé",  # noqa: RUF001 - typographic quotes on purpose
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


def _read_int8_record(export_dir: Path, manifest: OnnxExportManifest) -> dict[str, Any]:
    """The int8 graph's record (checksum, verification), checked to belong to this export."""
    path = export_dir / INT8_RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise OnnxExportError(f"{export_dir}: no int8 variant yet") from exc
    except (OSError, ValueError) as exc:
        raise OnnxExportError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(record, dict) or record.get("source_sha256") != manifest.model_sha256 or \
            not isinstance(record.get("sha256"), str):
        raise OnnxExportError(f"{path}: does not belong to this export; it will be made again")
    return record


def quantize_int8(export_dir: Path, *, min_cosine: float = INT8_MIN_COSINE) -> dict[str, Any]:
    """Make ``model-int8.onnx`` beside an export's float32 graph, once, and verify it; return its record.

    Dynamic int8 quantization of the MatMul weights only (per channel): the word-embedding table
    stays float32 (quantizing it saves memory but no time and costs accuracy). The result is
    checked against the float32 graph on the sample texts; below ``min_cosine`` it is deleted
    and :class:`OnnxExportError` raised. Needs ``onnx`` and onnxruntime's quantization tools, no torch.
    """
    export_dir = Path(export_dir)
    with contextlib.suppress(OnnxExportError):
        made = _read_int8_record(export_dir, read_export_manifest(export_dir))
        # Only a verified graph counts: a run killed before the check leaves an unverified record.
        if made.get("verification", {}).get("min_cosine", -1.0) >= min_cosine:
            return made  # made already (its checksum is checked when it is loaded)
    reference = OnnxEmbedder.load(export_dir)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxExportError(f"int8 quantization needs onnxruntime's quantization tools ({exc})") from exc
    tmp = export_dir / f".{INT8_MODEL_FILE}.{os.getpid()}.tmp"
    try:
        root_logger = logging.getLogger()  # the quantizer logs advice through the root logger
        was_disabled, root_logger.disabled = root_logger.disabled, True
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(export_dir / MODEL_FILE, tmp, weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"])
        finally:
            root_logger.disabled = was_disabled
        os.replace(tmp, export_dir / INT8_MODEL_FILE)
    except OnnxExportError:
        raise
    except Exception as exc:  # the quantizer raises many kinds for graphs it cannot handle
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OnnxExportError(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
    texts = _verification_texts()
    record: dict[str, Any] = {
        "source_sha256": reference.manifest.model_sha256,
        "sha256": _sha256_file(export_dir / INT8_MODEL_FILE),
        "quantization": "dynamic int8, MatMul weights per channel (onnxruntime.quantization)",
    }
    record_path = export_dir / INT8_RECORD_FILE
    tmp_record = export_dir / f".{INT8_RECORD_FILE}.{os.getpid()}.tmp"
    tmp_record.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp_record, record_path)
    int8 = OnnxEmbedder.load(export_dir, "int8")
    cosines = np.sum(reference.embed_documents(texts) * int8.embed_documents(texts), axis=1)
    record["verification"] = {"texts": len(texts), "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}
    if cosines.min() < min_cosine:
        for name in (INT8_MODEL_FILE, INT8_RECORD_FILE):
            with contextlib.suppress(OSError):
                (export_dir / name).unlink()
        raise OnnxExportError(f"the int8 graph is too far from float32 (lowest cosine {cosines.min():.4f} < {min_cosine})")
    tmp_record.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_record, record_path)
    return record


def _verify(model: SentenceTransformer, embedder: OnnxEmbedder, manifest: OnnxExportManifest) -> dict[str, Any]:
    """Embed the sample texts with both *model* and *embedder* and summarise their cosine similarities."""
    texts = _verification_texts()
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


def _move_into_place(tmp_dir: Path, dest_dir: Path) -> None:
    """Rename the finished export to *dest_dir*, replacing (then deleting) any export already there."""
    if not dest_dir.exists():
        os.replace(tmp_dir, dest_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".old", dir=dest_dir.parent))
    os.replace(dest_dir, old / dest_dir.name)
    os.replace(tmp_dir, dest_dir)
    shutil.rmtree(old, ignore_errors=True)
