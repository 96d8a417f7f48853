"""The default ``--min-score`` of ``semsearch duplicates`` (issue 11), from planted copies.

Corpus: the FastAPI docs copied to ``--work``/dups, plus ``--copies`` (20) new files under
``dups/copies/``, each a copy of a page chosen at random (seeded, every page used at most once),
edited in one of four ways, in turn:

* ``exact``: the page as it is;
* ``words``: a few words of every prose paragraph changed (a synonym, a word dropped or added);
* ``structure``: a paragraph dropped, another moved, or both;
* ``section``: another page with one ``##`` section of the chosen page put into it; this plants two
  pairs, (chosen page, copy) for the section and (host page, copy) for the rest.

The control is the plain tree (``--work``/fastapi, the index ``similar_eval.py`` uses). Both are
indexed with the real CLI. For each threshold 0.80..0.99 (step 0.01) ``Index.duplicates(min_score=t)``
is called on both, and the table gives, for file pairs (``.files``): recall of the planted pairs,
precision among the pairs that involve a copy (strict: planted only; "explained": also a copy
paired with a page its original is paired with at that threshold in the control, i.e. real repeated
text), pairs reported in the control (natural near-duplicates of the real docs) and among the
originals of the copied tree; for passages, the number of groups in each corpus. A sample of the
control's pairs is printed at a few thresholds to judge whether they are real repeated text.

    $PY benchmarks/quality/duplicates_eval.py [--work /tmp/simdup] [--seed 11] [--name dups] [--json FILE]

The planted tree is made once (``--fresh`` plants again); a second seed goes in its own folder
(``--seed 12 --name dups-12``).
"""

from __future__ import annotations

import random
import re
import shutil
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
    repeat,
    require_data,
    run_child,
    semsearch_cmd,
    start,
    writable_copy,
    write_json,
)

KINDS = ("exact", "words", "structure", "section")
THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(20)]

# Realistic light edits: words a writer swaps when rewording documentation.
SYNONYMS = {
    "use": "utilize",
    "using": "employing",
    "create": "make",
    "get": "obtain",
    "simple": "easy",
    "easy": "simple",
    "example": "sample",
    "function": "routine",
    "functions": "routines",
    "parameter": "argument",
    "parameters": "arguments",
    "value": "result",
    "values": "results",
    "need": "require",
    "needs": "requires",
    "want": "wish",
    "show": "display",
    "shows": "displays",
    "important": "essential",
    "also": "additionally",
    "automatically": "by itself",
    "check": "verify",
    "help": "assist",
    "receive": "get",
    "return": "give back",
    "returns": "gives back",
    "data": "information",
    "declare": "define",
    "declared": "defined",
    "very": "really",
    "just": "simply",
    "big": "large",
    "small": "little",
    "start": "begin",
    "different": "distinct",
    "same": "identical",
    "way": "manner",
    "code": "source",
    "application": "app",
    "app": "application",
    "request": "call",
    "response": "reply",
    "will": "would",
    "can": "could",
    "then": "next",
    "now": "at this point",
    "all": "every",
    "many": "numerous",
    "like": "such as",
    "which": "that",
    "first": "initially",
    "case": "situation",
    "things": "items",
    "features": "capabilities",
    "feature": "capability",
    "standard": "common",
    "default": "standard",
    "error": "failure",
    "errors": "failures",
    "makes": "renders",
    "used": "employed",
    "user": "client",
}
FILLERS = ("also", "really", "just", "then", "actually", "now")


