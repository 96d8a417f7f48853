"""Warm query latency per search mode: top-10 queries against an existing index, model loaded.

Usage:
    python benchmarks/query_latency.py INDEX_DIR [--queries ../shared/data/scifact/queries.jsonl] [-n 300]

Prints p50 / p95 in milliseconds for semantic, lexical and hybrid (query embedding included),
and hybrid again with BM25 in the caller's thread (what a one-core machine gets: the sum of both
halves), two passes over the same queries (the second is the one to quote: caches warm). Exit 2
when the queries file is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEFAULT_QUERIES = HERE.parent.parent / "shared/data/scifact/queries.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES, help="BEIR queries.jsonl")
    parser.add_argument("-n", type=int, default=300, help="queries per mode (default 300)")
    args = parser.parse_args(argv)
    if not args.queries.is_file():
        print(f"error: {args.queries} is missing (see ../shared/data/README.md); pass --queries", file=sys.stderr)
        return 2

    from semsearch import search
    from semsearch.evaluate import load_queries
    from semsearch.models import load_query_embedder
    from semsearch.search import MODES, SearchOptions, Searcher
    from semsearch.store import IndexReader

    texts = [q.text for q in load_queries(args.queries)][: args.n]
    with IndexReader(args.index) as reader:
        searcher = Searcher(reader, lambda: load_query_embedder(reader.manifest.model)[0])
        searcher.search(texts[0], SearchOptions(mode="semantic"))  # load the query model, untimed
        cores = search._CORES
        for number in (1, 2):
            figures = []
            for mode, label in [*((m, m) for m in MODES), ("hybrid", "hybrid one thread")]:
                search._CORES = 1 if label == "hybrid one thread" else cores
                times = []
                for text in texts:
                    started = time.perf_counter()
                    searcher.search(text, SearchOptions(top_k=10, mode=mode))
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                figures.append(f"{label} {times[len(times) // 2]:.1f} / {times[int(len(times) * 0.95)]:.1f}")
            search._CORES = cores
            print(f"pass {number}, {reader.count} chunks, {len(texts)} queries, p50 / p95 ms: " + "; ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
