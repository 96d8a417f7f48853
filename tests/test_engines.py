"""The storage-engine seam: the same behaviour on the local folder (SQLite + hnswlib) and on
PostgreSQL + pgvector (a real server: tests/pg_server.py). Each test runs on both engines through
the public API with the fake model; the cross-engine tests compare their answers directly."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeModel, check_fts, write
from test_seams import QUERIES, TOPICS, topic_text

from semsearch.api import Index
from semsearch.errors import InvalidOptionError

ENGINES = ("local", "postgres")
CHUNKING: dict[str, Any] = {"chunk_tokens": 32, "overlap_tokens": 4}


def make_project(root: Path, salt: int = 0) -> Path:
    """Twelve topics in three folders, with a Markdown, text and Python mix."""
    for i, topic in enumerate(TOPICS):
        folder = ("notes", "papers", "code")[i % 3]
        suffix = (".md", ".txt", ".py")[i % 3]
        text = topic_text(topic, salt)
        if suffix == ".py":
            text = '"""' + text + '"""\n'
        write(root / "docs" / folder / f"{topic}{suffix}", text)
    return root / "docs"


@pytest.fixture(params=ENGINES)
def where(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The index location of each engine (the test runs in its project folder)."""
    monkeypatch.chdir(tmp_path)
    if request.param == "local":
        yield str(tmp_path / ".semsearch")
    else:
        yield request.getfixturevalue("pg_url")


def _build(where: str, fake_model: FakeModel, paths: list[Path] | None = None, **settings: Any) -> Index:
    index = Index.create(where, exist_ok=True, provider=fake_model, **{**CHUNKING, **settings})
    index.update(paths or [Path("docs")])
    return index


def _paths(hits: list[Any]) -> list[str]:
    return [h.chunk.path.relative_to(Path.cwd()).as_posix() for h in hits]


def test_build_search_and_modes(where: str, fake_model: FakeModel) -> None:
    make_project(Path.cwd())
    with _build(where, fake_model) as index:
        for topic, query in QUERIES.items():
            for mode in ("semantic", "lexical", "hybrid"):
                hits = index.search(query, k=3, mode=mode)
                assert hits and hits[0].chunk.path.stem == topic, (mode, topic)
        assert index.status(check_disk=False).files == len(TOPICS)


def test_filters_fill_k(where: str, fake_model: FakeModel) -> None:
    make_project(Path.cwd())
    with _build(where, fake_model) as index:
        total = index.status(check_disk=False).chunks
        for kwargs in (
            {"paths": ["docs/notes"]},
            {"globs": ["*.py"]},
            {"types": ["md"]},
            {"paths": ["docs/notes/chess.md"]},
        ):
            every = index.search("river violin bread", k=total, mode="semantic", **kwargs)
            assert every, kwargs
            for k in (1, 3, len(every)):
                hits = index.search("river violin bread", k=k, mode="semantic", **kwargs)
                assert len(hits) == min(k, len(every)), (kwargs, k)
            allowed = {h.chunk.path for h in every}
            lexical = index.search("river violin bread dough", k=5, mode="lexical", **kwargs)
            assert {h.chunk.path for h in lexical} <= allowed
        with pytest.raises(InvalidOptionError):
            index.search("x", paths=["/elsewhere/entirely"])


def test_update_matches_a_fresh_build(where: str, fake_model: FakeModel, tmp_path: Path) -> None:
    docs = make_project(Path.cwd())
    with _build(where, fake_model) as index:
        (docs / "notes" / "rivers.md").unlink()
        write(
            docs / "notes" / "tides.md",
            topic_text("rivers", 9, words=["tide", "lunar", "neap", "ebb", "flood", "surge"]),
        )
        (docs / "papers" / "violin.txt").write_text(topic_text("violin", 5))
        summary = index.update()
        assert (summary.indexed, summary.removed) == (2, 1)
        assert summary.chunks_reused == 0 or summary.chunks_reused > 0
        assert index.search("tide lunar neap ebb", k=1)[0].chunk.path.name == "tides.md"
        assert all(h.chunk.path.name != "rivers.md" for h in index.search("river delta estuary", k=20))
        status = index.status()
        assert (status.changed_since, status.missing_since, status.new_since) == (0, 0, 0)
        updated = {q: _paths(index.search(q, k=5, mode="hybrid")) for q in QUERIES.values()}
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    os.chdir(fresh)
    (fresh / "docs").symlink_to(docs)
    with _build(str(fresh / ".semsearch"), fake_model, [fresh / "docs"]) as other:
        rebuilt = {q: _paths(other.search(q, k=5, mode="hybrid")) for q in QUERIES.values()}
    assert updated == rebuilt


