"""Warm query latency per search mode: top-10 queries against an existing index, model loaded.

Usage:
    python benchmarks/queries/query_latency.py INDEX_DIR [--queries ../shared/data/scifact/queries.jsonl] [-n 300]

Prints p50 / p95 in milliseconds for semantic, lexical and hybrid (query embedding included),
and hybrid again with BM25 in the caller's thread (what a one-core machine gets: the sum of both
halves), two passes over the same queries (the second is the one to quote: caches warm). Exit 2
when the queries file is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks import harness
from benchmarks.harness import each

DEFAULT_QUERIES = harness.DEFAULT_DATA / "scifact" / "queries.jsonl"


def one_thread_searcher(index_dir: Path) -> Any:
    """A searcher that runs hybrid's BM25 half in the caller's thread, before the embedding.

    ``Index.search`` has no switch for this: it ranks BM25 in a worker thread whenever the
    process may use two cores. This ``Searcher`` hands that work to a stand-in worker that runs
    it at once in the calling thread, so a hybrid query costs both halves one after the other.
    """
    from concurrent.futures import Future

    from semsearch.models import query_embedder
    from semsearch.search import Searcher
    from semsearch.store import IndexReader

    class InlineWorker:
        def submit(self, fn: Any, *args: Any) -> Future:
            future: Future = Future()
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - handed over as a worker thread's would be
                future.set_exception(exc)
            return future

        def shutdown(self, wait: bool = True) -> None:
            pass

    class OneThreadSearcher(Searcher):
        def _worker(self) -> Any:
            return InlineWorker()

    reader = IndexReader(index_dir)
    return OneThreadSearcher(reader, lambda: query_embedder(reader.manifest.model))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES, help="BEIR queries.jsonl")
    parser.add_argument("-n", type=int, default=300, help="queries per mode (default 300)")
    args = parser.parse_args(argv)
    if not args.queries.is_file():
        print(f"error: {args.queries} is missing (see ../shared/data/README.md); pass --queries", file=sys.stderr)
        return 2

    from semsearch import Index, SearchOptions
    from semsearch.evaluate import load_queries
    from semsearch.search import MODES

    texts = [q.text for q in load_queries(args.queries)][: args.n]
    with Index.open(args.index) as index:
        index.search(texts[0], k=10, mode="semantic")  # load the query model and the graph, untimed
        chunks = index.status(check_disk=False).chunks
        one_thread = one_thread_searcher(index.path)
        try:
            one_thread.search(texts[0], SearchOptions(top_k=10, mode="semantic"))  # its own model, untimed
            for number in (1, 2):
                figures = []
                for mode, label in [*((m, m) for m in MODES), ("hybrid", "hybrid one thread")]:
                    if label == "hybrid one thread":
                        run = lambda t, m=mode: one_thread.search(t, SearchOptions(top_k=10, mode=m))  # noqa: E731
                    else:
                        run = lambda t, m=mode: index.search(t, k=10, mode=m)  # noqa: E731
                    times = sorted(seconds * 1000 for seconds in each(run, texts).seconds)
                    figures.append(f"{label} {times[len(times) // 2]:.1f} / {times[int(len(times) * 0.95)]:.1f}")
                print(f"pass {number}, {chunks} chunks, {len(texts)} queries, p50 / p95 ms: " + "; ".join(figures))
        finally:
            one_thread.close()
            one_thread.reader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
