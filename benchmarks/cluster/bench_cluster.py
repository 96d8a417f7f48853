"""Indexing on a Ray cluster against a local run, with one node and with two (issue 27).

A Ray cluster on loopback (tests/ray_cluster.py: `ray start --block`, one CPU per node, stopped by
its processes' PIDs): first the head alone, then a worker joins. Each node is pinned to a core of
its own (`taskset`: its workers' onnxruntime and OCR see one CPU, as on a one-core machine), so one
node has one core and two nodes two: the scaling is measured, not the sharing of one machine's
cores. Ray is told each node has --slots CPUs (default 2): with one, a node's CPU is either its
embedding actor's or a reading task's, and a node can only do one of the two stages at a time. The driver (walk, shipping the bytes, writing the index) runs unpinned beside them; the
local run has both cores.

Corpora (each indexed fresh, default precision):
- text: --docs SciFact abstracts as .txt files;
- scans: ../shared/data/formats/scanned-pdf's printout and --scans PDFs of two scanned pages
  rendered from abstracts' titles (each different: the OCR cache would read copies once), all
  read by OCR;
- small: 10 abstracts (what a cluster costs a small job).

With two nodes, text and scans are indexed once more with the workers reading each file at its
path (``shared_paths``: here the same disk) instead of its bytes shipped through the object store.

Usage:
    python benchmarks/cluster/bench_cluster.py [--docs 400] [--scans 6] [--corpora text,scans,small] [--json FILE]
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks.harness import arguments, require_data, scifact_texts, start, write_json


def corpora(data: Path, work: Path, docs: int, scans: int) -> dict[str, Path]:
    scan = require_data(data, "formats", "scanned-pdf", "epson-printout-wikipedia-ocr-article.pdf")
    out = {"text": work / "text", "scans": work / "scans", "small": work / "small"}
    for folder in out.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for n, (doc_id, text) in enumerate(scifact_texts(data, docs)):
        (out["text"] / f"{doc_id}.txt").write_text(text, encoding="utf-8")
        if n < 10:
            (out["small"] / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    # Scans that differ (the OCR cache would read copies of one once): the printout once, then
    # pages rendered from abstracts' sentences, three lines each, two pages a file.
    from test_ocr import scanned_pdf

    shutil.copy(scan, out["scans"] / "printout.pdf")
    lines = [path.read_text(encoding="utf-8").split("\n")[0].strip()[:48] for path in sorted(out["text"].glob("*.txt"))]
    for n in range(scans):
        pick = [lines[(n * 6 + k) % len(lines)] for k in range(6)]
        scanned_pdf(out["scans"] / f"scan-{n:02d}.pdf", [tuple(pick[:3]), tuple(pick[3:])])
    return out


def index(folder: Path, target: Path, executor: Any) -> dict[str, Any]:
    from semsearch import Index

    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    with Index.create(target) as idx:
        summary = idx.update([folder], executor=executor)
    seconds = time.perf_counter() - started
    row = {"seconds": seconds, "files": summary.indexed, "chunks": summary.chunks_total,
           "files_per_s": summary.indexed / seconds, "chunks_per_s": summary.chunks_total / seconds,
           "ocr_pages": summary.pages_ocr, "ocr_pages_per_s": summary.pages_ocr / seconds}  # fmt: skip
    if executor is not None:
        row["read_on"] = dict(executor.read_on)
        row["embedded_on"] = dict(executor.embedded_on)
        row["chunks_on"] = dict(executor.chunks_on)
        row["pages_on"] = dict(executor.pages_on)
    return row


def worker_cpus(ray: Any) -> dict[str, list[int]]:
    """Each node's id: the CPUs a task there may run on (its affinity), as the worker sees it."""
    import os

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def affinity() -> list[int]:
        return sorted(os.sched_getaffinity(0))

    out = {}
    for node in (n for n in ray.nodes() if n.get("Alive")):
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        out[node["NodeID"][:8]] = ray.get(affinity.options(scheduling_strategy=strategy).remote(), timeout=120)
    return out


def main() -> int:
    ap = arguments(__doc__, work="cluster")
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--scans", type=int, default=6)
    ap.add_argument("--slots", type=int, default=2, help="CPUs Ray may schedule on each node (its one core)")
    ap.add_argument("--corpora", default="text,scans,small", help="which corpora to index (comma-separated)")
    args = ap.parse_args()
    import os

    from ray_cluster import Node, free_port

    from semsearch.indexing.cluster import RayExecutor, connect

    note = start(args)
    every = corpora(args.data, args.work, args.docs, args.scans)
    folders = {name: path for name, path in every.items() if name in args.corpora.split(",")}
    result: dict[str, Any] = {"machine": note, "docs": args.docs, "scans": args.scans, "runs": {}}

    def run(name: str, corpus: str, executor: Any) -> None:
        row = index(folders[corpus], args.work / f"idx-{name}-{corpus}", executor)
        result["runs"][f"{name} / {corpus}"] = row
        print(f"{name:>8} {corpus:>6}: {row['seconds']:6.1f} s  {row['files_per_s']:6.2f} files/s  "
              f"{row['chunks_per_s']:7.1f} chunks/s  {row['ocr_pages_per_s']:5.2f} OCR pages/s  "
              f"{row.get('read_on', '')}", flush=True)  # fmt: skip

    for corpus in folders:
        run("local", corpus, None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"] = "disabled"  # the same on the driver and the nodes
    cores = sorted(os.sched_getaffinity(0))
    slots = f"--num-cpus={args.slots}"
    head = Node("--head", "--node-ip-address=127.0.0.1", f"--port={port}", slots,
                "--include-dashboard=false", env=env, cores=str(cores[0]))  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the head's port open: it is up
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        time.sleep(2)
        ray = connect(address)
        index(every["small"], args.work / "warm-up", RayExecutor(address, small_files=1))  # workers' imports
        for corpus in folders:
            run("1 node", corpus, RayExecutor(address, small_files=1))
        worker = Node(f"--address={address}", "--node-ip-address=127.0.0.1", slots, env=env,
                      cores=str(cores[-1]))  # fmt: skip
        deadline = time.monotonic() + 60
        while sum(1 for n in ray.nodes() if n.get("Alive")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        result["worker_cpus"] = worker_cpus(ray)  # what a task on each node may run on
        print(f"CPUs a task may use, by node: {result['worker_cpus']}", flush=True)
        for corpus in folders:
            run("2 nodes", corpus, RayExecutor(address, small_files=1))
        for corpus in (c for c in ("text", "scans") if c in folders):  # the workers read the files at their paths (the same disk here)
            run("2 shared", corpus, RayExecutor(address, small_files=1, shared_paths=True))
    finally:
        import ray as ray_module

        ray_module.shutdown()
        if worker is not None:
            worker.stop()
        head.stop()
    runs = result["runs"]
    for corpus in folders:
        one, two, here = runs[f"1 node / {corpus}"], runs[f"2 nodes / {corpus}"], runs[f"local / {corpus}"]
        result[f"scaling {corpus}"] = {"two_over_one": one["seconds"] / two["seconds"],
                                       "efficiency": one["seconds"] / two["seconds"] / 2,
                                       "cluster_over_local": two["seconds"] / here["seconds"]}  # fmt: skip
        print(f"{corpus}: 2 nodes {one['seconds'] / two['seconds']:.2f}x 1 node (efficiency "
              f"{one['seconds'] / two['seconds'] / 2:.0%}); 2 nodes take {two['seconds'] / here['seconds']:.2f}x the local run")  # fmt: skip
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