def test_an_update_of_named_paths_reads_and_drops_only_theirs(where: str, fake_model: FakeModel) -> None:
    """`semsearch index FILE` (and a watch event) compares only the named paths' files with the
    index: a file gone elsewhere, even in a folder whose name starts the same, is not dropped."""
    docs = make_project(Path.cwd())
    write(docs / "notes-old" / "tides.md", topic_text("rivers", 3, words=["tide", "lunar", "neap", "ebb", "surge"]))
    write(docs / "notes0" / "moons.md", topic_text("rivers", 4, words=["moon", "crater", "orbit", "apogee", "lunar"]))
    with _build(where, fake_model) as index:
        files = index.status(check_disk=False).files
        (docs / "notes-old" / "tides.md").unlink()
        (docs / "notes0" / "moons.md").unlink()
        (docs / "notes" / "chess.md").unlink()
        (docs / "notes" / "rivers.md").write_text(topic_text("rivers", 8))
        summary = index.update([docs / "notes"])
        assert (summary.indexed, summary.removed) == (1, 1)
        assert index.status(check_disk=False).files == files - 1
        assert index.search("tide lunar neap ebb", k=1, mode="lexical")[0].chunk.path.name == "tides.md"
        summary = index.update([docs / "notes0"])
        assert (summary.indexed, summary.removed) == (0, 1)
        assert index.status(check_disk=False).files == files - 2
        summary = index.update()
        assert (summary.indexed, summary.removed) == (0, 1)
        assert index.status(check_disk=False).files == files - 3


def test_similar_duplicates_status_and_eval(where: str, fake_model: FakeModel) -> None:
    docs = make_project(Path.cwd())
    write(docs / "notes" / "copy.md", topic_text("chess", 0))  # the same text as chess.py's docstring
    with _build(where, fake_model) as index:
        like = index.similar("docs/notes/rivers.md", k=3)
        assert like and all(h.chunk.path.name != "rivers.md" for h in like)
        groups = index.duplicates().groups
        assert any({c.path.name for c in g.chunks} >= {"copy.md", "chess.md"} for g in groups)
        status = index.status(verify=True)
        assert status.problems == [] and status.files == len(TOPICS) + 1
        queries = {str(i): q for i, q in enumerate(QUERIES.values())}
        qrels = {str(i): {topic: 1} for i, topic in enumerate(QUERIES)}  # documents by file stem
        report = index.evaluate(queries, qrels)
        assert report.report.ndcg_at_10 > 0.9 and report.ids_matched > 0


def test_a_long_lived_index_sees_another_writers_update(where: str, fake_model: FakeModel) -> None:
    docs = make_project(Path.cwd())
    with _build(where, fake_model) as reader_side:
        assert reader_side.search("tide lunar neap ebb", k=1, mode="lexical") == []
        with Index.open(where, provider=fake_model) as writer_side:
            write(docs / "notes" / "tides.md", topic_text("rivers", 9, words=["tide", "lunar", "neap", "ebb", "surge"]))
            writer_side.update()
        if where.startswith("postgresql"):  # a local Index is refreshed by its owner (mcp, watch)
            hits = reader_side.search("tide lunar neap ebb", k=1, mode="lexical")
            assert hits and hits[0].chunk.path.name == "tides.md"


