"""Hybrid fusions compared offline: candidates stored once, each fusion scored in seconds.

Usage:
    # 0. (a BEIR-style corpus not indexed yet, e.g. benchmarks/data/prose-common-words) one file
    #    per document (title, blank line, text; the text alone without a title), indexed
    python benchmarks/quality/fusion_eval.py index --corpus DIR/corpus.jsonl --work /tmp/prose-work
    # 1. store each query's candidates from a built index (semantic top N with cosines, BM25
    #    top N with scores, which query words each candidate matches and their document counts)
    python benchmarks/quality/fusion_eval.py dump --index DIR --queries Q.jsonl --qrels QRELS.tsv \
        --out /tmp/cand-NAME.json.gz [--candidates 1600]
    # 2. score every fusion on every stored set, paired against the previous default (convex)
    python benchmarks/quality/fusion_eval.py compare NAME=/tmp/cand-NAME.json.gz [...] [--json OUT.json]
                                     [--samples 10000] [--only VARIANT,...]
    # (FastAPI docs: `index --corpus ../shared/data/fastapi-docs`, `dump ... --root WORK/files`:
    #  document ids are then paths below that folder)

``dump`` asks the index exactly what ``semsearch eval`` (``run_evaluation``: distinct files, depth
100) makes a hybrid search ask: each side's top ``--candidates`` chunks (1600 = 100 files x 8
chunks x 2, the candidates a depth-100 files-only hybrid search fetches), the exact cosine of
every BM25 candidate the vector side did not return, and ``semsearch.search.bm25_ceiling``.
``compare`` ranks those candidates with each fusion in ``VARIANTS`` ("library ..." ones call
``semsearch.search._rank`` itself), keeps each file's best chunk, and reports nDCG@10,
Recall@100, how many queries have a relevant document in the top 3 ("top-3"), and of the queries
whose semantic top-1 document is relevant how many the fusion keeps in its top 3, each with a
paired two-sided randomization test (sign flips of the per-query differences) against
``default`` (convex, alpha 0.5: the default before issue 23). The stored ``default`` and
``library ceiling`` rankings reproduce ``benchmarks/quality/scifact_eval.py --modes hybrid`` with
``--fusion convex`` and the default (0.7400 and 0.7394 on SciFact train).

Exit codes: 0 ok, 2 input missing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import write_json

K1 = 1.2  # FTS5's bm25() constants
T3 = 3 * (K1 + 1) / (3 + K1)  # semsearch's ceiling: BM25's part for a word three times
N_CAND = 1600
DEPTH = 100


# --------------------------------------------------------------------------- index, dump


def index(corpus: Path, work: Path) -> int:
    """One file per corpus document under WORK/files (or the folder *corpus*'s files ending in
    .md, copied as they are), indexed into WORK/index with the bundled model."""
    import shutil

    from semsearch import Index

    files = work / "files"
    files.mkdir(parents=True, exist_ok=True)
    if corpus.is_dir():
        for source in corpus.rglob("*.md"):
            target = files / source.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        corpus = Path(os.devnull)
    with corpus.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                doc = json.loads(line)
                title = doc.get("title", "").strip()
                body = doc["text"].strip()
                (files / f"{doc['_id']}.txt").write_text(f"{title}\n\n{body}\n" if title else f"{body}\n")
    started = time.perf_counter()
    with Index.create(work / "index", exist_ok=True) as idx:
        summary = idx.update([files])
    print(f"# {work / 'index'}: {summary.chunks_total} chunks, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


def dump(index_dir: Path, queries_path: Path, qrels_path: Path, out: Path, n_cand: int, root: Path | None) -> int:
    from semsearch.evaluate import doc_id_from_path, load_qrels, load_queries
    from semsearch.models import query_embedder
    from semsearch.search import Searcher, bm25_ceiling, fts_query
    from semsearch.store import IndexReader

    queries = load_queries(queries_path)
    qrels = load_qrels(qrels_path)
    kinds = {}  # an optional "kind" field of each query (a subset to report apart)
    for line in queries_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            if "kind" in raw:
                kinds[str(raw["_id"])] = raw["kind"]
    judged = {q for q, r in qrels.items() if any(v > 0 for v in r.values())}
    todo = [q for q in queries if q.id in judged]
    records: list[dict[str, Any]] = []
    doc_of: dict[int, str] = {}
    started = time.perf_counter()
    with IndexReader(index_dir) as reader:
        searcher = Searcher(reader, lambda: query_embedder(reader.manifest.model))
        total = reader.count
        for number, query in enumerate(todo, 1):
            text = query.text.strip()
            qvec = searcher.embed(text)
            sem = reader.vector_search(qvec, n_cand)
            match = fts_query(text)
            bm = reader.lexical_search(match, n_cand) if match else []
            have = {cid for cid, _ in sem}
            extra = {cid: float(vec @ qvec) for cid, vec in reader.vectors([c for c, _ in bm if c not in have]).items()}
            cands = have | {c for c, _ in bm}
            terms = []
            masks: dict[int, int] = {}
            for bit, term in enumerate(t.strip('"') for t in match.split(" OR ") if t):
                rows = {r for (r,) in reader.conn.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?",
                                                          (f'"{term}"',))}
                terms.append([term, len(rows)])
                for cid in rows & cands:
                    masks[cid] = masks.get(cid, 0) | (1 << bit)
            missing = [c for c in cands if c not in doc_of]
            for cid, rec in reader.fetch_chunks(missing).items():
                doc_of[cid] = rec.path.relative_to(root).as_posix() if root else doc_id_from_path(str(rec.path), "stem")
            records.append({"id": query.id, "kind": kinds.get(query.id), "text": text,
                            "ceiling": bm25_ceiling(reader, match) if match else 0.0, "sem": [[c, round(float(s), 6)] for c, s in sem],
                            "bm": [[c, round(float(s), 6)] for c, s in bm],
                            "extra": {str(c): round(s, 6) for c, s in extra.items()},
                            "terms": terms, "masks": {str(c): m for c, m in masks.items()}})
            if number % 50 == 0:
                print(f"# {number}/{len(todo)} queries, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        searcher.close()
    data = {"index": str(index_dir), "chunks": total, "candidates": n_cand, "queries": records,
            "qrels": {q: qrels[q] for q in judged}, "doc_of": {str(c): d for c, d in doc_of.items()}}
    with gzip.open(out, "wt", encoding="utf-8") as fh:
        json.dump(data, fh)
    print(f"# {len(records)} queries stored in {out} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- fusions


class Q:
    """One stored query, as the fusions read it."""

    def __init__(self, rec: dict[str, Any], chunks: int) -> None:
        self.id = rec["id"]
        self.sem = [(int(c), float(s)) for c, s in rec["sem"]]
        self.bm = [(int(c), float(s)) for c, s in rec["bm"]]
        self.cos = dict(self.sem)
        self.cos.update({int(c): float(s) for c, s in rec["extra"].items()})
        self.bm25 = dict(self.bm)
        self.masks = {int(c): m for c, m in rec["masks"].items()}
        n = max(chunks, 1)
        # FTS5's idf: log((N - n + 0.5) / (n + 0.5)), at least 1e-6
        self.idf = [max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6) for _, df in rec["terms"]]
        self.idf_total = sum(self.idf) or 1e-9
        self.cands = self.cos.keys() | self.bm25.keys()
        self.ceiling = float(rec.get("ceiling", 0.0))  # semsearch.search.bm25_ceiling's, when stored

    def idf_mass(self, cid: int) -> float:
        """The share of the query's IDF mass this chunk matches (0-1)."""
        mask = self.masks.get(cid, 0)
        return sum(w for bit, w in enumerate(self.idf) if mask >> bit & 1) / self.idf_total


