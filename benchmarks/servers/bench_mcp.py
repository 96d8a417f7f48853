"""MCP server benchmark: the official SDK's client against a real `semsearch mcp` subprocess.

What it measures, on an index of ../shared/data/fastapi-docs (built under --work if missing, or
--index DIR):

1. Start-up to first answer: spawn `semsearch mcp --index IDX` through ``stdio_client``, the
   ``initialize`` handshake, then the first ``search`` (which loads the query model and the vector
   graph; the SDK's client also lists the tools once before it validates the first result).
2. Warm latency, client-side, as the round trip of ``ClientSession.call_tool``: ``search`` with
   the Markdown headings of the docs as queries in each mode (hybrid default, semantic, lexical)
   and with filters (types ["md"], paths ["<docs>/tutorial"], globs ["**/advanced/**"]), the
   same queries in every kind; ``similar`` on a few files (whole file and one line); ``status``;
   and the protocol floor, an MCP ``ping``. The kinds are called round-robin, so machine noise falls on all of them alike.
   p50, p95, max per kind. Target (the issue): warm ``search`` p50 <= 15 ms.
3. The server's memory: VmRSS after the warm-up and at the end, and VmHWM (its peak), read from
   /proc/PID/status of the server child (found in /proc: a child of this process whose command
   line holds "semsearch" and "mcp").
4. Reference, same run: the same calls through the library in a fresh process
   (``Index.open(IDX).search(q, k=10, ...)``, ``similar``, ``status``) after the same warm-up, so
   the protocol's cost shows as a ratio and a difference of p50s.

With --rounds N (default 2) the MCP server and the in-process reference run N times each, in
ABBA order (MCP first in odd rounds, the reference first in even ones), each time in a fresh
process; the latencies are pooled over rounds and each round's start-up is listed.

Usage:
    python benchmarks/servers/bench_mcp.py                 # full run (a few minutes once the index exists)
    python benchmarks/servers/bench_mcp.py --quick         # smoke run: 40 calls per kind, one round
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    PYTHON,
    arguments,
    bench_env,
    fastapi_index,
    fmt_bytes,
    fmt_s,
    median,
    pct,
    print_table,
    ratio,
    semsearch_cmd,
    start,
    stats,
    verdict,
    write_json,
)
from benchmarks.queries.bench_query import bench_queries, export_status

TARGET_P50_S = 0.015
SLOW_S = 0.100  # a warm call over this is listed as slow

# The reference: the same calls through the library in a fresh process. Reads a JSON plan on
# stdin, prints a JSON object of timings on stdout.
INPROC_SCRIPT = r'''
import json, sys, time
from pathlib import Path

plan = json.load(sys.stdin)
started = time.perf_counter()
from semsearch import Index
index = Index.open(plan["index"])
project = index.path.parent
opened = time.perf_counter() - started

def absolute(paths):
    return None if paths is None else [str(project / p) for p in paths]

def call(tool, a):
    if tool == "search":
        return index.search(a["query"], k=a.get("k", 10), mode=a.get("mode"), files_only=a.get("files_only", False),
                            paths=absolute(a.get("paths")), globs=a.get("globs"), types=a.get("types"),
                            types_not=a.get("types_not"))
    if tool == "similar":
        return index.similar(str(project / a["path"]), line=a.get("line"), k=a.get("k", 10),
                             files_only=a.get("files_only", False))
    if tool == "status":
        return index.status()
    return None  # ping: nothing to do in-process

t = time.perf_counter()
call("search", {"query": plan["first_query"]})
first = time.perf_counter() - t
for tool, a in plan["warmup"]:
    call(tool, a)
times = {name: [] for name in plan["order"]}
for name, tool, a in plan["calls"]:
    t = time.perf_counter()
    call(tool, a)
    times[name].append(time.perf_counter() - t)
index.close()

# The same calls through the SDK's server object in this process (no transport): what the tool
# machinery (argument validation, worker thread, result conversion) adds to the library call.
server_times = {name: [] for name in plan["order"]}
if plan.get("server_pass"):
    import anyio
    from semsearch.cli.mcp_server import build_server

    server = build_server(Path(plan["index"]))

    async def through_server():
        await server.call_tool("search", {"query": plan["first_query"]})
        for tool, a in plan["warmup"]:
            await server.call_tool(tool, a)
        for name, tool, a in plan["calls"]:
            if tool == "ping":
                continue
            t = time.perf_counter()
            await server.call_tool(tool, a)
            server_times[name].append(time.perf_counter() - t)

    anyio.run(through_server)
    server._semsearch_service.close()
print(json.dumps({"open_s": opened, "first_search_s": first, "times": times, "server_times": server_times}))
'''


def docs_root(index_dir: Path, data: Path) -> Path:
    """The indexed folder that holds the docs (one with a tutorial/ folder), else the shared copy."""
    from semsearch import Index

    with Index.open(index_dir) as index:
        roots = [Path(r) for r in index.status(check_disk=False).roots]
    for root in roots:
        if (root / "tutorial").is_dir():
            return root
    return roots[0] if roots else data / "fastapi-docs"


def build_plan(queries: list[str], root: Path, project: Path, n: int, n_similar: int, n_status: int,
               n_ping: int) -> dict[str, Any]:
    """The calls of one round: kinds (name, tool, argument list), warm-up calls and the round-robin order."""
    rel = lambda p: os.path.relpath(p, project)  # noqa: E731 - tool paths are relative to the project
    tutorial = rel(root / "tutorial")
    mds = sorted(root.rglob("*.md"))
    step = max(1, len(mds) // 10)
    files = [m for m in mds[::step] if m.stat().st_size > 2000][:8] or mds[:8]
    lines = {f: max(1, len(f.read_text(encoding="utf-8", errors="replace").splitlines()) // 2) for f in files}
    search_kinds = [
        ("search hybrid (default)", {}),
        ("search semantic", {"mode": "semantic"}),
        ("search lexical", {"mode": "lexical"}),
        ("search types=[md]", {"types": ["md"]}),
        ("search paths=[tutorial]", {"paths": [tutorial]}),
        ("search globs=[**/advanced/**]", {"globs": ["**/advanced/**"]}),
    ]
    kinds: list[tuple[str, str, list[dict[str, Any]]]] = []
    for name, extra in search_kinds:  # the same queries in every kind: the differences are the mode's or filter's
        kinds.append((name, "search", [{"query": q, **extra} for q in queries[:n]]))
    kinds.append(("similar (whole file)", "similar", [{"path": rel(files[i % len(files)])} for i in range(n_similar)]))
    kinds.append(("similar (line)", "similar",
                  [{"path": rel(files[i % len(files)]), "line": lines[files[i % len(files)]]} for i in range(n_similar)]))
    kinds.append(("status", "status", [{} for _ in range(n_status)]))
    kinds.append(("ping (protocol floor)", "ping", [{} for _ in range(n_ping)]))
    calls: list[tuple[str, str, dict[str, Any]]] = []
    longest = max(len(c) for _, _, c in kinds)
    for j in range(longest):
        for name, tool, args in kinds:
            if j < len(args):
                calls.append((name, tool, args[j]))
    spare = queries[n:] or queries  # warm-up and first queries: not among the timed ones
    warmup: list[tuple[str, dict[str, Any]]] = []
    for i, (_, extra) in enumerate(search_kinds):
        warmup += [("search", {"query": spare[(3 * i + j) % len(spare)], **extra}) for j in range(3)]
    warmup += [("similar", {"path": rel(f)}) for f in files[:2]] + [("status", {})]
    return {
        "first_query": spare[-1],
        "order": [name for name, _, _ in kinds],
        "tools": {name: tool for name, tool, _ in kinds},
        "calls": calls,
        "warmup": warmup,
        "tutorial": tutorial,
        "similar_files": [rel(f) for f in files],
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) of a process from /proc/PID/status."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def find_server_pid(timeout: float = 10.0) -> int | None:
    """The `semsearch mcp` child of this process (stdio_client does not expose its pid)."""
    me = os.getpid()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid != me:
                    continue
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except (OSError, ValueError, IndexError):
                continue
            if any("semsearch" in a for a in argv) and "mcp" in argv:
                return int(entry.name)
        time.sleep(0.05)
    return None


def payload_bytes(result: Any) -> int:
    if getattr(result, "structured_content", None) is not None:
        return len(json.dumps(result.structured_content))
    return sum(len(getattr(c, "text", "") or "") for c in getattr(result, "content", []) or [])


def mcp_round(index_dir: Path, plan: dict[str, Any], env: dict[str, str], errlog_path: Path, cwd: Path) -> dict[str, Any]:
    """One fresh server: start-up to first answer, warm-up, the timed calls, the server's memory."""
    import anyio
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    command = semsearch_cmd()
    params = StdioServerParameters(command=command[0], args=[*command[1:], "mcp", "--index", str(index_dir)],
                                   cwd=str(cwd), env=env)
    out: dict[str, Any] = {"times": {name: [] for name in plan["order"]}, "errors": [], "bytes": {}}

    async def main() -> None:
        with open(errlog_path, "a", encoding="utf-8") as errlog:
            started = time.perf_counter()
            async with stdio_client(params, errlog=errlog) as streams, ClientSession(*streams) as session:
                await session.initialize()
                out["initialize_s"] = time.perf_counter() - started
                first = await session.call_tool("search", {"query": plan["first_query"]})
                out["first_answer_s"] = time.perf_counter() - started
                out["first_search_s"] = out["first_answer_s"] - out["initialize_s"]
                if first.is_error:
                    out["errors"].append(("first search", str(first.content)[:300]))
                pid = find_server_pid()
                out["server_pid"] = pid
                out["rss_after_start_kb"] = proc_status(pid) if pid else {}
                for tool, a in plan["warmup"]:
                    await session.call_tool(tool, a)
                out["rss_after_warmup_kb"] = proc_status(pid) if pid else {}
                sizes: dict[str, list[int]] = {name: [] for name in plan["order"]}
                for name, tool, a in plan["calls"]:
                    if tool == "ping":
                        t = time.perf_counter()
                        await session.send_ping()
                        out["times"][name].append(time.perf_counter() - t)
                        continue
                    t = time.perf_counter()
                    result = await session.call_tool(tool, a)
                    out["times"][name].append(time.perf_counter() - t)
                    if result.is_error:
                        out["errors"].append((name, json.dumps(a)[:200], str(result.content)[:300]))
                    elif len(sizes[name]) < 50:
                        sizes[name].append(payload_bytes(result))
                out["bytes"] = {k: (sum(v) / len(v) if v else 0) for k, v in sizes.items()}
                # The client's own share: the SDK validates every result against the tool's output
                # schema (jsonschema) inside call_tool; timed again on one search result.
                sample = await session.call_tool("search", {"query": plan["first_query"]})
                checks = []
                for _ in range(50):
                    t = time.perf_counter()
                    await session.validate_tool_result("search", sample)
                    checks.append(time.perf_counter() - t)
                out["client_validate_s"] = median(checks)
                out["rss_end_kb"] = proc_status(pid) if pid else {}
                closing = time.perf_counter()
            out["close_s"] = time.perf_counter() - closing

    anyio.run(main)
    return out


