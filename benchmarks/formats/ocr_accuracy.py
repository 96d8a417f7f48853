"""OCR accuracy against hand transcriptions, and retrieval of scanned text through the real CLI.

1. Accuracy. Each ``benchmarks/data/ocr-truth/NAME.txt`` is a transcription made by eye of a
   scanned page or image in ``../shared/data/formats`` (``NAME.pdf`` / ``NAME.png``; its ``#``
   header lines say which part it covers). The file is read as the indexer reads it
   (``read_document(..., options=ReadOptions(ocr="images"))``), and both texts are normalized:
   Unicode NFC, runs of 4+ dashes (drawn rules) dropped, whitespace collapsed to one space.

   * character accuracy = 1 - Levenshtein(truth, ocr) / len(truth) (also case-folded);
   * word accuracy = truth words found in order (longest common subsequence of the word lists
     / truth words) and bag-of-words recall (truth words found, with multiplicity);
   * a truth file with a ``# match: window`` header line covers part of its page only: it is
     compared against the best-matching stretch of the OCR text (edit distance with free
     start and end in the OCR text).

   Beside it, the raw engine on the same pixels with RapidOCR's text-line orientation classifier
   on (as semsearch runs it) and off (``--no-variants`` skips this).

2. Retrieval. The scanned PDF, the two images and the 14 text PDFs of ``../shared/data/pdfs``
   are copied into a scratch folder and indexed with ``semsearch index DIR --ocr images --index
   IDX``; plain-language questions answerable only from the scan or the images are asked in one
   ``semsearch query - --json -k 30`` batch, and the rank of the right file among the distinct
   files of the hits is reported (top 3 expected). This runs twice (``--names``): with the files'
   own names, and with the scans renamed to names that say nothing (``image-1.png``...), since a
   file titled by its name has the name in front of every chunk it embeds.

Usage:
    python benchmarks/formats/ocr_accuracy.py [--json-out FILE] [--no-retrieval]
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import unicodedata
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    BUNDLED_DATA,
    REPO,
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

TRUTH_DIR = BUNDLED_DATA / "ocr-truth"
SOURCES = {  # truth name -> file under ../shared/data
    "typewriter-linzensoep-recipe": "formats/images/typewriter-linzensoep-recipe.png",
    "bank-statement-screenshot": "formats/images/bank-statement-screenshot.png",
    "epson-printout-wikipedia-ocr-article": "formats/scanned-pdf/epson-printout-wikipedia-ocr-article.pdf",
}
# (question, file that answers it): only the scan or the images hold the answer.
QUESTIONS = [
    ("what is optical character recognition used for", "epson-printout-wikipedia-ocr-article.pdf"),
    (
        "who built a machine in 1914 that turned printed characters into telegraph code",
        "epson-printout-wikipedia-ocr-article.pdf",
    ),
    ("a handheld scanner that produced tones for blind readers", "epson-printout-wikipedia-ocr-article.pdf"),
    ("recipe for lentil soup", "typewriter-linzensoep-recipe.png"),
    ("how long do you soak the lentils before cooking", "typewriter-linzensoep-recipe.png"),
    ("hoe lang moeten de linzen weken", "typewriter-linzensoep-recipe.png"),  # the recipe is in Dutch
    ("account balance on 1 August 2018", "bank-statement-screenshot.png"),
    ("cleared cheques on my line of credit statement", "bank-statement-screenshot.png"),
    ("Interac e-Transfer deposit received in August 2018", "bank-statement-screenshot.png"),
]
TOP_K = 30


# ---------------------------------------------------------------------------------------------- text


def load_truth(path: Path) -> tuple[str, dict[str, str]]:
    """The transcription without its leading ``#`` header lines, and the header's ``key: value``s."""
    lines = path.read_text(encoding="utf-8").splitlines()
    meta: dict[str, str] = {}
    while lines and lines[0].startswith("#"):
        m = re.match(r"#\s*(match):\s*(\S+)", lines[0])
        if m:
            meta[m.group(1)] = m.group(2)
        lines.pop(0)
    return "\n".join(lines), meta


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"-{4,}", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def edit_distance(truth: str, hyp: str, *, window: bool = False) -> int:
    """Levenshtein distance (unit costs). With *window*, the distance of *truth* to the
    best-matching substring of *hyp* (free start and end in *hyp*). Row by row with numpy: the
    insertion chain along a row is a running minimum of (cost - column) + column."""
    import numpy as np

    a = np.frombuffer(hyp.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(a) + 1)
    prev = np.zeros(len(a) + 1, dtype=np.int64) if window else cols.astype(np.int64)
    for i, ch in enumerate(truth, start=1):
        sub = prev[:-1] + (a != ord(ch))
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, sub)
        cur = np.minimum.accumulate(cur - cols) + cols
        prev = cur
    return int(prev.min() if window else prev[-1])


