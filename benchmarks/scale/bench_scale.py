"""Scale benchmark: big indexes on one machine, the current design beside an older one.

For each size (chunks, about; default 5,000 and 100,000) a project of synthetic text files is
written under --work and indexed through the real indexer (walk, readers, chunker, writer) by a
child process whose "model" has the bundled model's identity but hands back synthetic vectors:
clustered unit vectors in a low-dimensional subspace plus noise (real sentence embeddings have a
low intrinsic dimension). The index is then exactly what `semsearch index` would have made, so
the real console script takes it as its own: every later step runs `semsearch` in a new process
with the real query or document model.

Per size, for this tree ("new") and, with ``--baseline REV``, for a git worktree of REV ("old",
run on a copy of the same index, its manifest marked with the format that version reads), in
alternating order so that machine noise falls on both:

* ``cold_query_p50_s``: `semsearch query "..." --json` in a new process (the first run of each
  design is a warm-up: the page cache holds the files as it would for a user);
* ``edit_update_s``: one file edited (an editor's atomic save), `semsearch index` end to end;
* ``delete_update_s``: a folder of about 1,000 chunks deleted, `semsearch index`;
* ``cold_query_after_p50_s``: the cold query again once those updates are in (deltas, tombstones);
* ``peak_rss_mb`` of the build, of an update and of a query (each child's own peak);
* ``build_graph_s`` (the graph build and save inside the first index run) and ``build_s``;
* ``recall_at_10`` of the vector file at the default settings against exact search, and a
  sweep of ef_search;
* the in-process phases of a cold query: imports, open, file checks, the first query (a graph
  too big to load for one query is searched in its mapped file), the next seven, then the graph
  loaded (a long-lived process does after eight) and warm searches; and hnswlib's
  ``load_index`` of the base file alone (the floor of a design that loads the graph to search).

Usage:
    python benchmarks/scale/bench_scale.py --sizes 5000,100000 --json FILE
    python benchmarks/scale/bench_scale.py --sizes 5000,100000 --baseline 887b6fd --json FILE
    python benchmarks/scale/bench_scale.py --sizes 1000000 --baseline 887b6fd   # heavy: about an hour

Both designs run from their own source trees (PYTHONPATH), so a run from a worktree of a commit
measures that commit even while the working tree changes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    PYTHON,
    REPO,
    arguments,
    bench_env,
    fmt_bytes,
    fmt_s,
    median,
    print_table,
    run_child,
    start,
    write_json,
)

DIM = 384
RECALL_TARGET = 0.98
CLI_QUERY = "how do I declare optional query parameters with default values"
FILES_PER_FOLDER = 100  # a folder of the project: about 1,000 chunks at 10 per file

# The build child: index the project with synthetic vectors, print the summary as JSON.
BUILD_SCRIPT = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    import numpy as np
    from pathlib import Path
    from benchmarks.scale.bench_scale import Generator, SyntheticModel
    project, n, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    from semsearch import Index
    gen = Generator(max(10, n // 100), 32, 0.8, 0.15, seed)
    started = time.perf_counter()
    with Index.create(project / ".semsearch", provider=SyntheticModel(gen, seed + 1)) as index:
        s = index.update([project / "synthetic"])
    print(json.dumps({"seconds": time.perf_counter() - started, "graph_seconds": s.graph_seconds,
                      "chunks": s.chunks_total, "files": s.indexed}))
''')

# In-process phases of a cold query (no model: the vector search of a synthetic query).
COLD_SCRIPT = textwrap.dedent('''
    import time
    t0 = time.perf_counter()
    import json, sys
    import numpy as np
    from pathlib import Path
    from semsearch import store
    t1 = time.perf_counter()
    reader = store.IndexReader(Path(sys.argv[1]))
    queries = np.load(sys.argv[2])
    t2 = time.perf_counter()
    index = reader._vector_index()
    t3 = time.perf_counter()
    hits = reader.vector_search(queries[0], 10)  # a design that loads the graph loads it here
    reader.fetch_chunks([cid for cid, _ in hits])
    t4 = time.perf_counter()
    parts = getattr(index, "parts", [index])
    before = []  # the searches a one-query process makes (unloaded where the design allows)
    for q in queries[1:8]:
        s = time.perf_counter()
        reader.vector_search(q, 10)
        before.append(time.perf_counter() - s)
    rss = {}  # where a one-query process's memory goes: its own, and the vector file's pages
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "RssAnon", "RssFile")):
            rss[line.split(":")[0]] = int(line.split()[1]) / 1024
    s = time.perf_counter()
    for part in parts:
        part._graph()  # loaded now if it was not
    t5 = time.perf_counter()
    warm = []
    for q in queries[8:208]:
        s2 = time.perf_counter()
        reader.vector_search(q, 10)
        warm.append(time.perf_counter() - s2)
    import hnswlib  # the floor of a design that loads: hnswlib copying the base file in
    base = reader.index_dir / reader.layout.files()[0] if hasattr(reader, "layout") else reader.index_dir / reader.vector_file
    graph = hnswlib.Index(space="cosine", dim=int(queries.shape[1]))
    s3 = time.perf_counter()
    graph.load_index(str(base), max_elements=0)
    t6 = time.perf_counter()
    print(json.dumps({"imports": t1 - t0, "open": t2 - t1, "checks": t3 - t2, "first_query": t4 - t3,
                      "total": t4 - t0, "next_queries_p50": sorted(before)[len(before) // 2],
                      "load_graph": t5 - s, "warm_knn_p50": sorted(warm)[len(warm) // 2],
                      "hnswlib_load_base": t6 - s3, "rss_mb_before_load": rss}))
''')


class Generator:
    """Clustered unit vectors in a low-dimensional subspace (plus noise), reproducible by seed."""

    def __init__(self, n_clusters: int, intrinsic: int, spread: float, noise: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, min(intrinsic, DIM))))
        self.basis = basis.astype(np.float32).T
        self.spread, self.noise = spread, noise

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cl = rng.integers(0, len(self.centers), n)
        k = self.basis.shape[0]
        x = self.centers[cl].copy()
        x += (rng.standard_normal((n, k), dtype=np.float32) * (self.spread / math.sqrt(k))) @ self.basis
        x += rng.standard_normal((n, DIM), dtype=np.float32) * (self.noise / math.sqrt(DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)


class SyntheticModel:
    """A model provider with the bundled model's identity and tokenizer, and synthetic vectors."""

    def __init__(self, gen: Generator, seed: int) -> None:
        from semsearch.models import model_provider

        self._real = model_provider(None)
        self._gen, self._rng = gen, np.random.default_rng(seed)
        self.dim, self.max_tokens = DIM, self._real.info().max_tokens

    def info(self):
        return self._real.info()

    def measure(self):
        return self._real.measure()

    def embedder(self):
        return self

    def query_embedder(self):
        raise RuntimeError("the build child never queries")

    def finish_build(self, on_note) -> None:
        return None

    def embed_documents(self, texts):
        return self._gen.draw(len(texts), self._rng)

    embed_queries = embed_documents