def test_readers_see_the_old_state_or_the_new_one(where: str, fake_model: FakeModel) -> None:
    docs = make_project(Path.cwd())
    with _build(where, fake_model) as index:
        before = _paths(index.search("violin bow rosin", k=50, mode="lexical"))
        seen: list[list[str]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def read() -> None:
            with Index.open(where, provider=fake_model) as mine:
                while not stop.is_set():
                    try:
                        seen.append(_paths(mine.search("violin bow rosin", k=50, mode="lexical")))
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        errors.append(exc)
                        return
                    mine.close()

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for n in range(3):
                write(docs / "papers" / f"violin{n}.txt", topic_text("violin", 20 + n))
                with Index.open(where, provider=fake_model) as writer:
                    writer.update()
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
        states = [before]
        with Index.open(where, provider=fake_model) as fresh:
            final = _paths(fresh.search("violin bow rosin", k=50, mode="lexical"))
        assert {f"docs/papers/violin{n}.txt" for n in range(3)} <= set(final)
        for got in seen:  # each is one whole state: only complete files' chunks, never a mix
            names = set(got)
            assert names <= set(final) | set(states[0])


def test_watch_keeps_it_fresh(where: str, fake_model: FakeModel) -> None:
    docs = make_project(Path.cwd())
    _build(where, fake_model).close()
    index = Index.open(where, provider=fake_model)
    updates: list[Any] = []
    ready = threading.Event()
    stop = threading.Event()
    thread = threading.Thread(
        target=index.watch, kwargs={"on_update": updates.append, "stop": stop, "on_ready": ready.set}
    )
    thread.start()
    try:
        assert ready.wait(60)
        write(docs / "notes" / "tides.md", topic_text("rivers", 9, words=["tide", "lunar", "neap", "ebb", "surge"]))
        deadline = time.monotonic() + 60
        while not updates and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
    assert updates and updates[0].indexed == 1
    with Index.open(where, provider=fake_model) as fresh:
        assert fresh.search("tide lunar neap ebb", k=1, mode="lexical")[0].chunk.path.name == "tides.md"


def test_rebuild_on_new_chunking_keeps_the_old_until_done(where: str, fake_model: FakeModel) -> None:
    make_project(Path.cwd())
    _build(where, fake_model).close()
    with Index.create(where, exist_ok=True, provider=fake_model, chunk_tokens=48, overlap_tokens=8) as index:
        summary = index.update()
        assert "chunk" in summary.rebuild_reason
        assert index.manifest().chunking.chunk_tokens == 48
        assert index.search(QUERIES["chess"], k=1)[0].chunk.path.stem == "chess"
        assert index.status(check_disk=False).files == len(TOPICS)


def test_both_engines_rank_alike(
    fake_model: FakeModel, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path)
    write(tmp_path / "docs" / "notes" / "copy.md", topic_text("chess", 0) + topic_text("coffee", 3))
    _build(str(tmp_path / ".semsearch"), fake_model).close()
    os.rename(tmp_path / ".semsearch", tmp_path / "local-index")
    remote = _build(pg_url, fake_model)
    local = Index.open(str(tmp_path / "local-index"), provider=fake_model)
    try:
        queries = [*QUERIES.values(), "river violin", "dough oven crust loaf", "nebula galaxy"]
        for q in queries:
            for mode in ("semantic", "lexical", "hybrid"):
                a = [(h.chunk.path.name, h.chunk.ordinal) for h in local.search(q, k=5, mode=mode)]
                b = [(h.chunk.path.name, h.chunk.ordinal) for h in remote.search(q, k=5, mode=mode)]
                assert a == b, (q, mode)
                sa = [round(h.score, 3) for h in local.search(q, k=5, mode=mode)]
                sb = [round(h.score, 3) for h in remote.search(q, k=5, mode=mode)]
                assert sa == pytest.approx(sb, abs=2e-3), (q, mode)
        for min_score in (0.3, 0.9):
            groups = [
                sorted(
                    sorted((c.path.name, c.ordinal) for c in g.chunks)
                    for g in idx.duplicates(min_score=min_score).groups
                )
                for idx in (local, remote)
            ]
            assert groups[0] == groups[1] and groups[0], min_score
        like = [
            [(h.chunk.path.name, h.chunk.ordinal) for h in idx.similar("docs/notes/rivers.md", k=5)]
            for idx in (local, remote)
        ]
        assert like[0] == like[1] and like[0]
    finally:
        local.close()
        remote.close()


def test_several_projects_share_one_database(
    fake_model: FakeModel, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, topic in ((one, "chess"), (two, "coffee")):
        write(folder / "docs" / f"{topic}.md", topic_text(topic))
        monkeypatch.chdir(folder)
        _build(f"{pg_url}?project={folder.name}", fake_model).close()
    for folder, topic in ((one, "chess"), (two, "coffee")):
        monkeypatch.chdir(folder)
        with Index.open(provider=fake_model) as index:  # found by the folder's pointer
            paths = {h.chunk.path.name for h in index.search("gambit espresso castling crema", k=10)}
            assert paths == {f"{topic}.md"}


def test_a_local_query_never_imports_psycopg_or_httpx(tmp_path: Path) -> None:
    import subprocess
    import sys

    write(tmp_path / "docs" / "chess.md", topic_text("chess"))
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from conftest import FakeModel\n"
        "from semsearch.api import Index\n"
        "from semsearch.models import register_model\n"
        "model = FakeModel()\n"
        "register_model(model.info().name, lambda options: model)\n"
        "with Index.create('.semsearch', provider=model) as index:\n"
        "    index.update(['docs'])\n"
        "from semsearch.cli import main\n"
        "sys.argv = ['semsearch', 'query', 'gambit castling', '-l']\n"
        "try:\n    main(fast_exit=False)\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('psycopg', 'pgvector', 'httpx') if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, timeout=120)
    assert result.stderr.decode().strip().splitlines()[-1] == "[]", result.stderr.decode()
    assert result.stdout.decode().strip() == "docs/chess.md"


def test_bm25_pruning_keeps_the_exact_top_k(fake_model: FakeModel, tmp_path: Path, pg_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """MaxScore's pruning (pgstore/bm25.py) scores the chunks of the rarest words first and takes
    in more words only while the k-th score could still be beaten: the same top k as scoring
    every match, here forced to prune from the first word on."""
    from semsearch.pgstore import bm25

    monkeypatch.chdir(tmp_path)
    make_project(tmp_path)
    for n in range(40):  # a common word in many chunks, rarer ones in few
        write(tmp_path / "docs" / "notes" / f"common{n}.md", f"Note {n}: the river and the bread. " * (1 + n % 3))
    early: list[bool] = []
    real_enough = bm25.enough

    def enough(found: Any, k: int, words: Any, taken: int) -> bool:
        done = real_enough(found, k, words, taken)
        early.append(done and taken < len(words))
        return done

    monkeypatch.setattr(bm25, "enough", enough)
    with _build(pg_url, fake_model) as index:
        queries = ["river violin", "note river bread", "bread dough yeast river note", "gambit note", "river"]
        for q in queries:
            for k in (1, 3, 10):
                monkeypatch.setattr(bm25, "FIRST_ROWS", 10**9)
                index.close()
                full = [(h.chunk.id, round(h.score, 6)) for h in index.search(q, k=k, mode="lexical")]
                monkeypatch.setattr(bm25, "FIRST_ROWS", 1)
                index.close()
                pruned = [(h.chunk.id, round(h.score, 6)) for h in index.search(q, k=k, mode="lexical")]
                assert [s for _, s in pruned] == [s for _, s in full], (q, k)  # the same scores
                if full:  # the same chunks, but for ties at the k-th score (either may be kept)
                    last = full[-1][1]
                    assert {i for i, s in pruned if s > last} == {i for i, s in full if s > last}, (q, k)
                    assert {i for i, s in pruned if s == last} <= {i for i, s in full if s == last} or len(full) == k
    assert any(early) and not all(early)  # some searches stopped before scoring every word's chunks


def test_words_of_the_same_stem_count_twice_on_both_engines(fake_model: FakeModel, tmp_path: Path, pg_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "docs" / "a.md", "The runner runs. " * 3 + "A quiet harbour.")
    write(tmp_path / "docs" / "b.md", "Running water in the harbour harbour harbour.")
    write(tmp_path / "docs" / "c.md", "Nothing here at all.")
    _build(str(tmp_path / ".semsearch"), fake_model, [Path("docs")]).close()
    os.rename(tmp_path / ".semsearch", tmp_path / "local-index")
    with _build(pg_url, fake_model) as remote, Index.open(str(tmp_path / "local-index"), provider=fake_model) as local:
        for q in ("runs running harbour", "harbour", "running runs"):
            a = [(h.chunk.path.name, round(h.score, 4)) for h in local.search(q, k=3, mode="lexical")]
            b = [(h.chunk.path.name, round(h.score, 4)) for h in remote.search(q, k=3, mode="lexical")]
            assert a == b, q


def test_identifiers_match_as_phrases_on_both_engines(fake_model: FakeModel, tmp_path: Path, pg_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A word of several terms (``err_disk_4711``) matches where its terms stand in order, on both
    engines alike (PostgreSQL: the postings, then the phrase checked against the tsvector)."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "docs" / "a.md", "The log says err_disk_4711 twice: err_disk_4711.")
    write(tmp_path / "docs" / "b.md", "A disk err was logged; code 4711 followed. The disk failed.")
    write(tmp_path / "docs" / "c.md", "Nothing about failures here, only a quiet harbour.")
    write(tmp_path / "docs" / "d.md", "The disk failure report: err_disk_4711 once.")
    _build(str(tmp_path / ".semsearch"), fake_model, [Path("docs")]).close()
    os.rename(tmp_path / ".semsearch", tmp_path / "local-index")
    with _build(pg_url, fake_model) as remote, Index.open(str(tmp_path / "local-index"), provider=fake_model) as local:
        for q in ("err_disk_4711", "err_disk_4711 failure", "disk err 4711", "harbour err_disk_4711"):
            a = [(h.chunk.path.name, round(h.score, 4)) for h in local.search(q, k=4, mode="lexical")]
            b = [(h.chunk.path.name, round(h.score, 4)) for h in remote.search(q, k=4, mode="lexical")]
            assert a == b, q
        only = [h.chunk.path.name for h in remote.search("err_disk_4711", k=4, mode="lexical")]
        assert only == ["a.md", "d.md"]  # b.md holds the three terms, not in order


MULTILINGUAL = {
    "de.md": "# Bäckerei\n\nDie Bäckerei öffnet um sechs Uhr. Der Bäckermeister knetet den Sauerteig und backt "
    "Roggenbrot.\n\nDie Straßenbahnhaltestelle liegt vor der Tür.\n",
    "fr.md": "# Boulangerie\n\nLa boulangerie ouvre à six heures. Le boulanger pétrit la pâte et fait cuire des "
    "baguettes dorées.\n\nLes élèves du lycée achètent des croissants.\n",
    "zh.md": "# 面包店\n\n面包店早上六点开门。面包师傅揉面团，烤制全麦面包。学生们在上课前购买牛角面包。\n\n"
    "图书馆位于市中心，藏书丰富。\n",
    "ja.md": "# パン屋\n\nパン屋は朝六時に開店します。パン職人が生地をこねて、ライ麦パンを焼きます。\n\n"
    "図書館は駅の近くにあり、静かに勉強できます。\n",
}


def test_words_in_german_french_chinese_and_japanese_are_found(where: str, fake_model: FakeModel) -> None:
    """Accents fold (pâte finds pate), and Chinese and Japanese words are found inside the runs of
    characters written without spaces (read as pairs: 图书馆 = 图书 + 书馆)."""
    for name, text in MULTILINGUAL.items():
        write(Path.cwd() / "notes" / name, text)
    with _build(where, fake_model, [Path("notes")]) as index:
        for query, expected in [("Sauerteig", "de.md"), ("bäckerei", "de.md"), ("pate", "fr.md"),
                                ("eleves lycée", "fr.md"), ("图书馆", "zh.md"), ("牛角面包", "zh.md"),
                                ("面包", "zh.md"), ("図書館", "ja.md"), ("パン職人", "ja.md"), ("生地", "ja.md")]:  # fmt: skip
            hits = index.search(query, k=3, mode="lexical")
            assert hits and hits[0].chunk.path.name == expected, (query, [h.chunk.path.name for h in hits])
        # Not a pair of the text: 馆位 is, 书市 is not.
        assert [h.chunk.path.name for h in index.search("书市", k=3, mode="lexical")] == []
        hit = index.search("图书馆", k=1, mode="hybrid")[0]
        assert hit.chunk.path.name == "zh.md"
    if where.endswith(".semsearch"):
        check_fts(Path(where))
