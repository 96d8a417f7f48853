"""Retrieval quality on BEIR SciFact (train queries): semantic vs lexical vs hybrid.

Usage:
    python benchmarks/quality/scifact_eval.py [--data ../shared/data/scifact] [--work /tmp/scifact-work]
                                      [--chunk-tokens 128] [--overlap-tokens 32]
                                      [--modes semantic,lexical,hybrid] [--split all|even|odd]
                                      [--fusion default|convex|ceiling|rrf] [--latency-queries 200]
                                      [--no-update] [--json]

Writes each corpus document to WORK/files/<_id>.txt (benchmarks/quality/scifact_to_files.py), builds or
updates the index WORK/idx-<chunk>-<overlap> with the library (``semsearch.Index``, the bundled
model), and runs every judged train query through ``Index.evaluate`` for each mode, with the same
harness. Prints nDCG@10, Recall@10, Recall@100, MRR@10, queries and latency p50/p95 per mode.
``--split even|odd`` keeps only queries with an even/odd id (a held-out half for sanity checks).
Re-running reuses the files and the index (only changed files are re-embedded); ``--no-update``
uses the index as it is. ``--fusion`` measures hybrid with another fusion than the default.
Latency columns: "eval" is one query ranking 100 distinct files (what ``semsearch eval`` times);
"top-10" is a plain 10-chunk ``semsearch query`` (query model loaded, embedding included).

Exit codes: 0 ok, 2 SciFact data missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks import harness
from benchmarks.harness import each, require_data

DEFAULT_DATA = harness.DEFAULT_DATA / "scifact"


def build(files: Path, index_dir: Path, chunk_tokens: int, overlap_tokens: int, precision: str = "auto",
          context: bool = True, model: str | None = None) -> None:
    from semsearch import Index

    def note(message: str) -> None:
        print(f"# {message}", file=sys.stderr)

    started = time.perf_counter()
    # update() also makes the model's ONNX export the query path loads (when it is missing).
    with Index.create(index_dir, exist_ok=True, on_note=note, chunk_tokens=chunk_tokens,
                      overlap_tokens=overlap_tokens, context=context, precision=precision, model=model) as index:
        summary = index.update([files])
        used = index.status(check_disk=False).precision
    print(f"# index {index_dir}: {summary.indexed} files indexed, {summary.unchanged} unchanged, "
          f"{summary.chunks_total} chunks, {time.perf_counter() - started:.0f} s "
          f"(embedding {summary.embed_seconds:.0f} s, {summary.tokens_embedded} tokens, precision "
          f"{used})", file=sys.stderr)


def fusion_searcher(index_dir: Path, fusion: str) -> tuple[Any, Any]:
    """A reader and a searcher for run_evaluation whose every search uses *fusion*.

    ``Index.evaluate`` (and ``run_evaluation`` under it) builds its own ``SearchOptions`` with the
    default fusion and takes no fusion of its own, so a non-default fusion is set on each
    search's options here.
    """
    from dataclasses import replace

    from semsearch.models import query_embedder
    from semsearch.search import Searcher
    from semsearch.store import IndexReader

    class FusionSearcher(Searcher):
        def search(self, query: str, options: Any) -> Any:
            return super().search(query, replace(options, fusion=fusion))

    reader = IndexReader(index_dir)
    return reader, FusionSearcher(reader, lambda: query_embedder(reader.manifest.model))


def ndcg_half(result: Any, parity: int) -> float:  # result: semsearch.evalrun.EvalResult
    """Mean nDCG@10 over the queries whose numeric id has this parity (a held-out half)."""
    values = [m["ndcg@10"] for q, m in result.report.per_query.items() if q.isdigit() and int(q) % 2 == parity]
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scifact-work"), help="where files and indexes go")
    parser.add_argument("--chunk-tokens", type=int, default=None)
    parser.add_argument("--overlap-tokens", type=int, default=None)
    parser.add_argument("--modes", default="semantic,lexical,hybrid")
    parser.add_argument("--precision", default="auto", help="document embedding precision (auto, fp32, int8, ...)")
    parser.add_argument("--no-context", action="store_true", help="embed chunks without the title in front")
    parser.add_argument("--split", choices=("all", "even", "odd"), default="all")
    parser.add_argument("--json", action="store_true", help="one JSON object per mode instead of a table")
    parser.add_argument("--no-update", action="store_true",
                        help="use WORK/idx-<chunk>-<overlap> as it is (no conversion, no index update)")
    parser.add_argument("--fusion", choices=("default", "convex", "ceiling", "rrf"), default="default",
                        help="hybrid fusion to measure (default: SearchOptions' default fusion)")
    parser.add_argument("--model", default=None, help="the embedding model (default: the bundled one)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="also time this many plain top-10 chunk queries per mode (0: skip)")
    args = parser.parse_args(argv)

    from semsearch import Index, SearchOptions
    from semsearch.chunk import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS
    from semsearch.evalrun import run_evaluation
    from semsearch.evaluate import latency_summary, load_qrels, load_queries
    from semsearch.search import DEFAULT_MODE

    corpus, queries_path, qrels_path = (require_data(args.data, name) for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"))
    chunk = args.chunk_tokens or DEFAULT_CHUNK_TOKENS
    overlap = DEFAULT_OVERLAP_TOKENS if args.overlap_tokens is None else args.overlap_tokens

    from benchmarks.quality import scifact_to_files

    default_fusion = SearchOptions().fusion
    fusion = default_fusion if args.fusion == "default" else args.fusion

    files = args.work / "files"
    index_dir = args.work / (f"idx-{chunk}-{overlap}" + ("" if args.precision == "auto" else f"-{args.precision}")
                             + ("" if args.model is None else f"-{args.model.replace('/', '_').replace(':', '_')}")
                             + ("-nocontext" if args.no_context else ""))
    if not args.no_update:
        if scifact_to_files.main(["--corpus", str(corpus), str(files)]) != 0:
            return 1
        build(files, index_dir, chunk, overlap, args.precision, not args.no_context, args.model)

    queries = load_queries(queries_path)
    qrels = load_qrels(qrels_path)
    if args.split != "all":
        parity = 0 if args.split == "even" else 1
        keep = {q for q in qrels if q.isdigit() and int(q) % 2 == parity}
        qrels = {q: r for q, r in qrels.items() if q in keep}
    results = []
    plain: dict[str, dict[str, float]] = {}
    with Index.open(index_dir) as index:
        status = index.status(check_disk=False)
        chunks = status.chunks
        reader_precision = status.precision
        reader = searcher = None
        if fusion != default_fusion:
            reader, searcher = fusion_searcher(index.path, fusion)
        try:
            for mode in args.modes.split(","):
                if searcher is None:
                    result = index.evaluate(queries, qrels, mode=mode.strip())
                else:
                    result = run_evaluation(reader, searcher, queries, qrels, mode=mode.strip())
                results.append(result)
                if args.latency_queries > 0:
                    # What a user's `semsearch query` costs (top 10 chunks), model already loaded.
                    times = each(lambda q, m=mode.strip(): index.search(q.text, k=10, mode=m, fusion=fusion),
                                 queries[: args.latency_queries])  # fmt: skip
                    plain[result.mode] = latency_summary(times.seconds)
                if args.json:
                    print(json.dumps({**result.to_dict(), "chunks": chunks, "chunk_tokens": chunk,
                                      "overlap_tokens": overlap, "split": args.split, "fusion": fusion,
                                      "top10_latency": plain.get(result.mode)}))
        finally:
            if searcher is not None:
                searcher.close()
                reader.close()
    if not args.json:
        print(f"SciFact train ({args.split}), {chunks} chunks of {chunk}/{overlap} tokens, precision "
              f"{reader_precision}; default mode = {DEFAULT_MODE}; "
              f"hybrid fusion = {fusion}")
        print("| mode | nDCG@10 | R@10 | R@100 | MRR@10 | queries | eval p50 ms | eval p95 ms | top-10 p50 ms "
              "| top-10 p95 ms | nDCG@10 even ids | nDCG@10 odd ids |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            s = r.summary()
            name = f"{r.mode} (default)" if r.mode == DEFAULT_MODE else r.mode
            print(f"| {name} | {s['ndcg@10']:.4f} | {s['recall@10']:.4f} | {s['recall@100']:.4f} | {s['mrr@10']:.4f} "
                  f"| {s['queries']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} "
                  f"| {plain.get(r.mode, {}).get('p50_ms', float('nan')):.1f} "
                  f"| {plain.get(r.mode, {}).get('p95_ms', float('nan')):.1f} "
                  f"| {ndcg_half(r, 0):.4f} | {ndcg_half(r, 1):.4f} |")
        print("eval latency: one query ranking 100 distinct files (-l -k 100); top-10: a plain 10-chunk query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
