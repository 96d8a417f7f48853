"""A small deterministic fake embedder for fast tests (conftest's fixtures and the crash harness)."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

import numpy as np

FAKE_DIM = 64
_WORD = re.compile(r"[a-z0-9_]+")


@functools.cache
def _word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    vector = np.random.default_rng(seed).standard_normal(FAKE_DIM).astype(np.float32)
    vector.flags.writeable = False  # shared by the cache
    return vector


class FakeEmbedder:
    """Bag of words hashed to random directions: texts sharing words are close. Deterministic."""

    dim = FAKE_DIM
    max_tokens = 256

    def __init__(self) -> None:
        self.documents_embedded = 0
        self.queries_embedded = 0

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), FAKE_DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i] += _word_vector(word)
            if not np.linalg.norm(out[i]):  # no words: one fixed direction
                out[i] = _word_vector("\0empty")
            out[i] /= np.linalg.norm(out[i])
        return out

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.documents_embedded += len(texts)
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries_embedded += len(texts)
        return self._embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]