Fusion = Callable[[Q], dict[int, float]]


def _tops(q: Q) -> tuple[float, float]:
    return max(max(q.cos.values(), default=0.0), 1e-9), max(max(q.bm25.values(), default=0.0), 1e-9)


def convex(alpha: float = 0.5) -> Fusion:
    """The shipped fusion: alpha * cos / top cos + (1 - alpha) * bm25 / top bm25."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        return {c: alpha * max(q.cos.get(c, 0.0), 0.0) / tc + (1 - alpha) * max(q.bm25.get(c, 0.0), 0.0) / tb
                for c in q.cands}

    return f


def semantic(q: Q) -> dict[int, float]:
    return dict(q.sem[: N_CAND // 2])  # what --mode semantic fetches at depth 100 (800 chunks)


def lexical(q: Q) -> dict[int, float]:
    return dict(q.bm[: N_CAND // 2])


def rrf(k: int = 60) -> Fusion:
    def f(q: Q) -> dict[int, float]:
        out: dict[int, float] = {}
        for side in (q.sem, q.bm):
            for pos, (c, _) in enumerate(side, 1):
                out[c] = out.get(c, 0.0) + 1.0 / (k + pos)
        return out

    return f


def bm25_ceiling(alpha: float = 0.5, power: float = 1.0, scale: float = 1.0) -> Fusion:
    """BM25 divided by the largest score this query could give (every word matched, saturated:
    sum of idf x (k1 + 1)), not by the best candidate's: a common-word match stays small."""

    def f(q: Q) -> dict[int, float]:
        tc, _ = _tops(q)
        ceiling = q.idf_total * (K1 + 1) * scale
        return {c: alpha * max(q.cos.get(c, 0.0), 0.0) / tc
                + (1 - alpha) * min(max(q.bm25.get(c, 0.0), 0.0) / ceiling, 1.0) ** power for c in q.cands}

    return f


