"""Re-ranking: a cross-encoder scores (query, passage) pairs and the best first-stage hits are re-ordered.

A re-ranker is named as a model is:

- a sentence-transformers ``CrossEncoder`` folder, or a name in the local Hugging Face cache
  (default :data:`DEFAULT_RERANK_MODEL`; ``SEMSEARCH_RERANK_MODEL`` names another). It is exported
  to ONNX once (with torch, :mod:`semsearch.models.rerank_export`), checked against the model's own
  scores, and then runs on onnxruntime and tokenizers alone, as the query embedder does.
- ``http(s)://HOST/.../rerank`` (``#MODEL`` after it names the model the server should use): a
  re-ranking endpoint. Infinity, vLLM, llama.cpp's server, Jina and Cohere take ``{"query",
  "documents"}``; Hugging Face's TEI takes ``{"query", "texts"}`` and is recognised by its 422
  answer to the first form. The key, if the server wants one, is read from the variable
  ``SEMSEARCH_RERANK_KEY`` (never stored, never printed).

Nothing heavy is imported here until a re-ranker is loaded.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semsearch.errors import ModelError
from semsearch.models.hardware import usable_cpus
from semsearch.models.onnx_runtime import (
    MODEL_FILE,
    TOKENIZER_FILE,
    OnnxExportError,
    check_sha256,
    create_session,
)

if TYPE_CHECKING:
    import onnxruntime
    import tokenizers

    from semsearch.models.rerank_export import RerankManifest

__all__ = ["DEFAULT_RERANK_MODEL", "ApiReranker", "OnnxReranker", "Reranker", "load_reranker"]

DEFAULT_RERANK_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"  # khoj's; 22M parameters, MiniLM-L6 size
MODEL_ENV = "SEMSEARCH_RERANK_MODEL"
KEY_ENV = "SEMSEARCH_RERANK_KEY"
BATCH_SIZE = 8  # pairs per onnxruntime call (of similar length: sorted first)
API_TIMEOUT = 30.0  # seconds one re-ranking request may take
API_RETRIES = 2  # on 429 and 5xx, waiting as Retry-After says (at most MAX_API_WAIT)
MAX_API_WAIT = 5.0


class Reranker(Protocol):
    """Scores passages against a query: higher is more relevant."""

    name: str

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One float per text, in the texts' order."""
        ...


