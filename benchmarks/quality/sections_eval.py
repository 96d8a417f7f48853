"""Markdown sections: does cutting strictly at headings beat preferring them? (issue 3)

No judged Markdown collection ships with the project, so this builds one from BEIR SciFact: every
``--group`` consecutive abstracts become one Markdown file, each abstract a ``## title`` section.
A file is relevant to a query when it holds a relevant abstract (its best judgment). Two indexes
are built with the bundled model, identical but for ``ChunkSettings.section_cuts``:

* ``prefer`` (the default): a heading is the strongest boundary a chunk window looks for in its
  back half; a chunk may still run across a heading when the heading sits in its front half;
* ``strict``: a chunk never spans two sections (cut at every heading, no overlap across it).

Every judged train query then runs in each mode through ``Index.evaluate`` (files ranked by their
best chunk), and nDCG@10 is printed for all queries and both halves.

Usage:
    python benchmarks/quality/sections_eval.py [--data ../shared/data/scifact] [--work /tmp/sections-work]
                                       [--group 4] [--variants prefer,strict]

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
from benchmarks.harness import require_data

DEFAULT_DATA = harness.DEFAULT_DATA / "scifact"


def write_files(corpus: Path, out: Path, group: int) -> dict[str, str]:
    """Write the grouped Markdown files; return document id -> file stem."""
    out.mkdir(parents=True, exist_ok=True)
    docs = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    where: dict[str, str] = {}
    for start in range(0, len(docs), group):
        stem = f"group-{start // group:05d}"
        sections = []
        for doc in docs[start:start + group]:
            title = " ".join(str(doc.get("title", "")).split()) or "Untitled"
            sections.append(f"## {title}\n\n{str(doc.get('text', '')).strip()}\n")
            where[str(doc["_id"])] = stem
        path = out / f"{stem}.md"
        text = "\n".join(sections)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return where


def build(files: Path, index_dir: Path, section_cuts: str) -> Any:  # semsearch.IndexSummary
    """Build (or update) one variant's index with the bundled model and its ONNX export.

    ``Index.create`` takes no section-cut setting (``IndexSettings`` has no such field), so this
    calls the indexing layer with ``ChunkSettings(section_cuts=...)`` itself, as ``Index.update``
    would with the defaults. The setting is not recorded in the index: each variant gets its own
    folder.
    """
    from semsearch.chunk import ChunkSettings
    from semsearch.indexing import IndexOptions, build_index
    from semsearch.models import model_provider

    def note(message: str) -> None:
        print(f"# {message}", file=sys.stderr)

    provider = model_provider(None)
    options = IndexOptions(roots=[files], index_dir=index_dir, chunking=ChunkSettings(section_cuts=section_cuts))
    summary = build_index(options, provider)
    provider.finish_build(note)  # the ONNX export the query path loads (made once per model)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sections-work"))
    parser.add_argument("--group", type=int, default=4, help="abstracts per Markdown file (default 4)")
    parser.add_argument("--variants", default="prefer,strict")
    parser.add_argument("--modes", default="semantic,lexical,hybrid")
    args = parser.parse_args(argv)
    corpus, queries_path, qrels_path = (require_data(args.data, name) for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"))

    from benchmarks.quality.scifact_eval import ndcg_half
    from semsearch import Index
    from semsearch.evaluate import load_qrels, load_queries

    files = args.work / f"files-{args.group}"
    where = write_files(corpus, files, args.group)
    qrels: dict[str, dict[str, int]] = {}
    for qid, judged in load_qrels(qrels_path).items():
        for doc_id, rel in judged.items():
            if doc_id in where:
                stem = where[doc_id]
                qrels.setdefault(qid, {})[stem] = max(rel, qrels.get(qid, {}).get(stem, 0))
    queries = load_queries(queries_path)
    print(f"{len(where)} abstracts in {len(set(where.values()))} Markdown files of {args.group} sections; "
          f"{len(qrels)} judged queries")
    print("| variant | chunks | mode | nDCG@10 | R@100 | nDCG@10 even ids | nDCG@10 odd ids |")
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        index_dir = args.work / f"idx-{args.group}-{variant}"
        started = time.perf_counter()
        summary = build(files, index_dir, variant)
        print(f"# {variant}: {summary.chunks_total} chunks, built in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        with Index.open(index_dir) as index:
            chunks = index.status(check_disk=False).chunks
            for mode in args.modes.split(","):
                result = index.evaluate(queries, qrels, mode=mode)
                s = result.summary()
                print(f"| {variant} | {chunks} | {mode} | {s['ndcg@10']:.4f} | {s['recall@100']:.4f} "
                      f"| {ndcg_half(result, 0):.4f} | {ndcg_half(result, 1):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
