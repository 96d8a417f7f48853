"""Which method ``semsearch similar PATH`` (a whole file) should use: "mean" or "max" (issue 11).

Ground truth: the FastAPI docs' own links. A page's Markdown links to other pages of the tree
(relative ``../tutorial/query-params.md``, ``query-params.md#anchor``, resolved against the page's
folder; external URLs, links to non-.md files and to the page itself are ignored) name the pages a
reader would call related. For every page with at least one such link, the files are ranked with
``Index.similar(page, k=20, files_only=True, method=...)`` and scored against its linked pages:
recall@10, MRR@10 and nDCG@10 (binary gains), mean over pages, with the latency of each call
(median of --repeat calls).
Baseline: ``Index.search(<the page's title>, files_only=True)`` (hybrid and semantic), the page
itself dropped from the ranking. Diagnostic rows (``--no-exact`` to skip) score the same methods
exactly in numpy over every stored vector (no candidate cut, no 64-chunk cap) and "chamfer" (a file
scored by the mean over the start chunks of each one's best cosine into it).

The tree is copied to ``--work``/fastapi and indexed with the real CLI from ``--work``
(``semsearch index fastapi``, so the index is ``--work``/.semsearch; a no-op when it is current).

    $PY benchmarks/quality/similar_eval.py [--work /tmp/simdup] [--json FILE] [--no-title] [--no-exact] [--repeat 3]
"""

from __future__ import annotations

import math
import random
import re
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    arguments,
    bench_env,
    fmt_s,
    pct,
    print_table,
    require_data,
    run_child,
    semsearch_cmd,
    start,
    writable_copy,
    write_json,
)

_FENCE = re.compile(r"^(```+|~~~+).*?^\1", re.M | re.S)
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)")  # [text](target "title")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)  # [label]: target
_HREF = re.compile(r"""href=["']([^"']+)["']""")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
_TITLE = re.compile(r"^#\s+(.+?)\s*$", re.M)
_ATTRS = re.compile(r"\s*\{[^}]*\}\s*$")  # "# Testing { #testing }"


def page_links(page: Path, root: Path) -> set[Path]:
    """The other .md pages of the tree that *page* links to (code blocks left out)."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8", errors="replace"))
    out: set[Path] = set()
    me = page.resolve()
    for target in (*_INLINE.findall(text), *_REFDEF.findall(text), *_HREF.findall(text)):
        if _SCHEME.match(target) or target.startswith(("//", "#")):
            continue
        rel = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not rel.endswith(".md"):
            continue
        linked = (root / rel.lstrip("/")) if rel.startswith("/") else (page.parent / rel)
        linked = linked.resolve()
        if linked != me and linked.is_file() and root.resolve() in linked.parents:
            out.add(linked)
    return out


def page_title(page: Path) -> str:
    text = _FENCE.sub("", page.read_text(encoding="utf-8", errors="replace"))
    m = _TITLE.search(text)
    title = _ATTRS.sub("", m.group(1)) if m else page.stem.replace("-", " ")
    return title.strip() or page.stem


def scores(ranked: list[Path], relevant: set[Path], cut: int = 10) -> dict[str, float]:
    top = ranked[:cut]
    hits = [1 if p in relevant else 0 for p in top]
    recall = sum(hits) / len(relevant)
    mrr = next((1.0 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), cut)))
    return {"recall@10": recall, "mrr@10": mrr, "ndcg@10": dcg / ideal}


def paired(a: list[float], b: list[float], seed: int = 0, rounds: int = 10000) -> dict[str, float]:
    """Mean of b - a, a 95% bootstrap interval over pages, and wins / losses / ties of b."""
    diff = [y - x for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    n = len(diff)
    means = sorted(sum(diff[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return {
        "mean_diff": sum(diff) / n,
        "ci95_low": means[int(0.025 * rounds)],
        "ci95_high": means[int(0.975 * rounds) - 1],
        "wins": sum(d > 1e-12 for d in diff),
        "losses": sum(d < -1e-12 for d in diff),
        "ties": sum(abs(d) <= 1e-12 for d in diff),
    }


def exact_rankers(index_dir: Path, tree: Path, truth: dict[Path, set[Path]], evaluate, *, k: int) -> None:
    """Diagnostic rows: the same methods scored exactly over every stored chunk vector (numpy),
    a file ranked by its best chunk, with no candidate-pool cut and no 64-chunk cap; plus
    "chamfer": a file scored by the mean over the start chunks of each one's best cosine into it."""
    import numpy as np

    from semsearch.store import IndexReader

    with IndexReader(index_dir) as reader:
        parts = list(reader.chunk_vectors())
        owners = np.concatenate([o for _, o, _ in parts])
        vecs = np.concatenate([v for _, _, v in parts]).astype(np.float32)
        paths = {fid: Path(p).resolve() for fid, (p, _) in reader.file_chunk_counts(set(owners.tolist())).items()}
    file_ids = np.array(sorted(paths), dtype=np.int64)
    slot = np.searchsorted(file_ids, owners)  # chunk -> file column
    by_path = {p: fid for fid, p in paths.items()}

    class _Hit:  # what evaluate() reads: hit.chunk.path
        def __init__(self, path: Path) -> None:
            self.chunk = type("C", (), {"path": path})()

    def best_per_file(cos: np.ndarray) -> np.ndarray:
        best = np.full(len(file_ids), -2.0, dtype=np.float32)
        np.maximum.at(best, slot, cos)
        return best

    def rank(page: Path, method: str) -> list[_Hit]:
        mine = owners == by_path[page]
        start = vecs[mine]
        if method == "mean":
            q = start.mean(axis=0)
            file_score = best_per_file(vecs @ (q / max(float(np.linalg.norm(q)), 1e-12)))
        else:
            sims = start @ vecs.T  # start chunks x all chunks
            if method == "max":
                file_score = best_per_file(sims.max(axis=0))
            else:  # chamfer
                per = np.full((len(start), len(file_ids)), -2.0, dtype=np.float32)
                for i in range(len(start)):
                    np.maximum.at(per[i], slot, sims[i])
                file_score = per.mean(axis=0)
        file_score[np.searchsorted(file_ids, by_path[page])] = -3.0
        order = np.argsort(-file_score, kind="stable")[:k]
        return [_Hit(paths[int(file_ids[j])]) for j in order]

    for method in ("mean", "max", "chamfer"):
        evaluate(f"exact {method} (diagnostic)", lambda page, m=method: rank(page, m))