def lcs_len(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def best_window(truth: str, hyp: str) -> str:
    """The stretch of *hyp* (whole words) closest to *truth*: by word LCS, then trimmed."""
    words = hyp.split(" ")
    n = len(truth.split(" "))
    best, best_score = hyp, -1
    for first in range(0, max(1, len(words) - n + 1)):
        chunk = words[first : first + n + n // 10]
        score = lcs_len(truth.split(" "), chunk)
        if score > best_score:
            best, best_score = " ".join(chunk), score
    return best


def accuracy(truth_raw: str, ocr_raw: str, window: bool) -> dict:
    truth, ocr = normalize(truth_raw), normalize(ocr_raw)
    dist = edit_distance(truth, ocr, window=window)
    dist_ci = edit_distance(truth.casefold(), ocr.casefold(), window=window)
    hyp_words_all = ocr.split(" ") if ocr else []
    hyp_for_words = best_window(truth, ocr).split(" ") if window else hyp_words_all
    truth_words = truth.split(" ")
    in_order = lcs_len(truth_words, hyp_for_words)
    bag_t, bag_h = Counter(truth_words), Counter(hyp_for_words)
    found = sum(min(c, bag_h[w]) for w, c in bag_t.items())
    missed = [w for w, c in bag_t.items() for _ in range(c - min(c, bag_h[w]))]
    extra = [w for w, c in bag_h.items() for _ in range(c - min(c, bag_t[w]))]
    return {
        "truth_chars": len(truth),
        "ocr_chars": len(ocr),
        "edit_distance": dist,
        "char_accuracy": 1 - dist / len(truth),
        "char_accuracy_casefold": 1 - dist_ci / len(truth),
        "truth_words": len(truth_words),
        "ocr_words": len(hyp_words_all),
        "words_in_order": in_order,
        "word_accuracy_in_order": in_order / len(truth_words),
        "word_recall_bag": found / len(truth_words),
        "missed_words": missed,
        "extra_words": extra,
        "window": window,
    }


def run_accuracy(data: Path) -> list[dict]:
    from semsearch.readers import ReadOptions, read_document

    rows = []
    for truth_path in sorted(TRUTH_DIR.glob("*.txt")):
        name = truth_path.stem
        if name not in SOURCES:
            print(f"  (no source file known for {truth_path.name}; skipped)")
            continue
        source = require_data(data, *SOURCES[name].split("/"))
        truth, meta = load_truth(truth_path)
        doc = read_document(source, source.read_bytes(), options=ReadOptions(ocr="images"))
        row = {
            "name": name,
            "source": str(source),
            "truth_file": str(truth_path.relative_to(REPO)),
            **accuracy(truth, doc.text, meta.get("match") == "window"),
            "ocr_text": doc.text,
        }
        rows.append(row)
    return rows


def run_variants(data: Path) -> list[dict]:
    """The raw engine on the pixels the readers hand it, with RapidOCR's text-line orientation
    classifier on (as ``ocr.recognize`` runs it) and off: accuracy and seconds of each."""
    import time

    from benchmarks.formats.bench_readers import _pixels_of
    from semsearch.readers import ocr

    engine = ocr._load_engine()
    rows = []
    for truth_path in sorted(TRUTH_DIR.glob("*.txt")):
        name = truth_path.stem
        if name not in SOURCES:
            continue
        source = require_data(data, *SOURCES[name].split("/"))
        truth, meta = load_truth(truth_path)
        kind = "scanned-pdf" if source.suffix.lower() == ".pdf" else "image"
        pixels = _pixels_of(kind, source, source.read_bytes())
        for use_cls in (True, False):
            t = time.perf_counter()
            texts = []
            for px in pixels:
                result = engine(px, use_cls=use_cls)
                texts.append(ocr._reading_order(list(result.txts or ()), result.boxes))
            seconds = time.perf_counter() - t
            acc = accuracy(truth, "\n".join(texts), meta.get("match") == "window")
            rows.append(
                {
                    "name": name,
                    "use_cls": use_cls,
                    "seconds": seconds,
                    **{k: acc[k] for k in ("edit_distance", "char_accuracy", "word_recall_bag")},
                }
            )
    return rows


# ----------------------------------------------------------------------------------------- retrieval


def run_retrieval(data: Path, work: Path, cache: Path | None, neutral: bool) -> dict:
    """Index the scans beside the 14 PDFs and ask QUESTIONS. With *neutral*, the scan and the
    images are copied under names that say nothing (``scan-1.pdf``, ``image-1.png``, ...): a file
    titled by its name carries the name into every chunk's embedded input, and "recipe" or
    "bank-statement" in a name would answer some questions without the OCR text."""
    tag = "neutral" if neutral else "original"
    folder = work / f"ocr-retrieval-{tag}" / "files"
    index = work / f"ocr-retrieval-{tag}" / "idx"
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.mkdir(parents=True)
    scans = [require_data(data, *rel.split("/")) for rel in SOURCES.values()]
    renamed: dict[str, str] = {}
    counters: dict[str, int] = {}
    for src in scans:
        stem = "scan" if src.suffix.lower() == ".pdf" else "image"
        counters[stem] = counters.get(stem, 0) + 1
        renamed[src.name] = f"{stem}-{counters[stem]}{src.suffix}" if neutral else src.name
    sources = scans + sorted(require_data(data, "pdfs").glob("*.pdf"))
    for src in sources:
        # copies: links out of the folder are not followed
        shutil.copy2(src, folder / renamed.get(src.name, src.name))
    env = bench_env({"SEMSEARCH_CACHE": str(cache)} if cache else None)
    built = run_child(
        [*semsearch_cmd(), "index", str(folder), "--ocr", "images", "--index", str(index)], env=env, cwd=folder.parent
    )
    summary = next(
        (ln for ln in built.stderr.decode(errors="replace").splitlines() if ln.startswith("semsearch: indexed")), ""
    )
    stdin = folder.parent / "questions.txt"
    stdin.write_text("".join(q + "\n" for q, _ in QUESTIONS), encoding="utf-8")
    asked = run_child(
        [*semsearch_cmd(), "query", "-", "--json", "-k", str(TOP_K), "--index", str(index)],
        stdin_path=stdin,
        env=env,
        cwd=folder.parent,
    )
    hits: dict[str, list[dict]] = {}
    for line in asked.stdout.decode().splitlines():
        if line.strip():
            hit = json.loads(line)
            hits.setdefault(hit["query"], []).append(hit)
    rows = []
    for question, original in QUESTIONS:
        want = renamed.get(original, original)
        files: list[str] = []
        first_hit = None
        for hit in hits.get(question, []):
            name = Path(hit["path"]).name
            if name not in files:
                files.append(name)
            if name == want and first_hit is None:
                first_hit = hit
        rank = files.index(want) + 1 if want in files else None
        rows.append(
            {
                "question": question,
                "want": original,
                "indexed_as": want,
                "file_rank": rank,
                "chunk_rank": hits[question].index(first_hit) + 1 if first_hit else None,
                "top_files": files[:3],
                "snippet": (first_hit or {}).get("text", "")[:200],
                "location": (first_hit or {}).get("location"),
            }
        )
    return {
        "names": tag,
        "renamed": renamed,
        "index_seconds": built.seconds,
        "summary": summary,
        "files_indexed": len(sources),
        "questions": rows,
        "top3": sum(1 for r in rows if r["file_rank"] and r["file_rank"] <= 3),
        "query_seconds": asked.seconds,
    }


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument("--cache", type=Path, help="SEMSEARCH_CACHE for the CLI runs (ONNX export); default: the user's")
    ap.add_argument("--no-retrieval", action="store_true")
    ap.add_argument(
        "--names",
        choices=("original", "neutral", "both"),
        default="both",
        help="index the scans under their own names, under names that say nothing, or both",
    )
    ap.add_argument("--no-variants", action="store_true", help="skip the orientation-classifier on/off comparison")
    ap.add_argument("--show-text", action="store_true", help="print each OCR text")
    args = ap.parse_args()
    note = start()

    acc = run_accuracy(args.data)
    head = [
        "transcription",
        "truth chars",
        "edits",
        "char acc",
        "char acc (case-folded)",
        "words in order",
        "word recall (bag)",
    ]
    rows = [
        [
            r["name"] + (" (window)" if r["window"] else ""),
            r["truth_chars"],
            r["edit_distance"],
            f"{r['char_accuracy']:.2%}",
            f"{r['char_accuracy_casefold']:.2%}",
            f"{r['word_accuracy_in_order']:.2%} ({r['words_in_order']}/{r['truth_words']})",
            f"{r['word_recall_bag']:.2%}",
        ]
        for r in acc
    ]
    print_table("OCR accuracy against hand transcriptions (whitespace collapsed)", rows, head)
    for r in acc:
        print(f"\n{r['name']}: missed words {r['missed_words'][:25]}")
        print(f"  extra OCR words {r['extra_words'][:25]}")
        if args.show_text:
            print("  OCR text:\n    " + r["ocr_text"].replace("\n", "\n    "))

    variants: list[dict] = []
    if not args.no_variants:
        variants = run_variants(args.data)
        print_table(
            "raw engine, text-line orientation classifier on (as semsearch runs it) vs off",
            [
                [
                    r["name"],
                    "on" if r["use_cls"] else "off",
                    r["edit_distance"],
                    f"{r['char_accuracy']:.2%}",
                    f"{r['word_recall_bag']:.2%}",
                    fmt_s(r["seconds"]),
                ]
                for r in variants
            ],
            ["transcription", "classifier", "edits", "char acc", "word recall (bag)", "seconds"],
        )

    retrieval: list[dict] = []
    if not args.no_retrieval:
        for neutral in {"original": (False,), "neutral": (True,), "both": (False, True)}[args.names]:
            run = run_retrieval(args.data, args.work, args.cache, neutral)
            retrieval.append(run)
            print(f"\n{run['summary']}  (wall {fmt_s(run['index_seconds'])})")
            print_table(
                f"retrieval, scans under {run['names']} names: rank of the right file among distinct files of "
                f"the top {TOP_K} chunks ({run['top3']}/{len(QUESTIONS)} in the top 3)",
                [
                    [
                        r["question"],
                        r["indexed_as"],
                        r["file_rank"] or f">{TOP_K} chunks",
                        r["chunk_rank"] or "-",
                        ", ".join(f[:28] for f in r["top_files"]),
                    ]
                    for r in run["questions"]
                ],
                ["question", "right file", "file rank", "chunk rank", "top files"],
            )
    write_json(args.json, {"machine": note, "accuracy": acc, "engine_variants": variants, "retrieval": retrieval})
    return 0


if __name__ == "__main__":
    sys.exit(main())