def blocks(text: str) -> list[str]:
    """Paragraphs (runs of lines between blank lines), a fenced code block kept whole."""
    out: list[str] = []
    cur: list[str] = []
    fence = None
    for line in text.split("\n"):
        stripped = line.strip()
        if fence:
            cur.append(line)
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            cur.append(line)
            continue
        if not stripped:
            if cur:
                out.append("\n".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


def is_prose(block: str) -> bool:
    first = block.lstrip()
    return (
        len(first) > 60
        and not first.startswith(("#", "```", "~~~", "{*", "|", "<", "///", "!!!", "*", "-", "1."))
        and sum(ch.isalpha() for ch in first) > 0.6 * len(first)
    )


def reword(block: str, rng: random.Random, changes: int) -> str:
    words = block.split(" ")
    spots = [i for i, w in enumerate(words) if w.lower().strip(".,;:") in SYNONYMS]
    rng.shuffle(spots)
    done = 0
    for i in spots[:changes]:
        w = words[i]
        core = w.strip(".,;:")
        new = SYNONYMS[core.lower()]
        new = new.capitalize() if core[:1].isupper() else new
        words[i] = w.replace(core, new, 1)
        done += 1
    while done < changes:  # not enough known words: drop or add a filler word
        i = rng.randrange(1, max(2, len(words)))
        if words[i - 1].lower() in FILLERS:
            del words[i - 1]
        else:
            words.insert(i, rng.choice(FILLERS))
        done += 1
    return " ".join(words)


def sections(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the ``## `` sections (up to the next ``## `` or the end)."""
    starts = [m.start() for m in re.finditer(r"^## ", text, re.M)]
    return [(s, starts[i + 1] if i + 1 < len(starts) else len(text)) for i, s in enumerate(starts)]


def plant(tree: Path, n: int, seed: int) -> list[dict]:
    """Write the copies under tree/copies; returns what was planted (pairs relative to tree)."""
    rng = random.Random(seed)
    pages = sorted(p for p in tree.rglob("*.md") if "copies" not in p.relative_to(tree).parts)
    fit = [p for p in pages if 2000 <= p.stat().st_size <= 30000 and p.name != "release-notes.md"]
    rng.shuffle(fit)
    pool = list(fit)
    (tree / "copies").mkdir(exist_ok=True)
    planted = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        src = pool.pop()
        text = src.read_text(encoding="utf-8")
        rel = str(src.relative_to(tree))
        pairs = [rel]
        note = ""
        lines = None  # section: the copy's lines that hold the copied section
        if kind == "exact":
            out = text
        elif kind == "words":
            parts = blocks(text)
            changed = 0
            for j, b in enumerate(parts):
                if is_prose(b):
                    parts[j] = reword(b, rng, rng.randint(2, 4))
                    changed += 1
            out = "\n\n".join(parts) + "\n"
            note = f"{changed} paragraphs reworded"
        elif kind == "structure":
            parts = blocks(text)
            prose = [j for j, b in enumerate(parts) if is_prose(b)]
            how = ("drop", "move", "drop+move")[(i // len(KINDS)) % 3]
            if "move" in how and len(prose) >= 3:
                j = rng.choice(prose[1:])
                moved = parts.pop(j)
                to = rng.choice([x for x in range(1, len(parts)) if abs(x - j) > 2] or [1])
                parts.insert(to, moved)
                prose = [j for j, b in enumerate(parts) if is_prose(b)]
            if "drop" in how and prose:
                parts.pop(rng.choice(prose))
            out = "\n\n".join(parts) + "\n"
            note = how
        else:  # section: one ## section of src put into another page (the host)
            spans = sections(text)
            while len(spans) < 2:  # a page with sections to take from
                src = pool.pop()
                text = src.read_text(encoding="utf-8")
                rel = str(src.relative_to(tree))
                pairs = [rel]
                spans = sections(text)
            s, e = rng.choice(spans[1:]) if len(spans) > 2 else spans[-1]
            piece = text[s:e].rstrip() + "\n\n"
            host = pool.pop()
            host_text = host.read_text(encoding="utf-8")
            host_spans = sections(host_text)
            at = host_spans[len(host_spans) // 2][0] if host_spans else len(host_text)
            out = host_text[:at] + piece + host_text[at:]
            first_line = host_text[:at].count("\n") + 1
            lines = [first_line, first_line + piece.rstrip().count("\n")]
            pairs.append(str(host.relative_to(tree)))
            note = f"section of {len(piece)} chars ({piece.splitlines()[0][:50]!r}) into {host.relative_to(tree)}"
        name = f"copies/page-{i + 1:02d}.md"
        (tree / name).write_text(out, encoding="utf-8")
        planted.append(
            {"copy": name, "kind": kind, "originals": pairs, "note": note, "chars": len(out), "section_lines": lines}
        )
    return planted


def index_tree(work: Path, folder: str, index_dir: Path) -> tuple[float, str]:
    cmd = [*semsearch_cmd(), "index", folder, "--index", str(index_dir)]
    run = run_child(cmd, cwd=work, env=bench_env())
    lines = run.stderr.decode(errors="replace").strip().splitlines()
    return run.seconds, (lines[-1] if lines else "")


def main() -> int:
    ap = arguments(__doc__, work=Path("/tmp/simdup"))
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--name", default="dups", help="folder of the copied tree under --work (its index: NAME-index)")
    ap.add_argument("--fresh", action="store_true", help="plant the copies again (a new dups tree and index)")
    args = ap.parse_args()

    src = require_data(args.data, "fastapi-docs")
    start()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    control_tree, dups_tree = work / "fastapi", work / args.name
    control_idx, dups_idx = work / ".semsearch", work / f"{args.name}-index"
    if not control_tree.is_dir():
        writable_copy(src, control_tree)
    if args.fresh and dups_tree.exists():
        shutil.rmtree(dups_tree)
        shutil.rmtree(dups_idx, ignore_errors=True)
    import json

    manifest = work / f"{args.name}-planted.json"
    if not dups_tree.is_dir():
        writable_copy(src, dups_tree)
        planted = plant(dups_tree, args.copies, args.seed)
        manifest.write_text(json.dumps(planted, indent=2) + "\n", encoding="utf-8")
    else:
        planted = json.loads(manifest.read_text(encoding="utf-8"))
    for p in planted:
        print(f"  {p['copy']}  {p['kind']:9s} of {', '.join(p['originals'])}  {p['note']}")
    for folder, idx in (("fastapi", control_idx), (args.name, dups_idx)):
        seconds, summary = index_tree(work, folder, idx)
        print(f"semsearch index {folder}: {fmt_s(seconds)}  ({summary})")

    from semsearch import Index
    from semsearch.store import IndexReader

    control, dups = Index.open(control_idx), Index.open(dups_idx)

    def rel(path: Path, tree: Path) -> str:
        return str(Path(path).resolve().relative_to(tree))

    truth: dict[frozenset[str], str] = {}
    copy_of: dict[str, list[str]] = {}
    for p in planted:
        copy_of[p["copy"]] = p["originals"]
        for j, orig in enumerate(p["originals"]):
            truth[frozenset((orig, p["copy"]))] = p["kind"] if j == 0 else "section-host"

    # Passage truth: each copy chunk that came from an original, and which original.
    with IndexReader(dups_idx) as reader:
        passage_truth: list[tuple[int, str, str]] = []  # (copy chunk id, original, kind)
        original_chunks: dict[str, set[int]] = {}
        for p in planted:
            for c in reader.file_chunks(dups_tree / p["copy"]) or []:
                if p["kind"] != "section":
                    passage_truth.append((c.id, p["originals"][0], p["kind"]))
                    continue
                lo, hi = p["section_lines"]
                inside = lo <= c.line_start and c.line_end <= hi
                overlaps = c.line_start <= hi and c.line_end >= lo
                if overlaps:
                    passage_truth.append((c.id, p["originals"][0], "section"))
                if not inside:
                    passage_truth.append((c.id, p["originals"][1], "section-host"))
            for orig in p["originals"]:
                original_chunks[orig] = {c.id for c in reader.file_chunks(dups_tree / orig) or []}

    def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}

    control_reader = IndexReader(control_idx)
    pair_text_cache: dict[frozenset[str], dict] = {}

    def pair_text(fp) -> dict:
        """The two files' most similar passages and how much of the shorter one's word 5-grams the
        other holds (containment >= 0.5: repeated text, not just the same topic)."""
        import numpy as np

        key = frozenset((str(fp.a), str(fp.b)))
        if key not in pair_text_cache:
            ca, cb = control_reader.file_chunks(fp.a), control_reader.file_chunks(fp.b)
            v = control_reader.vectors([c.id for c in ca + cb])
            sims = np.stack([v[c.id] for c in ca]) @ np.stack([v[c.id] for c in cb]).T
            i, j = np.unravel_index(int(sims.argmax()), sims.shape)
            sa, sb = shingles(ca[i].text), shingles(cb[j].text)
            contain = len(sa & sb) / max(1, min(len(sa), len(sb)))
            pair_text_cache[key] = {
                "a": f"{rel(fp.a, control_tree)}:{ca[i].line_start}",
                "b": f"{rel(fp.b, control_tree)}:{cb[j].line_start}",
                "cosine": round(float(sims[i, j]), 4),
                "containment": round(contain, 3),
                "repeated": contain >= 0.5,
                "text_a": " ".join(ca[i].text.split())[:200],
                "text_b": " ".join(cb[j].text.split())[:200],
            }
        return pair_text_cache[key]

    # Time one call of each at the default threshold (the first call also opens the index).
    timings = {}
    for name, ix in (("control", control), ("copies", dups)):
        t = time.perf_counter()
        found = ix.duplicates()
        first = time.perf_counter() - t
        again = repeat(ix.duplicates, 3)
        timings[name] = {"first_s": first, "median_s": again.median, "chunks": found.chunks_checked}

    kinds_all = (*KINDS, "section-host")
    rows = []
    samples = {}
    for t in THRESHOLDS:
        c = control.duplicates(min_score=t)
        d = dups.duplicates(min_score=t)
        control_pairs = {frozenset((rel(fp.a, control_tree), rel(fp.b, control_tree))): fp for fp in c.files}
        dup_pairs = {frozenset((rel(fp.a, dups_tree), rel(fp.b, dups_tree))): fp for fp in d.files}
        with_copy = {k: v for k, v in dup_pairs.items() if any(x.startswith("copies/") for x in k)}
        among_orig = {k for k in dup_pairs if k not in with_copy} | set(control_pairs)
        found = {k: v for k, v in with_copy.items() if k in truth}

        def explained(pair: frozenset[str], among_orig: set[frozenset[str]] = among_orig) -> bool:
            """Planted, or a copy paired with a page (or another copy) whose original is paired
            with that page: repeated text of the real docs carried into the copy."""
            if pair in truth:
                return True
            sides = [copy_of.get(x, [x]) for x in sorted(pair)]
            return any(frozenset((x, y)) in among_orig for x in sides[0] for y in sides[1] if x != y)

        n_explained = sum(explained(k) for k in with_copy)
        by_kind = {kind: [0, 0] for kind in kinds_all}
        for k, kind in truth.items():
            by_kind[kind][1] += 1
            by_kind[kind][0] += k in found
        # Passages: a copy chunk is found when its group holds a chunk of its original.
        group_of = {ch.id: gi for gi, g in enumerate(d.groups) for ch in g.chunks}
        group_ids = [{ch.id for ch in g.chunks} for g in d.groups]
        p_kind = {kind: [0, 0] for kind in kinds_all}
        for cid, orig, kind in passage_truth:
            p_kind[kind][1] += 1
            gi = group_of.get(cid)
            p_kind[kind][0] += gi is not None and bool(group_ids[gi] & original_chunks[orig])
        p_found = sum(a for a, _ in p_kind.values())
        p_total = sum(b for _, b in p_kind.values())
        copy_groups = sum(any(rel(ch.path, dups_tree).startswith("copies/") for ch in g.chunks) for g in d.groups)
        repeated = [pair_text(fp)["repeated"] for fp in c.files]
        rows.append(
            {
                "min_score": t,
                "recall": len(found) / len(truth),
                "found": len(found),
                "planted": len(truth),
                "pairs_with_copy": len(with_copy),
                "precision_strict": len(found) / len(with_copy) if with_copy else float("nan"),
                "precision_explained": n_explained / len(with_copy) if with_copy else float("nan"),
                "pairs_originals_in_dups": len(dup_pairs) - len(with_copy),
                "control_pairs": len(control_pairs),
                "control_pairs_repeated_text": sum(repeated),
                "control_groups": len(c.groups),
                "control_largest_group": max((len(g.chunks) for g in c.groups), default=0),
                "control_groups_same_file_twice": sum(
                    len({ch.path for ch in g.chunks}) < len(g.chunks) for g in c.groups
                ),
                "dups_groups": len(d.groups),
                "groups_with_copy": copy_groups,
                "passage_recall": p_found / p_total,
                "passages_found": p_found,
                "passages_planted": p_total,
                "passage_recall_by_kind": {k: f"{a}/{b}" for k, (a, b) in p_kind.items()},
                "median_share_found": statistics.median([v.share for v in found.values()]) if found else float("nan"),
                "by_kind": {k: f"{a}/{b}" for k, (a, b) in by_kind.items()},
                "missed": sorted(" + ".join(sorted(k)) for k in truth if k not in found),
                "unexplained": sorted(" + ".join(sorted(k)) for k in with_copy if not explained(k)),
            }
        )
        if t in (0.80, 0.85, 0.90, 0.93, 0.95, 0.97):
            samples[f"{t:.2f}"] = {
                "pairs": [{**pair_text(fp), "shared": fp.shared, "chunks": fp.chunks} for fp in c.files],
                "groups": [
                    {
                        "score": round(g.score, 4),
                        "min_score": round(g.min_score, 4),
                        "size": len(g.chunks),
                        "chunks": [f"{rel(ch.path, control_tree)}:{ch.line_start}" for ch in g.chunks[:8]],
                        "text": " ".join(g.chunks[0].text.split())[:160],
                    }
                    for g in c.groups[:8]
                ],
            }
    control_reader.close()

    head = (
        "min",
        "recall",
        "found",
        "P strict",
        "P expl.",
        "w/ copy",
        "orig pairs",
        "control",
        "ctl repeated",
        "share",
        "exact/words/struct/section/host",
    )
    table = [
        (
            f"{r['min_score']:.2f}",
            f"{r['recall']:.2f}",
            f"{r['found']}/{r['planted']}",
            f"{r['precision_strict']:.2f}",
            f"{r['precision_explained']:.2f}",
            str(r["pairs_with_copy"]),
            str(r["pairs_originals_in_dups"]),
            str(r["control_pairs"]),
            str(r["control_pairs_repeated_text"]),
            f"{r['median_share_found']:.2f}",
            " ".join(r["by_kind"][k] for k in kinds_all),
        )
        for r in rows
    ]
    print_table(f"duplicates, file pairs: planted copies ({len(planted)} files, {len(truth)} planted pairs) "
                "vs the plain tree", table, head)  # fmt: skip
    print(
        "(P strict: planted / pairs with a copy; P expl.: also a copy paired with a page its original is paired"
        " with; orig pairs: pairs among the originals in the copied tree; control: pairs in the plain tree, ctl"
        " repeated: of those, whose closest passages share >= 50% of word 5-grams; share: median share of the"
        " found planted pairs)"
    )
    head = (
        "min",
        "passage recall",
        "exact/words/struct/section/host",
        "groups (copies)",
        "with a copy",
        "control groups",
        "largest",
        "same file twice",
    )
    table = [
        (
            f"{r['min_score']:.2f}",
            f"{r['passage_recall']:.2f} ({r['passages_found']}/{r['passages_planted']})",
            " ".join(r["passage_recall_by_kind"][k] for k in kinds_all),
            str(r["dups_groups"]),
            str(r["groups_with_copy"]),
            str(r["control_groups"]),
            str(r["control_largest_group"]),
            str(r["control_groups_same_file_twice"]),
        )
        for r in rows
    ]
    print_table("duplicates, passages", table, head)
    print(
        "(passage recall: copy chunks whose group holds a chunk of their original; largest: chunks in the control's"
        " largest group; same file twice: control groups holding two or more chunks of one file)"
    )
    for r in rows:
        if r["missed"] and r["min_score"] in (0.85, 0.90, 0.93, 0.95, 0.97):
            print(f"  missed at {r['min_score']:.2f}: {'; '.join(r['missed'])}")
    for r in rows:
        if r["unexplained"] and r["min_score"] in (0.80, 0.85, 0.90, 0.93, 0.95):
            print(f"  unexplained pairs at {r['min_score']:.2f}: {'; '.join(r['unexplained'][:8])}")
    for t, smp in samples.items():
        print(f"\n  control at {t}: pairs (closest passages, cosine, word 5-gram containment):")
        for pair in smp["pairs"][:10]:
            print(
                f"    {pair['a']} ~ {pair['b']}  {pair['cosine']:.3f}  {pair['containment']:.2f}"
                f"{'' if pair['repeated'] else '  (not repeated text)'}"
            )
        for g in smp["groups"][:3]:
            print(f"    group x{g['size']} {g['score']:.3f}..{g['min_score']:.3f}: {', '.join(g['chunks'][:4])}")

    print(
        "\nduplicates() time (default min_score): "
        + "; ".join(
            f"{n}: {v['chunks']} chunks, first call {fmt_s(v['first_s'])}, then {fmt_s(v['median_s'])}"
            for n, v in timings.items()
        )
    )
    write_json(
        args.json,
        {
            "seed": args.seed,
            "planted": planted,
            "timings": timings,
            "rows": rows,
            "control_samples": samples,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
