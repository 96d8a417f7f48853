"""Scoped search: paths, globs, types and modification times, in every mode, applied before the
top-k cut (a selective filter still returns k hits), on the real store (SQLite, FTS5, hnswlib)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeModel, make_pdf, write
from typer.testing import CliRunner

from semsearch import Index, InvalidOptionError, Scope
from semsearch.cli import app
from semsearch.cli.messages import describe
from semsearch.scope import parse_duration, parse_when, type_of
from semsearch.store import IndexReader
from semsearch.vectors import hnsw_search

MODES = ("semantic", "lexical", "hybrid")
OLD = dt.datetime(2020, 1, 1).timestamp()  # mtime of the files under old/
NOW = time.time()
WORDS = ["bread", "oven", "dough", "flour", "yeast", "crust", "butter", "salt", "sugar", "water", "milk", "honey"]


def _text(i: int, extra: str = "") -> str:
    words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(6)]
    return f"# Note {i}\n\nA note about {' '.join(words)} {extra} number{i}.\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Hundreds of files of several types and ages; one long file of many chunks."""
    root = tmp_path_factory.mktemp("scope")
    for i in range(240):
        write(root / "notes" / f"n{i:03d}.md", _text(i))
    for i in range(40):
        write(root / "code" / f"m{i:02d}.py", f'"""bread oven module {i}."""\n\ndef bake_{i}(dough):\n    return dough\n')
    for i in range(30):
        path = write(root / "old" / f"o{i:02d}.txt", _text(i, "archive"))
        os.utime(path, (OLD, OLD))
    paragraphs = [f"Paragraph {j}: bread {WORDS[j % len(WORDS)]} and more bread, kneaded {j} times." for j in range(40)]
    write(root / "notes" / "long.md", "# Long\n\n" + "\n\n".join(paragraphs) + "\n")
    make_pdf(root / "papers" / "bread.pdf", ["Bread science: yeast and flour.", "Oven temperatures for crust."])
    with Index.create(root / ".semsearch", provider=FakeModel(), chunk_tokens=24, overlap_tokens=4) as index:
        index.update([root / "notes", root / "code", root / "old", root / "papers"])
    yield root


