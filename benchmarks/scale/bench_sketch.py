"""Sketch benchmark: how many of a scope's nearest sketches must be scored exactly, and how the
query's weights (bit planes) trade time for recall.

A scoped search over many scattered chunks (``semsearch.vectors.sketch``) compares the scope's
sketches with the query and scores only the *R* nearest exactly. This measures recall@10 of that
against exact search over the scope, for R and for the planes of the query's weights (0: plain
Hamming distance, every differing bit counts one; 1-4: ``sketch.PLANES``, the weights quantized to
that many bits), and the time of the comparison per query, on:

* real vectors: the SciFact abstracts (embedded once with the bundled model and cached, as
  bench_graph.py does) with points drawn around them to --size (near-paraphrases: a hard case,
  hundreds of near-ties per anchor), the SciFact claims as queries;
* the same pool with queries drawn near stored vectors (cosine about 0.9);
* bench_scale.py's clustered synthetic vectors.

Scopes are a random share of the pool (--shares). The sketch file is written with
``sketch.write`` and searched with ``Sketch.nearest``: the code the engine runs.

Usage:
    python benchmarks/scale/bench_sketch.py                      # 1,000,000 vectors, shares 1 %, 10 %, 30 %
    python benchmarks/scale/bench_sketch.py --size 200000 --json FILE
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, each, print_table, start, write_json
from benchmarks.scale.bench_graph import around, real_vectors
from benchmarks.scale.bench_scale import Generator

RERANKS = [500, 1000, 2000, 4000]
PLANES = [0, 2, 3, 4]


def plain_nearest(made, query: np.ndarray, slots: np.ndarray, r: int) -> np.ndarray:
    """Hamming distance between sketches (every differing bit counts one): the baseline."""
    from semsearch.vectors import sketch

    mine = sketch.codes(query.reshape(1, -1), made.mean, made.words)[0]
    distance = np.zeros(len(slots), dtype=np.uint16)
    for j in range(made.words):
        distance += np.bitwise_count(made.columns[j][slots] ^ mine[j]).astype(np.uint16)
    return np.argpartition(distance, r - 1)[:r]


def measure(name: str, pool: np.ndarray, queries: np.ndarray, share: float, work: Path, rng) -> list[dict]:
    from semsearch.vectors import sketch

    path = work / "bench-sketch.sketch"
    sketch.write(path, pool, np.arange(len(pool), dtype=np.int64))
    made = sketch.Sketch(path, pool.shape[1], len(pool))
    slots = np.sort(rng.choice(len(pool), int(len(pool) * share), replace=False)).astype(np.int64)
    inside = pool[slots]
    truth = [set(np.argpartition(-(inside @ q), 10)[:10].tolist()) for q in queries]
    rows = []
    saved = sketch.PLANES
    try:
        for planes in PLANES:
            if planes:
                sketch.PLANES = planes
            nearest = made.nearest if planes else lambda q, s, r: plain_nearest(made, q, s, r)
            times = each(lambda q, near=nearest: near(q, slots, RERANKS[0]), queries[:20])
            row = {"set": name, "share": share, "scope": len(slots), "planes": planes, "compare_ms": times.median * 1000}
            for r in RERANKS:
                found = []
                for q, t in zip(queries, truth, strict=True):
                    near = nearest(q, slots, r)
                    scored = near[np.argsort(-(inside[near] @ q))[:10]]
                    found.append(len(t & set(scored.tolist())) / 10)
                row[f"recall_R{r}"] = statistics.mean(found)
                row[f"worst_R{r}"] = min(found)
            rows.append(row)
            print(f"  {name:28s} {share:4.0%} planes {planes}: {row['compare_ms']:6.2f} ms  "
                  + "  ".join(f"R{r} {row[f'recall_R{r}']:.4f} (worst {row[f'worst_R{r}']:.1f})" for r in RERANKS),
                  flush=True)
    finally:
        sketch.PLANES = saved
        path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__)
    ap.add_argument("--fastapi-index", type=Path, default=None, help="(as bench_graph.py) an index of the FastAPI docs")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--shares", type=lambda s: [float(x) for x in s.split(",")], default=[0.01, 0.1, 0.3])
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)
    start(args)
    rng = np.random.default_rng(1)
    passages, claims = real_vectors(args)
    pool = around(passages, args.size, rng)
    noise = rng.standard_normal((args.queries, pool.shape[1])).astype(np.float32)
    near = pool[rng.choice(len(pool), args.queries, replace=False)] + 0.5 * noise / np.linalg.norm(
        noise, axis=1, keepdims=True
    )
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    rows = []
    for share in args.shares:
        rows += measure("real + around, claims", pool, claims[: args.queries], share, args.work, rng)
    rows += measure("real + around, near stored", pool, near, 0.1, args.work, rng)
    del pool
    gen = Generator(max(10, args.size // 100), 32, 0.8, 0.15, 7)
    synthetic = gen.draw(args.size, np.random.default_rng(7))
    rows += measure("synthetic clusters", synthetic, gen.draw(args.queries, np.random.default_rng(99)), 0.1,
                    args.work, rng)
    print()
    print_table(
        f"sketched searches over {args.size:,} vectors: recall@10 against exact search over the scope",
        [[r["set"], f"{r['share']:.0%}", str(r["planes"]), f"{r['compare_ms']:.2f} ms",
          *[f"{r[f'recall_R{x}']:.4f}" for x in RERANKS]] for r in rows],
        head=["set", "share", "planes", "compare", *[f"recall R={r}" for r in RERANKS]],
    )
    write_json(args.json, {"size": args.size, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
