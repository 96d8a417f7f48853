"""The light query and CPU path: an exported model run by onnxruntime and tokenizers, no torch.

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

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsearch.errors import ModelError
from semsearch.models.hardware import usable_cpus

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers

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
_HASH_CHUNK = 1 << 20  # 1 MiB
# Inputs per onnxruntime call: small batches of similar length keep the activations in cache
# (batch sizes compared in benchmarks/RESULTS.md).
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
        self.threads = session.get_session_options().intra_op_num_threads or 1
        """The CPU threads one call may use (onnxruntime's intra-op threads)."""
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
            model_sha256 = read_int8_record(export_dir, manifest)["sha256"]
        elif variant != "fp32":
            raise OnnxExportError(f"unknown ONNX variant {variant!r} (fp32 or int8)")
        if not model_path.is_file():
            raise OnnxExportError(f"{model_path}: missing from the ONNX export")

        # Hashing the model overlaps with building the session (the longer of the two): both
        # release the GIL. The session is thrown away if the checksum then fails.
        model_check = _ChecksumThread(model_path, model_sha256)
        model_check.start()
        try:
            check_sha256(tokenizer_path, manifest.tokenizer_sha256)
            tokenizer = _load_tokenizer(tokenizer_path, manifest)
            session = create_session(model_path, threads)
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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raise :class:`OnnxExportError` if *path* is missing, unreadable or not the file with that checksum."""
    try:
        actual = sha256_file(path)
    except FileNotFoundError as exc:
        raise OnnxExportError(f"{path}: missing from the ONNX export") from exc
    except OSError as exc:
        raise OnnxExportError(f"{path}: cannot read ({exc.strerror})") from exc
    if actual != expected:
        raise OnnxExportError(f"{path}: checksum mismatch (file damaged or replaced); re-export the model")


class _ChecksumThread(threading.Thread):
    """Run :func:`check_sha256` in the background and keep its error for the caller's thread."""

    def __init__(self, path: Path, expected: str) -> None:
        super().__init__(name="semsearch-sha256", daemon=True)
        self._path = path
        self._expected = expected
        self._error: OnnxExportError | None = None

    def run(self) -> None:
        try:
            check_sha256(self._path, self._expected)
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


def create_session(model_path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
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


def read_int8_record(export_dir: Path, manifest: OnnxExportManifest) -> dict[str, Any]:
    """The int8 graph's record (checksum, verification), checked to belong to this export."""
    path = export_dir / INT8_RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise OnnxExportError(f"{export_dir}: no int8 variant yet") from exc
    except (OSError, ValueError) as exc:
        raise OnnxExportError(f"{path}: unreadable ({exc})") from exc
    if (
        not isinstance(record, dict)
        or record.get("source_sha256") != manifest.model_sha256
        or not isinstance(record.get("sha256"), str)
    ):
        raise OnnxExportError(f"{path}: does not belong to this export; it will be made again")
    return record
