"""The update and query steps of bench_scale.py again, on projects it kept (``--keep``).

For a change measured after a long build: the same steps as ``bench_scale.py`` (cold
``semsearch query`` in new processes, one file edited with an editor's atomic save, a folder of
about 1,000 chunks deleted), on the kept projects of two sizes, alternating between them so
that machine noise falls on both, with the current tree's console script. A deleted folder is
put back (and indexed again, untimed) after each delete, so the projects keep their size.

Usage:
    python benchmarks/scale/bench_scale.py --sizes 5000,1000000 --keep
    python benchmarks/scale/bench_scale_steps.py --small WORK/scale-5000/new --large WORK/scale-1000000/new \\
        --small-edits 7,14,21 --large-edits 60007,70014,80021 --folder g00003 --json FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import REPO, arguments, bench_env, median, start, write_json
from benchmarks.scale import bench_scale as scale


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, work=None, data=False)
    ap.add_argument("--small", type=Path, required=True, help="the kept project of the reference size")
    ap.add_argument("--large", type=Path, required=True, help="the kept project of the large size")
    ap.add_argument("--small-edits", default="7,14,21", help="file numbers to edit in the small project")
    ap.add_argument("--large-edits", default="60007,70014,80021", help="file numbers to edit in the large project")
    ap.add_argument("--folder", default="g00003", help="the folder deleted (and put back) in each project")
    ap.add_argument("--cold-runs", type=int, default=6)
    args = ap.parse_args(argv)
    env = bench_env()
    projects = {"small": args.small, "large": args.large}
    edits = {"small": [int(x) for x in args.small_edits.split(",")], "large": [int(x) for x in args.large_edits.split(",")]}
    designs = {name: scale.Design(name, path, REPO, env) for name, path in projects.items()}
    fig: dict[str, dict[str, list[float]]] = {name: {"query": [], "query_rss": [], "edit": [], "delete": []} for name in projects}
    start()
    order = list(projects)
    for d in designs.values():
        d.query()  # warm-up: the page cache, the ONNX export read once
    for i in range(args.cold_runs):
        for name in order if i % 2 == 0 else order[::-1]:
            r = designs[name].query()
            fig[name]["query"].append(r.seconds)
            fig[name]["query_rss"].append(r.max_rss_kb / 1024)
    for i in range(min(len(edits["small"]), len(edits["large"]))):
        for name in order if i % 2 == 0 else order[::-1]:
            scale.edit(projects[name], edits[name][i], f"steps{i}")
            fig[name]["edit"].append(designs[name].update().seconds)
    for i in range(3):
        for name in order if i % 2 == 0 else order[::-1]:
            folder = projects[name] / "synthetic" / args.folder
            aside = projects[name].parent / f"aside-{args.folder}"
            folder.rename(aside)
            fig[name]["delete"].append(designs[name].update().seconds)
            aside.rename(folder)
            designs[name].update()  # indexed again, untimed
    out = {name: {key: median(values) for key, values in f.items()} | {"runs": f} for name, f in fig.items()}
    for key in ("query", "edit", "delete"):
        small, large = out["small"][key], out["large"][key]
        print(f"{key}: small {small:.3f} s, large {large:.3f} s = {large / small:.2f}x "
              f"(large {[round(x, 2) for x in fig['large'][key]]}, small {[round(x, 2) for x in fig['small'][key]]})")
    print(f"query peak RSS: small {max(fig['small']['query_rss']):.0f} MB, large {max(fig['large']['query_rss']):.0f} MB")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