def inproc_round(index_dir: Path, plan: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The same calls through the library in a fresh process."""
    spec = {k: plan[k] for k in ("first_query", "order", "calls", "warmup")}
    spec["index"] = str(index_dir)
    spec["server_pass"] = True
    proc = subprocess.run([PYTHON, "-c", INPROC_SCRIPT], input=json.dumps(spec).encode(), capture_output=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"in-process reference failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    return json.loads(proc.stdout)


def fmt_diff(seconds: float) -> str:
    return ("-" if seconds < 0 else "+") + fmt_s(abs(seconds))


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, default=None, help="use this index instead of building fastapi-docs")
    ap.add_argument("--calls", type=int, default=200, help="timed search calls per search kind per round (default 200)")
    ap.add_argument("--similar-calls", type=int, default=40, help="timed calls per similar kind per round (default 40)")
    ap.add_argument("--status-calls", type=int, default=40, help="timed status calls per round (default 40)")
    ap.add_argument("--ping-calls", type=int, default=100, help="timed pings per round (default 100)")
    ap.add_argument("--rounds", type=int, default=2, help="MCP / in-process rounds, ABBA order (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 search calls per kind, 10 of the others, one round")
    args = ap.parse_args(argv)
    if args.quick:
        args.calls, args.similar_calls, args.status_calls, args.ping_calls, args.rounds = 40, 10, 10, 20, 1

    start()
    env = bench_env()
    index_dir, build_seconds = fastapi_index(args.data, args.work, args.index, "mcp-fastapi-idx")
    index_dir = index_dir.resolve()
    print(f"index: {index_dir}" + (f" (built in {fmt_s(build_seconds)})" if build_seconds else ""))
    print(f"ONNX export for the index's model: {export_status(index_dir)}")
    from importlib.metadata import version

    import mcp  # noqa: F401 - the SDK must be there

    print(f"mcp SDK {version('mcp')}; server: {' '.join(semsearch_cmd())} mcp --index {index_dir}")
    root = docs_root(index_dir, args.data)
    project = index_dir.parent
    queries = bench_queries(root.parent if root.name == "fastapi-docs" else args.data, args.calls + 40,
                            "how do I declare optional query parameters")
    plan = build_plan(queries, root, project, args.calls, args.similar_calls, args.status_calls, args.ping_calls)
    print(f"docs: {root}; project (the index's folder's parent): {project}; paths scope {plan['tutorial']!r}")
    print(f"similar on: {', '.join(os.path.basename(f) for f in plan['similar_files'])}")
    print(f"{len(plan['calls'])} timed calls per round, round-robin over {len(plan['order'])} kinds; "
          f"{args.rounds} round(s)", flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    errlog_path = Path(tempfile.mkstemp(prefix="mcp-server-stderr-", suffix=".log", dir=args.work)[1])
    mcp_runs: list[dict[str, Any]] = []
    ref_runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = ("mcp", "ref") if r % 2 == 0 else ("ref", "mcp")
        for which in order:
            t = time.perf_counter()
            if which == "mcp":
                mcp_runs.append(mcp_round(index_dir, plan, env, errlog_path, args.work))
                m = mcp_runs[-1]
                print(f"round {r + 1}: MCP server done in {fmt_s(time.perf_counter() - t)} "
                      f"(first answer {fmt_s(m['first_answer_s'])}, errors {len(m['errors'])})", flush=True)
            else:
                ref_runs.append(inproc_round(index_dir, plan, env))
                print(f"round {r + 1}: in-process reference done in {fmt_s(time.perf_counter() - t)}", flush=True)

    pooled = {name: [x for m in mcp_runs for x in m["times"][name]] for name in plan["order"]}
    ref_pooled = {name: [x for rr in ref_runs for x in rr["times"][name]] for name in plan["order"]}
    figures: dict[str, Any] = {}
    rows: list[tuple[str, str, str, str]] = []
    firsts = [m["first_answer_s"] for m in mcp_runs]
    inits = [m["initialize_s"] for m in mcp_runs]
    rows.append(("start-up to first answer", fmt_s(median(firsts)),
                 "rounds: " + ", ".join(fmt_s(x) for x in firsts), ""))
    rows.append(("  spawn + initialize", fmt_s(median(inits)), "rounds: " + ", ".join(fmt_s(x) for x in inits), ""))
    rows.append(("  first search (+ tools/list)", fmt_s(median([m["first_search_s"] for m in mcp_runs])),
                 "in-process open + first search " + fmt_s(median([rr["open_s"] + rr["first_search_s"] for rr in ref_runs])), ""))
    all_ok = True
    for name in plan["order"]:
        s = stats(pooled[name])
        ref = stats(ref_pooled[name]) if plan["tools"][name] != "ping" else None
        slow = sum(1 for x in pooled[name] if x > SLOW_S)
        figures[name] = {"mcp": s, "in_process": ref, "slow_calls_over_100ms": slow,
                         "mean_payload_bytes": median([m["bytes"].get(name, 0) for m in mcp_runs])}
        value = f"{fmt_s(s['p50'])} / {fmt_s(s['p95'])} / {fmt_s(s['max'])}"
        if ref is None:
            against = "no tool: JSON-RPC round trip only"
        else:
            against = f"in-proc p50 {fmt_s(ref['p50'])}: {ratio(s['p50'], ref['p50'])}, {fmt_diff(s['p50'] - ref['p50'])}"
        ok: bool | None = None
        if name.startswith("search"):
            ok = s["p50"] <= TARGET_P50_S
            all_ok = all_ok and ok
            against += f"; target p50 <= {fmt_s(TARGET_P50_S)}"
        rows.append((f"{name} p50/p95/max (n={s['n']})", value, against, verdict(ok)))
    hwm = [m["rss_end_kb"].get("VmHWM", 0) for m in mcp_runs]
    warm_rss = [m["rss_after_warmup_kb"].get("VmRSS", 0) for m in mcp_runs]
    end_rss = [m["rss_end_kb"].get("VmRSS", 0) for m in mcp_runs]
    start_rss = [m["rss_after_start_kb"].get("VmRSS", 0) for m in mcp_runs]
    rows.append(("server RSS after first answer", fmt_bytes(median(start_rss) * 1024), "VmRSS", ""))
    rows.append(("server RSS after warm-up", fmt_bytes(median(warm_rss) * 1024), "VmRSS", ""))
    rows.append(("server RSS at the end", fmt_bytes(median(end_rss) * 1024), "VmRSS after all timed calls", ""))
    rows.append(("server peak RSS", fmt_bytes(max(hwm) * 1024), "VmHWM (max over rounds)", ""))
    print_table("semsearch mcp: client-side call_tool round trips (pooled over rounds)", rows)

    # Where the protocol's time goes, per kind: the library call, the same call through the SDK's
    # server object in-process (tool machinery, no transport), the full stdio round trip.
    srv_pooled = {name: [x for rr in ref_runs for x in rr.get("server_times", {}).get(name, [])] for name in plan["order"]}
    ping_p50 = pct(pooled[plan["order"][-1]], 50)
    validate = median([m["client_validate_s"] for m in mcp_runs])
    split_rows: list[tuple[str, str, str, str]] = []
    for name in plan["order"]:
        if plan["tools"][name] == "ping":
            continue
        lib, srv, full = pct(ref_pooled[name], 50), pct(srv_pooled[name], 50), pct(pooled[name], 50)
        figures[name]["in_process_mcpserver"] = stats(srv_pooled[name]) if srv_pooled[name] else None
        split_rows.append((name, f"{fmt_s(lib)} -> {fmt_s(srv)} -> {fmt_s(full)}",
                           f"tool machinery {fmt_diff(srv - lib)}, transport + client {fmt_diff(full - srv)}", ""))
    split_rows.append(("ping (JSON-RPC floor)", fmt_s(ping_p50), "stdio both ways, no tool", ""))
    split_rows.append(("client output-schema check", fmt_s(validate), "validate_tool_result on one search result", ""))
    figures["client_validate_search_result_s"] = validate
    print_table("p50: Index.search -> MCPServer.call_tool in-process -> stdio call_tool", split_rows)

    errors = [e for m in mcp_runs for e in m["errors"]]
    print(f"\nwarm search p50 <= {fmt_s(TARGET_P50_S)} in every search kind: {verdict(all_ok)}")
    print(f"tool errors: {len(errors)}")
    for e in errors[:5]:
        print(f"  {e}")
    print("mean structured payload per call: " + ", ".join(
        f"{name.split(' (')[0] if name.startswith('ping') else name}: {fmt_bytes(figures[name]['mean_payload_bytes'])}"
        for name in plan["order"] if plan["tools"][name] != "ping"))
    print("slowest MCP calls:")
    slowest = sorted(((x, name) for name in plan["order"] for x in pooled[name]), reverse=True)[:5]
    for x, name in slowest:
        print(f"  {fmt_s(x)}  {name}")
    server_err = errlog_path.read_text(encoding="utf-8", errors="replace")
    err_lines = [ln for ln in server_err.splitlines() if ln.strip()]
    print(f"server stderr: {len(err_lines)} line(s) over {len(mcp_runs)} server(s) (kept in {errlog_path})")
    for ln in err_lines[:10]:
        print(f"  | {ln[:200]}")

    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    write_json(args.json, {
        "load_average_end": list(os.getloadavg()),
        "index": str(index_dir),
        "build_seconds": build_seconds,
        "plan": {"calls_per_search_kind": args.calls, "similar_calls": args.similar_calls,
                 "status_calls": args.status_calls, "ping_calls": args.ping_calls, "rounds": args.rounds,
                 "paths_scope": plan["tutorial"], "similar_files": plan["similar_files"]},
        "target_search_p50_s": TARGET_P50_S,
        "target_met": all_ok,
        "startup": [{k: m[k] for k in ("initialize_s", "first_search_s", "first_answer_s", "close_s")} for m in mcp_runs],
        "server_memory_kb": [{"after_first_answer": m["rss_after_start_kb"], "after_warmup": m["rss_after_warmup_kb"],
                              "end": m["rss_end_kb"]} for m in mcp_runs],
        "figures": figures,
        "in_process_open": [{"open_s": rr["open_s"], "first_search_s": rr["first_search_s"]} for rr in ref_runs],
        "errors": errors,
        "server_stderr_lines": err_lines[:200],
        "raw": {"mcp": [m["times"] for m in mcp_runs], "in_process": [rr["times"] for rr in ref_runs]},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
