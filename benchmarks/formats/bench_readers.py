"""Reader benchmark: extraction speed per format on real documents, parsing-library import times, OCR.

On the real files in ``../shared/data/formats`` (docx, odt, rtf, pptx, html, epub, ipynb) and the 14
text PDFs in ``../shared/data/pdfs``, through the public API
(``semsearch.readers.read_document(path, data, options=ReadOptions(ocr="auto"))``, the kind detected
as the indexer detects it):

* cold: one pass over a format's files in a fresh process that has imported ``semsearch.readers``
  only (so it includes importing that format's parsing library and the first-use costs);
* warm: in this process, one warm-up pass, then the median of ``--reps`` (3) passes;
* files, bytes, extracted characters, MB/s and chars/s (warm), and a per-file table (chars, parts,
  headings, title, warm time, or the error) to spot wrong text.

Import time of each reader's parsing library in a fresh interpreter: ``python -c "import X"`` minus
``python -c pass`` (median of ``--import-runs``), and the module's own cumulative figure from
``python -X importtime`` (top-level entries that the bare interpreter does not import).

OCR (RapidOCR's bundled ONNX models) on the scanned PDF's page(s) and the two images:

* cold: a fresh process reading the file with ``ocr="images"`` (imports, engine load, render/decode,
  recognition); also the engine load alone (``ocr._load_engine()``: importing rapidocr, onnxruntime
  and OpenCV, and opening the three ONNX models) in a fresh process;
* warm: in this process, after a warm-up read, median of ``--reps`` reads (no cache): pages/s;
  beside it the raw engine (``ocr.recognize`` on the already rendered pixels);
* cached: the same read through a fresh ``SqliteOcrCache`` (one read fills it), then the median of
  ``--reps`` re-reads, which should take ~0 (pixels hashed, text looked up).

Usage:
    python benchmarks/formats/bench_readers.py [--json-out FILE] [--reps 3] [--no-ocr] [--no-imports]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
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
    start,
    write_json,
)

# Format folders of ../shared/data/formats read as text (images/ and scanned-pdf/ are the OCR part).
TEXT_FORMATS = ("docx", "odt", "rtf", "pptx", "html", "epub", "ipynb")
OCR_FILES = (
    ("scanned-pdf", "formats/scanned-pdf/epson-printout-wikipedia-ocr-article.pdf"),
    ("image", "formats/images/typewriter-linzensoep-recipe.png"),
    ("image", "formats/images/bank-statement-screenshot.png"),
)
# (label, import statement, reader(s) that use it)
LIBRARIES = (
    ("python-docx", "import docx", "docx"),
    ("python-pptx", "import pptx", "pptx"),
    ("odfpy", "import odf.opendocument", "odt"),
    ("striprtf", "import striprtf.striprtf", "rtf"),
    ("selectolax", "import selectolax.lexbor", "html, epub"),
    ("lxml", "import lxml.etree", "docx, pptx, odt, epub (XML)"),
    ("pypdf", "import pypdf", "pdf (text layer)"),
    ("pypdfium2", "import pypdfium2", "pdf (rendering for OCR)"),
    ("PIL", "import PIL.Image", "image"),
    ("rapidocr", "import rapidocr", "OCR engine (package only)"),
    ("rapidocr.RapidOCR", "from rapidocr import RapidOCR", "OCR engine (class: onnxruntime, cv2, ...)"),
    ("onnxruntime", "import onnxruntime", "OCR engine, embedding"),
    ("semsearch.readers", "import semsearch.readers", "the registry (kind detection)"),
)

# A fresh process: import the registry, then time one pass over the files given (JSON on stdout).
COLD_CHILD = r"""
import json, sys, time
from pathlib import Path
from semsearch.readers import ReadOptions, read_document, detect_kind, SNIFF_BYTES
ocr = sys.argv[1]
paths = [Path(p) for p in sys.argv[2:]]
blobs = [p.read_bytes() for p in paths]
opts = ReadOptions(ocr=ocr)
detect_kind(paths[0], blobs[0][:SNIFF_BYTES], opts)  # loads the registry (reader modules only)
out = []
for p, data in zip(paths, blobs):
    t = time.perf_counter()
    try:
        doc = read_document(p, data, options=opts)
        err, chars = None, len(doc.text)
    except Exception as exc:
        err, chars = f"{type(exc).__name__}: {exc}", 0
    out.append({"path": str(p), "seconds": time.perf_counter() - t, "chars": chars, "error": err})
