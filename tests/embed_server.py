"""A real HTTP server that speaks the OpenAI embeddings API on loopback, for tests and benchmarks.

    python tests/embed_server.py [--fake] [--name all-minilm]

prints ``PORT`` on its first line, then serves ``POST /v1/embeddings`` until killed. It embeds with
the bundled model (onnxruntime, float32), or with ``--fake`` with vectors made from each text's
words (no model: for tests of the wire, fast). What a test needs of a misbehaving server is set
with ``POST /control`` (JSON): ``fail`` (a list of {"status", "retry_after", "count"} answers to
give before serving again), ``delay`` (seconds per request), ``max_batch`` (more inputs get 413),
``key`` (the Bearer token required), ``rotate`` (another model behind the same name: the vectors
turned), ``die_after`` (exit after that many served requests), ``names`` (the model names served),
``rerank_form`` ("cohere": ``POST /rerank`` takes {"query", "documents"} and answers {"results"}, as
Infinity, vLLM and Jina do; "tei": it takes {"query", "texts"} and answers a list, as TEI does). A
re-ranking score is the share of the query's words in the passage.
``GET /stats`` says what it saw: requests, texts, the largest batch, the most requests at once, each
request's arrival time and its first input.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DIM = 384


class State:
    def __init__(self, fake: bool, names: list[str]) -> None:
        self.lock = threading.Lock()
        self.fake = fake
        self.embedder: Any = None
        self.control: dict[str, Any] = {"fail": [], "delay": 0.0, "max_batch": 0, "key": "", "rotate": False,
                                        "die_after": 0, "names": names, "rerank_form": "cohere"}  # fmt: skip
        self.stats: dict[str, Any] = {"requests": 0, "served": 0, "texts": 0, "largest_batch": 0, "in_flight": 0,
                                      "most_at_once": 0, "arrivals": [], "first_inputs": []}  # fmt: skip

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.fake:
            out = np.zeros((len(texts), DIM), dtype=np.float32)
            for i, text in enumerate(texts):
                for word in text.lower().split():
                    h = int.from_bytes(hashlib.sha256(word.strip(".,:;!?").encode()).digest()[:8], "little")
                    out[i, h % DIM] += 1.0
                out[i, 0] += 0.01
        else:
            if self.embedder is None:
                from semsearch.models.local import LocalModel

                self.embedder = LocalModel(None, precision="fp32").embedder()
            out = np.asarray(self.embedder.embed_documents(texts), dtype=np.float32)
        if self.control["rotate"]:
            out = np.roll(out, 7, axis=1) * np.where(np.arange(out.shape[1]) % 2, 1.0, -1.0).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body in one write, flushed after each answer: written apart, Nagle's delay
        # against the client's delayed ACK added 40 ms to every request.
        wbufsize = 1 << 16

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/stats":
                with state.lock:
                    self._send(200, state.stats)
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") == "/control":
                with state.lock:
                    state.control.update(self._body())
                    if self.headers.get("X-Reset-Stats"):
                        state.stats.update(requests=0, served=0, texts=0, largest_batch=0, most_at_once=0,
                                           arrivals=[], first_inputs=[])  # fmt: skip
                self._send(200, {"ok": True})
                return
            if self.path.rstrip("/") in ("/v1/rerank", "/rerank"):
                self._rerank(self._body())
                return
            if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            body = self._body()
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else list(texts or [])
            with state.lock:
                control = dict(state.control)
                stats = state.stats
                stats["requests"] += 1
                stats["arrivals"].append(time.time())
                stats["first_inputs"].append(texts[0] if texts else "")
                stats["in_flight"] += 1
                stats["most_at_once"] = max(stats["most_at_once"], stats["in_flight"])
                failure = None
                if control["fail"]:
                    failure = dict(control["fail"][0])
                    failure["count"] = int(failure.get("count", 1)) - 1
                    if failure["count"] <= 0:
                        state.control["fail"] = control["fail"][1:]
                    else:
                        state.control["fail"] = [failure, *control["fail"][1:]]
            try:
                if control["delay"]:
                    time.sleep(float(control["delay"]))
                if control["key"] and self.headers.get("Authorization") != f"Bearer {control['key']}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
                    return
                if failure is not None:
                    headers = {"Retry-After": str(failure["retry_after"])} if failure.get("retry_after") else {}
                    self._send(int(failure["status"]), {"error": {"message": "injected failure"}}, headers)
                    return
                if body.get("model") not in control["names"]:
                    self._send(404, {"error": {"message": f"model '{body.get('model')}' not found"}})
                    return
                if control["max_batch"] and len(texts) > control["max_batch"]:
                    self._send(413, {"error": {"message": f"too many inputs: at most {control['max_batch']}"}})
                    return
                vectors = state.embed(texts)
                with state.lock:
                    stats["served"] += 1
                    stats["texts"] += len(texts)
                    stats["largest_batch"] = max(stats["largest_batch"], len(texts))
                    die = control["die_after"] and stats["served"] >= control["die_after"]
                if die:
                    os._exit(3)  # a server that dies mid-build: the answer never comes
                self._send(200, {
                    "object": "list", "model": body.get("model"),
                    "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
                    "usage": {"prompt_tokens": sum(len(t.split()) for t in texts),
                              "total_tokens": sum(len(t.split()) for t in texts)},
                })  # fmt: skip
            finally:
                with state.lock:
                    stats["in_flight"] -= 1

        def _rerank(self, body: dict[str, Any]) -> None:
            with state.lock:
                control = dict(state.control)
                state.stats["requests"] += 1
                failure = control["fail"][0] if control["fail"] else None
                if failure is not None:
                    state.control["fail"] = control["fail"][1:]
            if control["key"] and self.headers.get("Authorization") != f"Bearer {control['key']}":
                self._send(401, {"error": {"message": "Incorrect API key provided"}})
                return
            if failure is not None:
                headers = {"Retry-After": str(failure["retry_after"])} if failure.get("retry_after") else {}
                self._send(int(failure["status"]), {"error": {"message": "injected failure"}}, headers)
                return
            tei = control["rerank_form"] == "tei"
            texts = body.get("texts" if tei else "documents")
            if not isinstance(texts, list):
                self._send(
                    422,
                    {
                        "error": f"Failed to deserialize the JSON body: missing field `{'texts' if tei else 'documents'}`"
                    },
                )
                return
            words = set(re.findall(r"\w+", str(body.get("query", "")).lower()))
            scores = [len(words & set(re.findall(r"\w+", str(t).lower()))) / max(1, len(words)) for t in texts]
            with state.lock:
                state.stats["served"] += 1
                state.stats["texts"] += len(texts)
            if tei:
                self._send(
                    200, sorted(({"index": i, "score": v} for i, v in enumerate(scores)), key=lambda d: -d["score"])
                )
            else:
                results = [{"index": i, "relevance_score": v} for i, v in enumerate(scores)]
                self._send(200, {"model": body.get("model"), "results": results[::-1]})

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fake", action="store_true", help="vectors from the texts' words, no model")
    ap.add_argument("--name", action="append", default=None, help="a model name served (repeatable)")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    state = State(args.fake, args.name or ["all-minilm"])
    if not args.fake:
        state.embed(["warm up"])
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(state))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
