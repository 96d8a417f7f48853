"""Scoped search at scale: filtered vs unfiltered ``Index.search`` on a project bench_scale.py kept.

The project's layout (``synthetic/gNNNNN/`` folders of 100 files, about 1,000 chunks each) gives
scopes of 0.1 % (one folder, as a path), 1 %, 10 % and 50 % (globs over the folder numbers) of a
1,000,000-chunk project, whose chunk ids are a few long runs, and scopes of 1 %, 10 %, 30 % and 50 % of
the files spread over every folder (globs on the file numbers), whose ids are runs of about 10. The searches are warm (after the mapped searches of a new process, the
graph loaded), the filtered ones interleaved with the unfiltered one query by query; the first
search of each scope is reported apart (its subset, and for a narrow scope the id-to-slot map
of the vector file). Every filtered search must return k hits, all in scope. Then recall@10 of
each scope's vector search against an exact search over the scope (the engine made to read
every vector of it), for query vectors near stored ones, and the way the engine took (exact, sketch or graph: ``hnsw._scoped_way``,
where the tree has it).

Run it with PYTHONPATH set to another tree (a git worktree) to measure that tree on the same
project: a tree from before sketches reads the index without them.

Usage:
    python benchmarks/scale/bench_scale.py --sizes 1000000 --keep
    python benchmarks/scale/bench_filter_scale.py --project WORK/scale-1000000/new --json FILE
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, interleave, start, write_json

WORDS = ["gasket", "harbour", "lantern", "edited", "benchmark", "signal", "vector", "river", "copper", "garden", "meadow", "engine"]


def scoped_search(index: Any, mode: str, scope: dict, fewest: dict[str, int], name: str) -> Callable[[str], None]:
    """A search of *scope* in *mode* that keeps in ``fewest[name]`` the fewest hits a query got."""

    def run(q: str) -> None:
        fewest[name] = min(fewest[name], len(index.search(q, k=10, mode=mode, **scope)))

    return run


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, work=None, data=False)
    ap.add_argument("--project", type=Path, required=True, help="a project kept by bench_scale.py --keep")
    ap.add_argument("--folder", default="g00400", help="the folder of the 0.1%% scope")
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args(argv)
    from semsearch import Index

    root = args.project.resolve()
    queries = [" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(4)) + f" {i}" for i in range(args.queries)]
    scopes: dict[str, dict] = {
        "none": {},
        "path 0.1% (one folder)": {"paths": [root / "synthetic" / args.folder]},
        "glob 1% (10 folders)": {"globs": ["synthetic/g0060*/**"]},
        "glob 10% (100 folders)": {"globs": ["synthetic/g006*/**"]},
        "glob 50% (500 folders)": {"globs": ["synthetic/g00[5-9]*/**"]},
        # Files all over the project (every hundredth, tenth, second file): runs of ~10 chunks.
        "glob 1% (files *03)": {"globs": ["synthetic/*/*03.txt"]},
        "glob 10% (files *3)": {"globs": ["synthetic/*/*3.txt"]},
        "glob 30% (files *[0-2])": {"globs": ["synthetic/*/*[0-2].txt"]},
        "glob 50% (files *[0-4])": {"globs": ["synthetic/*/*[0-4].txt"]},
    }
    start()
    out: dict[str, dict] = {}
    with Index.open(root / ".semsearch") as index:
        started = time.perf_counter()
        index.search("warm up", k=10)
        print(f"first search of the process (model, mapped graph): {time.perf_counter() - started:.3f} s")
        firsts = {}
        for name, scope in scopes.items():
            started = time.perf_counter()
            index.search(queries[0], k=10, mode="semantic", **scope)
            firsts[name] = time.perf_counter() - started
        for i in range(10):
            index.search(f"warm up {i}", k=10, mode="semantic")  # past the mapped searches
        for mode in ("semantic", "hybrid"):
            fewest: dict[str, int] = {name: 10 for name in scopes}
            runs = {name: scoped_search(index, mode, scope, fewest, name) for name, scope in scopes.items()}
            times = interleave(runs, queries)
            base = times["none"].median
            for name in scopes:
                p50 = times[name].median
                out[f"{mode} / {name}"] = {"p50_ms": p50 * 1000, "ratio": p50 / base, "min_hits": fewest[name],
                                           "first_s": firsts[name]}
                print(f"{mode:8s} {name:28s} p50 {p50 * 1000:7.1f} ms  {p50 / base:5.2f}x  "
                      f"hits >= {fewest[name]}  first {firsts[name]:.3f} s", flush=True)
        recall_and_ways(index, scopes, args.queries, out)
    write_json(args.json, out)
    return 0


def recall_and_ways(index, scopes: dict[str, dict], queries: int, out: dict[str, dict]) -> None:
    """Per scope: recall@10 of the vector search against an exact search over the scope, for
    query vectors near stored ones (a stored vector from anywhere plus noise: cosine about 0.9 to
    it; the text queries meet synthetic vectors at random angles, where every way ties), and the
    ways the engine took (recorded by wrapping ``hnsw._scoped_way`` where the tree has it)."""
    import numpy as np

    from semsearch.api import _scope
    from semsearch.vectors import hnsw

    try:  # where the tree reads the scoped search's tunables (hnsw.py itself before hnsw_search.py)
        from semsearch.vectors import hnsw_search as tunables
    except ImportError:
        tunables = hnsw

    reader = index._open_searcher().reader
    rng = np.random.default_rng(5)
    anchors = reader.vectors(rng.choice(reader.count, queries, replace=False).tolist())
    near = np.stack(list(anchors.values())).astype(np.float32)
    noise = rng.standard_normal(near.shape).astype(np.float32)
    near += 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    ways: list[str] = []
    chooser = getattr(hnsw, "_scoped_way", None)

    def recorded(*args):
        way = chooser(*args)
        ways.append(way)
        return way

    for name, scope in scopes.items():
        if not scope:
            continue
        within = reader.subset(_scope(None, scope.get("paths"), scope.get("globs"), None, None, None, None))
        ways.clear()
        if chooser is not None:
            hnsw._scoped_way = recorded
        try:
            found = [{cid for cid, _ in reader.vector_search(q, 10, within=within)} for q in near]
        finally:
            if chooser is not None:
                hnsw._scoped_way = chooser
        saved, tunables.EXACT_ALWAYS = tunables.EXACT_ALWAYS, 1 << 62  # every scope read exactly
        try:
            truth = [{cid for cid, _ in reader.vector_search(q, 10, within=within)} for q in near]
        finally:
            tunables.EXACT_ALWAYS = saved
        shares = [len(f & t) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]
        taken = sorted(set(ways)) or ["n/a"]
        out[f"semantic / {name}"] |= {"recall_at_10": statistics.mean(shares), "worst_recall": min(shares),
                                       "ways": taken}
        print(f"recall@10 {name:28s} {statistics.mean(shares):.4f} (worst query {min(shares):.1f})  "
              f"way: {', '.join(taken)}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