class OnnxReranker:
    """A cross-encoder exported to ONNX (:func:`semsearch.models.rerank_export.export_cross_encoder`)."""

    def __init__(
        self,
        name: str,
        manifest: RerankManifest,
        session: onnxruntime.InferenceSession,
        tokenizer: tokenizers.Tokenizer,
    ) -> None:
        self.name = name
        self.manifest = manifest
        self._session = session
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, folder: Path, *, name: str, threads: int | None = None) -> OnnxReranker:
        """Load and check (checksums) the export in *folder*."""
        from tokenizers import Tokenizer

        from semsearch.models.rerank_export import RerankManifest

        manifest = RerankManifest.read(folder)
        check_sha256(folder / MODEL_FILE, manifest.model_sha256)
        check_sha256(folder / TOKENIZER_FILE, manifest.tokenizer_sha256)
        try:
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:  # the Rust side raises a bare Exception on a bad file
            raise OnnxExportError(f"{folder / TOKENIZER_FILE}: cannot load tokenizer ({exc})") from exc
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=manifest.max_seq_length, strategy="longest_first")
        session = create_session(folder / MODEL_FILE, threads or usable_cpus())
        return cls(name, manifest, session, tokenizer)

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        encodings = self._tokenizer.encode_batch([(query, text) for text in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty(len(texts), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            part = order[start : start + BATCH_SIZE]
            out[part] = self._run([encodings[i] for i in part])
        if self.manifest.activation == "sigmoid":
            return (1.0 / (1.0 + np.exp(-out))).astype(np.float32)
        return out

    def _run(self, encodings: list[tokenizers.Encoding]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        feed: dict[str, np.ndarray] = {}
        pad = self.manifest.pad_token_id
        columns = {
            "input_ids": ("ids", pad),
            "attention_mask": ("attention_mask", 0),
            "token_type_ids": ("type_ids", 0),
        }
        for name in self.manifest.input_names:
            field, fill = columns[name]
            rows = np.full((len(encodings), width), fill, dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, field)
                rows[row, : len(values)] = values
            feed[name] = rows
        logits = self._session.run(None, feed)[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(encodings), -1)[:, 0]


class ApiReranker:
    """A re-ranking endpoint over HTTP (Cohere/Jina form, or TEI's)."""

    def __init__(self, url: str, *, timeout: float = API_TIMEOUT) -> None:
        import httpx

        from semsearch.models.remote import clean_base

        address, _, model = url.partition("#")
        self.url = clean_base(address)
        self.model = urllib.parse.unquote(model)
        self.name = self.url + (f"#{self.model}" if self.model else "")
        key = os.environ.get(KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=5.0), trust_env=False)
        self._tei = False  # learnt from the server's answer to the first request

    def close(self) -> None:
        self._http.close()

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        reply = self._post(query, list(texts))
        if reply.status_code == 422 and not self._tei and "texts" in reply.text:
            self._tei = True  # TEI: it wants "texts" where the others want "documents"
            reply = self._post(query, list(texts))
        if reply.status_code != 200:
            from semsearch.models.remote import server_message

            raise ModelError(
                f"the re-ranking server at {self._where} answered {reply.status_code}: {server_message(reply)}"
            )
        return self._scores(reply, len(texts))

    @property
    def _where(self) -> str:
        from semsearch.models.remote import shown

        return shown(self.url)

    def _post(self, query: str, texts: list[str]) -> Any:
        import httpx

        from semsearch.models.remote import RETRY_STATUS, connection_problem, retry_after

        if self._tei:
            body: dict[str, Any] = {"query": query, "texts": texts, "truncate": True}
        else:
            body = {"query": query, "documents": texts, "return_documents": False}
            if self.model:
                body["model"] = self.model
        for attempt in range(API_RETRIES + 1):
            try:
                reply = self._http.post(self.url, json=body)
            except httpx.HTTPError as exc:
                raise ModelError(
                    f"cannot reach the re-ranking server at {self._where}: {connection_problem(exc)}"
                ) from None
            if reply.status_code not in RETRY_STATUS or attempt == API_RETRIES:
                return reply
            wait = retry_after(reply.headers.get("retry-after"))
            time.sleep(min(MAX_API_WAIT, wait if wait is not None else 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _scores(self, reply: Any, n: int) -> np.ndarray:
        """{"results": [{"index", "relevance_score"}]} (Cohere, Jina, Infinity, vLLM, llama.cpp) or
        [{"index", "score"}] (TEI), in any order."""
        out = np.full(n, np.nan, dtype=np.float32)
        try:
            data = reply.json()
            items = data["results"] if isinstance(data, dict) else data
            for item in items:
                value = item.get("relevance_score", item.get("score"))
                out[int(item["index"])] = float(value)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise ModelError(
                f"the re-ranking server at {self._where} did not answer as a /rerank endpoint does"
            ) from None
        if np.isnan(out).any():
            raise ModelError(
                f"the re-ranking server at {self._where} scored {int((~np.isnan(out)).sum())} of {n} passages"
            )
        return out


def is_api(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def load_reranker(name: str | None = None, *, on_note: Callable[[str], None] = lambda s: None) -> Reranker:
    """The re-ranker called *name* (None: ``SEMSEARCH_RERANK_MODEL``, else the default), without any
    download. A local cross-encoder is exported to ONNX on its first use (a note says so)."""
    name = (name or os.environ.get(MODEL_ENV) or DEFAULT_RERANK_MODEL).strip()
    if is_api(name):
        return ApiReranker(name)
    from semsearch.models.resolve import cache_dir, model_stamp, resolve_model

    try:
        spec = resolve_model(name)
    except ModelError:
        raise ModelError(
            f"re-ranking model '{name}' is neither a folder nor in the local Hugging Face cache (no downloads "
            f"are made); name a cross-encoder with --rerank-model (a folder, a cached name, or a /rerank URL)"
        ) from None
    if spec.bundled:
        raise ModelError(f"{name} is an embedding model, not a cross-encoder; name a re-ranking model")
    # The export is named by the model's folder and its files' sizes and times (a changed file
    # makes a new one); what it computes is checked against the model when it is made.
    key = hashlib.sha256(f"{spec.path}\0{model_stamp(spec.path)}".encode()).hexdigest()[:40]
    folder = cache_dir() / "onnx-rerank" / key
    with _EXPORT_LOCK:
        try:
            return OnnxReranker.load(folder, name=spec.name)
        except OnnxExportError:
            pass
        from semsearch.models.rerank_export import export_cross_encoder

        on_note(f"exporting the re-ranking model {name} to ONNX (once)")
        export_cross_encoder(spec.path, folder)
        return OnnxReranker.load(folder, name=spec.name)


_EXPORT_LOCK = threading.Lock()
