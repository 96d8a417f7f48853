"""Topics (issue 28): how well they match known categories, and what they cost at 5k, 100k and 1M.

Quality, on indexes built here with the bundled model (kept under --work between runs):
- pdfs: the 14 papers of ../shared/data/pdfs, every passage labelled by its paper;
- fastapi: the FastAPI docs tree, every passage (and, with -l, every file) labelled by its
  section (the folder under docs/: tutorial, advanced, deployment, ...; pages at the top: "root").
For each: adjusted Rand index and NMI of `Index.topics()` (its defaults) against the labels, the
outliers counted as one more label and left out, beside k-means on the same stored vectors with
k = the number of labels (a baseline told the answer's size) and k = the number of topics found.

Speed: `semsearch topics` end to end in a new process on the FastAPI index (4,811 passages), then
the clustering itself (`semsearch.topics.cluster`: the neighbour graph, UMAP and HDBSCAN on a
sample of at most 20,000, the rest by nearest centre) on 100,000 and 1,000,000 vectors made from
the real ones (each copy moved by noise of norm about 1, renormalised: copies are not each other's
nearest neighbours, which would make every copy set a clique of its own); at 100,000 the sample's topics
are compared (ARI) with those of UMAP and HDBSCAN run on all 100,000.

Usage:
    python benchmarks/topics/bench_topics.py [--sizes 100000,1000000] [--full-at 100000] [--json FILE]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, bench_env, require_data, semsearch_cmd, start, write_json


def build(folder: Path, index: Path) -> None:
    if (index / "manifest.json").exists():
        return
    done = subprocess.run([*semsearch_cmd(), "index", str(folder), "--index", str(index), "-q"], env=bench_env(),
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"indexing {folder} failed: {done.stderr.strip()}")


def label_of(path: Path, root: Path, by: str) -> str:
    rel = path.relative_to(root)
    if by == "file":
        return str(rel)
    return rel.parts[0] if len(rel.parts) > 1 else "root"


def quality(index: Path, root: Path, by: str, files: bool) -> dict[str, Any]:
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from semsearch import Index
    from semsearch.store import IndexReader

    with Index.open(index) as opened:
        started = time.perf_counter()
        found = opened.topics(files=files)
        seconds = time.perf_counter() - started
    with IndexReader(index) as reader:
        records = reader.fetch_chunks(found.ids.tolist())
    truth = [label_of(records[int(i)].path, root, by) for i in found.ids]
    predicted = found.labels.tolist()
    keep = [k for k, p in enumerate(predicted) if p >= 0]
    row: dict[str, Any] = {
        "points": found.size, "labels": len(set(truth)), "topics": len(found.topics),
        "outliers": found.outliers / max(1, found.size), "seconds": seconds,
        "ari": adjusted_rand_score(truth, predicted), "nmi": normalized_mutual_info_score(truth, predicted),
        "ari_in_topics": adjusted_rand_score([truth[k] for k in keep], [predicted[k] for k in keep]),
        "nmi_in_topics": normalized_mutual_info_score([truth[k] for k in keep], [predicted[k] for k in keep]),
        "names": [t.name for t in found.topics[:12]],
    }  # fmt: skip
    for name, k in (("kmeans_k_labels", len(set(truth))), ("kmeans_k_topics", max(2, len(found.topics)))):
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(np.asarray(found.vectors))
        row[name] = {"k": k, "ari": adjusted_rand_score(truth, km), "nmi": normalized_mutual_info_score(truth, km)}
    return row


def sampling(index: Path, root: Path) -> dict[str, Any]:
    """What clustering a sample costs: the PDFs' passages with samples of a quarter and a half
    of them (the rest joining the nearest topic's centre), against all of them, by ARI to the papers."""
    from sklearn.metrics import adjusted_rand_score

    from semsearch import Index, topics
    from semsearch.store import IndexReader

    out: dict[str, Any] = {}
    saved = topics.FIT_SAMPLE
    try:
        with Index.open(index) as opened:
            total = opened.topics().size
            for share in (0.25, 0.5, 1.0):
                topics.FIT_SAMPLE = max(50, int(total * share))
                found = opened.topics()
                with IndexReader(index) as reader:
                    records = reader.fetch_chunks(found.ids.tolist())
                truth = [label_of(records[int(i)].path, root, "file") for i in found.ids]
                out[f"sample {share:.0%}"] = {"ari": adjusted_rand_score(truth, found.labels.tolist()),
                                              "topics": len(found.topics), "outliers": found.outliers / found.size}  # fmt: skip
    finally:
        topics.FIT_SAMPLE = saved
    return out


def read_rate(index: Path) -> float:
    """Stored vectors read per second (what `topics` reads first)."""
    from semsearch.store import IndexReader

    with IndexReader(index) as reader:
        started = time.perf_counter()
        count = sum(len(ids) for ids, _, _, _ in reader.chunk_vectors())
        return count / (time.perf_counter() - started)


def end_to_end(index: Path, work: Path) -> dict[str, float]:
    out = {}
    for name, args in (("topics", []), ("topics --map", ["--map", str(work / "map.html")])):
        started = time.perf_counter()
        done = subprocess.run([*semsearch_cmd(), "topics", "--index", str(index), *args], env=bench_env(),
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        out[name] = time.perf_counter() - started
    return out


def grown(base: Any, n: int, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(base), n)
    out = base[rows] + rng.normal(0, 0.05, (n, base.shape[1])).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def at_scale(base: Any, sizes: list[int], full_at: int) -> dict[str, Any]:
    import resource

    from sklearn.metrics import adjusted_rand_score

    from semsearch import topics

    out: dict[str, Any] = {}
    for n in sizes:
        vectors = grown(base, n)
        started = time.perf_counter()
        min_size = topics.default_min_size(n)  # Index.topics's
        labels, _ = topics.cluster(vectors, min_size, topics.SEED)
        row = {"seconds": time.perf_counter() - started, "topics": int(labels.max()) + 1,
               "outliers": float((labels < 0).mean()),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip
        if n == full_at:
            saved = topics.FIT_SAMPLE
            topics.FIT_SAMPLE = n + 1
            try:
                started = time.perf_counter()
                full, _ = topics.cluster(vectors, min_size, topics.SEED)  # the same topic size, on all points
                row["all_points_seconds"] = time.perf_counter() - started
            finally:
                topics.FIT_SAMPLE = saved
            both = (labels >= 0) & (full >= 0)
            row["ari_sample_vs_all"] = adjusted_rand_score(full, labels)
            row["ari_sample_vs_all_in_topics"] = adjusted_rand_score(full[both], labels[both])
            row["all_points_topics"] = int(full.max()) + 1
            row["all_points_outliers"] = float((full < 0).mean())
        out[str(n)] = row
        print(f"{n:>9,} vectors: {row}", flush=True)
        del vectors
    return out


def main() -> int:
    ap = arguments(__doc__, work="topics")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--full-at", type=int, default=100_000)
    args = ap.parse_args()
    import numpy as np

    start(args)
    pdfs = require_data(args.data, "pdfs")
    docs = require_data(args.data, "fastapi-docs")
    build(pdfs, args.work / "idx-pdfs")
    build(docs, args.work / "idx-fastapi")
    result: dict[str, Any] = {"quality": {}}
    for name, index, root, by, files in (("pdfs (passages by paper)", "idx-pdfs", pdfs, "file", False),
                                         ("fastapi (passages by section)", "idx-fastapi", docs, "section", False),
                                         ("fastapi (files by section)", "idx-fastapi", docs, "section", True)):  # fmt: skip
        row = quality(args.work / index, root, by, files)
        result["quality"][name] = row
        print(f"{name}: {row}", flush=True)
    result["sampling_pdfs"] = sampling(args.work / "idx-pdfs", pdfs)
    print(f"sampling, PDFs: {result['sampling_pdfs']}", flush=True)
    result["end_to_end_fastapi"] = end_to_end(args.work / "idx-fastapi", args.work)
    print(f"end to end, FastAPI docs: {result['end_to_end_fastapi']}", flush=True)
    from semsearch.store import IndexReader

    base = []
    for index in ("idx-pdfs", "idx-fastapi"):
        with IndexReader(args.work / index) as reader:
            base += [np.array(vectors) for _, _, vectors, _ in reader.chunk_vectors()]
    result["vectors_read_per_s"] = read_rate(args.work / "idx-fastapi")
    print(f"stored vectors read: {result['vectors_read_per_s']:,.0f}/s", flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    result["scale"] = at_scale(np.concatenate(base), sizes, args.full_at)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
