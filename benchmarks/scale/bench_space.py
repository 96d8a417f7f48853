"""The index's size on disk, by part, for this tree beside an older revision (issue 29: a leaner index).

For a corpus, three indexes of the same files:

* ``old``: built by --baseline REV (a git worktree of it, run from its own source tree);
* ``upgraded``: a copy of ``old`` updated by this tree with nothing changed on disk (the in-place
  upgrade of an older format: its time, and that nothing is embedded again);
* ``new``: built by this tree.

Per index: the database's parts (SQLite's dbstat: the chunks table, the FTS5 tables, the indexes,
the free pages), the vector files, their sum, and the ratio to what the index must hold at least:
the chunks' text (UTF-8) plus one float32 copy of their vectors. Then, in turns so that machine
noise falls on every design: a cold `semsearch query` (a new process, the page cache warm) and a
one-file edit followed by `semsearch index`; and the search results of ``new`` and ``upgraded``
against ``old`` (top-10 overlap, nDCG@10 on SciFact's judged train queries).

Corpora: ``scifact`` (5,183 abstracts as files, the bundled model: about 20,000 chunks; a few
minutes per build), ``fastapi`` (the FastAPI docs tree), ``synthetic`` (--size chunks of synthetic
text with synthetic vectors, as benchmarks/scale/bench_scale.py builds them: no model; the
quality figures are skipped and cold queries use the real query model).

Usage:
    python benchmarks/scale/bench_space.py --corpus scifact --baseline REV [--json FILE]
    python benchmarks/scale/bench_space.py --corpus synthetic --size 1000000 --baseline REV --skip-new   # about an hour
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    BUNDLED_DATA,
    PYTHON,
    REPO,
    arguments,
    bench_env,
    fmt_bytes,
    fmt_s,
    median,
    print_table,
    require_data,
    run_child,
    semsearch_cmd,
    start,
    write_json,
)

DIM = 384

# Build an index of FILES at INDEX with the tree on sys.path[0] (synthetic: bench_scale's vectors).
BUILD = textwrap.dedent("""
    import json, sys, time
    tree, files, index_dir, corpus, repo = sys.argv[1:6]
    sys.path.insert(0, tree)
    from pathlib import Path
    from semsearch import Index
    provider = None
    if corpus == "synthetic":
        sys.path.insert(1, repo)
        from benchmarks.scale.bench_scale import Generator, SyntheticModel
        n = int(sys.argv[6])
        provider = SyntheticModel(Generator(max(10, n // 100), 32, 0.8, 0.15, 7), 8)
    started = time.perf_counter()
    with Index.create(Path(index_dir), provider=provider) as index:
        s = index.update([Path(files)])
    print(json.dumps({"seconds": time.perf_counter() - started, "chunks": s.chunks_total,
                      "embedded_tokens": s.tokens_embedded}))
""")

# Update INDEX with nothing changed (the upgrade of an older format) with this tree.
UPGRADE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from semsearch import Index
    started = time.perf_counter()
    with Index.open(Path(sys.argv[2])) as index:
        s = index.update()
    print(json.dumps({"seconds": time.perf_counter() - started, "indexed": s.indexed,
                      "embedded_tokens": s.tokens_embedded, "chunks": s.chunks_total}))
""")

# Each question's top 10 chunk texts, and (SciFact) nDCG@10 on the judged train queries.
RESULTS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from semsearch import Index
    questions = json.loads(Path(sys.argv[3]).read_text())
    out = {"top": {}, "ndcg": {}}
    with Index.open(Path(sys.argv[2])) as index:
        for mode in ("semantic", "hybrid"):
            out["top"][mode] = [[(h.chunk.path.name, h.chunk.text[:80]) for h in index.search(q, k=10, mode=mode)]
                                for q in questions]
        if len(sys.argv) > 4:
            from semsearch.evaluate import load_qrels, load_queries
            queries, qrels = load_queries(Path(sys.argv[4])), load_qrels(Path(sys.argv[5]))
            for mode in ("semantic", "hybrid"):
                out["ndcg"][mode] = index.evaluate(queries, qrels, mode=mode).report.ndcg_at_10
    print(json.dumps(out))
""")

# The database's parts: dbstat's bytes by table or index, the free pages, the text and vector bytes.
PARTS = textwrap.dedent("""
    import json, sqlite3, sys
    conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    parts = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    parts["(free pages)"] = conn.execute("PRAGMA freelist_count").fetchone()[0] * page
    g = int(conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()[0])
    live = "gen_added <= ? AND (gen_removed IS NULL OR gen_removed > ?)"
    text, n, blob = conn.execute(f"SELECT sum(length(CAST(text AS BLOB))), count(*), max(length(vector)) "
                                 f"FROM chunks WHERE {live}", (g, g)).fetchone()
    print(json.dumps({"parts": parts, "text_bytes": text, "chunks": n, "vector_blob": blob}))
""")


def corpus_files(args: Any) -> tuple[Path, Path | None, Path | None, list[str]]:
    """(the files' folder, SciFact queries and qrels or None, questions for the top-10 overlap)."""
    if args.corpus == "scifact":
        data = require_data(args.data, "scifact")
        files = args.work / "scifact-files"
        if not files.is_dir():
            subprocess.run([PYTHON, str(REPO / "benchmarks/quality/scifact_to_files.py"), "--corpus",
                            str(data / "corpus.jsonl"), str(files)], check=True)  # fmt: skip
        queries = [json.loads(line)["text"] for line in (data / "queries.jsonl").open()][:100]
        return files, data / "queries.jsonl", data / "qrels" / "train.tsv", queries
    if args.corpus == "fastapi":
        files = require_data(args.data, "fastapi-docs")
        questions = (BUNDLED_DATA / "fastapi-questions").read_text().splitlines()
        return files, None, None, [q.split("\t")[-1] for q in questions if q.strip()][:100]
    from benchmarks.scale.bench_scale import write_project

    project = args.work / f"synthetic-{args.size}"
    if not (project / "synthetic").is_dir():
        write_project(project, args.size, 10, 7)
    return project / "synthetic", None, None, ["how do I declare optional query parameters with default values"]


def sizes(index_dir: Path) -> dict[str, Any]:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    database = index_dir / manifest["database"]
    found = json.loads(run_child([PYTHON, "-c", PARTS, str(database)]).stdout)
    files = {p.name: p.stat().st_size for p in index_dir.iterdir() if p.is_file()}
    vectors = sum(v for k, v in files.items() if k.startswith("vectors-"))
    sketches = sum(v for k, v in files.items() if k.startswith("vectors-") and k.endswith(".sketch"))
    database_bytes = sum(v for k, v in files.items() if k.startswith(manifest["database"]))  # with -wal
    total = sum(v for k, v in files.items() if k != "ocr-cache.sqlite")
    least = found["text_bytes"] + found["chunks"] * DIM * 4
    return {"total": total, "database": database_bytes, "vector_files": vectors, "sketches": sketches, "least": least,
            "ratio": total / least, "per_chunk": total / max(1, found["chunks"]), **found}  # fmt: skip


def overlap(a: list[list[Any]], b: list[list[Any]]) -> float:
    shared = [len({tuple(x) for x in p} & {tuple(x) for x in q}) / max(1, len(p)) for p, q in zip(a, b, strict=True)]
    return sum(shared) / max(1, len(shared))


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, work="space")
    ap.add_argument("--corpus", choices=("scifact", "fastapi", "synthetic"), default="scifact")
    ap.add_argument("--size", type=int, default=100_000, help="synthetic: about this many chunks")
    ap.add_argument("--baseline", required=True, help="the older revision (its index format is upgraded)")
    ap.add_argument("--turns", type=int, default=5, help="cold queries and edits per design")
    ap.add_argument("--skip-new", action="store_true", help="no build by this tree (at 1M: the upgraded one is its size)")
    ap.add_argument("--again", action="store_true",
                    help="keep the builds a run left in --work (the upgrade of a copy of the old one is made again)")
    args = ap.parse_args(argv)
    start(args)
    env = bench_env()
    work = args.work / args.corpus
    work.mkdir(parents=True, exist_ok=True)
    args.work = work
    old_src = work / f"src-{args.baseline}"
    if not old_src.is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_src), args.baseline], check=True)
    files, queries, qrels, questions = corpus_files(args)
    trees = {"old": old_src, "upgraded": REPO, "new": REPO}
    if args.skip_new:
        del trees["new"]
    result: dict[str, Any] = {"corpus": args.corpus, "baseline": args.baseline, "designs": {}}
    for name, tree in ((n, t) for n, t in trees.items() if n != "upgraded"):
        if args.again and (work / f"idx-{name}" / "manifest.json").is_file():
            result["designs"][name] = {}
            continue
        target = work / f"idx-{name}"
        shutil.rmtree(target, ignore_errors=True)
        extra = [str(args.size)] if args.corpus == "synthetic" else []
        run = run_child([PYTHON, "-c", BUILD, str(tree), str(files), str(target), args.corpus, str(REPO), *extra],
                        env={**env, "PYTHONPATH": str(tree)})  # fmt: skip
        result["designs"][name] = {"build": json.loads(run.stdout), "build_peak_rss_mb": run.max_rss_kb / 1024}
        print(f"{name}: built in {fmt_s(result['designs'][name]['build']['seconds'])}", flush=True)
    shutil.rmtree(work / "idx-upgraded", ignore_errors=True)
    shutil.copytree(work / "idx-old", work / "idx-upgraded")
    run = run_child([PYTHON, "-c", UPGRADE, str(REPO), str(work / "idx-upgraded")], env={**env, "PYTHONPATH": str(REPO)})
    result["designs"]["upgraded"] = {"upgrade": json.loads(run.stdout), "upgrade_peak_rss_mb": run.max_rss_kb / 1024}
    print(f"upgraded in place: {result['designs']['upgraded']['upgrade']}", flush=True)
    for name in trees:
        result["designs"][name]["size"] = sizes(work / f"idx-{name}")
    measure_turns(args, work, trees, files, env, result)
    questions_file = work / "questions.json"
    questions_file.write_text(json.dumps(questions))
    judged = [str(queries), str(qrels)] if queries and qrels else []
    for name, tree in trees.items():
        run = run_child([PYTHON, "-c", RESULTS, str(tree), str(work / f"idx-{name}"), str(questions_file), *judged],
                        env={**env, "PYTHONPATH": str(tree)})  # fmt: skip
        result["designs"][name]["results"] = json.loads(run.stdout)
    report(result)
    for design in result["designs"].values():
        design.pop("results", None)
    write_json(args.json, result)
    return 0