def write_project(root: Path, n: int, per_file: int, seed: int) -> None:
    """About *n* chunks of text: files of *per_file* paragraphs, FILES_PER_FOLDER to a folder."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(3000)])
    shutil.rmtree(root, ignore_errors=True)
    for f in range(max(1, n // per_file)):
        folder = root / "synthetic" / f"g{f // FILES_PER_FOLDER:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        words = vocab[rng.integers(0, len(vocab), (per_file, 22))]  # a paragraph: about one chunk
        (folder / f"{f:07d}.txt").write_text("\n\n".join(" ".join(w) + "." for w in words) + "\n")


def index_vectors(index_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every live chunk's id and vector, from the database (the truth for recall)."""
    from semsearch.store import IndexReader
    from semsearch.store.database import decode_vectors

    with IndexReader(index_dir) as reader:
        g = reader.generation
        rows = reader.conn.execute(
            "SELECT id, vector FROM chunks WHERE gen_added <= ? AND (gen_removed IS NULL OR gen_removed > ?)", (g, g)
        ).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, decode_vectors([r[1] for r in rows], DIM)  # float16 (format 6) or float32


def recall(index_dir: Path, queries: np.ndarray, efs: list[int]) -> dict[int, float]:
    import hnswlib

    from semsearch.store import IndexReader

    ids, vecs = index_vectors(index_dir)
    truth = []
    for q0 in range(0, len(queries), 256):
        sims = queries[q0 : q0 + 256] @ vecs.T
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        truth.extend(set(ids[row].tolist()) for row in top)
    with IndexReader(index_dir) as reader:
        path = index_dir / reader.vector_file
    graph = hnswlib.Index(space="cosine", dim=DIM)
    graph.load_index(str(path), max_elements=0)
    out = {}
    for ef in efs:
        graph.set_ef(ef)
        labels, _ = graph.knn_query(queries, k=10)
        out[ef] = sum(len(set(row.tolist()) & t) for row, t in zip(labels, truth, strict=True)) / (10 * len(truth))
    return out


