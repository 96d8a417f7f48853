"""Old vs new: the semsearch CLI of two source trees measured side by side in one run.

To show that a refactor changes no figure by more than noise (5%). Old tree: a commit (--old-rev,
default 7cbdd7b) exported with `git archive` into a temporary folder; new tree: this working tree,
or a commit (--new-rev). Both run as `python -m semsearch` with this Python, the tree first on
PYTHONPATH (checked), from an empty folder, through the CLI only (the internals are what changes).
Runs are interleaved (old, new, old, new, ...) so both trees see the same machine load:

1. index_chunks_per_s: `semsearch index CORPUS --index FRESH_DIR`, chunks added (stderr summary
   line) per second of process wall time (the CLI prints no token count or embedding time);
   median and best run (noise only slows a run down: on a shared VM the best is the steadier).
   CORPUS: one copy of ../shared/data/fastapi-docs (--corpus) that both trees index.
2. noop_reindex_s: `semsearch index --index DIR` (no PATH) right after, nothing changed; wall time.
3. cold_query_p50_s: a new `semsearch query Q --index DIR -k 10` process, queries in rotation,
   each tree on the index it built itself; p50 of the wall times.
4. Compatibility: the new tree updates the old tree's index (`index --index OLD_DIR`, no PATH),
   then reads it with `status --json` and `query`. Expected: exit 0, +0 -0 chunks, hits.

Each tree first indexes a few files untimed: the model's one-off ONNX export (into the script's
own SEMSEARCH_CACHE, shared by both trees) is not timed. Exit status: 0, 1 if the compatibility
check failed, 2 if a tree failed to run (a clear error on stderr names the tree and the command).

Usage:
    python benchmarks/indexing/bench_compare.py                           # 7cbdd7b vs the working tree (~6-7 min)
    python benchmarks/indexing/bench_compare.py --index-runs 1 --noop-runs 3 --query-runs 5    # smoke run (~2 min)
    python benchmarks/indexing/bench_compare.py --new-rev 7cbdd7b         # a commit against itself: the noise
    python benchmarks/indexing/bench_compare.py --json /tmp/compare.json --keep
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks import harness
from benchmarks.harness import (
    DEFAULT_DATA,
    PYTHON,
    REPO,
    Run,
    arguments,
    bench_env,
    fmt_s,
    machine_note,
    median,
    pct,
    print_table,
    require_data,
    run_child,
    start,
    take_turns,
    write_json,
)

DEFAULT_OLD_REV = "7cbdd7b"
QUERIES = ["how do I upload a file", "dependency injection with yield", "configure CORS",
           "background tasks after a response", "OAuth2 password flow with JWT"]
NOISE = 0.05
WARMUP_FILES = 5
# semsearch: indexed 160 files, ..., chunks: +4921 (12 reused, not embedded again) -0 = 4921, 63.2 s
SUMMARY = re.compile(r"chunks: \+(?P<added>\d+)(?: \((?P<reused>\d+) reused, not embedded again\))? "
                     r"-(?P<removed>\d+) = (?P<total>\d+), (?P<seconds>[\d.]+) s")
T = TypeVar("T")


class TreeFailure(RuntimeError):
    """A tree's CLI failed (for the new tree, likely a refactor in progress)."""


