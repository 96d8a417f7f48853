"""The PostgreSQL engine's query plans: statistics after a bulk load, a plan for each search's own
scope (found by benchmarks/servers/bench_postgres.py: both made scoped searches score every row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FakeModel, write

from semsearch import Index


def _build(tmp_path: Path, url: str, model: FakeModel, monkeypatch: pytest.MonkeyPatch) -> Index:
    monkeypatch.chdir(tmp_path)
    for i in range(12):
        write(tmp_path / "docs" / f"f{i:02d}.txt", f"gasket harbour lantern {i}\n\nriver copper garden {i}\n")
    index = Index.create(url, provider=model)
    index.update([tmp_path / "docs"])
    return index


def test_a_first_build_leaves_statistics_for_the_planner(
    tmp_path: Path, pg_url: str, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _build(tmp_path, pg_url, fake_model, monkeypatch) as index:
        reader = index._open_searcher().reader
        analysed = reader._rows(
            "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = %s AND tablename IN ('chunks', 'files')",
            [reader.schema],
        )
    assert sorted(r[0] for r in analysed) == ["chunks", "files"]


def test_a_reader_plans_each_search_with_its_own_scope(
    tmp_path: Path, pg_url: str, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _build(tmp_path, pg_url, fake_model, monkeypatch) as index:
        reader = index._open_searcher().reader
        assert reader._rows("SHOW plan_cache_mode") == [("force_custom_plan",)]
        # Past psycopg's prepare threshold (5), every scoped search still finds its scope's best.
        for i in range(8):
            hits = index.search(f"gasket {i}", k=3, mode="semantic", paths=[tmp_path / "docs" / f"f{i:02d}.txt"])
            assert hits and all(h.chunk.path.name == f"f{i:02d}.txt" for h in hits)


def test_the_live_counts_follow_adds_edits_and_removals(
    tmp_path: Path, pg_url: str, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk count and the BM25 term total are kept from each update's changes, not counted
    again over the whole table: they must still equal a count of the live rows."""
    with _build(tmp_path, pg_url, fake_model, monkeypatch) as index:
        docs = tmp_path / "docs"
        write(docs / "f03.txt", "gasket harbour\n\nlantern river\n\ncopper garden meadow engine\n")
        (docs / "f05.txt").unlink()
        write(docs / "new.txt", "signal vector benchmark\n")
        index.update()
        (docs / "f07.txt").unlink()
        index.update()
        assert index.status(check_disk=False, verify=True).problems == []
        reader = index._open_searcher().reader
        # A removed file's chunks are removed by its row: theirs are left as they are (no new row
        # version, which would be a new entry in the HNSW graph).
        assert reader._rows("SELECT count(*) FROM chunks WHERE gen_removed IS NOT NULL")[0][0] == 0
        g = reader.generation
        live = f"gen_added <= {g} AND file_id NOT IN (SELECT id FROM files WHERE gen_removed <= {g})"
        count, total = reader._rows(f"SELECT count(*), sum(lex_len) FROM chunks WHERE {live}")[0]
        assert (reader.count, reader._lex_total) == (count, total)
        assert index.search("harbour", k=3, mode="lexical")
        # The postings of the live chunks, and only theirs (the removed ones' went with them).
        posted = reader._rows(
            "SELECT count(*) FROM postings p WHERE p.chunk <= %s AND p.chunk <> ALL(%s::bigint[])",
            [reader._ceiling, reader._removed],
        )[0][0]
        assert posted == reader._rows(f"SELECT sum(length(lex)) FROM chunks WHERE {live}")[0][0]
        assert reader._rows("SELECT count(*) FROM postings WHERE chunk NOT IN (SELECT id FROM chunks)")[0][0] == 0
        reader._rows("DELETE FROM postings WHERE term = 'harbour' RETURNING 1")  # a damaged index
        assert index.status(check_disk=False, verify=True).problems == ["1 terms' chunk counts differ from their postings"]


def test_bigger_indexes_are_searched_wider() -> None:
    from semsearch.pgstore.reader import SEARCH_EF_FLOOR, search_ef

    assert search_ef(5_000) == search_ef(100_000) == SEARCH_EF_FLOOR
    assert search_ef(1_000_000) == 2 * SEARCH_EF_FLOOR
    sizes = [10**5, 3 * 10**5, 10**6, 10**7]
    assert [search_ef(n) for n in sizes] == sorted(search_ef(n) for n in sizes)


def _graph(reader: Any) -> tuple[int, int] | None:
    from semsearch.pgstore import graph

    return graph.current(reader._conn())


def test_the_graph_is_sized_by_the_index_and_grows_with_it(
    tmp_path: Path, pg_url: str, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m 16 for a small first build; once the index passes LARGE_ROWS, the next update builds the
    bigger graph beside the old one (CREATE INDEX CONCURRENTLY: readers search the old one
    meanwhile) and swaps it in."""
    from semsearch.pgstore import graph

    monkeypatch.setattr(graph, "LARGE_ROWS", 30)
    with _build(tmp_path, pg_url, fake_model, monkeypatch) as index:
        reader = index._open_searcher().reader
        assert _graph(reader) == graph.SMALL
        before = [h.chunk.path.name for h in index.search("gasket harbour", k=5, mode="semantic")]
        for i in range(12, 40):
            write(tmp_path / "docs" / f"f{i:02d}.txt", f"lantern copper {i}\n\nmeadow engine signal {i}\n")
        index.update()
        reader = index._open_searcher().reader
        assert _graph(reader) == graph.LARGE
        assert reader._rows("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'chunks_embedding%%'")[0][0] == 1
        assert [h.chunk.path.name for h in index.search("gasket harbour", k=5, mode="semantic")][:3] == before[:3]
        assert index.status(check_disk=False, verify=True).problems == []


def test_a_graph_left_half_grown_is_settled_by_the_next_update(
    tmp_path: Path, pg_url: str, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer killed while the bigger graph was built leaves it invalid (dropped next time) or
    complete beside the old one (swapped in next time); queries work throughout."""
    from semsearch.pgstore import graph

    with _build(tmp_path, pg_url, fake_model, monkeypatch) as index:
        reader = index._open_searcher().reader
        conn = reader._conn()
        # Complete beside the old one, as after a kill between the build and the swap.
        conn.execute(graph.index_sql("halfvec", 24, 80, name=graph.NEXT))
        assert index.search("river copper", k=3, mode="semantic")
        write(tmp_path / "docs" / "extra.txt", "gasket lantern meadow\n")
        index.update()
        assert _graph(index._open_searcher().reader) == (24, 80)
        # An invalid one (a concurrent build cut short) is dropped.
        reader = index._open_searcher().reader
        conn = reader._conn()
        conn.execute(graph.index_sql("halfvec", 24, 80, name=graph.NEXT))
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)", (graph.NEXT,))
        write(tmp_path / "docs" / "extra2.txt", "harbour signal engine\n")
        index.update()
        reader = index._open_searcher().reader
        names = reader._rows("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'chunks_embedding%%'")
        assert names == [("chunks_embedding",)]
        assert index.search("harbour signal engine", k=1, mode="semantic")[0].chunk.path.name == "extra2.txt"
