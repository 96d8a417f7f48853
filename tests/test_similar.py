"""`similar` (passages like a line, a page or a file, from the stored vectors) and `duplicates`
(near-copies across files, through the vector index's neighbours), on the real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeModel, make_pdf, write
from typer.testing import CliRunner

from semsearch import Index, InvalidOptionError
from semsearch.cli import app
from semsearch.duplicates import DEFAULT_MIN_SCORE, MIN_EXACT_CHARS, TEXT_CHECK_FLOOR, _weight
from semsearch.similar import Target

TOPICS = {
    "herons": "heron egret wading bird shallow water fish marsh",
    "bread": "bread dough flour yeast oven crust knead bake",
    "rust": "rust borrow checker ownership lifetime compiler crate",
    "tides": "tide moon ocean shore wave current coast",
}


def _page(topic: str, n: int, extra: str = "") -> str:
    words = TOPICS[topic].split()
    lines = [f"# {topic.title()} {n}", ""]
    for j in range(6):
        lines.append(" ".join(words[(j + k) % len(words)] for k in range(5)) + f" {extra} part{n}x{j}.")
        lines.append("")
    return "\n".join(lines)


class NoModel(FakeModel):
    """A provider whose query model must never be loaded."""

    def query_embedder(self):  # type: ignore[override]
        raise AssertionError("similar/duplicates loaded the query model")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for topic in TOPICS:
        for n in range(5):
            write(tmp_path / "docs" / topic / f"{topic}{n}.md", _page(topic, n))
    make_pdf(
        tmp_path / "docs" / "paper.pdf",
        ["Ocean tides follow the moon and the shore.", "Bread needs flour, yeast and a hot oven.", "Rust crates."],
    )
    with Index.create(tmp_path / ".semsearch", provider=FakeModel(), chunk_tokens=24, overlap_tokens=4) as index:
        index.update([tmp_path / "docs"])
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def index(tree: Path) -> Iterator[Index]:
    with Index.open(tree / ".semsearch", provider=NoModel()) as opened:
        yield opened


def test_targets_are_read_as_query_prints_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Target.parse("a.md:12") == Target(tmp_path / "a.md", line=12)
    assert Target.parse("p.pdf#3") == Target(tmp_path / "p.pdf", page=3)
    assert Target.parse("a.md") == Target(tmp_path / "a.md")
    write(tmp_path / "odd:7", "a file whose name ends like a location")
    assert Target.parse("odd:7") == Target(tmp_path / "odd:7")  # an existing file is taken whole
    with pytest.raises(InvalidOptionError, match="count from 1"):
        Target.parse("a.md:0")


def test_similar_to_a_line_finds_its_topic_and_leaves_its_file_out(index: Index) -> None:
    hits = index.similar("docs/herons/herons0.md:5", k=6)
    assert len(hits) == 6
    assert all(h.chunk.display.startswith("docs/herons/") for h in hits)
    assert all(h.chunk.display != "docs/herons/herons0.md" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with_self = index.similar("docs/herons/herons0.md", line=5, k=30, include_self=True)
    assert any(h.chunk.display == "docs/herons/herons0.md" for h in with_self)
    start = index.similar("docs/herons/herons0.md:5", k=200, include_self=True)
    held = [
        c
        for c in index._open_searcher().reader.file_chunks(Path("docs/herons/herons0.md").resolve()) or []
        if c.line_start <= 5 <= c.line_end
    ]
    assert held and all(h.chunk.id not in {c.id for c in held[:1]} for h in start)  # the start is not a hit


def test_similar_to_a_whole_file_ranks_files_of_its_topic_first(index: Index) -> None:
    for method in ("mean", "max"):
        files = index.similar("docs/bread/bread2.md", k=4, files_only=True, method=method)
        assert [h.chunk.display.split("/")[1] for h in files] == ["bread"] * 4, method
        assert "docs/bread/bread2.md" not in {h.chunk.display for h in files}


def test_similar_to_a_pdf_page(index: Index) -> None:
    by_page = index.similar("docs/paper.pdf#2", k=3)
    by_colon = index.similar("docs/paper.pdf:2", k=3)  # a PDF hit's number is its page
    assert [h.chunk.id for h in by_page] == [h.chunk.id for h in by_colon]
    assert by_page and all(h.chunk.display.startswith("docs/bread/") for h in by_page)
    with pytest.raises(InvalidOptionError, match="no page 9"):
        index.similar("docs/paper.pdf#9")


def test_similar_takes_the_filters_of_query(index: Index) -> None:
    hits = index.similar("docs/tides/tides1.md:3", k=5, paths=["docs/rust"])
    assert len(hits) == 5 and all(h.chunk.display.startswith("docs/rust/") for h in hits)
    assert index.similar("docs/tides/tides1.md:3", k=5, types=["pdf"])[0].chunk.display == "docs/paper.pdf"


def test_similar_names_what_is_not_indexed(index: Index, tree: Path) -> None:
    with pytest.raises(InvalidOptionError, match=r"nothing\.md is not in the index") as caught:
        index.similar("docs/nothing.md:3")
    assert caught.value.path == tree / "docs" / "nothing.md"
    with pytest.raises(InvalidOptionError, match="no line 999"):
        index.similar("docs/tides/tides1.md:999")


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_similar_on_the_command_line(tree: Path, fake_cli: FakeModel) -> None:
    result = run("similar", "docs/rust/rust3.md:3", "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("docs/rust/rust") for line in lines)
    assert all(line.split(":")[2].startswith("0.") for line in lines)  # PATH:LINE:SCORE:SNIPPET
    result = run("similar", "docs/rust/rust3.md", "--json", "-k", "2")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and records[0]["query"].endswith("docs/rust/rust3.md") and records[0]["type"] == "md"
    result = run("similar", "docs/rust/rust3.md", "-l", "-t", "pdf")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["docs/paper.pdf"]
    missing = run("similar", "docs/gone.md:1")
    assert missing.exit_code == 2 and "gone.md is not in the index" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert run("similar", "docs/rust/rust3.md", "-g", "*.none").exit_code == 1  # nothing: grep's 1


# -- duplicates ------------------------------------------------------------------------------


@pytest.fixture
def copies(tree: Path) -> Path:
    """Planted copies: one exact, one lightly edited, one with a paragraph dropped."""
    docs = tree / "docs"
    write(docs / "copies" / "herons-copy.md", (docs / "herons" / "herons1.md").read_text())
    edited = (docs / "bread" / "bread3.md").read_text().replace("oven", "stove", 1).replace("part3x2", "segment")
    write(docs / "copies" / "bread-edited.md", edited)
    paragraphs = (docs / "rust" / "rust2.md").read_text().split("\n\n")
    write(docs / "copies" / "rust-trimmed.md", "\n\n".join(paragraphs[:3] + paragraphs[4:]))
    # A section moved into a page of another title: embedded with that title, cut elsewhere.
    section = (docs / "rust" / "rust4.md").read_text().split("\n\n")[1:]
    write(docs / "tides" / "tides9.md", _page("tides", 9) + "\n\n" + "\n\n".join(section) + "\n")
    # Source code is embedded with its file name in front: a renamed copy has other vectors.
    code = "".join(f"def step_{i}(value):\n    return value * {i} + {i * i}  # scale the value\n\n" for i in range(12))
    write(docs / "src" / "scaling.py", code)
    write(docs / "copies" / "renamed_module.py", code)
    with Index.open(tree / ".semsearch", provider=FakeModel()) as index:
        index.update()
    return tree


def test_duplicates_finds_planted_copies(copies: Path) -> None:
    with Index.open(copies / ".semsearch", provider=NoModel()) as index:
        found = index.duplicates()
    pairs = {frozenset((p.a.name, p.b.name)) for p in found.files}
    assert frozenset(("herons1.md", "herons-copy.md")) in pairs
    assert frozenset(("bread3.md", "bread-edited.md")) in pairs
    assert frozenset(("rust2.md", "rust-trimmed.md")) in pairs
    assert frozenset(("rust4.md", "tides9.md")) in pairs  # by their shared words
    renamed = next(p for p in found.files if {p.a.name, p.b.name} == {"scaling.py", "renamed_module.py"})
    with Index.open(copies / ".semsearch", provider=NoModel()) as index:
        long_enough = [
            c
            for c in index._open_searcher().reader.file_chunks(renamed.a) or []
            if len(c.text.strip()) >= MIN_EXACT_CHARS
        ]
    assert renamed.shared >= len(long_enough) >= 10  # found by their text, whatever the vectors
    assert str(renamed.a) < str(renamed.b)  # a pair is named in path order
    exact = next(p for p in found.files if {p.a.name, p.b.name} == {"herons1.md", "herons-copy.md"})
    assert exact.share == 1.0 and exact.score == pytest.approx(1.0, abs=1e-5)
    assert found.files[0].share >= found.files[-1].share  # most shared first
    assert all(len(g.chunks) >= 2 for g in found.groups)
    weights = [_weight(g) for g in found.groups]
    assert weights == sorted(weights, reverse=True)  # the most text per file first
    for group in found.groups:
        assert len({c.path for c in group.chunks}) >= 2  # copies across files, not within one
        assert group.min_score >= TEXT_CHECK_FLOOR  # under min_score only when their words agree


def test_duplicates_reports_nothing_without_copies(tree: Path) -> None:
    with Index.open(tree / ".semsearch", provider=NoModel()) as index:
        found = index.duplicates()
        assert found.groups == [] and found.files == [] and found.chunks_checked > 50
        assert index.duplicates(min_score=0.3).groups  # a low threshold joins pages of one topic


def test_duplicates_takes_a_scope(copies: Path) -> None:
    with Index.open(copies / ".semsearch", provider=NoModel()) as index:
        found = index.duplicates(paths=["docs/herons", "docs/copies"])
        names = {frozenset((p.a.name, p.b.name)) for p in found.files}
        assert frozenset(("herons1.md", "herons-copy.md")) in names
        assert all("rust2.md" not in n and "bread3.md" not in n for n in names)
        with pytest.raises(InvalidOptionError, match="min_score must be between"):
            index.duplicates(min_score=2)


def test_duplicates_on_the_command_line(copies: Path, fake_cli: FakeModel) -> None:
    result = run("duplicates")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# group 1: ")
    member = next(line for line in result.stdout.splitlines() if line and not line.startswith("#"))
    path, line, score, _snippet = member.split(":", 3)
    assert path.startswith("docs/") and int(line) >= 1 and float(score) >= DEFAULT_MIN_SCORE
    pairs = run("duplicates", "-l").stdout.splitlines()
    assert "docs/herons/herons1.md\tdocs/copies/herons-copy.md" in pairs or (
        "docs/copies/herons-copy.md\tdocs/herons/herons1.md" in pairs
    )
    groups = [json.loads(x) for x in run("duplicates", "--json").stdout.splitlines()]
    assert groups[0]["group"] == 1 and groups[0]["size"] == len(groups[0]["passages"]) >= 2
    assert {"path", "line", "text", "mtime", "type"} <= set(groups[0]["passages"][0])
    files = [json.loads(x) for x in run("duplicates", "-l", "--json").stdout.splitlines()]
    assert all(set(f) >= {"files", "shared", "chunks", "share", "score"} for f in files)
    assert run("duplicates", "docs/rust", "--min-score", "0.999").exit_code == 1
    bad = run("duplicates", "--min-score", "7")
    assert bad.exit_code == 2 and "--min-score must be between -1 and 1" in bad.stderr