print(json.dumps(out))
"""

ENGINE_CHILD = r"""
import json, time
t = time.perf_counter()
from semsearch.readers import ocr
t1 = time.perf_counter()
ocr._load_engine()
print(json.dumps({"import": t1 - t, "load": time.perf_counter() - t1}))
"""


def files_of(data: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for fmt in TEXT_FORMATS:
        folder = require_data(data, "formats", fmt)
        groups[fmt] = sorted(p for p in folder.iterdir() if p.is_file())
    groups["pdf"] = sorted(require_data(data, "pdfs").glob("*.pdf"))
    return groups


def read_once(path: Path, data: bytes, options) -> tuple[float, object, str | None]:
    from semsearch.readers import read_document

    t = time.perf_counter()
    try:
        doc = read_document(path, data, options=options)
        return time.perf_counter() - t, doc, None
    except Exception as exc:  # noqa: BLE001 - a reader failure is a figure here, not a crash
        return time.perf_counter() - t, None, f"{type(exc).__name__}: {exc}"


def bench_formats(groups: dict[str, list[Path]], reps: int) -> tuple[list[dict], list[dict]]:
    from semsearch.readers import ReadOptions

    options = ReadOptions(ocr="auto")
    fmt_rows: list[dict] = []
    file_rows: list[dict] = []
    for fmt, paths in groups.items():
        blobs = [p.read_bytes() for p in paths]
        cold = run_child([PYTHON, "-c", COLD_CHILD, "auto", *map(str, paths)], env=bench_env(), cwd=REPO)
        cold_files = json.loads(cold.stdout)
        for p, data in zip(paths, blobs, strict=True):  # warm-up pass
            read_once(p, data, options)
        per_file: dict[Path, list[float]] = {p: [] for p in paths}
        docs: dict[Path, object] = {}
        errors: dict[Path, str | None] = {}
        passes: list[float] = []
        for _ in range(reps):
            total = 0.0
            for p, data in zip(paths, blobs, strict=True):
                seconds, doc, err = read_once(p, data, options)
                per_file[p].append(seconds)
                total += seconds
                docs[p], errors[p] = doc, err
            passes.append(total)
        chars = sum(len(d.text) for d in docs.values() if d is not None)
        nbytes = sum(len(b) for b in blobs)
        warm = median(passes)
        row = {
            "format": fmt,
            "files": len(paths),
            "bytes": nbytes,
            "chars": chars,
            "errors": sum(1 for e in errors.values() if e),
            "warm_seconds": warm,
            "warm_passes": passes,
            "cold_seconds": sum(c["seconds"] for c in cold_files),
            "cold_first_file_seconds": cold_files[0]["seconds"],
            "cold_process_seconds": cold.seconds,
            "mb_per_s": nbytes / 1e6 / warm if warm > 0 else float("nan"),
            "chars_per_s": chars / warm if warm > 0 else float("nan"),
        }
        fmt_rows.append(row)
        for p, data in zip(paths, blobs, strict=True):
            doc = docs[p]
            cold_file = next(c for c in cold_files if c["path"] == str(p))
            file_rows.append(
                {
                    "format": fmt,
                    "file": p.name,
                    "bytes": len(data),
                    "kind": getattr(doc, "kind", None),
                    "chars": len(doc.text) if doc is not None else 0,
                    "parts": len(doc.part_starts) if doc is not None else 0,
                    "part_kind": getattr(doc, "part_kind", None),
                    "headings": len(getattr(doc, "headings", None) or []) if doc is not None else 0,
                    "title": getattr(doc, "title", None),
                    "warm_seconds": median(per_file[p]),
                    "cold_seconds": cold_file["seconds"],
                    "error": errors[p],
                    "text_head": doc.text[:160] if doc is not None else None,
                }
            )
        print(f"  {fmt}: {len(paths)} files, {fmt_s(warm)} warm, {fmt_s(row['cold_seconds'])} cold", flush=True)
    return fmt_rows, file_rows


def bench_pdf_reference(paths: list[Path], reps: int) -> dict:
    """Reference for the PDF row: pypdfium2's text layer (already a dependency, for OCR rendering)
    on the same PDFs, one warm-up pass then the median of *reps* passes."""
    import pypdfium2 as pdfium

    blobs = [p.read_bytes() for p in paths]

    def one_pass() -> tuple[float, int]:
        t = time.perf_counter()
        chars = 0
        for data in blobs:
            pdf = pdfium.PdfDocument(data)
            for i in range(len(pdf)):
                page = pdf[i]
                textpage = page.get_textpage()
                chars += len(textpage.get_text_bounded())
                textpage.close()
                page.close()
            pdf.close()
        return time.perf_counter() - t, chars

    one_pass()
    runs = [one_pass() for _ in range(reps)]
    return {
        "library": "pypdfium2",
        "seconds": median([r[0] for r in runs]),
        "chars": runs[0][1],
        "bytes": sum(len(b) for b in blobs),
    }


def _importtime_total(code: str) -> tuple[float, dict[str, float]]:
    """Seconds of the top-level entries of ``python -X importtime -c CODE``."""
    run = run_child([PYTHON, "-X", "importtime", "-c", code], env=bench_env(), cwd=REPO)
    tops: dict[str, float] = {}
    for line in run.stderr.decode(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\S.*)$", line)  # one space: a top-level import
        if m:
            tops[m.group(3).strip()] = int(m.group(2)) / 1e6
    return sum(tops.values()), tops


def bench_imports(runs: int) -> list[dict]:
    base_runs = [run_child([PYTHON, "-c", "pass"], env=bench_env(), cwd=REPO).seconds for _ in range(runs)]
    _, base_tops = _importtime_total("pass")
    rows = []
    for label, module, used_by in LIBRARIES:
        walls = []
        for _ in range(runs):
            walls.append(run_child([PYTHON, "-c", module], env=bench_env(), cwd=REPO).seconds)
        _, tops = _importtime_total(module)
        own = sum(v for k, v in tops.items() if k not in base_tops)
        rows.append(
            {
                "library": label,
                "module": module,
                "used_by": used_by,
                "wall_minus_bare_seconds": median(walls) - median(base_runs),
                "importtime_seconds": own,
                "walls": walls,
            }
        )
        print(f"  {module}: {fmt_s(rows[-1]['wall_minus_bare_seconds'])}", flush=True)
    for row in rows:
        row["bare_python_seconds"] = median(base_runs)
    return rows


def _pixels_of(kind: str, path: Path, data: bytes):
    """The BGR pixels the readers hand the engine (same rendering/scaling as the readers)."""
    import numpy as np

    from semsearch.readers import ocr

    out = []
    if kind == "scanned-pdf":
        import pypdfium2 as pdfium

        from semsearch.readers.pdf import RENDER_SCALE

        pdf = pdfium.PdfDocument(data)
        for i in range(len(pdf)):
            page = pdf[i]
            w, h = page.get_size()
            scale = min(RENDER_SCALE, ocr.RENDER_MAX_SIDE / max(w, h, 1.0))
            px = page.render(scale=scale).to_numpy()
            out.append(px[:, :, :3] if px.ndim == 3 and px.shape[2] == 4 else px)
        pdf.close()
    else:
        import io

        from PIL import Image, ImageOps

        pic = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        side = max(pic.size)
        if side > ocr.RENDER_MAX_SIDE:
            s = ocr.RENDER_MAX_SIDE / side
            pic = pic.resize((max(1, int(pic.width * s)), max(1, int(pic.height * s))))
        out.append(np.asarray(pic)[:, :, ::-1].copy())
    return out


def bench_ocr(data_dir: Path, reps: int, work: Path) -> dict:
    from semsearch.readers import ReadOptions, ocr

    engine = run_child([PYTHON, "-c", ENGINE_CHILD], env=bench_env(), cwd=REPO)
    engine_figs = json.loads(engine.stdout)
    rows = []
    for kind, rel in OCR_FILES:
        path = require_data(data_dir, *rel.split("/"))
        data = path.read_bytes()
        cold = run_child([PYTHON, "-c", COLD_CHILD, "images", str(path)], env=bench_env(), cwd=REPO)
        cold_read = json.loads(cold.stdout)[0]
        options = ReadOptions(ocr="images")
        _, doc, err = read_once(path, data, options)  # warm-up (engine loaded in this process)
        pixels = _pixels_of(kind, path, data)
        warm_runs, raw_runs = [], []
        for _ in range(reps):  # interleaved, so a noisy neighbour hits both alike
            warm_runs.append(read_once(path, data, options)[0])
            t = time.perf_counter()
            for px in pixels:
                ocr.recognize(px)
            raw_runs.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            cache = ocr.SqliteOcrCache(Path(tmp) / "ocr-cache.sqlite")
            cached_opts = ReadOptions(ocr="images", ocr_cache=cache)
            fill = read_once(path, data, cached_opts)[0]
            cached_runs = [read_once(path, data, cached_opts)[0] for _ in range(reps)]
            hits, misses = cache.hits, cache.misses
            cache.close()
        pages = len(pixels)
        warm = median(warm_runs)
        rows.append(
            {
                "file": path.name,
                "kind": kind,
                "pages": pages,
                "pixels": [list(px.shape[:2]) for px in pixels],
                "chars": len(doc.text) if doc is not None else 0,
                "error": err,
                "cold_process_seconds": cold.seconds,
                "cold_read_seconds": cold_read["seconds"],
                "warm_read_seconds": warm,
                "warm_runs": warm_runs,
                "warm_pages_per_s": pages / warm if warm > 0 else float("nan"),
                "engine_only_seconds": median(raw_runs),
                "cache_fill_seconds": fill,
                "cached_read_seconds": median(cached_runs),
                "cache_hits": hits,
                "cache_misses": misses,
            }
        )
        print(
            f"  OCR {path.name}: cold {fmt_s(cold_read['seconds'])}, warm {fmt_s(warm)}, "
            f"cached {fmt_s(median(cached_runs))}",
            flush=True,
        )
    total_pages = sum(r["pages"] for r in rows)
    total_warm = sum(r["warm_read_seconds"] for r in rows)
    return {
        "engine_import_seconds": engine_figs["import"],
        "engine_load_seconds": engine_figs["load"],
        "files": rows,
        "warm_pages_per_s_overall": total_pages / total_warm if total_warm else float("nan"),
    }


def _fmt_import(seconds: float) -> str:
    return fmt_s(seconds) if seconds > 0.002 else f"~0 ({fmt_s(seconds)}, noise)"


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument("--reps", type=int, default=3, help="timed passes after the warm-up (median)")
    ap.add_argument("--import-runs", type=int, default=5)
    ap.add_argument("--no-ocr", action="store_true")
    ap.add_argument("--no-imports", action="store_true")
    args = ap.parse_args()
    note = start(args)
    groups = files_of(args.data)
    print("extraction (cold in a fresh process each, then warm here):", flush=True)
    fmt_rows, file_rows = bench_formats(groups, args.reps)

    print_table(
        f"extraction per format (warm: median of {args.reps} passes after a warm-up; cold: first pass in a "
        "fresh process, library imports included)",
        [
            [
                r["format"],
                r["files"],
                fmt_bytes(r["bytes"]),
                f"{r['chars']:,}",
                r["errors"],
                fmt_s(r["cold_seconds"]),
                fmt_s(r["warm_seconds"]),
                f"{r['mb_per_s']:.2f}",
                f"{r['chars_per_s']:,.0f}",
            ]
            for r in fmt_rows
        ],
        ["format", "files", "bytes", "chars", "err", "cold (fresh proc)", "warm (median)", "MB/s", "chars/s"],
    )
    print_table(
        "per file",
        [
            [
                f"{r['format']}/{r['file']}"[:60],
                fmt_bytes(r["bytes"]),
                f"{r['chars']:,}",
                f"{r['parts']} {r['part_kind'] or ''}".strip(),
                r["headings"],
                fmt_s(r["warm_seconds"]),
                fmt_s(r["cold_seconds"]),
                (r["error"] or repr(r["title"]))[:70],
            ]
            for r in file_rows
        ],
        ["file", "bytes", "chars", "parts", "heads", "warm", "cold", "title / error"],
    )
    pdf_row = next(r for r in fmt_rows if r["format"] == "pdf")
    pdf_ref = bench_pdf_reference(groups["pdf"], args.reps)
    print_table(
        f"the {pdf_row['files']} text PDFs: reader vs another extractor already installed",
        [
            [
                "semsearch reader (pypdf)",
                f"{pdf_row['chars']:,}",
                fmt_s(pdf_row["warm_seconds"]),
                f"{pdf_row['mb_per_s']:.2f}",
                "1.00x",
            ],
            [
                "reference: pypdfium2 get_text_bounded",
                f"{pdf_ref['chars']:,}",
                fmt_s(pdf_ref["seconds"]),
                f"{pdf_ref['bytes'] / 1e6 / pdf_ref['seconds']:.2f}",
                f"{pdf_ref['seconds'] / pdf_row['warm_seconds']:.2f}x",
            ],
        ],
        ["PDF text layer", "chars", "warm (median)", "MB/s", "ratio to the reader"],
    )

    imports: list[dict] = []
    if not args.no_imports:
        print("\nimport times (fresh interpreter each):", flush=True)
        imports = bench_imports(args.import_runs)
        print_table(
            f"import time (median of {args.import_runs}; bare `python -c pass` "
            f"{fmt_s(imports[0]['bare_python_seconds'])})",
            [
                [
                    r["library"],
                    r["module"],
                    r["used_by"],
                    _fmt_import(r["wall_minus_bare_seconds"]),
                    fmt_s(r["importtime_seconds"]),
                ]
                for r in imports
            ],
            ["library", "statement", "used by", "wall - bare python", "-X importtime"],
        )

    ocr_figs: dict = {}
    if not args.no_ocr:
        print("\nOCR:", flush=True)
        ocr_figs = bench_ocr(args.data, args.reps, args.work)
        print_table(
            f"OCR (import of semsearch.readers.ocr {fmt_s(ocr_figs['engine_import_seconds'])}; engine load: "
            "rapidocr, onnxruntime, OpenCV imports and the 3 models "
            f"{fmt_s(ocr_figs['engine_load_seconds'])} in a fresh process; warm overall "
            f"{ocr_figs['warm_pages_per_s_overall']:.2f} pages/s)",
            [
                [
                    r["file"],
                    r["pages"],
                    "; ".join(f"{w}x{h}" for h, w in r["pixels"]),
                    r["chars"],
                    fmt_s(r["cold_read_seconds"]),
                    fmt_s(r["warm_read_seconds"]),
                    f"{r['warm_pages_per_s']:.2f}",
                    fmt_s(r["engine_only_seconds"]),
                    f"{fmt_s(r['cached_read_seconds'])} ({r['cache_hits']} hits)",
                ]
                for r in ocr_figs["files"]
            ],
            [
                "file",
                "pages",
                "pixels",
                "chars",
                "cold (fresh proc)",
                "warm read",
                "pages/s warm",
                "engine only",
                "cached re-read",
            ],
        )

    write_json(
        args.json,
        {
            "machine": note,
            "load_average_end": list(os.getloadavg()),
            "reps": args.reps,
            "formats": fmt_rows,
            "pdf_reference": pdf_ref,
            "files": file_rows,
            "imports": imports,
            "ocr": ocr_figs,
            "stdev_note": {r["format"]: statistics.pstdev(r["warm_passes"]) for r in fmt_rows},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