def shipped(fusion: str, scale: float = 1.0) -> Fusion:
    """The library's own ranking (``semsearch.search._rank``) with this fusion, on the stored
    candidates and the stored ``bm25_ceiling`` (times *scale*)."""
    from semsearch.search import SearchOptions, _rank

    def f(q: Q) -> dict[int, float]:
        return dict(_rank(SearchOptions(mode="hybrid", fusion=fusion), q.cos, q.bm25, q.ceiling * scale))

    return f


def _library_rank(q: Q, alpha: float) -> list[tuple[int, float]]:
    from semsearch.search import SearchOptions, _rank

    return _rank(SearchOptions(mode="hybrid", fusion="ceiling", alpha=alpha), q.cos, q.bm25, q.ceiling)


def top_floor(alpha: float = 0.5, floor: float = 0.5) -> Fusion:
    """BM25 divided by the best candidate's score, or by *floor* x the query's ceiling when the
    best is below that (a best match on common words only stays small)."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        div = max(tb, floor * q.idf_total * (K1 + 1))
        return {c: alpha * max(q.cos.get(c, 0.0), 0.0) / tc + (1 - alpha) * max(q.bm25.get(c, 0.0), 0.0) / div
                for c in q.cands}

    return f


def ceiling_survive(alpha: float = 0.5, scale: float = 1.0, keep: float = 0.9) -> Fusion:
    """bm25/ceiling (ceiling x *scale*), and a chunk keeps at least *keep* x its cosine / top."""

    def f(q: Q) -> dict[int, float]:
        tc, _ = _tops(q)
        ceiling = q.idf_total * (K1 + 1) * scale
        out = {}
        for c in q.cands:
            cs = max(q.cos.get(c, 0.0), 0.0) / tc
            out[c] = max(alpha * cs + (1 - alpha) * min(max(q.bm25.get(c, 0.0), 0.0) / ceiling, 1.0), keep * cs)
        return out

    return f


def pin_semantic(base: Fusion, rank: int = 2) -> Fusion:
    """*base*, with the semantic side's best chunk moved up to *rank* when it ranks lower."""

    def f(q: Q) -> dict[int, float]:
        scores = base(q)
        if not q.sem:
            return scores
        best = q.sem[0][0]
        ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        place = next(i for i, (c, _) in enumerate(ordered) if c == best)
        if place >= rank:
            scores[best] = ordered[rank - 1][1] + 1e-9
        return scores

    return f


def idf_weighted(alpha: float = 0.5, power: float = 1.0) -> Fusion:
    """The BM25 side (/ top) times the share of the query's IDF mass the chunk matches."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        return {c: alpha * max(q.cos.get(c, 0.0), 0.0) / tc
                + (1 - alpha) * max(q.bm25.get(c, 0.0), 0.0) / tb * q.idf_mass(c) ** power for c in q.cands}

    return f


def idf_floor(alpha: float = 0.5, floor: float = 0.5) -> Fusion:
    """The BM25 side counts only past *floor* of the query's IDF mass: (mass - floor)/(1 - floor)."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        out = {}
        for c in q.cands:
            gate = max(q.idf_mass(c) - floor, 0.0) / (1 - floor)
            out[c] = alpha * max(q.cos.get(c, 0.0), 0.0) / tc + (1 - alpha) * max(q.bm25.get(c, 0.0), 0.0) / tb * gate
        return out

    return f


