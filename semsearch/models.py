"""Which model embeds an index and its queries: resolution, fingerprints, the ONNX query path."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from semsearch.embed import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAMES,
    Embedder,
    ModelSpec,
    ModelTokenizer,
    SentenceTransformerEmbedder,
    model_fingerprint,
    pick_prompt,
    read_prompts,
    resolve_model,
)
from semsearch.errors import ModelError
from semsearch.store import ModelInfo

if TYPE_CHECKING:
    import numpy as np


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
    dim = _read_json(path / "1_Pooling" / "config.json").get("word_embedding_dimension") or \
        _read_json(path / "config.json").get("hidden_size") or 0
    max_tokens = _read_json(path / "sentence_bert_config.json").get("max_seq_length") or \
        _read_json(path / "config.json").get("max_position_embeddings") or 512
    return int(dim), int(max_tokens)


class LocalModel:
    """The model for `semsearch index`: facts without torch, the heavy embedder on first use."""

    def __init__(
        self,
        name: str | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        known: ModelInfo | None = None,
    ) -> None:
        self.spec: ModelSpec = resolve_model(name)
        self.device = device
        self.precision = precision
        self._known = known
        self._info: ModelInfo | None = None
        self._embedder: SentenceTransformerEmbedder | None = None

    def info(self) -> ModelInfo:
        if self._info is not None:
            return self._info
        stamp = model_stamp(self.spec.path)
        known = self._known
        if known is not None and known.name == self.spec.name and known.stamp == stamp:
            # Same files as when the index was built: their hash was checked then.
            self._info = known
            return known
        fingerprint = model_fingerprint(self.spec)
        prompts = read_prompts(self.spec.path)
        dim, max_tokens = static_model_facts(self.spec.path)
        if not dim:
            dim = self.embedder().dim
            max_tokens = self.embedder().max_tokens
        self._info = ModelInfo(
            name=self.spec.name, fingerprint=fingerprint, dim=dim, max_tokens=max_tokens,
            query_prompt=pick_prompt(prompts, QUERY_PROMPT_NAMES),
            document_prompt=pick_prompt(prompts, DOCUMENT_PROMPT_NAMES), stamp=stamp,
        )
        return self._info

    def measure(self) -> Callable[[str], int] | None:
        try:
            return ModelTokenizer(self.spec.path, self.info().document_prompt).count
        except ModelError:
            return None

    def embedder(self) -> SentenceTransformerEmbedder:
        if self._embedder is None:
            self._embedder = SentenceTransformerEmbedder(self.spec, self.device, self.precision)
            if self._info is not None and self._embedder.dim != self._info.dim:
                raise ModelError(f"model {self.spec.name} gives {self._embedder.dim}-d vectors, config says {self._info.dim}")
        return self._embedder

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def ensure_export(self, on_note: Callable[[str], None] = lambda s: None) -> Path | None:
        """Make the ONNX export the query path uses, once per model fingerprint."""
        from semsearch.onnx_embed import OnnxEmbedder, OnnxExportError, export_onnx

        target = export_dir_for(self.info().fingerprint)
        if (target / "export.json").is_file():
            try:
                OnnxEmbedder.load(target)
                return target
            except OnnxExportError:
                pass  # damaged: export again
        try:
            on_note("exporting the model to ONNX for fast queries (once per model)")
            export_onnx(self.embedder().model, target)
        except (OnnxExportError, ModelError, OSError) as exc:
            on_note(f"ONNX export failed, queries will load sentence-transformers instead: {exc}")
            return None
        return target


class QueryEmbedder(Protocol):
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def load_query_embedder(
    model: ModelInfo,
    on_note: Callable[[str], None] = lambda s: None,
) -> tuple[QueryEmbedder, int, str]:
    """The fastest embedder that reproduces the index's model: (embedder, max tokens, backend).

    The ONNX export (onnxruntime + tokenizers, no torch) is used when it exists for the index's
    model fingerprint and passes its checks; otherwise sentence-transformers, with a note.
    """
    if os.environ.get("SEMSEARCH_BACKEND", "auto") != "torch":
        from semsearch.onnx_embed import OnnxEmbedder, OnnxExportError

        target = export_dir_for(model.fingerprint)
        if (target / "export.json").is_file():
            try:
                onnx = OnnxEmbedder.load(target)
                if onnx.dim == model.dim:
                    return onnx, onnx.max_tokens, "onnx"
                on_note("the ONNX export does not match the index's model; using sentence-transformers")
            except OnnxExportError as exc:
                on_note(f"{exc}; using sentence-transformers")
        else:
            on_note("no ONNX export of this model yet (run `semsearch index` to make it); using sentence-transformers")
    local = LocalModel(model.name, known=model)
    info = local.info()
    if info.fingerprint != model.fingerprint:
        raise ModelError(
            f"the index was built with a different version of {model.name}; run `semsearch index --rebuild`"
        )
    embedder: Embedder = local.embedder()
    return embedder, embedder.max_tokens, "sentence-transformers"