def measure_turns(args: Any, work: Path, trees: dict[str, Path], files: Path, env: dict[str, str], result: dict) -> None:
    """Cold queries, then one-file edits and updates, each design in turn (the order reversed every turn)."""
    query = "how do I declare optional query parameters with default values"
    cold: dict[str, list[float]] = {name: [] for name in trees}
    edits: dict[str, list[float]] = {name: [] for name in trees}

    def semsearch(name: str, *extra: str) -> float:
        run = run_child([*semsearch_cmd(), *extra, "--index", str(work / f"idx-{name}")],
                        env={**env, "PYTHONPATH": str(trees[name])})  # fmt: skip
        return run.seconds

    for name in trees:
        semsearch(name, "query", query, "--json")  # warm-up: the page cache
    names = list(trees)
    targets = sorted(p for p in files.rglob("*") if p.is_file() and p.suffix in (".txt", ".md"))
    for turn in range(args.turns):
        for name in names if turn % 2 == 0 else names[::-1]:
            cold[name].append(semsearch(name, "query", query, "--json"))
        target = targets[(7919 * (turn + 1)) % len(targets)]
        target.write_text(target.read_text() + f"\nAn edit, turn {turn}.\n")
        for name in names if turn % 2 == 0 else names[::-1]:
            edits[name].append(semsearch(name, "index"))
    for name in trees:
        result["designs"][name]["cold_query_p50_s"] = median(cold[name])
        result["designs"][name]["edit_update_p50_s"] = median(edits[name])