def strong_only(alpha: float = 0.5, floor: float = 0.5) -> Fusion:
    """The BM25 side (/ top) only above *floor*, rescaled: (x - floor) / (1 - floor)."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        return {c: alpha * max(q.cos.get(c, 0.0), 0.0) / tc
                + (1 - alpha) * max(max(q.bm25.get(c, 0.0), 0.0) / tb - floor, 0.0) / (1 - floor) for c in q.cands}

    return f


def cos_minmax(alpha: float = 0.5, depth: int = 100, lex: str = "top") -> Fusion:
    """The cosine side spread over the semantic top *depth*: (cos - cos@depth) / (top - cos@depth),
    so it varies as much as the BM25 side does; the BM25 side / top (or / ceiling)."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        ordered = sorted(q.cos.values(), reverse=True)
        low = ordered[min(depth, len(ordered)) - 1] if ordered else 0.0
        span = max(tc - low, 1e-9)
        ceiling = q.idf_total * (K1 + 1)
        out = {}
        for c in q.cands:
            cs = max(q.cos.get(c, 0.0) - low, 0.0) / span
            b = max(q.bm25.get(c, 0.0), 0.0)
            ls = b / tb if lex == "top" else min(b / ceiling, 1.0)
            out[c] = alpha * cs + (1 - alpha) * ls
        return out

    return f


def confidence(alpha_low: float = 0.5, alpha_high: float = 0.8, gap_ref: float = 0.1) -> Fusion:
    """Convex with a per-query alpha: the surer the semantic side (gap between its top-1 and
    top-10 cosine, relative to top-1), the more the cosine weighs."""

    def f(q: Q) -> dict[int, float]:
        ordered = [s for _, s in q.sem]
        gap = (ordered[0] - ordered[min(9, len(ordered) - 1)]) / max(ordered[0], 1e-9) if ordered else 0.0
        a = alpha_low + (alpha_high - alpha_low) * min(gap / gap_ref, 1.0)
        return convex(a)(q)

    return f


def survive(alpha: float = 0.5, keep: float = 0.8) -> Fusion:
    """Convex, but a chunk keeps at least *keep* x its cosine / top cosine (a strong semantic
    match survives a missing keyword match)."""

    def f(q: Q) -> dict[int, float]:
        tc, tb = _tops(q)
        out = {}
        for c in q.cands:
            cs = max(q.cos.get(c, 0.0), 0.0) / tc
            out[c] = max(alpha * cs + (1 - alpha) * max(q.bm25.get(c, 0.0), 0.0) / tb, keep * cs)
        return out

    return f


def additive(beta: float = 0.1, lex: str = "ceiling") -> Fusion:
    """Cosine plus a keyword bonus in cosine units: cos + beta x BM25 / ceiling (or / top)."""

    def f(q: Q) -> dict[int, float]:
        _, tb = _tops(q)
        ceiling = q.idf_total * (K1 + 1)
        out = {}
        for c in q.cands:
            b = max(q.bm25.get(c, 0.0), 0.0)
            out[c] = q.cos.get(c, 0.0) + beta * (min(b / ceiling, 1.0) if lex == "ceiling" else b / tb)
        return out

    return f