@pytest.fixture
def index(tree: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    monkeypatch.chdir(tree)
    with Index.open(tree / ".semsearch", provider=FakeModel()) as opened:
        yield opened


def _chunks(tree: Path) -> list:
    with IndexReader(tree / ".semsearch") as reader:
        return list(reader.chunks())


def _exact(tree: Path, query_vec: np.ndarray, keep, k: int) -> list[int]:
    with IndexReader(tree / ".semsearch") as reader:
        chunks = [c for c in reader.chunks() if keep(c)]
        vectors = reader.vectors([c.id for c in chunks])
    scored = sorted(((float(vectors[c.id] @ query_vec), c.id) for c in chunks), key=lambda t: (-t[0], t[1]))
    return [cid for _, cid in scored[:k]]


# -- parsing ---------------------------------------------------------------------------------


def test_durations_dates_and_types_are_read_as_a_user_writes_them() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("1w 2d") == 9 * 86400
    assert parse_duration("90min") == parse_duration("1.5h") == 5400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("1M") > parse_duration("4w")  # M is months, m minutes
    with pytest.raises(InvalidOptionError, match="longer than zero"):
        parse_duration("0d")
    for bad in ("", "7", "d7", "7x", "-3d"):
        with pytest.raises(InvalidOptionError, match="changed_within"):
            parse_duration(bad)
    assert parse_when("2026-11-01") == dt.datetime(2026, 11, 1).timestamp()
    assert parse_when("2026-11-01 14:30") == dt.datetime(2026, 11, 1, 14, 30).timestamp()
    assert parse_when("2026-11-01T00:00:00Z") == dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp()
    assert parse_when("30d", now=1_000_000_000) == 1_000_000_000 - 30 * 86400
    with pytest.raises(InvalidOptionError, match="as a date"):
        parse_when("yesterday-ish")
    assert type_of("a/b.PY", "text") == "py"
    assert type_of("README", "markdown") == "md"  # no extension: the reader's kind
    assert type_of("notes/x.md", "markdown") == "md" and type_of("LICENSE", "text") == "text"
    assert type_of("scan.pdf", "pdf") == "pdf"


def test_a_scope_is_checked_when_made() -> None:
    for kwargs, name in (
        ({"types": ["nope"]}, "types"),
        ({"types_not": ["nope"]}, "types_not"),
        ({"globs": ["[abc"]}, "globs"),
        ({"globs": ["!"]}, "globs"),
        ({"changed_within": "soon"}, "changed_within"),
        ({"changed_before": "the day after"}, "changed_before"),
    ):
        with pytest.raises(InvalidOptionError) as caught:
            Scope.make(**kwargs)
        assert caught.value.options == (name,), kwargs
    scope = Scope.make(["docs"], types=["code"], changed_within=dt.timedelta(days=1), now=NOW)
    assert scope.paths == (Path.cwd() / "docs",) and "py" in scope.types and "rust" in scope.types
    assert scope.modified_after == pytest.approx(NOW - 86400)
    assert not Scope.make() and scope


# -- each filter, in each mode --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_each_filter_keeps_its_promise_and_returns_k_hits(index: Index, tree: Path, mode: str) -> None:
    cases = {
        "paths": ({"paths": ["code"]}, lambda c: c.display.startswith("code/")),
        "a file": ({"paths": ["notes/long.md"]}, lambda c: c.display == "notes/long.md"),
        "glob": ({"globs": ["old/*.txt"]}, lambda c: c.display.startswith("old/")),
        "not glob": ({"globs": ["!notes/**", "!*.py"]}, lambda c: c.display.startswith(("old/", "papers/"))),
        "type": ({"types": ["py"]}, lambda c: c.display.endswith(".py")),
        "type group": ({"types": ["code"]}, lambda c: c.display.endswith(".py")),
        "type not": ({"types_not": ["md", "py"]}, lambda c: c.display.startswith(("old/", "papers/"))),
        "changed before": ({"changed_before": "2021-01-01"}, lambda c: c.display.startswith("old/")),
        "changed within": ({"changed_within": "30d"}, lambda c: not c.display.startswith("old/")),
    }
    for name, (filters, keep) in cases.items():
        hits = index.search("bread oven dough", k=10, mode=mode, **filters)
        assert hits and all(keep(h.chunk) for h in hits), (name, [h.chunk.display for h in hits])
        matching = [c for c in _chunks(tree) if keep(c) and (mode != "lexical" or "bread" in c.text.lower())]
        assert len(hits) == min(10, len(matching)), name


@pytest.mark.parametrize("mode", MODES)
def test_filters_compose_and_within_a_kind_any_value_passes(index: Index, mode: str) -> None:
    hits = index.search("bread", k=500, mode=mode, paths=["notes", "old"], types=["md", "text"], globs=["!*long*"])
    shown = {h.chunk.display for h in hits}
    assert shown and all(s.startswith(("notes/n", "old/")) for s in shown)
    assert any(s.startswith("old/") for s in shown) and any(s.startswith("notes/") for s in shown)
    # AND across kinds: md files that are also under old/ -> none.
    assert index.search("bread", k=5, mode=mode, paths=["old"], types=["md"]) == []


@pytest.mark.parametrize("mode", MODES)
def test_a_selective_filter_still_returns_k_hits_from_its_file(index: Index, mode: str) -> None:
    # One file of about 300: its chunks are far down the unfiltered ranking.
    query = "bread oven dough flour yeast"
    unfiltered = index.search(query, k=10, mode=mode)
    assert not any(h.chunk.display == "notes/long.md" for h in unfiltered)
    hits = index.search(query, k=10, mode=mode, paths=["notes/long.md"])
    assert len(hits) == 10 and {h.chunk.display for h in hits} == {"notes/long.md"}
    files = index.search("bread", k=5, mode=mode, paths=["notes/long.md", "code/m01.py"], files_only=True)
    assert sorted(h.chunk.display for h in files) == ["code/m01.py", "notes/long.md"]


def test_semantic_filtered_search_equals_exact_search_over_the_filter(
    index: Index, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_embedder import FakeEmbedder

    qvec = FakeEmbedder().embed_queries(["yeast crust honey"])[0]
    keep = lambda c: c.display.startswith("notes/n1")  # noqa: E731
    expected = _exact(tree, qvec, keep, 10)
    exact = index.search("yeast crust honey", k=10, mode="semantic", globs=["notes/n1*"])
    assert [h.chunk.id for h in exact] == expected
    # Short runs are copied out a block at a time: blocks of 3 give the same ranking.
    monkeypatch.setattr(hnsw_search, "GATHER_BLOCK", 3)
    blocks = index.search("yeast crust honey", k=10, mode="semantic", globs=["notes/n1*"])
    assert [(h.chunk.id, h.score) for h in blocks] == [(h.chunk.id, h.score) for h in exact]
    # A subset of long runs of chunks (one file of 40) is scored run by run: the same ranking.
    in_long = lambda c: c.display in ("notes/long.md", "notes/n007.md")  # noqa: E731
    runs = index.search("yeast crust honey", k=10, mode="semantic", paths=["notes/long.md", "notes/n007.md"])
    assert [h.chunk.id for h in runs] == _exact(tree, qvec, in_long, 10)
    # The graph's own filtered search (taken for wide filters) keeps the same promise.
    monkeypatch.setattr(hnsw_search, "EXACT_ALWAYS", 0)
    monkeypatch.setattr(hnsw_search, "GRAPH_US", 0.0)
    with Index.open(tree / ".semsearch", provider=FakeModel()) as fresh:
        graph = fresh.search("yeast crust honey", k=10, mode="semantic", globs=["notes/n1*"])
    assert len(graph) == 10 and all(keep(h.chunk) for h in graph)
    assert len({h.chunk.id for h in graph} & set(expected)) >= 9


def test_a_scoped_search_over_few_chunks_does_not_load_the_graph(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch.vectors import hnsw

    monkeypatch.setattr(hnsw, "EXACT_SLOTS", 0)  # a graph big enough to be searched as one
    with Index.open(tree / ".semsearch", provider=FakeModel()) as index:
        hits = index.search("bread", k=3, mode="semantic", paths=[tree / "code" / "m03.py"])
        assert hits and hits[0].chunk.display == "code/m03.py"
        engine = index._open_searcher().reader._vector_index()
        assert engine is not None and engine._index is None  # answered from the file's vectors
        index.search("bread", k=3, mode="semantic")
        assert engine._index is not None


@pytest.mark.parametrize("filters", [{"paths": ["code"]}, {"changed_within": "30d"}, {"paths": ["notes/long.md"]}])
def test_both_ways_of_restricting_bm25_agree(tree: Path, filters: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch.store import reader as reader_module

    monkeypatch.chdir(tree)
    found = []
    for wide in (0.0, 1.1):  # every subset ranked with the bitmap / every one inside the SQL
        monkeypatch.setattr(reader_module, "WIDE_SUBSET", wide)
        with Index.open(tree / ".semsearch", provider=FakeModel()) as index:
            found.append([(h.chunk.id, round(h.score, 6)) for h in index.search("bread kneaded", k=12, mode="lexical",
                                                                                **filters)])
    assert found[0] == found[1] and len(found[0]) == 12


def test_a_filter_that_matches_nothing_returns_nothing(index: Index) -> None:
    for mode in MODES:
        assert index.search("bread", k=5, mode=mode, globs=["*.nothing"]) == []
        assert index.search("bread", k=5, mode=mode, changed_before="1999-01-01") == []


def test_paths_must_lie_in_the_indexed_folders(index: Index, tree: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="outside the indexed folders") as caught:
        index.search("bread", paths=[tmp_path])
    assert caught.value.options == ("paths",)
    with pytest.raises(InvalidOptionError, match="no such file or folder"):
        index.search("bread", paths=["notes/missing.md"])
    # A folder that holds the roots is fine (everything below it).
    assert len(index.search("bread", k=5, paths=[tree])) == 5


def test_the_catalog_follows_updates(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "small"
    write(root / "a.md", "bread oven\n")
    with Index.create(tmp_path / ".semsearch", provider=FakeModel()) as index:
        index.update([root])
        assert [h.chunk.display for h in index.search("bread", types=["md"])] == ["small/a.md"]
        write(root / "b.py", "bread oven = 1\n")
        index.update()
        assert [h.chunk.display for h in index.search("bread", types=["py"])] == ["small/b.py"]
        (root / "a.md").unlink()
        index.update()
        assert index.search("bread", types=["md"]) == []


def test_evaluate_takes_a_scope(index: Index) -> None:
    scoped = index.evaluate({"q": "bread kneaded"}, {"q": {"long": 1}}, scope=Scope.make(["notes/long.md"]))
    assert scoped.summary()["ndcg@10"] == 1.0


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_tree(tree: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    monkeypatch.chdir(tree)
    return tree


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_query_takes_paths_and_filters(cli_tree: Path) -> None:
    result = run("query", "bread", "code", "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("code/") for line in lines)
    result = run("query", "bread", "-t", "py", "-T", "md", "-g", "!code/m0*", "-l", "-k", "50")
    files = result.stdout.splitlines()
    assert result.exit_code == 0 and files and all(f.startswith("code/m") and not f.startswith("code/m0") for f in files)
    result = run("query", "bread", "--changed-before", "2021-01-01", "--json", "-k", "2")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and all(r["type"] == "text" and r["path"].startswith("old/") for r in records)
    assert all(r["mtime"] == pytest.approx(OLD) for r in records)
    assert run("query", "bread", "--changed-within", "1h", "-g", "old/**").exit_code == 1  # nothing: grep's 1


def test_batch_queries_share_the_filters(cli_tree: Path) -> None:
    result = run("query", "-", "old", "-k", "2", input="bread\noven\n")
    assert result.exit_code == 0, result.output
    hits = [line for line in result.stdout.splitlines() if not line.startswith("#") and line]
    assert len(hits) == 4 and all(line.startswith("old/") for line in hits)


def test_null_and_json_do_not_mix(cli_tree: Path) -> None:
    for command in (["query", "bread"], ["similar", "notes/long.md"]):
        result = run(*command, "-l", "-0", "--json")
        assert result.exit_code == 2 and "-0/--null does not go with --json" in result.stderr


def test_type_list_names_each_type(cli_tree: Path) -> None:
    result = run("query", "--type-list")
    assert result.exit_code == 0
    assert "md: *.md, *.markdown" in result.stdout and "code: py, js" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-t", "nope"], "unknown file type 'nope' for --type (known: md, pdf, word,"),
        (["-t", "rs2"], "unknown file type 'rs2' for --type; did you mean rust or rst? (known: md, "),
        (["-T", "nope"], "for --type-not"),
        (["-g", "[ab"], "bad glob '[ab' in --glob"),
        (["--changed-within", "3x"], "--changed-within: unknown unit 'x'"),
        (["--changed-before", "someday"], "--changed-before: cannot read 'someday'"),
        (["../elsewhere"], "is outside the indexed folders"),
        (["notes/nothing.md"], "no such file or folder"),
    ],
)
def test_bad_filters_exit_2_with_one_line(cli_tree: Path, args: list[str], expected: str) -> None:
    result = run("query", "bread", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_describe_names_the_flags() -> None:
    with pytest.raises(InvalidOptionError) as caught:
        Scope.make(types=["zzz"])
    message = describe(caught.value)
    assert message.startswith("unknown file type 'zzz' for --type (known: md, pdf, ") and message.endswith(", docs)")


def test_a_glob_of_many_stars_is_matched_without_backtracking() -> None:
    # pathspec's regex took ~7 s per path for `**********x` and minutes for `*a*a*a*a*a*b` (issue 23).
    # Not a timing test: each of these would not finish for hours before the fix.
    cases = [
        ("**********x", "docs/" + "a" * 250, False),
        ("**********x", "docs/ax", True),
        ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 255, False),
        ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 40 + "b", True),
        ("**/a/**/a/**/a/**/a/**/a/**/b", "/".join(["a"] * 2000), False),
        ("**/a*/**/a*/**/a*/**/b", "/".join(["a"] * 2000) + "/b", True),
    ]
    for glob, path, expected in cases:
        assert Scope.make(globs=[glob]).glob_matches(path) is expected, (glob, path)
    with pytest.raises(InvalidOptionError, match="over 1000 characters"):
        Scope.make(globs=["*" + "a" * 1000])


def test_globs_match_as_pathspec_does() -> None:
    import pathspec
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from semsearch.globs import tidy_glob

    part = st.text(alphabet="ab*?", min_size=1, max_size=5) | st.sampled_from(["**", "[ab]", "[!a]b"])
    globs = st.lists(part, min_size=1, max_size=4).map("/".join) | st.lists(part, min_size=1, max_size=3).map(
        lambda parts: "/" + "/".join(parts) + "/"
    )
    paths = st.lists(st.text(alphabet="ab", min_size=1, max_size=5), min_size=1, max_size=5).map("/".join)

    @settings(max_examples=3000, deadline=None)
    @given(globs, paths)
    def check(glob: str, path: str) -> None:
        tidy = tidy_glob(glob)
        expected = pathspec.GitIgnoreSpec.from_lines([tidy]).match_file(path)
        assert Scope.make(globs=[glob]).glob_matches(path) is expected, (glob, tidy, path)

    check()


def test_a_hostile_gitignore_does_not_hang_a_walk(tmp_path: Path, fake_model: FakeModel) -> None:
    from semsearch.globs import gitignore_spec
    from semsearch.walk import _any_pattern

    write(tmp_path / "notes" / ".gitignore", "**********x\n*a*a*a*a*a*a*a*a*a*a*a*a*b\n!**/keep*\n")
    write(tmp_path / "notes" / ("a" * 200 + ".md"), "# Long\n\nA file whose name is long.\n")
    write(tmp_path / "notes" / ("a" * 12 + "b"), "ignored\n")
    write(tmp_path / "notes" / ("keep" + "a" * 12 + "b"), "kept: negated\n")
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        summary = index.update([tmp_path / "notes"])
    assert summary.indexed == 2  # the long name and keep...b; a...b is ignored
    assert _any_pattern(gitignore_spec(["*a*a*b", "**/x/**/y/**/z"])) is not None  # still one regex


@pytest.mark.parametrize("glob", ["[z-a]", "ok\\", "a/[b-a]/c"])
def test_a_glob_git_refuses_is_a_one_line_error(glob: str) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        Scope.make(globs=[glob])
    assert describe(caught.value).startswith("bad glob in --glob") and "\n" not in describe(caught.value)