def report(result: dict) -> None:
    designs = result["designs"]
    old = designs["old"]
    rows = []
    for name, d in designs.items():
        s = d["size"]
        rows.append((name, fmt_bytes(s["total"]), fmt_bytes(s["database"]), fmt_bytes(s["vector_files"]),
                     f"{s['ratio']:.2f}x", f"{s['total'] / old['size']['total']:.2f}x",
                     fmt_s(d["cold_query_p50_s"]), fmt_s(d["edit_update_p50_s"])))  # fmt: skip
    print_table(f"{result['corpus']}: {old['size']['chunks']:,} chunks, least = text "
                f"{fmt_bytes(old['size']['text_bytes'])} + float32 vectors {fmt_bytes(old['size']['chunks'] * DIM * 4)}",
                rows, head=("index", "total", "database", "vector files", "/ least", "/ old", "cold query p50",
                            "edit + index p50"))  # fmt: skip
    parts = sorted(set().union(*(d["size"]["parts"] for d in designs.values())))
    rows = [(p, *(fmt_bytes(d["size"]["parts"].get(p, 0)) for d in designs.values())) for p in parts]
    rows.append(("(vector files: sketches)", *(fmt_bytes(d["size"]["sketches"]) for d in designs.values())))
    print_table("database parts", rows, head=("part", *designs))
    for name in (n for n in designs if n != "old"):
        for mode in ("semantic", "hybrid"):
            same = overlap(designs[name]["results"]["top"][mode], old["results"]["top"][mode])
            ndcg = designs[name]["results"]["ndcg"].get(mode)
            was = old["results"]["ndcg"].get(mode)
            designs[name][f"top10_overlap_{mode}"] = same
            extra = f", nDCG@10 {ndcg:.4f} (old {was:.4f})" if ndcg is not None else ""
            print(f"{name} against old, {mode}: top-10 overlap {same:.3f}{extra}")
            if ndcg is not None:
                designs[name][f"ndcg10_{mode}"], old[f"ndcg10_{mode}"] = ndcg, was


if __name__ == "__main__":
    sys.exit(main())