VARIANTS: dict[str, Fusion] = {
    "default": convex(0.5),
    "semantic": semantic,
    "library convex": shipped("convex"),
    "library ceiling": shipped("ceiling"),  # each word three times (the shipped default)
    "library ceiling tf1": shipped("ceiling", 1 / T3),  # each word once
    "library ceiling tf2": shipped("ceiling", (2.2 * 2 / 3.2) / T3),  # each word twice
    "library ceiling tf-inf": shipped("ceiling", 2.2 / T3),  # saturated: (k1 + 1) x sum of IDF
    "library ceiling a0.6": lambda q: dict(_library_rank(q, 0.6)),
    "library ceiling a0.4": lambda q: dict(_library_rank(q, 0.4)),
    "lexical": lexical,
    "convex a0.6": convex(0.6),
    "convex a0.7": convex(0.7),
    "rrf k60": rrf(60),
    "bm25/ceiling a0.5": bm25_ceiling(0.5),
    "bm25/ceiling a0.4": bm25_ceiling(0.4),
    "bm25/ceiling a0.3": bm25_ceiling(0.3),
    "bm25/ceiling x0.75": bm25_ceiling(0.5, 1.0, 0.75),
    "bm25/ceiling x0.5": bm25_ceiling(0.5, 1.0, 0.5),
    "bm25/ceiling x0.5 a0.6": bm25_ceiling(0.6, 1.0, 0.5),
    "top-floor 0.4": top_floor(0.5, 0.4),
    "top-floor 0.6": top_floor(0.5, 0.6),
    "top-floor 0.8": top_floor(0.5, 0.8),
    "ceiling+survive 0.9": ceiling_survive(0.5, 1.0, 0.9),
    "ceiling x0.5+survive 0.9": ceiling_survive(0.5, 0.5, 0.9),
    "ceiling x0.5+survive 0.8": ceiling_survive(0.5, 0.5, 0.8),
    "ceiling+survive 0.6": ceiling_survive(0.5, 1.0, 0.6),
    "ceiling+survive 0.65": ceiling_survive(0.5, 1.0, 0.65),
    "ceiling+survive 0.7": ceiling_survive(0.5, 1.0, 0.7),
    "pin sem@2": pin_semantic(convex(0.5), 2),
    "pin sem@3": pin_semantic(convex(0.5), 3),
    "ceiling pin sem@2": pin_semantic(bm25_ceiling(0.5), 2),
    "ceiling pin sem@3": pin_semantic(bm25_ceiling(0.5), 3),
    "idf-weighted p1": idf_weighted(0.5, 1.0),
    "idf-weighted p2": idf_weighted(0.5, 2.0),
    "idf-floor 0.3": idf_floor(0.5, 0.3),
    "idf-floor 0.5": idf_floor(0.5, 0.5),
    "strong-only 0.3": strong_only(0.5, 0.3),
    "strong-only 0.5": strong_only(0.5, 0.5),
    "cos-minmax@100": cos_minmax(0.5, 100),
    "cos-minmax@100 ceiling": cos_minmax(0.5, 100, "ceiling"),
    "confidence 0.5-0.8": confidence(0.5, 0.8, 0.1),
    "confidence 0.4-0.7": confidence(0.4, 0.7, 0.1),
    "survive 0.8": survive(0.5, 0.8),
    "survive 0.9": survive(0.5, 0.9),
    "additive ceiling 0.1": additive(0.1, "ceiling"),
    "additive ceiling 0.2": additive(0.2, "ceiling"),
    "additive top 0.1": additive(0.1, "top"),
}


# --------------------------------------------------------------------------- scoring


def ranked_docs(scores: dict[int, float], doc_of: dict[int, str], depth: int = DEPTH) -> list[str]:
    """Distinct documents, each at its best chunk (equal scores by chunk id, as search sorts)."""
    out: list[str] = []
    seen: set[str] = set()
    for cid, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        doc = doc_of.get(cid)
        if doc is None or doc in seen:
            continue
        seen.add(doc)
        out.append(doc)
        if len(out) == depth:
            break
    return out


def per_query(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    from semsearch.evaluate import evaluate_run

    report = evaluate_run(run, qrels)
    out = {}
    for qid, m in report.per_query.items():
        relevant = {d for d, r in qrels[qid].items() if r > 0}
        top3 = 1.0 if any(d in relevant for d in run.get(qid, [])[:3]) else 0.0
        out[qid] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "top3": top3}
    return out


