"""The PyTorch path: a sentence-transformers model (GPUs, bf16/fp16 autocast, and the ONNX export's source)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from semsearch.errors import ModelError
from semsearch.models.hardware import pick_device
from semsearch.models.resolve import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAMES,
    ModelSpec,
    offline_environment,
    pick_prompt,
)
from semsearch.models.tokenizer import ModelTokenizer

if TYPE_CHECKING:
    import numpy as np


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
        kwargs: dict[str, Any] = {
            "batch_size": batch_size,
            "normalize_embeddings": True,
            "convert_to_numpy": True,
            "show_progress_bar": False,
        }
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
