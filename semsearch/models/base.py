"""What the rest of semsearch needs from a model: its facts, and the protocols its embedders follow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """The model that embedded an index: queries must use the same one."""

    name: str
    fingerprint: str
    dim: int
    max_tokens: int
    query_prompt: str = ""
    document_prompt: str = ""
    stamp: str = ""  # sizes and mtimes of the model files when the fingerprint was taken
    precision: str = "fp32"  # how documents were embedded: fp32, int8 (ONNX), bf16 or fp16 (autocast), remote
    endpoint: str = ""  # a served model's URL (models/remote.py), without credentials
    key_env: str = ""  # the environment variable its key is read from (the name only, never the key)
    probe: str = ""  # a served model's vectors of fixed texts (float16, base64): the model's identity check


class QueryEmbedder(Protocol):
    """Embeds queries. Vectors are float32, L2-normalized."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class Embedder(QueryEmbedder, Protocol):
    """What indexing and search need from a model. Vectors are float32, L2-normalized."""

    dim: int
    max_tokens: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


class ModelProvider(Protocol):
    """A model as an index uses it: cheap facts first, the heavy embedders only when needed.

    :func:`semsearch.models.model_provider` returns one for a model name (the bundled model, a
    folder, the local Hugging Face cache, or a name registered with
    :func:`semsearch.models.register_model`).
    """

    def info(self) -> ModelInfo:
        """Name, fingerprint, dimension, limits and precision (what the index records)."""
        ...

    def measure(self) -> Callable[[str], int] | None:
        """Counts a text's model tokens (to cut chunks the model would truncate), if it can."""
        ...

    def embedder(self) -> Embedder:
        """The document embedder (loaded on first use)."""
        ...

    def query_embedder(self) -> QueryEmbedder:
        """The fastest embedder that reproduces the index's query vectors."""
        ...

    def finish_build(self, on_note: Callable[[str], None]) -> None:
        """After an index was built or updated: prepare what later queries load (an ONNX export, say)."""
        ...
