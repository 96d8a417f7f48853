"""A model served over the OpenAI embeddings API beside the same model run in-process (issue 25).

The server is tests/embed_server.py on loopback: the bundled all-MiniLM-L6-v2 in float32 through
onnxruntime, behind a threaded HTTP server, on the same machine (so its CPU is the benchmark's:
a GPU box down the hall would change the absolute figures, not the client's overhead).

1. Indexing throughput (chunks/s) of SciFact documents (--docs, default 1,000 abstracts) with the
   served model at 1, 2 and 4 requests at once (--api-batch 32), beside the in-process model in
   float32 and in the default precision (int8 on VNNI CPUs). Each build is fresh.
2. The cold query: `semsearch query` in a new process, p50 of --cold-runs, on the served-model
   index and on the local one (model server off: each process loads its own model), and the
   served query's own request (embedding one query over HTTP, warm) p50.

Usage:
    python benchmarks/servers/bench_remote.py --json FILE
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import REPO, arguments, median, repeat, scifact_files, semsearch_cmd, start, write_json

SERVER = REPO / "tests" / "embed_server.py"


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(SERVER), "--name", "all-minilm"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        sys.exit("error: tests/embed_server.py did not start")
    return proc, f"http://127.0.0.1:{int(line)}/v1"


def server_stats(base: str, reset: bool = False) -> dict[str, Any]:
    root = base.rsplit("/v1", 1)[0]
    if reset:
        request = urllib.request.Request(f"{root}/control", data=b"{}", method="POST",
                                         headers={"X-Reset-Stats": "1", "Content-Type": "application/json"})  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()
    with urllib.request.urlopen(f"{root}/stats", timeout=10) as reply:
        return json.loads(reply.read())


def build(where: Path, docs: Path, **settings: Any) -> dict[str, Any]:
    from semsearch import Index

    shutil.rmtree(where, ignore_errors=True)
    started = time.perf_counter()
    with Index.create(where, **settings) as index:
        summary = index.update([docs])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "chunks": summary.chunks_total, "chunks_per_s": summary.chunks_total / seconds,
            "embed_seconds": summary.embed_seconds}  # fmt: skip


def cold_queries(index: Path, queries: list[str], runs: int) -> list[float]:
    env = {**os.environ, "SEMSEARCH_MODEL_SERVER": "0"}
    times = []
    for i in range(runs):
        started = time.perf_counter()
        out = subprocess.run([*semsearch_cmd(), "query", queries[i % len(queries)], "--index", str(index), "-k", "5"],
                             capture_output=True, env=env, check=False)  # fmt: skip
        times.append(time.perf_counter() - started)
        if out.returncode != 0:
            sys.exit(f"error: query failed: {out.stderr.decode()[-300:]}")
    return times


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, work="remote")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--api-batch", type=int, default=32)
    ap.add_argument("--cold-runs", type=int, default=7)
    args = ap.parse_args(argv)
    start(args)
    docs = args.work / "docs"
    n = scifact_files(args.data, docs, args.docs)
    print(f"# {n} SciFact abstracts in {docs}", flush=True)
    proc, base = start_server()
    result: dict[str, Any] = {"docs": n, "api_batch": args.api_batch, "builds": {}}
    try:
        for c in [int(x) for x in args.concurrency.split(",")]:
            server_stats(base, reset=True)
            r = build(args.work / f"served-{c}", docs, model="openai:all-minilm", api_base=base,
                      api_concurrency=c, api_batch=args.api_batch)  # fmt: skip
            r["most_at_once"] = server_stats(base)["most_at_once"]
            result["builds"][f"served, {c} at once"] = r
            print(f"served, {c} at once: {r['chunks']} chunks in {r['seconds']:.1f} s, {r['chunks_per_s']:.0f} chunks/s "
                  f"(server saw {r['most_at_once']} at once)", flush=True)  # fmt: skip
        for precision in ("fp32", "auto"):
            r = build(args.work / f"local-{precision}", docs, precision=precision)
            result["builds"][f"in-process, {precision}"] = r
            print(f"in-process {precision}: {r['chunks']} chunks in {r['seconds']:.1f} s, "
                  f"{r['chunks_per_s']:.0f} chunks/s", flush=True)  # fmt: skip
        queries = ["what reduces the risk of heart disease", "gene expression in tumour cells",
                   "vaccine efficacy in children", "protein folding and misfolding"]  # fmt: skip
        served = cold_queries(args.work / "served-1", queries, args.cold_runs)
        local = cold_queries(args.work / "local-auto", queries, args.cold_runs)
        from semsearch.models import RemoteSettings
        from semsearch.models.remote import RemoteModel

        model = RemoteModel("openai:all-minilm", RemoteSettings(api_base=base))
        embedder = model.query_embedder()
        embedder.embed_queries(["warm"])
        asked = itertools.cycle(queries)
        warm = repeat(lambda: embedder.embed_queries([next(asked)]), 30).median
        result["cold_query_p50_s"] = {"served": median(served), "in-process": median(local)}
        result["served_query_request_p50_ms"] = warm * 1000
        print(f"cold `semsearch query` p50: served {median(served):.3f} s, in-process "
              f"{median(local):.3f} s; a served query's request p50 {warm * 1000:.1f} ms", flush=True)  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    one = result["builds"].get("served, 1 at once", {}).get("chunks_per_s")
    for _name, r in result["builds"].items():
        if one:
            r["ratio_to_one_at_once"] = r["chunks_per_s"] / one
    print(json.dumps({k: round(v["chunks_per_s"], 1) for k, v in result["builds"].items()}))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
