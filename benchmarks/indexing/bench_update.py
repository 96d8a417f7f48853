"""Update benchmark: `semsearch index` after edits, a renamed folder and a copied folder.

Steps (all with the real CLI in fresh processes, one after the other, on a copy of the FastAPI
documentation tree under --work):

1. First build of the whole tree (includes making the model's ONNX export if this user has none).
2. No-op re-index: the same command, nothing changed.
3. Edit: one sentence inserted at the middle paragraph break of the N largest Markdown files, then
   re-index. Only chunks whose embedding input (chunk text + context line) changed are embedded;
   the rest take the vectors already stored.
4. Reference: those N edited files indexed into a fresh, empty index (`semsearch index FILE...`),
   which embeds every chunk of them: what the edit cost before vectors were reused.
5. Rename: tutorial/ -> tutorial-moved/, re-index (a rename embeds nothing).
6. Copy: advanced/ -> advanced-copy/, re-index (a copy embeds nothing).
7. Quality: a fresh full build of the final tree, and the top-5 hits of a few fixed queries from it
   vs from the updated index (path + line range), and the cosine between each chunk's vector in
   the two indexes. int8 vectors differ slightly with the batch they were embedded in, so both
   are reported, not asserted; a reused vector put on the wrong chunk would show as a low cosine.

Chunk counts come from the summary line `semsearch index` writes on stderr. Whether the model was
loaded is inferred from the chunks embedded (none: the model is never loaded); peak RSS is shown
beside it.

Usage:
    python benchmarks/indexing/bench_update.py                  # 92 edited files
    python benchmarks/indexing/bench_update.py --edit-files 20
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    arguments,
    bench_env,
    fmt_s,
    machine_note,
    print_table,
    ratio,
    require_data,
    run_child,
    semsearch_cmd,
    start,
    write_json,
)

SENTENCE = "This sentence was inserted by bench_update.py to measure how an edited file is re-indexed."
QUERIES = [
    "how do I upload a file",
    "dependency injection with yield",
    "configure CORS",
    "background tasks after a response",
    "OAuth2 password flow with JWT",
]
TOP_K = 5
MOVED = ("tutorial", "tutorial-moved")
COPIED = ("advanced", "advanced-copy")

# semsearch: indexed 92 files, 68 unchanged, 0 removed, skipped 243 (...), chunks: +4639 (4460 reused,
# not embedded again) -4628 = 4941, 7.5 s   (the "reused" part only when some were)
SUMMARY = re.compile(
    r"semsearch: indexed (?P<indexed>\d+) files?, (?P<unchanged>\d+) unchanged, (?P<removed>\d+) removed, .*"
    r"chunks: \+(?P<added>\d+)(?: \((?P<reused>\d+) reused, not embedded again\))? "
    r"-(?P<chunks_removed>\d+) = (?P<total>\d+), (?P<build_seconds>[\d.]+) s"
)


@dataclass
class IndexRun:
    """One `semsearch index` process: wall time, peak RSS and its summary line's figures."""

    seconds: float
    max_rss_kb: int
    indexed: int
    unchanged: int
    removed: int
    added: int
    reused: int
    chunks_removed: int
    total: int
    build_seconds: float

    @property
    def embedded(self) -> int:
        return self.added - self.reused

    def describe(self) -> str:
        return (f"{fmt_s(self.seconds)}; files +{self.indexed} ={self.unchanged} -{self.removed}; chunks "
                f"+{self.added} ({self.reused} reused, {self.embedded} embedded) -{self.chunks_removed} = "
                f"{self.total}; peak RSS {self.max_rss_kb / 1024:.0f} MB")


def run_index(label: str, paths: list[Path], index_dir: Path, env: dict[str, str]) -> IndexRun:
    """Run `semsearch index PATHS --index INDEX_DIR` and parse its summary line."""
    print(f"{label} ...", flush=True)
    run = run_child([*semsearch_cmd(), "index", *map(str, paths), "--index", str(index_dir)], env=env)
    stderr = run.stderr.decode(errors="replace")
    match = SUMMARY.search(stderr)
    if match is None:
        raise RuntimeError(f"no summary line from `semsearch index`:\n{stderr[-2000:]}")
    figures = {k: float(v) if k == "build_seconds" else int(v or 0) for k, v in match.groupdict().items()}
    result = IndexRun(seconds=run.seconds, max_rss_kb=run.max_rss_kb, **figures)
    print(f"  {result.describe()}", flush=True)
    return result


