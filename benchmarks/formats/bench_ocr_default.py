"""What `--ocr images` costs on a real documentation tree: the measurement behind the default `--ocr auto`.

The FastAPI docs (155 Markdown pages beside 187 PNG/JPEG images, mostly screenshots) are copied to
``--work`` and indexed with the real CLI in fresh index folders (no OCR cache carried over):

1. warm-up: a one-file folder is indexed first, with the same ``SEMSEARCH_CACHE``, so the model's
   one-time ONNX export is not counted in either timed run;
2. ``semsearch index TREE --ocr auto`` (the default: images are skipped), timed in full;
3. a random sample of ``--sample`` (30) images read in this process as the indexer reads them
   (``read_document(..., options=ReadOptions(ocr="images"))``, no cache; the OCR engine loaded
   before): seconds per image, characters found, a few texts;
4. ``semsearch index TREE --ocr images`` in full when its estimate (the auto run + images x mean
   OCR seconds of the sample) fits in ``--budget-min`` (25) minutes, else extrapolated from the
   sample (the estimate ignores that the indexer's reading thread overlaps OCR with embedding, so
   it errs on the high side). After a full run, the text of every image comes from the index's
   OCR cache (``ocr-cache.sqlite``: one row per distinct image).

Reported: both index times, the ratio images/auto, the number of images, how many yield any
text (and how much), and samples of what that text is.

Usage:
    python benchmarks/formats/bench_ocr_default.py [--sample 30] [--budget-min 25] [--full|--sample-only]
        [--cache DIR] [--json-out FILE]
"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    arguments,
    bench_env,
    fmt_s,
    print_table,
    require_data,
    run_child,
    semsearch_cmd,
    start,
    write_json,
)

SUMMARY = re.compile(
    r"semsearch: indexed (?P<indexed>\d+) files?, .*chunks: \+(?P<added>\d+).*? = (?P<total>\d+)"
    r"(?:, OCR: (?P<ocr_pages>\d+) pages?(?:, (?P<ocr_cached>\d+) from the cache)? \((?P<ocr_rate>[\d.]+)/s\))?"
    r", (?P<seconds>[\d.]+) s"
)


def default_cache() -> Path:
    from semsearch.models.resolve import cache_dir

    return cache_dir()


def index_run(tree: Path, index: Path, ocr: str, env: dict[str, str]) -> dict:
    shutil.rmtree(index, ignore_errors=True)
    run = run_child(
        [*semsearch_cmd(), "index", str(tree), "--ocr", ocr, "--index", str(index)], env=env, cwd=tree.parent
    )
    line = next(
        (ln for ln in run.stderr.decode(errors="replace").splitlines() if ln.startswith("semsearch: indexed")), ""
    )
    m = SUMMARY.search(line)
    figs = {k: (float(v) if "." in v else int(v)) for k, v in (m.groupdict() if m else {}).items() if v is not None}
    return {"ocr": ocr, "wall_seconds": run.seconds, "max_rss_kb": run.max_rss_kb, "summary": line, **figs}


def image_files(tree: Path) -> list[Path]:
    from semsearch.readers.image import SUFFIXES

    return sorted(p for p in tree.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def sample_ocr(images: list[Path], n: int, seed: int) -> dict:
    from semsearch.readers import ReadOptions, ocr, read_document

    t = time.perf_counter()
    ocr._load_engine()
    load = time.perf_counter() - t
    pick = sorted(random.Random(seed).sample(images, min(n, len(images))))
    rows = []
    options = ReadOptions(ocr="images")
    for path in pick:
        data = path.read_bytes()
        t = time.perf_counter()
        try:
            text, err = read_document(path, data, options=options).text, None
        except Exception as exc:  # noqa: BLE001 - "no text found" is an ExtractError: a figure here
            text, err = "", f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "path": str(path),
                "bytes": len(data),
                "seconds": time.perf_counter() - t,
                "chars": len(text.strip()),
                "text": text,
                "error": err,
            }
        )
        print(f"  {path.name}: {fmt_s(rows[-1]['seconds'])}, {rows[-1]['chars']} chars", flush=True)
    secs = [r["seconds"] for r in rows]
    return {
        "engine_load_seconds": load,
        "files": rows,
        "mean_seconds": statistics.mean(secs),
        "median_seconds": statistics.median(secs),
        "with_text": sum(1 for r in rows if r["chars"]),
        "total_bytes": sum(r["bytes"] for r in rows),
    }


def cache_texts(index: Path) -> list[str]:
    db = index / "ocr-cache.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT text FROM pages")]


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument("--cache", type=Path, help="SEMSEARCH_CACHE shared by all runs (default: the user's cache)")
    ap.add_argument("--sample", type=int, default=30)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--budget-min", type=float, default=25.0, help="run --ocr images in full if estimated under this")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="always run --ocr images in full")
    mode.add_argument("--sample-only", action="store_true", help="never run --ocr images in full")
    args = ap.parse_args()

    note = start()
    source = require_data(args.data, "fastapi-docs")
    base = args.work / "ocr-default"
    shutil.rmtree(base, ignore_errors=True)
    tree = base / "fastapi-docs"
    shutil.copytree(source, tree)
    cache = args.cache or default_cache()
    env = bench_env({"SEMSEARCH_CACHE": str(cache)})
    images = image_files(tree)
    print(f"{tree}: {len(images)} images; SEMSEARCH_CACHE={cache}", flush=True)

    tiny = base / "warmup"
    tiny.mkdir()
    (tiny / "note.md").write_text("# Warm-up\n\nA one-file folder indexed so the ONNX export is made before timing.\n")
    warm = index_run(tiny, base / "idx-warmup", "auto", env)
    print(f"warm-up: {fmt_s(warm['wall_seconds'])}", flush=True)

    print("indexing with --ocr auto ...", flush=True)
    auto = index_run(tree, base / "idx-auto", "auto", env)
    print(f"  {auto['summary']} (wall {fmt_s(auto['wall_seconds'])})", flush=True)

    print(f"OCR of a sample of {args.sample} images (in this process):", flush=True)
    sample = sample_ocr(images, args.sample, args.seed)
    estimate = auto["wall_seconds"] + sample["engine_load_seconds"] + len(images) * sample["mean_seconds"]
    full_run = args.full or (not args.sample_only and estimate <= args.budget_min * 60)
    print(f"estimated --ocr images run: {fmt_s(estimate)} -> {'full run' if full_run else 'extrapolated'}", flush=True)

    images_run: dict | None = None
    all_texts: list[str] = []
    if full_run:
        print("indexing with --ocr images ...", flush=True)
        images_run = index_run(tree, base / "idx-images", "images", env)
        print(f"  {images_run['summary']} (wall {fmt_s(images_run['wall_seconds'])})", flush=True)
        all_texts = cache_texts(base / "idx-images")
        images_seconds = images_run["wall_seconds"]
    else:
        images_seconds = estimate

    ratio = images_seconds / auto["wall_seconds"]
    n_sample = len(sample["files"])
    rows = [
        ("images in the tree", str(len(images)), "PNG/JPEG/... by suffix", ""),
        (
            "index --ocr auto (default)",
            fmt_s(auto["wall_seconds"]),
            f"{auto.get('indexed', '?')} files, {auto.get('total', '?')} chunks",
            "",
        ),
        (
            "index --ocr images",
            fmt_s(images_seconds) + ("" if full_run else " (extrapolated)"),
            (
                f"{images_run.get('indexed', '?')} files, {images_run.get('total', '?')} chunks, OCR "
                f"{images_run.get('ocr_pages', '?')} pages at {images_run.get('ocr_rate', '?')}/s"
            )
            if images_run
            else f"auto + {len(images)} x {fmt_s(sample['mean_seconds'])} + engine load",
            "",
        ),
        ("ratio images / auto", f"{ratio:.2f}x", "", ""),
        (
            "OCR per image (sample)",
            f"mean {fmt_s(sample['mean_seconds'])}, median {fmt_s(sample['median_seconds'])}",
            f"{n_sample} images, engine load {fmt_s(sample['engine_load_seconds'])}",
            "",
        ),
        (
            "sample images with any text",
            f"{sample['with_text']}/{n_sample}",
            f"~{round(sample['with_text'] / max(n_sample, 1) * len(images))} of {len(images)} extrapolated",
            "",
        ),
    ]
    if all_texts:
        with_text = [t for t in all_texts if t.strip()]
        rows.append(
            (
                "images with any text (full run, OCR cache)",
                f"{len(with_text)}/{len(all_texts)} distinct",
                f"median {statistics.median([len(t) for t in with_text]) if with_text else 0:.0f} chars",
                "",
            )
        )
        rows.append(("chunks added by images", str(images_run.get("total", 0) - auto.get("total", 0)), "", ""))
    print_table("FastAPI docs: --ocr auto vs --ocr images", rows)

    chars = sorted(r["chars"] for r in sample["files"])
    print(f"\nchars per sampled image: min {chars[0]}, median {statistics.median(chars):.0f}, max {chars[-1]}")
    print("samples of the text found (first 160 chars, whitespace collapsed):")
    for r in sorted(sample["files"], key=lambda r: -r["chars"])[:: max(1, n_sample // 8)][:8]:
        flat = re.sub(r"\s+", " ", r["text"]).strip()
        print(f"  {Path(r['path']).relative_to(tree)} ({r['chars']} chars): {flat[:160]!r}")

    write_json(
        args.json,
        {
            "machine": note,
            "images": len(images),
            "warmup": warm,
            "auto": auto,
            "images_run": images_run,
            "images_seconds": images_seconds,
            "images_extrapolated": not full_run,
            "estimate_seconds": estimate,
            "ratio_images_over_auto": ratio,
            "sample": sample,
            "full_run_texts": all_texts,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