def randomization_p(a: list[float], b: list[float], samples: int, seed: int = 23) -> float:
    """Two-sided paired randomization test (random sign flips of the differences)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    observed = abs(sum(diffs))
    if observed == 0:
        return 1.0
    rng = random.Random(seed)
    hits = 0
    for _ in range(samples):
        if abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (samples + 1)


def compare(sets: list[tuple[str, Path]], only: list[str] | None, samples: int, out_json: Path | None) -> int:
    results: dict[str, Any] = {"sets": {}, "variants": list(VARIANTS), "samples": samples}
    for name, path in sets:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        doc_of = {int(c): d for c, d in data["doc_of"].items()}
        qrels = data["qrels"]
        queries = [Q(rec, data["chunks"]) for rec in data["queries"]]
        names = [v for v in VARIANTS if only is None or v in only or v == "default"]
        metrics: dict[str, dict[str, dict[str, float]]] = {}
        # Queries whose semantic top-1 document is relevant: does the fusion keep it in its top 3?
        sem_first = {}
        for q in queries:
            ranked = ranked_docs(semantic(q), doc_of, 1)
            if ranked and qrels.get(q.id, {}).get(ranked[0], 0) > 0:
                sem_first[q.id] = ranked[0]
        kept: dict[str, int] = {}
        for variant in names:
            fusion = VARIANTS[variant]
            run = {q.id: ranked_docs(fusion(q), doc_of) for q in queries}
            metrics[variant] = per_query(run, qrels)
            kept[variant] = sum(doc in run[qid][:3] for qid, doc in sem_first.items())
        base = metrics["default"]
        qids = sorted(base)
        table = {}
        print(f"\n## {name}: {len(qids)} queries, {data['chunks']} chunks ({path})")
        print("| fusion | nDCG@10 | p | R@100 | p | top-3 | p | semantic's right top-1 kept in the top 3 |")
        print("|---|---|---|---|---|---|---|---|")
        for variant in names:
            row: dict[str, float] = {}
            cells = []
            for metric in ("ndcg@10", "recall@100", "top3"):
                values = [metrics[variant][q][metric] for q in qids]
                mean = sum(values) / len(values)
                p = 1.0 if variant == "default" else randomization_p(values, [base[q][metric] for q in qids], samples)
                row[metric], row[f"p_{metric}"] = mean, p
                shown = f"{int(sum(values))}/{len(values)}" if metric == "top3" else f"{mean:.4f}"
                cells += [shown, "" if variant == "default" else f"{p:.3f}"]
            row["semantic_top1_kept"] = kept[variant]
            table[variant] = row
            print(f"| {variant} | " + " | ".join(cells) + f" | {kept[variant]}/{len(sem_first)} |")
        kinds = sorted({r.get("kind") for r in data["queries"] if r.get("kind")})
        by_kind: dict[str, dict[str, dict[str, float]]] = {}
        for kind in kinds:
            ids = [r["id"] for r in data["queries"] if r.get("kind") == kind and r["id"] in base]
            print(f"\n{name}, {kind} queries only ({len(ids)}): nDCG@10 (p) / top-3")
            by_kind[kind] = {}
            for variant in names:
                values = [metrics[variant][q]["ndcg@10"] for q in ids]
                p = 1.0 if variant == "default" else randomization_p(values, [base[q]["ndcg@10"] for q in ids], samples)
                top3 = int(sum(metrics[variant][q]["top3"] for q in ids))
                by_kind[kind][variant] = {"ndcg@10": sum(values) / len(values), "p_ndcg@10": p, "top3": top3}
                print(f"  {variant}: {sum(values) / len(values):.4f} ({p:.3f}) / {top3}/{len(ids)}")
        results["sets"][name] = {"by_kind": by_kind, "path": str(path), "queries": len(qids), "chunks": data["chunks"], "table": table,
                                 "per_query_ndcg": {v: {q: metrics[v][q]["ndcg@10"] for q in qids} for v in names}}
    write_json(out_json, results)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser("index", help="write a BEIR corpus.jsonl as files and index them")
    i.add_argument("--corpus", type=Path, required=True)
    i.add_argument("--work", type=Path, required=True)
    d = sub.add_parser("dump", help="store each judged query's candidates from an index")
    d.add_argument("--index", type=Path, required=True)
    d.add_argument("--queries", type=Path, required=True)
    d.add_argument("--qrels", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--candidates", type=int, default=N_CAND)
    d.add_argument("--root", type=Path, default=None,
                   help="document ids are paths relative to this folder (default: file names without extension)")
    c = sub.add_parser("compare", help="score every fusion on stored candidates")
    c.add_argument("sets", nargs="+", metavar="NAME=PATH")
    c.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    c.add_argument("--samples", type=int, default=10000, help="randomization test samples")
    c.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.command == "index":
        if not args.corpus.exists():
            print(f"error: {args.corpus} is missing", file=sys.stderr)
            return 2
        return index(args.corpus, args.work)
    if args.command == "dump":
        for p in (args.index, args.queries, args.qrels):
            if not p.exists():
                print(f"error: {p} is missing", file=sys.stderr)
                return 2
        return dump(args.index, args.queries, args.qrels, args.out, args.candidates,
                    args.root.resolve() if args.root else None)
    sets = []
    for item in args.sets:
        name, _, path = item.partition("=")
        if not Path(path).is_file():
            print(f"error: {path} is missing (run `fusion_eval.py dump` first)", file=sys.stderr)
            return 2
        sets.append((name, Path(path)))
    only = args.only.split(",") if args.only else None
    return compare(sets, only, args.samples, args.json)


if __name__ == "__main__":
    sys.exit(main())
