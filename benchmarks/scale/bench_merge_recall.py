"""Recall after merges (issue 23): a base graph, then rounds of edits (a share of vectors removed,
new ones added) merged into it the way the index writer merges, against a fresh build of the same
live vectors and against exact search.

Each round removes ``--churn`` of the live vectors and adds as many new ones plus ``--grow``
(some of them far from everything else: passages on a subject of their own); the merge opens
the saved base with room for the additions, marks the removed ones deleted and adds the new ones,
either appended (what semsearch does now) or into the removed ones' slots (hnswlib's
``replace_deleted``, what it did before). Recall@10 at the graph's search ef, for queries near
stored vectors (both old and just added) and for the outliers themselves.

Vectors: the real SciFact/FastAPI cache of bench_graph.py (``--work``/graph-real-vectors.npz)
with points drawn around them, when present; else bench_scale.py's clustered generator.

Usage:
    python benchmarks/scale/bench_merge_recall.py                      # 50,000 vectors, 5 rounds
    python benchmarks/scale/bench_merge_recall.py --size 200000 --rounds 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, machine_note, print_table, write_json
from benchmarks.scale.bench_scale import Generator
from semsearch.vectors import hnsw

GENERATOR = Generator(500, 32, 0.8, 0.15, 11)  # bench_scale.py's clusters, as at 50,000 there


def real_vectors(args: argparse.Namespace) -> np.ndarray | None:
    """Real passage vectors: an index's stored ones (``--vectors-from``), else bench_graph.py's cache."""
    if args.vectors_from is not None:
        import sqlite3

        from semsearch.store import read_manifest
        from semsearch.store.database import decode_vectors

        manifest = read_manifest(args.vectors_from)
        db = args.vectors_from / manifest.database
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = conn.execute("SELECT vector FROM chunks WHERE gen_removed IS NULL").fetchall()
        conn.close()
        return decode_vectors([r[0] for r in rows], manifest.model.dim)
    cache = args.work / "graph-real-vectors.npz"
    return np.load(cache)["passages"].astype(np.float32) if cache.exists() else None


def vectors(args: argparse.Namespace, n: int, rng: np.random.Generator) -> np.ndarray:
    real = args.real
    if real is not None:
        anchors = real[rng.integers(0, len(real), n)]
        points = anchors + rng.normal(0, 0.035, anchors.shape).astype(np.float32)
    else:
        points = GENERATOR.draw(n, rng)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def outliers(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    points = rng.standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def recall(index: hnsw.HnswIndex, queries: np.ndarray, ids: np.ndarray, live: np.ndarray) -> float:
    truth = ids[np.argsort(-(queries @ live.T), axis=1)[:, :10]]
    found = [[label for label, _ in index.search(q, 10)] for q in queries]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def main() -> None:
    parser = arguments(__doc__, data=False)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--churn", type=float, default=0.05)
    parser.add_argument("--grow", type=float, default=0.05)
    parser.add_argument("--outlier-share", type=float, default=0.05)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--vectors-from", type=Path, default=None, help="an index folder whose stored vectors to draw around"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    args.real = real_vectors(args)
    source = f"drawn around {len(args.real):,} real ones" if args.real is not None else "synthetic clusters"
    print(f"vectors: {source}")
    dim, folder = 384, Path(tempfile.mkdtemp(prefix="merge-recall-"))
    data = {i: v for i, v in enumerate(vectors(args, args.size, rng))}
    next_id = args.size
    states = {}
    for way in ("append", "replace"):
        made = hnsw.BACKEND.create(dim, args.size, {})
        made.add(np.arange(args.size, dtype=np.int64), np.stack([data[i] for i in range(args.size)]))
        states[way] = made.save(folder, f"{way}-0.hnsw")
    rows, results = [], []
    for round_ in range(1, args.rounds + 1):
        live_ids = np.fromiter(data, dtype=np.int64)
        gone = rng.choice(live_ids, int(args.churn * len(live_ids)), replace=False)
        added_n = int((args.churn + args.grow) * len(live_ids))
        odd = int(args.outlier_share * added_n)
        new = np.concatenate([vectors(args, added_n - odd, rng), outliers(odd, dim, rng)])
        new_ids = np.arange(next_id, next_id + added_n, dtype=np.int64)
        next_id += added_n
        for g in gone.tolist():
            del data[g]
        data.update(zip(new_ids.tolist(), new, strict=True))
        ids = np.fromiter(data, dtype=np.int64)
        live = np.stack([data[i] for i in ids.tolist()])
        pick = rng.integers(0, len(ids), args.queries)
        queries = live[pick] + rng.normal(0, 0.02, (args.queries, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        new_queries = new[rng.integers(0, added_n - odd, args.queries // 3)]
        row = {"round": round_, "live": len(ids)}
        for way in ("append", "replace"):
            state = states[way]
            started = time.perf_counter()
            opened = hnsw.BACKEND.open(folder / state["vector_file"], state, dim, {}, extra_capacity=added_n)
            opened._replace_deleted = way == "replace"
            opened.remove(gone.tolist())
            opened.add(new_ids, new)
            states[way] = opened.save(folder, f"{way}-{round_}.hnsw")
            row[f"{way}_merge_s"] = round(time.perf_counter() - started, 2)
            searched = hnsw.BACKEND.open(folder / states[way]["vector_file"], states[way], dim, {})
            searched._slots = hnsw.EXACT_SLOTS + 1  # through the graph, whatever its size
            row[f"{way}_recall"] = recall(searched, queries, ids, live)
            row[f"{way}_recall_new"] = recall(searched, new_queries, ids, live)
            row[f"{way}_outliers_found"] = float(
                np.mean([searched.search(v, 1)[0][0] == i for v, i in zip(new[-odd:], new_ids[-odd:], strict=True)])
            )
        fresh = hnsw.BACKEND.create(dim, len(ids), {})
        fresh.add(ids, live)
        state = fresh.save(folder, f"fresh-{round_}.hnsw")
        searched = hnsw.BACKEND.open(folder / state["vector_file"], state, dim, {})
        searched._slots = hnsw.EXACT_SLOTS + 1
        row["fresh_recall"] = recall(searched, queries, ids, live)
        results.append(row)
        rows.append([round_, f"{len(ids):,}", f"{row['append_recall']:.4f}", f"{row['replace_recall']:.4f}",
                     f"{row['fresh_recall']:.4f}", f"{row['append_recall_new']:.4f}", f"{row['replace_recall_new']:.4f}",
                     f"{row['append_outliers_found']:.3f}", f"{row['replace_outliers_found']:.3f}"])  # fmt: skip
        print_table(
            "recall@10 after merges",
            rows,
            [
                "round",
                "live",
                "append",
                "replace",
                "fresh",
                "append (new)",
                "replace (new)",
                "outliers found (a)",
                "(r)",
            ],
        )
    print(machine_note())
    write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "rounds": results})


if __name__ == "__main__":
    main()