def main() -> int:
    ap = arguments(__doc__, work=Path("/tmp/simdup"))
    ap.add_argument("--k", type=int, default=20, help="files asked per call (metrics use the top 10)")
    ap.add_argument("--no-title", action="store_true", help="skip the title-query baseline (loads the model)")
    ap.add_argument("--repeat", type=int, default=3, help="calls per page; latency is their median")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact (numpy, whole-index) variants")
    args = ap.parse_args()

    src = require_data(args.data, "fastapi-docs")
    start()
    work = args.work.resolve()
    tree = work / "fastapi"
    if not tree.is_dir():
        work.mkdir(parents=True, exist_ok=True)
        writable_copy(src, tree)
    run = run_child([*semsearch_cmd(), "index", "fastapi"], cwd=work, env=bench_env())
    summary = run.stderr.decode(errors="replace").strip().splitlines()
    print(f"semsearch index fastapi: {fmt_s(run.seconds)}  ({summary[-1] if summary else ''})")

    from semsearch import Index

    index = Index.open(work / ".semsearch")
    pages = sorted(tree.rglob("*.md"))
    truth = {p.resolve(): page_links(p, tree) for p in pages}
    truth = {p: links for p, links in truth.items() if links}
    n_links = sum(len(v) for v in truth.values())
    print(
        f"{len(pages)} pages; {len(truth)} with links to other pages ({n_links} links, "
        f"{n_links / max(len(truth), 1):.2f} per page)"
    )

    # Warm-up: the first call opens the store and loads the vector graph.
    first = next(iter(truth))
    t0 = time.perf_counter()
    index.similar(first, k=args.k, files_only=True, method="mean")
    open_s = time.perf_counter() - t0

    systems: dict[str, dict] = {}

    def evaluate(name: str, rank) -> None:
        per_page = []
        for page, relevant in truth.items():
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                hits = rank(page)
                times.append(time.perf_counter() - t)
            seconds = statistics.median(times)
            ranked = [Path(h.chunk.path).resolve() for h in hits]
            ranked = [p for p in ranked if p != page]
            per_page.append(
                {
                    "page": str(page.relative_to(tree.resolve())),
                    "links": len(relevant),
                    "returned": len(ranked),
                    "seconds": seconds,
                    "release_notes_in_top10": any(p.name == "release-notes.md" for p in ranked[:10]),
                    "ndcg@10_without_release_notes": scores(
                        [p for p in ranked if p.name != "release-notes.md"], relevant
                    )["ndcg@10"],
                    "top10": [
                        str(p.relative_to(tree.resolve())) if tree.resolve() in p.parents else str(p)
                        for p in ranked[:10]
                    ],
                    **scores(ranked, relevant),
                }
            )
        lat = [r["seconds"] for r in per_page]
        systems[name] = {
            "recall@10": statistics.fmean(r["recall@10"] for r in per_page),
            "mrr@10": statistics.fmean(r["mrr@10"] for r in per_page),
            "ndcg@10": statistics.fmean(r["ndcg@10"] for r in per_page),
            "ndcg@10_without_release_notes": statistics.fmean(r["ndcg@10_without_release_notes"] for r in per_page),
            "latency_p50_s": pct(lat, 50),
            "latency_p95_s": pct(lat, 95),
            "latency_max_s": max(lat),
            "latency_mean_s": statistics.fmean(lat),
            "short_rankings": sum(r["returned"] < 10 for r in per_page),
            "release_notes_in_top10": sum(r["release_notes_in_top10"] for r in per_page),
            "pages": per_page,
        }

    for method in ("mean", "max"):
        evaluate(f"similar {method}", lambda page, m=method: index.similar(page, k=args.k, files_only=True, method=m))
    if not args.no_title:
        titles = {p: page_title(p) for p in truth}
        t0 = time.perf_counter()
        index.load_model()
        model_s = time.perf_counter() - t0
        for mode in ("hybrid", "semantic"):
            evaluate(
                f"search title ({mode})",
                lambda page, m=mode: index.search(titles[page], k=args.k + 1, files_only=True, mode=m),
            )
    else:
        model_s = float("nan")
    if not args.no_exact:
        exact_rankers(work / ".semsearch", tree, truth, evaluate, k=args.k)

    print(f"\nfirst similar() call (opens the index): {fmt_s(open_s)}; query model load: {fmt_s(model_s)}")
    head = (
        "system",
        "recall@10",
        "MRR@10",
        "nDCG@10",
        "p50",
        "p95",
        "max",
        "<10 files",
        "release-notes in top10",
        "nDCG@10 w/o release-notes",
    )
    rows = [
        (
            name,
            f"{s['recall@10']:.3f}",
            f"{s['mrr@10']:.3f}",
            f"{s['ndcg@10']:.3f}",
            fmt_s(s["latency_p50_s"]),
            fmt_s(s["latency_p95_s"]),
            fmt_s(s["latency_max_s"]),
            str(s["short_rankings"]),
            str(s["release_notes_in_top10"]),
            f"{s['ndcg@10_without_release_notes']:.3f}",
        )
        for name, s in systems.items()
    ]
    print_table(f"similar PATH on the FastAPI docs: linked pages in the top 10 ({len(truth)} pages, k={args.k})", rows, head)

    comparison: dict[str, dict] = {}
    base = systems["similar mean"]["pages"]
    print("\nagainst similar mean, per page: mean difference [95% bootstrap interval over pages] wins/losses/ties")
    for name, system in systems.items():
        if name == "similar mean":
            continue
        comparison[name] = {}
        cells = []
        for metric in ("recall@10", "mrr@10", "ndcg@10"):
            c = paired([r[metric] for r in base], [r[metric] for r in system["pages"]])
            comparison[name][metric] = c
            cells.append(
                f"{metric} {c['mean_diff']:+.3f} [{c['ci95_low']:+.3f}, {c['ci95_high']:+.3f}] "
                f"{c['wins']}/{c['losses']}/{c['ties']}"
            )
        print(f"  {name}:\n    " + "\n    ".join(cells))
    best = max(("similar mean", "similar max"), key=lambda n: systems[n]["ndcg@10"])
    print(f"\nbetter on nDCG@10: {best.split()[1]}")

    write_json(
        args.json,
        {
            "index_seconds": run.seconds,
            "index_summary": summary[-1] if summary else "",
            "pages": len(pages),
            "pages_with_links": len(truth),
            "links": n_links,
            "k": args.k,
            "first_call_s": open_s,
            "model_load_s": model_s,
            "systems": systems,
            "versus_similar_mean": comparison,
            "better_ndcg": best,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
