"""Models served over HTTP: an OpenAI-compatible embeddings endpoint (``POST {base}/embeddings``),
as OpenAI itself, Ollama, llama.cpp's server, vLLM, Hugging Face's TEI, LM Studio and Infinity
serve it. A model is named ``openai:NAME`` (NAME as the server knows it).

What the index records of such a model: its name, the endpoint's URL (never a key: that is read
from an environment variable at each run), its dimension, and its vectors of a few fixed probe
texts. Each update, and each query in the same request as the query, embeds the probes again: a
server whose model changed behind the same name gives other vectors and is refused, instead of
mixing two models' vectors in one index.

Requests go in batches (smaller on a server's "too large" answer), several at once (replicas
behind a load balancer are all used), with retries and backoff on 429 and 5xx (honouring
``Retry-After``) and a timeout each. httpx is imported on first use, never by a local model.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from semsearch.errors import ModelError, ModelOptionError
from semsearch.models.base import ModelInfo

if TYPE_CHECKING:
    import numpy as np

PREFIX = "openai:"
DEFAULT_BASE = "https://api.openai.com/v1"  # as the official SDK, when nothing else is named
KEY_ENV = "OPENAI_API_KEY"
# Fixed texts whose vectors identify the served model (kept in the index, float16).
PROBES = (
    "semsearch probe: a lighthouse keeper logs the storm at midnight.",
    "def probe(x):\n    return sorted(x, key=len)",
)
SAME_MODEL_COSINE = 0.99  # a probe's vector now against the recorded one: the same model above this
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is waited this long, then asked again
# Prompts of model families that need them (the local path reads them from the model's config).
KNOWN_PROMPTS: tuple[tuple[str, str, str], ...] = (
    (r"nomic-embed", "search_query: ", "search_document: "),
    (r"(^|[/:-])(multilingual-)?e5([-:.]|$)", "query: ", "passage: "),
    (r"bge-[a-z0-9.-]*en|mxbai-embed-large|snowflake-arctic-embed",
     "Represent this sentence for searching relevant passages: ", ""),
)  # fmt: skip


def is_remote(name: str | None) -> bool:
    return bool(name) and str(name).startswith(PREFIX)


def clean_base(url: str) -> str:
    """The endpoint's URL as the index records it: no user or password in it, no trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelOptionError(f"{{api_base}} must be an http(s) URL (got {shown(url)})", options=("api_base",))
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def shown(url: str) -> str:
    """A URL as it may be printed: without its user and password."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "(an unreadable URL)"


@dataclass(frozen=True)
class RemoteSettings:
    """How to reach and use the server (never stored, except the URL without credentials)."""

    api_base: str | None = None  # None: the index's recorded URL, else OPENAI_BASE_URL, else OpenAI's
    api_key_env: str | None = None  # None: the index's recorded variable name, else OPENAI_API_KEY
    batch: int = 64  # texts per request (halved on a server's "too large" answer)
    concurrency: int = 4  # requests at once
    timeout: float = 120.0  # seconds a request may take
    retries: int = 6  # attempts after the first, on 429, 5xx, timeouts and lost connections
    query_prompt: str | None = None  # None: the family's known prompt, if any
    document_prompt: str | None = None


def family_prompts(model: str) -> tuple[str, str]:
    for pattern, query, document in KNOWN_PROMPTS:
        if re.search(pattern, model, re.IGNORECASE):
            return query, document
    return "", ""


@dataclass
class Traffic:
    """What a run sent: requests, texts and tokens (as the server counts them, when it says)."""

    requests: int = 0
    texts: int = 0
    tokens: int = 0
    retries: int = 0


class Client:
    """Posts batches of texts to one embeddings endpoint, with retries; thread-safe."""

    def __init__(
        self, base: str, model: str, key_env: str, settings: RemoteSettings, on_note: Callable[[str], None]
    ) -> None:
        import httpx

        self.base, self.model, self.key_env, self.settings, self._on_note = base, model, key_env, settings, on_note
        self.traffic = Traffic()
        self._lock = threading.Lock()
        key = os.environ.get(key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._has_key = bool(key)
        self._reached = False  # a server that never answered is not waited for long (a wrong URL)
        limits = httpx.Limits(max_connections=max(1, settings.concurrency) + 1)
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
            limits=limits, trust_env=False,
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The vectors of *texts* (one request, or smaller ones if the server finds it too large)."""
        try:
            return self._post(list(texts))
        except _TooLarge as exc:
            if len(texts) == 1:
                raise ModelError(f"the embedding server refused a chunk as too large: {exc}") from None
            half = len(texts) // 2
            return self.embed(texts[:half]) + self.embed(texts[half:])

    def _post(self, texts: list[str]) -> list[list[float]]:
        import httpx

        body = {"model": self.model, "input": texts, "encoding_format": "float"}
        where = f"the embedding server at {shown(self.base)}"
        attempts = self.settings.retries + 1
        for attempt in range(self.settings.retries + 1):
            wait: float | None
            try:
                reply = self._http.post(self.base + "/embeddings", json=body)
            except httpx.TimeoutException as exc:
                wait, why = None, f"no answer within {self.settings.timeout:g} s"
                if not isinstance(exc, httpx.ConnectTimeout):
                    self._reached = True  # connected: a slow server, not a wrong address
            except httpx.HTTPError as exc:
                wait, why = None, connection_problem(exc)
                if not self._reached:
                    attempts = min(attempts, 3)
            else:
                self._reached = True
                if reply.status_code == 200:
                    return self._vectors(reply, len(texts), where)
                message = server_message(reply)
                if reply.status_code in RETRY_STATUS:
                    wait, why = retry_after(reply.headers.get("retry-after")), f"{reply.status_code} {message}"
                else:
                    raise self._refusal(reply.status_code, message, where)
            if attempt + 1 >= attempts:
                if not self._reached:
                    raise ModelError(f"cannot reach the embedding server at {shown(self.base)}: {why}")
                raise ModelError(f"{where} failed after {attempt + 1} attempts: {why}")
            delay = wait if wait is not None else min(30.0, 0.25 * 2**attempt) * random.uniform(0.75, 1.25)
            with self._lock:
                self.traffic.retries += 1
            if attempt == 0 or delay >= 5:
                self._on_note(f"{where}: {why}; trying again in {delay:.1f} s")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _refusal(self, status: int, message: str, where: str) -> Exception:
        if status in (401, 403):
            if not self._has_key:
                return ModelError(f"{where} wants a key ({status} {message}): set {self.key_env}")
            return ModelError(f"{where} refused the key in {self.key_env} ({status} {message})")
        if status == 404 or (status == 400 and re.search(r"model", message, re.IGNORECASE) and
                             re.search(r"not (found|exist)|unknown|does not", message, re.IGNORECASE)):  # fmt: skip
            return ModelError(f"{where} has no model '{self.model}' ({status} {message})")
        if status == 413 or (
            status in (400, 422) and re.search(r"too (long|large|many)|maximum|exceed", message, re.I)
        ):
            return _TooLarge(f"{status} {message}")
        return ModelError(f"{where} answered {status}: {message}")

    def _vectors(self, reply: Any, n: int, where: str) -> list[list[float]]:
        try:
            data = reply.json()
            items = sorted(data["data"], key=lambda d: int(d.get("index", 0)))
            vectors = [_decode(d["embedding"]) for d in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{where} did not answer as an OpenAI embeddings endpoint does") from None
        if len(vectors) != n:
            raise ModelError(f"{where} returned {len(vectors)} vectors for {n} texts")
        usage = data.get("usage") if isinstance(data, dict) else None
        with self._lock:
            self.traffic.requests += 1
            self.traffic.texts += n
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                self.traffic.tokens += usage["prompt_tokens"]
        return vectors


class _TooLarge(Exception):
    pass


def _decode(value: Any) -> list[float]:
    if isinstance(value, str):  # base64 float32, as encoding_format="base64" returns
        import numpy as np

        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(float).tolist()
    return [float(x) for x in value]


def server_message(reply: Any) -> str:
    """The server's own words about an error, on one line and short."""
    text = ""
    try:
        data = reply.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        text = str(error.get("message") or error.get("detail") or error) if isinstance(error, dict) else str(error)
    except ValueError:
        text = reply.text or ""
    text = " ".join(text.split()) or (reply.reason_phrase or "")
    return text[:200] + ("..." if len(text) > 200 else "")


def connection_problem(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "unknown host"
    return " ".join(text.split())[:200]


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime  # not at import: `semsearch --help` imports this module

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class RemoteEmbedder:
    """Embeds documents and queries on the server (vectors float32, L2-normalized)."""

    def __init__(self, client: Client, info: ModelInfo, check: np.ndarray | None) -> None:
        self.client, self.info = client, info
        self.dim, self.max_tokens = info.dim, info.max_tokens
        self._check = check  # the recorded vector of PROBES[0], sent with each query batch

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        prompt = self.info.document_prompt
        return self._embed([prompt + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        prompt = self.info.query_prompt
        if self._check is None:
            return self._embed([prompt + t for t in texts])
        out = self._embed([PROBES[0], *(prompt + t for t in texts)])
        compare(self._check[None, :], out[:1], self.info, self.client.base)
        return out[1:]

    @property
    def traffic(self) -> Traffic:
        """Requests, texts and tokens sent so far (the progress bar shows them)."""
        return self.client.traffic

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(t) // 4) for t in texts]  # the server's tokenizer is not at hand

    def _embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = max(1, self.client.settings.batch)
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        workers = max(1, min(self.client.settings.concurrency, len(batches)))
        if workers == 1:
            parts = [self.client.embed(b) for b in batches]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="semsearch-remote") as pool:
                parts = list(pool.map(self.client.embed, batches))
        out = np.asarray([v for part in parts for v in part], dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise ModelError(
                f"the embedding server at {shown(self.client.base)} returned {out.shape[-1]}-d vectors; "
                f"the index holds {self.dim}-d ones of {self.info.name}",
                remedy="rebuild",
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def encode_probe(vectors: np.ndarray) -> str:
    import numpy as np

    return base64.b64encode(np.asarray(vectors, dtype="<f2").tobytes()).decode("ascii")


def decode_probe(text: str, dim: int) -> np.ndarray | None:
    import numpy as np

    try:
        values = np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)
        return values.reshape(-1, dim) if dim and values.size and values.size % dim == 0 else None
    except (ValueError, TypeError):
        return None


def same_dim(recorded: int, now: int, info: ModelInfo, base: str) -> None:
    """Refuse a server whose vectors are not of the recorded dimension."""
    if now != recorded:
        raise ModelError(
            f"the model '{model_of(info.name)}' at {shown(base)} now gives {now}-d vectors, not the "
            f"{recorded}-d ones this index holds: it is another model",
            remedy="rebuild",
        )


def compare(recorded: np.ndarray, now: np.ndarray, info: ModelInfo, base: str) -> None:
    """Refuse a server whose vectors of the probe texts are not the recorded ones."""
    import numpy as np

    same_dim(recorded.shape[1], now.shape[1], info, base)
    a = recorded / np.maximum(np.linalg.norm(recorded, axis=1, keepdims=True), 1e-12)
    b = now / np.maximum(np.linalg.norm(now, axis=1, keepdims=True), 1e-12)
    cosine = float(np.min(np.sum(a * b, axis=1)))
    if cosine < SAME_MODEL_COSINE:
        raise ModelError(
            f"the model '{model_of(info.name)}' at {shown(base)} is not the one this index was built with "
            f"(its vectors of fixed test texts changed: cosine {cosine:.3f})",
            remedy="rebuild",
        )


def model_of(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


class RemoteModel:
    """A ModelProvider for ``openai:NAME``: the facts come from the server (one request)."""

    def __init__(
        self,
        name: str,
        settings: RemoteSettings | None = None,
        *,
        known: ModelInfo | None = None,
        on_note: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.name = name.strip()
        self.model = model_of(self.name)
        if not self.model:
            raise ModelOptionError("{model} openai: needs the server's model name (openai:NAME)", options=("model",))
        self.settings = settings or RemoteSettings()
        self._known = known if known is not None and known.name == self.name else None
        self._on_note = on_note
        recorded = self._known.endpoint if self._known is not None else ""
        base = self.settings.api_base or recorded or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE
        self.base = clean_base(base)
        self.key_env = self.settings.api_key_env or (self._known.key_env if self._known is not None else "") or KEY_ENV
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.key_env):
            raise ModelOptionError(
                f"{{api_key_env}} names an environment variable (got {self.key_env!r})", options=("api_key_env",)
            )
        self._client: Client | None = None
        self._info: ModelInfo | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.base, self.model, self.key_env, self.settings, self._on_note)
        return self._client

    @property
    def traffic(self) -> Traffic:
        return self.client.traffic

    def info(self) -> ModelInfo:
        """The model's facts: asked of the server, and checked against the recorded ones."""
        if self._info is not None:
            return self._info
        import numpy as np

        probes = np.asarray(self.client.embed(list(PROBES)), dtype=np.float32)
        dim = int(probes.shape[1])
        known = self._known
        if known is not None:
            recorded = decode_probe(known.probe, known.dim)
            if recorded is not None:
                compare(recorded, probes, known, self.base)
            else:
                same_dim(known.dim, dim, known, self.base)
            self._info = replace(known, endpoint=self.base, key_env=self.key_env)
            return self._info
        query, document = family_prompts(self.model)
        if self.settings.query_prompt is not None:
            query = self.settings.query_prompt
        if self.settings.document_prompt is not None:
            document = self.settings.document_prompt
        identity = f"{self.name}\0{dim}\0{query}\0{document}".encode()
        self._info = ModelInfo(
            name=self.name,
            fingerprint="remote:" + hashlib.sha256(identity).hexdigest(),
            dim=dim,
            max_tokens=8192,
            query_prompt=query,
            document_prompt=document,
            precision="remote",
            endpoint=self.base,
            key_env=self.key_env,
            probe=encode_probe(probes),
        )
        return self._info

    def measure(self) -> Callable[[str], int] | None:
        return None  # chunks are cut by the index's own token counts

    def embedder(self) -> RemoteEmbedder:
        return RemoteEmbedder(self.client, self.info(), None)

    def query_embedder(self) -> RemoteEmbedder:
        """Queries with PROBES[0] in the same request, checked against the recorded vector."""
        info = self._known or self.info()
        recorded = decode_probe(info.probe, info.dim)
        return RemoteEmbedder(self.client, info, None if recorded is None else recorded[0])

    def finish_build(self, on_note: Callable[[str], None]) -> None:
        traffic = self.client.traffic
        if traffic.requests:
            tokens = f", {traffic.tokens:,} tokens" if traffic.tokens else ""
            retried = f", {traffic.retries} retried" if traffic.retries else ""
            on_note(f"{shown(self.base)}: {traffic.requests:,} requests, {traffic.texts:,} texts{tokens}{retried}")