def mapped_recall(index_dir: Path, queries: np.ndarray, ef: int) -> float:
    """Recall@10 of the search a one-query process makes: the mapped file's (MappedGraph)."""
    from semsearch.store import IndexReader
    from semsearch.vectors.hnswfile import MappedGraph

    ids, vecs = index_vectors(index_dir)
    with IndexReader(index_dir) as reader:
        path = index_dir / reader.vector_file
    graph = MappedGraph(path, DIM)
    found = 0
    for q in queries:
        truth = set(ids[np.argpartition(-(vecs @ q), 10)[:10]].tolist())
        found += len({label for label, _ in graph.search(q, 10, ef)} & truth)
    return found / (10 * len(queries))


class Design:
    """One version of semsearch: its command and the project copy it runs on."""

    def __init__(self, name: str, project: Path, src: Path | None, env: dict[str, str]) -> None:
        self.name, self.project = name, project
        self.env = dict(env)
        if src is not None:
            self.env["PYTHONPATH"] = str(src)
        self.cmd = [PYTHON, "-m", "semsearch"]

    def run(self, *args: str, check: bool = True):
        return run_child([*self.cmd, *args], env=self.env, cwd=self.project, check=check)

    def query(self):
        return self.run("query", CLI_QUERY, "--json", "-k", "10")

    def update(self):
        return self.run("index", "--quiet")