@dataclass
class Tree:
    name: str  # "old" or "new"
    label: str  # what it is: a commit or the working tree
    env: dict[str, str]
    cwd: Path  # an empty folder: `python -m` puts the working folder first on sys.path


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def export_rev(rev: str, dest: Path) -> str:
    """`git archive REV | tar -x -C DEST`; the full commit hash."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=False)
    archive.stdout.close()
    if archive.wait() or untar.returncode:
        raise RuntimeError(f"could not export {rev} into {dest}")
    return commit


def make_tree(name: str, root: Path, label: str, cache: Path, cwd: Path) -> Tree:
    """A tree whose `semsearch` is the package under root (checked: fails loudly otherwise)."""
    env = bench_env({"PYTHONPATH": str(root), "SEMSEARCH_CACHE": str(cache)})
    run = run_child([PYTHON, "-c", "import semsearch; print(semsearch.__file__)"], env=env, cwd=cwd, check=False)
    found = run.stdout.decode(errors="replace").strip()
    if run.returncode != 0 or not Path(found).resolve().is_relative_to((root / "semsearch").resolve()):
        raise TreeFailure(f"{name} tree ({label}): `import semsearch` with PYTHONPATH={root} gave "
                          f"{found or 'an error'} (exit {run.returncode}), not {root / 'semsearch'}\n"
                          f"{run.stderr.decode(errors='replace')[-2000:]}")
    return Tree(name, label, env, cwd)


def cli(tree: Tree, *args: str, check: bool = True) -> Run:
    """`python -m semsearch ARGS` in the tree; with check, any exit but 0 raises TreeFailure."""
    run = run_child([PYTHON, "-m", "semsearch", *args], env=tree.env, cwd=tree.cwd, check=False)
    if check and run.returncode != 0:
        raise TreeFailure(f"{tree.name} tree ({tree.label}): `semsearch {' '.join(args)}` exited {run.returncode}:\n"
                          f"{run.stderr.decode(errors='replace')[-3000:]}")
    if b"sentence-transformers" in run.stderr:  # the ONNX path failed: the figures are not comparable
        print(f"  WARNING ({tree.name}): {run.stderr.decode(errors='replace').strip()[-500:]}", flush=True)
    return run


def summary(tree: Tree, run: Run) -> dict[str, float]:
    """The figures of the summary line `semsearch index` writes on stderr."""
    match = SUMMARY.search(run.stderr.decode(errors="replace"))
    if match is None:
        raise TreeFailure(f"{tree.name} tree: no summary line from `semsearch index`:\n{run.stderr.decode()[-2000:]}")
    return {k: float(v or 0) for k, v in match.groupdict().items()}


def interleaved(trees: list[Tree], runs: int, measure: Callable[[Tree, int], T]) -> dict[str, list[T]]:
    """measure(tree, i) for i in range(runs), the trees taking turns (old, new, old, new, ...)."""
    return take_turns({t.name: lambda i, t=t: measure(t, i) for t in trees}, range(runs))


def warm_up(trees: list[Tree], corpus: Path, work: Path) -> None:
    """A small untimed index per tree: makes the ONNX export (once, shared cache) and warms the caches."""
    small = work / "warmup-corpus"
    small.mkdir()
    for md in sorted(corpus.rglob("*.md"))[:WARMUP_FILES]:
        shutil.copy2(md, small / md.name)
    for tree in trees:
        run = cli(tree, "index", str(small), "--index", str(work / f"warmup-idx-{tree.name}"))
        made = "made the model's ONNX export" if b"exporting" in run.stderr else "export found in the cache"
        print(f"warm-up index ({tree.name}): {fmt_s(run.seconds)}, {made}", flush=True)


def bench_index(trees: list[Tree], corpus: Path, work: Path, runs: int) -> dict[str, list[dict[str, float]]]:
    """Full builds into a fresh folder; the last one per tree stays at work/idx-NAME."""
    def measure(tree: Tree, i: int) -> dict[str, float]:
        index_dir = work / f"idx-{tree.name}"
        shutil.rmtree(index_dir, ignore_errors=True)
        run = cli(tree, "index", str(corpus), "--index", str(index_dir))
        if b"exporting" in run.stderr:
            print(f"  WARNING ({tree.name}): the model was exported during a timed run", flush=True)
        figures = {**summary(tree, run), "wall_s": run.seconds, "max_rss_kb": run.max_rss_kb}
        figures["chunks_per_s"] = figures["added"] / run.seconds
        print(f"  index {i + 1} {tree.name}: {figures['added']:.0f} chunks, {fmt_s(run.seconds)}, "
              f"{figures['chunks_per_s']:.1f} chunks/s", flush=True)
        return figures
    return interleaved(trees, runs, measure)


def bench_noop(trees: list[Tree], work: Path, runs: int) -> dict[str, list[float]]:
    def measure(tree: Tree, i: int) -> float:
        run = cli(tree, "index", "--index", str(work / f"idx-{tree.name}"))
        s = summary(tree, run)
        if s["added"] or s["removed"]:
            print(f"  WARNING ({tree.name}): no-op run changed chunks: +{s['added']:.0f} -{s['removed']:.0f}")
        return run.seconds
    times = interleaved(trees, runs, measure)
    print("  no-op: " + "; ".join(f"{n} {' '.join(f'{t:.3f}' for t in ts)}" for n, ts in times.items()), flush=True)
    return times


def bench_query(trees: list[Tree], work: Path, runs: int) -> dict[str, list[float]]:
    def measure(tree: Tree, i: int) -> float:
        run = cli(tree, "query", QUERIES[i % len(QUERIES)], "--index", str(work / f"idx-{tree.name}"), "-k", "10")
        return run.seconds
    for tree in trees:  # one untimed query each: the page cache holds both trees' files and indexes
        cli(tree, "query", QUERIES[0], "--index", str(work / f"idx-{tree.name}"), "-k", "10")
    times = interleaved(trees, runs, measure)
    print("  query: " + "; ".join(f"{n} {' '.join(f'{t:.2f}' for t in ts)}" for n, ts in times.items()), flush=True)
    return times


def compat_check(old: Tree, new: Tree, work: Path) -> dict[str, object]:
    """The new tree updates, reads and queries the index the old tree built."""
    index_dir = str(work / "idx-old")
    before = json.loads(cli(old, "status", "--index", index_dir, "--json").stdout)
    update = cli(new, "index", "--index", index_dir, check=False)
    match = SUMMARY.search(update.stderr.decode(errors="replace"))
    status = cli(new, "status", "--index", index_dir, "--json", check=False)
    try:
        after = json.loads(status.stdout) if status.returncode == 0 else {}
    except json.JSONDecodeError:
        after = {}
    query = cli(new, "query", QUERIES[0], "--index", index_dir, "-k", "10", check=False)
    added, reused, removed = (int(match[k] or 0) if match else None for k in ("added", "reused", "removed"))
    result = {
        "update_exit": update.returncode, "update_summary_parsed": match is not None,
        "chunks_added": added, "chunks_reused": reused, "chunks_removed": removed,
        "chunks_embedded_again": None if match is None else added - reused,
        "status_exit": status.returncode, "status_reads": bool(after),
        "status_chunks_before": before.get("chunks"), "status_chunks_after": after.get("chunks"),
        "query_exit": query.returncode, "query_hits": len(query.stdout.splitlines()),
    }
    result["ok"] = (update.returncode == 0 and added == 0 and removed == 0 and status.returncode == 0
                    and after.get("chunks") == before.get("chunks") and query.returncode == 0 and result["query_hits"] > 0)
    if update.returncode or status.returncode or query.returncode:
        print(f"  compat stderr: {(update.stderr + status.stderr + query.stderr).decode(errors='replace')[-1500:]}")
    return result


def figures(index: dict, noop: dict, query: dict) -> dict[str, dict[str, float]]:
    """Per figure: old, new, new/old and the runs behind them."""
    speed = {n: [r["chunks_per_s"] for r in runs] for n, runs in index.items()}
    series = {
        "index_chunks_per_s": speed,
        "index_chunks_per_s_best": speed,  # best run: noise only ever slows a run down
        "index_wall_s": {n: [r["wall_s"] for r in runs] for n, runs in index.items()},
        "index_chunks": {n: [r["total"] for r in runs] for n, runs in index.items()},
        "noop_reindex_s": noop,
        "cold_query_p50_s": query,
    }
    out = {}
    for name, runs in series.items():
        pick = max if name.endswith("_best") else (lambda v: pct(v, 50)) if name.startswith("cold") else median
        old, new = pick(runs["old"]), pick(runs["new"])
        out[name] = {"old": old, "new": new, "ratio": new / old if old else float("nan"),
                     "old_runs": runs["old"], "new_runs": runs["new"]}
    return out


def number(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def cell(name: str, value: float, runs: list[float]) -> str:
    """A figure with the min-max of its runs (as a duration for the *_s figures in seconds)."""
    fmt = fmt_s if name.endswith("_s") and "_per_s" not in name else number
    return fmt(value) + (f" ({fmt(min(runs))}-{fmt(max(runs))})" if len(runs) > 1 else "")


def print_report(figs: dict[str, dict[str, float]], compat: dict[str, object]) -> None:
    rows = [("figure", "old", "new", "new/old", f"within {NOISE:.0%}")]
    for name, f in figs.items():
        rows.append((name, cell(name, f["old"], f["old_runs"]), cell(name, f["new"], f["new_runs"]),
                     f"{f['ratio']:.3f}", "yes" if abs(f["ratio"] - 1) <= NOISE else "NO"))
    print_table("old vs new (median, unless named p50 or best; min-max of the runs in brackets)", rows[1:], rows[0])
    print("index_chunks_per_s is chunks added per second of process wall time (the CLI gives no token count)")
    print("\n== the new tree on the old tree's index ==")
    for key, value in compat.items():
        print(f"  {key:<24} {value}")


def setup_trees(old_rev: str, new_rev: str | None, work: Path) -> list[Tree]:
    """The old tree (a commit) and the new one (the working tree, or a commit), import-checked."""
    (work / "cwd").mkdir()
    old_commit = export_rev(old_rev, work / "old")
    new_commit = export_rev(new_rev, work / "new") if new_rev else None
    new_label = f"commit {new_commit}" if new_commit else (
        f"working tree {REPO} (HEAD {git('rev-parse', '--short', 'HEAD')}, "
        f"{len(git('status', '--porcelain').splitlines())} paths changed or new)")
    trees = [make_tree("old", work / "old", f"commit {old_commit}", work / "cache", work / "cwd"),
             make_tree("new", work / "new" if new_commit else REPO, new_label, work / "cache", work / "cwd")]
    for tree in trees:
        print(f"{tree.name}: {tree.label}")
    return trees


def copy_corpus(source: Path, dest: Path) -> Path:
    """A copy both trees index (folders made writable, so a read-only source is deletable here)."""
    shutil.copytree(source, dest, symlinks=True)
    for folder in (dest, *(p for p in dest.rglob("*") if p.is_dir() and not p.is_symlink())):
        folder.chmod(folder.stat().st_mode | 0o700)
    print(f"corpus: {source} copied to {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0], work=None, data=False)
    ap.add_argument("--old-rev", default=DEFAULT_OLD_REV, help=f"old tree: this commit (default {DEFAULT_OLD_REV})")
    ap.add_argument("--new-rev", default=None, help="new tree: this commit instead of the working tree")
    ap.add_argument("--corpus", type=Path, default=None, help="folder to index (default ../shared/data/fastapi-docs)")
    ap.add_argument("--index-runs", type=int, default=3, help="full builds per tree (default 3)")
    ap.add_argument("--noop-runs", type=int, default=5, help="no-op re-index runs per tree (default 5)")
    ap.add_argument("--query-runs", type=int, default=15, help="cold query runs per tree (default 15)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    if min(args.index_runs, args.noop_runs, args.query_runs) < 1:
        ap.error("run counts must be at least 1")
    corpus_src = args.corpus or require_data(DEFAULT_DATA, "fastapi-docs")
    if not corpus_src.is_dir():
        ap.error(f"--corpus {corpus_src}: no such folder")
    machine = start()
    here = harness.machine()
    cpu, vnni = here.cpu, "avx512_vnni" in here.features
    work = Path(tempfile.mkdtemp(prefix="semsearch-compare-"))
    print(f"work folder: {work}{' (kept)' if args.keep else ''}")
    try:
        trees = setup_trees(args.old_rev, args.new_rev, work)
        corpus = copy_corpus(corpus_src, work / "corpus")
        warm_up(trees, corpus, work)
        print(f"index: {args.index_runs} full build(s) per tree ...", flush=True)
        index = bench_index(trees, corpus, work, args.index_runs)
        print(f"no-op re-index: {args.noop_runs} run(s) per tree ...", flush=True)
        noop = bench_noop(trees, work, args.noop_runs)
        print(f"cold query: {args.query_runs} run(s) per tree ...", flush=True)
        query = bench_query(trees, work, args.query_runs)
        print("compatibility: the new tree on the old tree's index ...", flush=True)
        compat = compat_check(*trees, work)
    except (TreeFailure, RuntimeError, subprocess.CalledProcessError) as exc:
        detail = f"{exc}\n{exc.stderr}" if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        print(f"\nerror: {detail}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figs = figures(index, noop, query)
    print_report(figs, compat)
    machine_at_end = machine_note()
    print(f"\nmachine at the end: {machine_at_end}")
    write_json(args.json, {
        "machine": machine, "machine_at_end": machine_at_end, "cpu": cpu, "avx512_vnni": vnni, "old": {"rev": args.old_rev, "tree": trees[0].label},
        "new": {"rev": args.new_rev, "tree": trees[1].label}, "corpus": str(corpus_src),
        "queries": QUERIES, "noise_band": NOISE, "figures": figs, "index_runs": index, "compat": compat,
        "notes": {"index_chunks_per_s": "chunks added / wall seconds of the index process (no token count in the CLI)"},
    })
    return 0 if compat["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
