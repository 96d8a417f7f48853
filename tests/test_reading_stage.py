"""The reading stage of an index run: files that change between the walk and their reading, empty
files, and how the run counts and reports them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FakeModel, write

from semsearch.indexing import IndexEvent, IndexOptions, IndexSummary, WalkChoices, build_index, pipeline
from semsearch.store import IndexReader
from semsearch.walk import FileEntry

LIMIT = 4096


def _build(root: Path, model: FakeModel, events: list[IndexEvent] | None = None, **walk: object) -> IndexSummary:
    options = IndexOptions(roots=[root], index_dir=root / ".semsearch", walk=WalkChoices(**walk))  # type: ignore[arg-type]
    return build_index(options, model, (events if events is not None else []).append)


def _indexed(root: Path) -> set[str]:
    with IndexReader(root / ".semsearch") as reader:
        return {path.name for path, *_ in reader.files()}


def _grow_at_read(monkeypatch: pytest.MonkeyPatch, name: str, size: int) -> list[int]:
    """Make *name* grow to *size* bytes (sparse) just before the reading stage opens it; the
    lengths of what the reading stage returned for it are recorded."""
    original = pipeline._read_file
    lengths: list[int] = []

    def growing(entry: FileEntry, *args: object) -> bytes:
        if entry.path.name == name:
            os.truncate(entry.path, size)
        data = original(entry, *args)  # type: ignore[arg-type]
        if entry.path.name == name:
            lengths.append(len(data))
        return data

    monkeypatch.setattr(pipeline, "_read_file", growing)
    return lengths


def test_a_file_grown_over_the_limit_after_the_walk_is_not_read_whole(
    tmp_path: Path, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "notes.txt", "Lighthouse keepers log the weather every hour.\n")
    write(tmp_path / "growing.log", "Kingfishers nest in river banks.\n")
    read = _grow_at_read(monkeypatch, "growing.log", 64 * 1024 * 1024)
    events: list[IndexEvent] = []
    summary = _build(tmp_path, fake_model, events, max_file_size=LIMIT)
    assert read == []  # refused on its size before any byte was read
    assert summary.skipped["too large"] == 1 and summary.skipped["unreadable"] == 0
    warnings = [e for e in events if e.kind == "warning"]
    assert [(e.path.name if e.path else None, e.text) for e in warnings] == [
        ("growing.log", f"skipped, too large ({64 * 1024 * 1024} bytes)")
    ]
    assert _indexed(tmp_path) == {"notes.txt"}


def test_a_file_growing_while_read_is_read_up_to_the_limit_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may grow after the reading stage looked at its size too: no more than the limit and a
    byte is read."""
    big = write(tmp_path / "growing.log", b"")
    os.truncate(big, 64 * 1024 * 1024)
    real_fstat, real_read = os.fstat, os.read
    read_sizes: list[int] = []

    def stale_fstat(fd: int) -> os.stat_result:
        fields = list(real_fstat(fd))
        fields[6] = 10  # st_size as it was at the walk
        return os.stat_result(fields)

    def counting_read(fd: int, n: int) -> bytes:
        block = real_read(fd, n)
        read_sizes.append(len(block))
        return block

    monkeypatch.setattr(pipeline.os, "fstat", stale_fstat)
    monkeypatch.setattr(pipeline.os, "read", counting_read)
    with pytest.raises(pipeline._TooLarge):
        pipeline._read_file(FileEntry(str(big), 10, 0, "text"), LIMIT)
    assert sum(read_sizes) == LIMIT + 1


def test_an_indexed_file_grown_over_the_limit_is_removed_with_a_warning(
    tmp_path: Path, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "notes.txt", "Lighthouse keepers log the weather every hour.\n")
    write(tmp_path / "growing.log", "Kingfishers nest in river banks.\n")
    _build(tmp_path, fake_model, max_file_size=LIMIT)
    assert _indexed(tmp_path) == {"notes.txt", "growing.log"}
    write(tmp_path / "growing.log", "Kingfishers nest in river banks, and dive for fish.\n")
    _grow_at_read(monkeypatch, "growing.log", LIMIT * 3)
    events: list[IndexEvent] = []
    summary = _build(tmp_path, fake_model, events)
    assert summary.skipped["too large"] == 1 and summary.removed == 1
    assert [e.text for e in events if e.kind == "warning"] == [
        f"now over the size limit ({LIMIT * 3} bytes); removing it from the index"
    ]
    assert _indexed(tmp_path) == {"notes.txt"}


def test_empty_files_are_skipped_quietly_and_counted(tmp_path: Path, fake_model: FakeModel) -> None:
    write(tmp_path / "pkg" / "py.typed", "")
    write(tmp_path / "pkg" / "__init__.py", "\n\n")
    write(tmp_path / "blank.md", "\ufeff  \n\t\n")
    write(tmp_path / "notes.txt", "Lighthouse keepers log the weather every hour.\n")
    write(tmp_path / "tides.txt", "Spring tides follow the full moon.\n")
    events: list[IndexEvent] = []
    summary = _build(tmp_path, fake_model, events)
    assert [e for e in events if e.kind == "warning"] == []
    assert summary.skipped["empty"] == 3 and summary.no_text == 0 and summary.indexed == 2
    assert _indexed(tmp_path) == {"notes.txt", "tides.txt"}
    write(tmp_path / "notes.txt", "")  # emptied: it leaves the index
    summary = _build(tmp_path, fake_model, events)
    assert summary.removed == 1 and summary.skipped["empty"] == 4 and _indexed(tmp_path) == {"tides.txt"}
    assert [e for e in events if e.kind == "warning"] == []


def test_the_summary_line_counts_empty_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel
) -> None:
    from typer.testing import CliRunner

    from semsearch.cli import app

    write(tmp_path / "docs" / "py.typed", "")
    write(tmp_path / "docs" / "guide.md", "# Guide\n\nFeed the walrus twice a day.\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["index", "docs"])
    assert result.exit_code == 0, result.output
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("semsearch: indexed 1 file, 0 unchanged, 0 removed, skipped 1 (1 empty)")
    )
    assert "no text" not in result.stderr and "py.typed" not in result.stderr


def test_messages_name_a_sibling_folder_as_the_user_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel
) -> None:
    from typer.testing import CliRunner

    from semsearch.cli import app

    write(tmp_path / "x" / "seals.md", "Seals sleep on the ice.\n")
    os.symlink("nowhere.md", tmp_path / "x" / "dangling.md")
    (tmp_path / "p").mkdir()
    monkeypatch.chdir(tmp_path / "p")
    result = CliRunner().invoke(app, ["index", "../x"])
    assert result.exit_code == 0, result.output
    assert "semsearch: ../x/dangling.md: skipped, dangling symlink" in result.stderr.splitlines()
    assert str(tmp_path) not in result.stderr