def edit(project: Path, file_no: int, word: str) -> Path:
    """An editor's atomic save of one file (also breaks a hard link to the other design's copy)."""
    path = project / "synthetic" / f"g{file_no // FILES_PER_FOLDER:05d}" / f"{file_no:07d}.txt"
    text = path.read_text() + f"\nAn added line about the {word} gasket, edited for the benchmark.\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def run_size(n: int, args: argparse.Namespace, env: dict[str, str], baseline_src: Path | None) -> dict:
    print(f"\n--- about {n:,} chunks ---", flush=True)
    base = args.work / f"scale-{n}"
    project = base / "new"
    write_project(project, n, args.per_file, args.seed)
    built = run_child(
        [PYTHON, "-c", BUILD_SCRIPT, str(project), str(n), str(args.seed), str(REPO)],
        env={**env, "PYTHONPATH": str(REPO)},
    )
    summary = json.loads(built.stdout)
    index_dir = project / ".semsearch"
    sizes = {p.name: p.stat().st_size for p in index_dir.iterdir() if p.is_file()}
    print(f"  built {summary['chunks']:,} chunks of {summary['files']:,} files in {fmt_s(summary['seconds'])} "
          f"(graph {fmt_s(summary['graph_seconds'])}), peak RSS {built.max_rss_kb / 1024:.0f} MB", flush=True)
    designs = [Design("new", project, REPO, env)]  # this tree, even beside an installed copy
    if baseline_src is not None:
        old = base / "old"
        shutil.rmtree(old, ignore_errors=True)
        old.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(project / "synthetic"), str(old / "synthetic")], check=True)
        shutil.copytree(index_dir, old / ".semsearch")
        manifest = old / ".semsearch" / "manifest.json"
        data = json.loads(manifest.read_text())
        data["format_version"] = min(int(data["format_version"]), 3)  # what the older version reads
        manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        designs.append(Design("old", old, baseline_src, env))

    out: dict = {"n": n, "chunks": summary["chunks"], "files": summary["files"], "build_s": summary["seconds"],
                 "build_graph_s": summary["graph_seconds"], "build_peak_rss_mb": built.max_rss_kb / 1024,
                 "index_bytes": sum(sizes.values()), "designs": {}}
    figures = {d.name: {"query": [], "query_rss": [], "edit": [], "edit_rss": [], "delete": [], "after": []}
               for d in designs}
    for d in designs:
        d.query()  # warm-up: the page cache, the ONNX export read once
    for i in range(args.cold_runs):
        for d in designs if i % 2 == 0 else designs[::-1]:
            r = d.query()
            figures[d.name]["query"].append(r.seconds)
            figures[d.name]["query_rss"].append(r.max_rss_kb / 1024)
    files = summary["files"]
    for i in range(args.edits):
        file_no = (7919 * (i + 1)) % files
        for d in designs if i % 2 == 0 else designs[::-1]:
            edit(d.project, file_no, f"edit{i}")
            r = d.update()
            figures[d.name]["edit"].append(r.seconds)
            figures[d.name]["edit_rss"].append(r.max_rss_kb / 1024)
    folder = f"g{(files // FILES_PER_FOLDER) // 2:05d}"
    for d in designs:
        shutil.rmtree(d.project / "synthetic" / folder)
        figures[d.name]["delete"].append(d.update().seconds)
    for i in range(args.cold_runs):
        for d in designs if i % 2 == 0 else designs[::-1]:
            figures[d.name]["after"].append(d.query().seconds)
    queries = Generator(max(10, n // 100), 32, 0.8, 0.15, args.seed).draw(args.queries, np.random.default_rng(99))
    qpath = base / "queries.npy"
    np.save(qpath, queries)
    for d in designs:
        f = figures[d.name]
        # cwd: `python -c` puts the working folder first on sys.path, before the design's PYTHONPATH.
        phases = json.loads(run_child([PYTHON, "-c", COLD_SCRIPT, str(d.project / ".semsearch"), str(qpath)],
                                      env=d.env, cwd=d.project).stdout)
        out["designs"][d.name] = {
            "cold_query_p50_s": median(f["query"]),
            "cold_query_after_p50_s": median(f["after"]),
            "edit_update_s": median(f["edit"]),
            "edit_updates_s": f["edit"],
            "delete_update_s": median(f["delete"]),
            "peak_rss_mb": {"query": max(f["query_rss"]), "update": max(f["edit_rss"]),
                            "build": built.max_rss_kb / 1024},
            "cold_phases_after_updates": phases,
            "index_bytes_after": sum(p.stat().st_size for p in (d.project / ".semsearch").iterdir() if p.is_file()),
        }
    print("  recall ...", flush=True)
    from semsearch.vectors.hnsw import HnswParams, search_ef

    default_ef = search_ef(HnswParams().ef_search, summary["chunks"])  # what a search of this size uses
    sweep = recall(index_dir, queries, sorted({default_ef, 128, *args.ef_sweep}))
    out["default_ef"] = default_ef
    out["recall_at_10"] = sweep[default_ef]
    out["recall_at_10_mapped"] = mapped_recall(index_dir, queries, default_ef)
    out["recall_sweep"] = sweep
    new = out["designs"]["new"]
    new.update({"recall_at_10": sweep[default_ef], "build_graph_s": summary["graph_seconds"]})
    out.update({k: new[k] for k in ("cold_query_p50_s", "edit_update_s", "delete_update_s")})
    out["peak_rss_mb"] = new["peak_rss_mb"]
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return out


def report(results: list[dict]) -> None:
    smallest = min(results, key=lambda r: r["n"])
    for r in results:
        rows = [
            ("chunks / files", f"{r['chunks']:,} / {r['files']:,}", "", ""),
            ("build (index run) / graph", f"{fmt_s(r['build_s'])} / {fmt_s(r['build_graph_s'])}",
             f"graph {fmt_s(r['build_graph_s'] / r['chunks'] * 100_000)} per 100,000 chunks", ""),
            ("index size", fmt_bytes(r["index_bytes"]), f"{r['index_bytes'] / r['chunks']:,.0f} B/chunk", ""),
            (f"recall@10 at the default ef ({r.get('default_ef', 128)})", f"{r['recall_at_10']:.4f}",
             f"mapped search {r.get('recall_at_10_mapped', float('nan')):.4f}; >= {RECALL_TARGET}", ""),
            ("recall sweep", ", ".join(f"ef {ef}: {v:.4f}" for ef, v in sorted(r["recall_sweep"].items())), "", ""),
        ]
        for name, d in r["designs"].items():
            base = smallest["designs"][name]
            ratio = lambda key, d=d, base=base: d[key] / base[key] if base[key] else float("nan")  # noqa: E731
            ph = d["cold_phases_after_updates"]
            rows += [
                (f"[{name}] cold `semsearch query` p50", fmt_s(d["cold_query_p50_s"]),
                 f"{ratio('cold_query_p50_s'):.2f}x the {smallest['n']:,} figure", ""),
                (f"[{name}] one file edited: `semsearch index`", fmt_s(d["edit_update_s"]),
                 f"{ratio('edit_update_s'):.2f}x the {smallest['n']:,} figure", ""),
                (f"[{name}] a folder of ~1,000 chunks deleted", fmt_s(d["delete_update_s"]),
                 f"{ratio('delete_update_s'):.2f}x", ""),
                (f"[{name}] cold query after the updates p50", fmt_s(d["cold_query_after_p50_s"]), "", ""),
                (f"[{name}] cold phases (in-process)",
                 f"open {fmt_s(ph['open'])}, checks {fmt_s(ph['checks'])}, first query "
                 f"{fmt_s(ph['first_query'])}, next 7 p50 {fmt_s(ph['next_queries_p50'])}",
                 f"then loaded in {fmt_s(ph['load_graph'])}: warm knn {fmt_s(ph['warm_knn_p50'])}; "
                 f"hnswlib load of the base {fmt_s(ph['hnswlib_load_base'])}", ""),
                (f"[{name}] peak RSS build / update / query",
                 f"{d['peak_rss_mb']['build']:.0f} / {d['peak_rss_mb']['update']:.0f} / "
                 f"{d['peak_rss_mb']['query']:.0f} MB", "", ""),
            ]
        print_table(f"scale: about {r['n']:,} chunks", rows)


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0], data=False)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[5_000, 100_000],
                    help="comma-separated chunk counts (default 5000,100000)")
    ap.add_argument("--baseline", default=None, help="a git revision to run beside this tree (a worktree of it)")
    ap.add_argument("--cold-runs", type=int, default=5, help="cold queries per design and phase (default 5)")
    ap.add_argument("--edits", type=int, default=3, help="one-file edits per design (default 3)")
    ap.add_argument("--queries", type=int, default=500, help="queries for recall (default 500)")
    ap.add_argument("--ef-sweep", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128, 256])
    ap.add_argument("--per-file", type=int, default=10, help="paragraphs per synthetic file (default 10)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the projects under --work")
    args = ap.parse_args(argv)
    start(args)
    env = bench_env({"NO_COLOR": "1"})
    baseline_src = None
    if args.baseline:
        baseline_src = args.work / "baseline-src"
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline_src)],
                       capture_output=True, check=False)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline_src), args.baseline],
                       check=True, capture_output=True)
        rev = subprocess.run(["git", "-C", str(baseline_src), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        print(f"baseline ('old'): {args.baseline} = {rev}, run from {baseline_src}")
    results = []
    try:
        for n in sorted(args.sizes):
            started = time.perf_counter()
            r = run_size(n, args, env, baseline_src)
            r["bench_seconds"] = time.perf_counter() - started
            results.append(r)
            write_json(args.json, {"baseline": args.baseline, "results": results})
    finally:
        if baseline_src is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline_src)],
                           capture_output=True, check=False)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
