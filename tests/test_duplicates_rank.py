"""`duplicates` ranks groups by text per file: a licence notice repeated in many files does not
bury a page copied between two (issue 23: 67 passages of one licence notice came first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch import Index
from semsearch.cli import app

LICENCE = (
    "Copyright 2024 The Proposals Authors. Licensed under the Apache License, Version 2.0; "
    "you may not use this file except in compliance with the License."
)
TOPICS = [
    "heron egret marsh wading shallow",
    "bread dough flour yeast crust",
    "rust borrow checker lifetime crate",
    "tide moon ocean shore current",
    "violin bow string rosin bridge",
    "glacier moraine ice crevasse valley",
    "comet orbit tail nucleus perihelion",
    "cactus spine desert succulent bloom",
    "lantern wick oil flame glass",
    "harbour pier crane freight dock",
    "orchard apple pear graft blossom",
    "quarry granite slab chisel mason",
]
COPIED = (
    "The committee proposes that every reservoir keeps a spillway gauge, read at dawn and dusk, "
    "and that the readings are posted at the lock keeper's cottage for the boatmen to see. "
    "A gauge that reads above the red line closes the upper lock until the level falls again, "
    "and the keeper notes the hour and the reading in the flood book kept for the inspectors."
)


def _proposal(n: int, topic: str, extra: str = "") -> str:
    words = topic.split()
    body = "\n\n".join(
        " ".join(words[(j + k) % len(words)] for k in range(5)) + f" point{n}x{j} remark{n}y{j}." for j in range(4)
    )
    return f"{LICENCE}\n\n# Proposal {n}\n\n{body}\n\n{extra}"


@pytest.fixture
def proposals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for n, topic in enumerate(TOPICS):
        extra = COPIED + "\n" if n in (3, 8) else ""
        write(tmp_path / "proposals" / f"p{n:02d}.md", _proposal(n, topic, extra))
    with Index.create(tmp_path / ".semsearch", provider=FakeModel(), chunk_tokens=40, overlap_tokens=0) as index:
        index.update([tmp_path / "proposals"])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_copied_passage_comes_before_boilerplate_in_many_files(proposals: Path) -> None:
    with Index.open(proposals / ".semsearch", provider=FakeModel()) as index:
        groups = index.duplicates().groups
    licence = [g for g in groups if "Apache License" in g.chunks[0].text]
    copied = [g for g in groups if "gauge" in g.chunks[0].text]
    assert len(licence) == 1 and copied
    assert licence[0].files == len(TOPICS) and {g.files for g in copied} == {2}
    assert groups[: len(copied)] == copied
    assert groups[-1] == licence[0]  # the largest group, yet last


def test_the_group_line_says_how_many_files(proposals: Path, fake_cli: FakeModel) -> None:
    result = CliRunner().invoke(app, ["duplicates"])
    assert result.exit_code == 0, result.output
    headings = [line for line in result.stdout.splitlines() if line.startswith("# group")]
    assert headings[0].startswith("# group 1: 2 passages in 2 files, cosine ")
    assert headings[-1].startswith(f"# group {len(headings)}: {len(TOPICS)} passages in {len(TOPICS)} files, ")
    records = [json.loads(line) for line in CliRunner().invoke(app, ["duplicates", "--json"]).stdout.splitlines()]
    assert records[0]["files"] == 2 and records[-1]["files"] == len(TOPICS)
