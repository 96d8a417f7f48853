"""Graph build benchmark: HNSW M and ef_construction against build time and recall, on real embeddings.

Real vectors: every chunk of the FastAPI docs index (``--fastapi-index``, the int8 document
embeddings semsearch made) and the SciFact abstracts embedded once with the bundled model's
document embedder (cached under --work). To reach a size past the real ones, synthetic points are
drawn around them: a real vector plus Gaussian noise scaled so that a point's cosine to its
anchor is about the median nearest-neighbour cosine among the real vectors (near-paraphrases,
not random noise), normalised. The clustered synthetic generator of bench_scale.py is run too.

Queries: the SciFact claims embedded with the query embedder (real questions against real and
near-real passages), and for the synthetic set fresh draws. For each (M, ef_construction): the
graph built with every core (hnswlib's num_threads=-1: the cores of this machine), its build time
per 100,000 vectors, and recall@10 against exact search at ef_search 64, 128 (the default) and 256.

Usage:
    python benchmarks/scale/bench_graph.py                       # 100,000 vectors
    python benchmarks/scale/bench_graph.py --size 1000000        # heavy
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import DEFAULT_WORK, arguments, fmt_s, print_table, require_data, start, write_json
from benchmarks.scale.bench_scale import Generator

GRID = [(16, 100), (16, 200), (24, 100), (24, 200), (32, 100), (32, 200), (48, 200)]
EFS = [64, 128, 256]
DEFAULT = (32, 200)  # semsearch.vectors.hnsw.HnswParams


def real_vectors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(passage vectors, query vectors): FastAPI chunks and SciFact abstracts; SciFact claims."""
    cache = args.work / "graph-real-vectors.npz"
    if cache.exists():
        data = np.load(cache)
        return data["passages"], data["queries"]
    from semsearch.models import model_provider
    from semsearch.store import IndexReader
    from semsearch.store.database import decode_vectors

    parts = []
    if args.fastapi_index and (args.fastapi_index / "manifest.json").exists():
        with IndexReader(args.fastapi_index) as reader:
            rows = reader.conn.execute("SELECT vector FROM chunks").fetchall()
            parts.append(decode_vectors([r[0] for r in rows], reader.manifest.model.dim))
        print(f"  {len(rows):,} FastAPI chunk vectors from {args.fastapi_index}", flush=True)
    scifact = require_data(args.data, "scifact")
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").open()]
    claims = [json.loads(line)["text"] for line in (scifact / "queries.jsonl").open()]
    provider = model_provider(None)
    started = time.perf_counter()
    passages = provider.embedder().embed_documents([f"{d['title']}. {d['text']}" for d in docs])
    queries = provider.query_embedder().embed_queries(claims)
    print(f"  embedded {len(docs):,} SciFact abstracts and {len(claims)} claims in {fmt_s(time.perf_counter() - started)}",
          flush=True)
    parts.append(np.asarray(passages, dtype=np.float32))
    out = np.vstack(parts).astype(np.float32)
    np.savez(cache, passages=out, queries=np.asarray(queries, dtype=np.float32))
    return out, np.asarray(queries, dtype=np.float32)


def around(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """*n* vectors: the real ones, then points drawn around random real anchors."""
    if n <= len(real):
        return real[:n].copy()
    sample = real[rng.choice(len(real), min(2000, len(real)), replace=False)]
    sims = sample @ real.T
    sims[sims > 0.9999] = -1  # a vector is not its own neighbour
    nn = float(np.median(sims.max(axis=1)))
    # A unit vector plus noise of per-dimension sigma: cosine ~ 1 / sqrt(1 + d sigma^2).
    sigma = math.sqrt(max(1.0 / nn**2 - 1.0, 1e-4) / real.shape[1])
    extra = n - len(real)
    anchors = real[rng.integers(0, len(real), extra)]
    points = anchors + rng.standard_normal(anchors.shape, dtype=np.float32) * sigma
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    print(f"  median nearest-neighbour cosine of the real vectors {nn:.3f}; noise sigma {sigma:.4f}", flush=True)
    return np.vstack([real, points.astype(np.float32)])


def exact(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set[int]]:
    out = []
    for q0 in range(0, len(queries), 256):
        sims = queries[q0 : q0 + 256] @ vectors.T
        out.extend(set(row.tolist()) for row in np.argpartition(-sims, k, axis=1)[:, :k])
    return out


def sweep(name: str, vectors: np.ndarray, queries: np.ndarray, grid: list[tuple[int, int]]) -> list[dict]:
    import hnswlib

    truth = exact(vectors, queries)
    rows = []
    for m, efc in grid:
        index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
        index.init_index(max_elements=len(vectors), M=m, ef_construction=efc, random_seed=100)
        started = time.perf_counter()
        index.add_items(vectors, np.arange(len(vectors)), num_threads=-1)
        build = time.perf_counter() - started
        recall = {}
        for ef in EFS:
            index.set_ef(ef)
            labels, _ = index.knn_query(queries, k=10)
            recall[ef] = sum(len(set(r.tolist()) & t) for r, t in zip(labels, truth, strict=True)) / (10 * len(truth))
        row = {"set": name, "M": m, "ef_construction": efc, "build_s": build,
               "build_per_100k_s": build / len(vectors) * 100_000, "recall": recall}
        print(f"  {name}: M={m} efc={efc}: build {fmt_s(build)}, recall@10 "
              + ", ".join(f"ef {ef} {r:.4f}" for ef, r in recall.items()), flush=True)
        rows.append(row)
        del index
    return rows


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument("--fastapi-index", type=Path, default=DEFAULT_WORK / "mcp-fastapi-idx",
                    help="an index of the FastAPI docs to take real chunk vectors from")
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--grid", default=",".join(f"{m}:{e}" for m, e in GRID), help="M:efc pairs, comma-separated")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    grid = [tuple(int(x) for x in pair.split(":")) for pair in args.grid.split(",")]
    start(args)
    print(f"threads: hnswlib num_threads=-1 ({os.cpu_count()} CPUs here)")
    rng = np.random.default_rng(args.seed)
    real, real_queries = real_vectors(args)
    print(f"real vectors: {len(real):,}; real queries: {len(real_queries)}", flush=True)
    results = []
    near_real = around(real, args.size, rng)
    results += sweep(f"real + near-real ({args.size:,})", near_real, real_queries, grid)
    del near_real
    gen = Generator(max(10, args.size // 100), 32, 0.8, 0.15, args.seed)
    synthetic = gen.draw(args.size, np.random.default_rng(args.seed + 1))
    results += sweep(f"synthetic ({args.size:,})", synthetic, gen.draw(500, np.random.default_rng(99)), grid)
    rows = [
        (f"{r['set']} M={r['M']} efc={r['ef_construction']}" + (" (default)" if (r["M"], r["ef_construction"]) == DEFAULT else ""),
         f"{fmt_s(r['build_s'])} ({fmt_s(r['build_per_100k_s'])} / 100k)",
         ", ".join(f"ef {ef}: {v:.4f}" for ef, v in r["recall"].items()),
         "")
        for r in results
    ]
    print_table("HNSW build time and recall@10 against exact search", rows, head=("graph", "build", "recall@10", ""))
    write_json(args.json, {"size": args.size, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