def largest_markdown(tree: Path, n: int) -> list[Path]:
    """The n largest .md files (ties by path, so the choice is stable)."""
    return sorted(tree.rglob("*.md"), key=lambda p: (-p.stat().st_size, str(p)))[:n]


def insert_sentence(path: Path) -> None:
    """Insert SENTENCE as its own paragraph at the middle paragraph break (the end if there is none)."""
    text = path.read_text(encoding="utf-8")
    breaks = [m.start() for m in re.finditer(r"\n\n", text)]
    at = breaks[len(breaks) // 2] if breaks else len(text)
    path.write_text(f"{text[:at]}\n\n{SENTENCE}{text[at:]}", encoding="utf-8")


def top_hits(index_dir: Path, query: str, mode: str, env: dict[str, str]) -> set[tuple[str, int, int]]:
    """The top-k hits of one query as (path, first line, last line)."""
    cmd = [*semsearch_cmd(), "query", query, "--json", "-k", str(TOP_K), "--mode", mode, "--index", str(index_dir)]
    hits = [json.loads(line) for line in run_child(cmd, env=env).stdout.decode().splitlines() if line]
    return {(h["path"], h["line_start"], h["line_end"]) for h in hits}


def overlaps(updated: Path, fresh: Path, mode: str, env: dict[str, str]) -> list[float]:
    """Per query: the share of the top-k hits the updated and the fresh index have in common."""
    shares = []
    for query in QUERIES:
        a, b = top_hits(updated, query, mode, env), top_hits(fresh, query, mode, env)
        shares.append(len(a & b) / max(len(a), len(b), 1))
    return shares


def stored_vectors(index_dir: Path) -> dict[tuple[str, int, str, str], bytes]:
    """Every live chunk's stored vector (its bytes as stored), by (path, ordinal, text, context line)."""
    database = json.loads((index_dir / "manifest.json").read_text())["database"]
    conn = sqlite3.connect(f"file:{index_dir / database}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT f.path, c.ordinal, c.text, c.context, c.vector FROM chunks c "
                            "JOIN files f ON f.id = c.file_id WHERE c.gen_removed IS NULL").fetchall()
    finally:
        conn.close()
    return {(bytes(path).decode(errors="surrogateescape") if isinstance(path, bytes) else path, ordinal, text, context):
            vector for path, ordinal, text, context, vector in rows}


def vector_agreement(updated: Path, fresh: Path) -> dict[str, float]:
    """Cosine between each chunk's vector in the updated and in the fresh index (same chunk, same input)."""
    import numpy as np

    from semsearch.store import read_manifest
    from semsearch.store.database import decode_vectors

    a, b = stored_vectors(updated), stored_vectors(fresh)
    common = sorted(a.keys() & b.keys())
    dim = read_manifest(updated).model.dim
    cos = np.array([decode_vectors([a[k]], dim)[0] @ decode_vectors([b[k]], dim)[0] for k in common])
    return {"chunks_in_both": len(common), "only_updated": len(a) - len(common), "only_fresh": len(b) - len(common),
            "cosine_min": float(cos.min()), "cosine_median": float(np.median(cos)),
            "identical_share": float(np.mean([a[k] == b[k] for k in common]))}


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--edit-files", type=int, default=92, help="edit the N largest Markdown files (default 92)")
    args = ap.parse_args(argv)

    source = require_data(args.data, "fastapi-docs")
    machine = start()
    env = bench_env()
    tree, index, reference, fresh = (args.work / f"update-{name}" for name in ("tree", "idx", "ref-idx", "fresh-idx"))
    for path in (tree, index, reference, fresh):
        shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(source, tree)
    print(f"tree: {source} copied to {tree}")

    first = run_index("first build", [tree], index, env)
    noop = run_index("no-op re-index", [tree], index, env)

    edited = largest_markdown(tree, args.edit_files)
    for path in edited:
        insert_sentence(path)
    edit = run_index(f"edit: a sentence inserted mid-file in the {len(edited)} largest .md files", [tree], index, env)
    ref = run_index("reference: the edited files into a fresh index (every chunk embedded)", edited, reference, env)

    (tree / MOVED[0]).rename(tree / MOVED[1])
    rename = run_index(f"rename: {MOVED[0]}/ -> {MOVED[1]}/", [tree], index, env)
    shutil.copytree(tree / COPIED[0], tree / COPIED[1])
    copy = run_index(f"copy: {COPIED[0]}/ -> {COPIED[1]}/", [tree], index, env)

    final = run_index("fresh full build of the final tree", [tree], fresh, env)
    print("quality: top-5 of the updated index vs the fresh build ...", flush=True)
    quality = {mode: overlaps(index, fresh, mode, env) for mode in ("semantic", "hybrid")}
    vectors = vector_agreement(index, fresh)

    def moved_row(name: str, run: IndexRun) -> tuple[str, str, str, str]:
        return (name, fmt_s(run.seconds), f"{run.reused} reused, {run.embedded} embedded; "
                f"model loaded: {'yes' if run.embedded else 'no'} (peak RSS {run.max_rss_kb / 1024:.0f} MB)", "")

    rows = [
        ("first build: files / chunks", f"{first.indexed} / {first.total}", "", ""),
        ("first build, wall", fmt_s(first.seconds), f"peak RSS {first.max_rss_kb / 1024:.0f} MB", ""),
        ("no-op re-index, wall", fmt_s(noop.seconds), f"{noop.seconds / first.seconds:.1%} of first build; "
         f"{noop.added} chunks added", ""),
        (f"edit {len(edited)} files, wall", fmt_s(edit.seconds),
         f"{edit.seconds / first.seconds:.1%} of first build", ""),
        ("  chunks added / reused / embedded", f"{edit.added} / {edit.reused} / {edit.embedded}",
         f"{edit.embedded / max(edit.added, 1):.1%} of the edited files' chunks embedded", ""),
        ("reference: edited files, fresh index", fmt_s(ref.seconds), f"{ref.embedded} chunks embedded", ""),
        ("ratio edit / reference", ratio(edit.seconds, ref.seconds), "", ""),
        moved_row(f"rename {MOVED[0]}/ ({rename.indexed} files)", rename),
        moved_row(f"copy {COPIED[0]}/ ({copy.indexed} files)", copy),
        ("fresh build of the final tree, wall", fmt_s(final.seconds), f"{final.total} chunks (updated index: "
         f"{copy.total})", ""),
    ]
    rows += [(f"top-{TOP_K} overlap updated vs fresh, {mode}", f"{sum(s) / len(s):.2f}",
              f"per query {' '.join(f'{x:.1f}' for x in s)}", "") for mode, s in quality.items()]
    rows.append(("vectors updated vs fresh: cosine min / median", f"{vectors['cosine_min']:.4f} / "
                 f"{vectors['cosine_median']:.4f}", f"{vectors['chunks_in_both']} chunks in both "
                 f"({vectors['only_updated']} / {vectors['only_fresh']} in one only), "
                 f"{vectors['identical_share']:.1%} bit-identical", ""))
    print_table(f"updating an index of the FastAPI docs ({first.indexed} files)", rows)
    print(f"machine at the end: {machine_note()}")

    figures = {"machine": machine, "machine_at_end": machine_note(), "edited_files": len(edited),
               "first_build": asdict(first), "noop": asdict(noop), "edit": asdict(edit), "reference": asdict(ref),
               "rename": asdict(rename), "copy": asdict(copy), "fresh_final_build": asdict(final),
               "edit_over_reference": edit.seconds / ref.seconds, "queries": QUERIES, "top_k_overlap": quality,
               "vectors_updated_vs_fresh": vectors}
    print(json.dumps(figures))
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
