"""Which files get indexed: ignore files, hidden entries, binary content, size limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write

from semsearch.walk import Skip, WalkOptions, walk


def _walk(roots: list[Path], **options: object) -> tuple[list[str], list[Skip]]:
    skips: list[Skip] = []
    base = roots[0] if roots[0].is_dir() else roots[0].parent
    found = [
        e.path.relative_to(base).as_posix()
        for e in walk(roots, WalkOptions(**options), skips.append)  # type: ignore[arg-type]
    ]
    return found, skips


def test_gitignore_nested_and_semsearchignore(tmp_path: Path) -> None:
    write(tmp_path / ".gitignore", "*.log\nbuild/\n")
    write(tmp_path / "a.md", "alpha")
    write(tmp_path / "debug.log", "log")
    write(tmp_path / "build" / "out.txt", "built")
    write(tmp_path / "sub" / ".gitignore", "!keep.log\nsecret.txt\n")
    write(tmp_path / "sub" / "keep.log", "kept")
    write(tmp_path / "sub" / "secret.txt", "secret")
    write(tmp_path / "sub" / "b.py", "print('b')")
    write(tmp_path / ".semsearchignore", "drafts/\n")
    write(tmp_path / "drafts" / "d.md", "draft")
    found, skips = _walk([tmp_path])
    assert found == ["a.md", "sub/b.py", "sub/keep.log"]
    assert sorted(s.path.name for s in skips if s.reason == "ignored") == ["build", "debug.log", "drafts", "secret.txt"]


def test_hidden_files_skipped_unless_asked(tmp_path: Path) -> None:
    write(tmp_path / ".notes.md", "hidden note")
    write(tmp_path / ".config" / "x.md", "hidden dir")
    write(tmp_path / "visible.md", "visible")
    found, skips = _walk([tmp_path])
    assert found == ["visible.md"]
    assert {s.path.name for s in skips if s.reason == "hidden"} == {".notes.md", ".config"}
    found, _ = _walk([tmp_path], hidden=True)
    assert found == [".config/x.md", ".notes.md", "visible.md"]


def test_binary_detected_by_content_not_extension(tmp_path: Path) -> None:
    write(tmp_path / "data.txt", bytes(range(256)) * 20)  # binary content, text-like name
    write(tmp_path / "script", "#!/bin/sh\necho hello\n")  # text without an extension
    write(tmp_path / "image.png", "looks like text but is a PNG by name")
    write(tmp_path / "utf16.txt", "hello".encode("utf-16"))  # BOM + NULs: still text
    found, skips = _walk([tmp_path])
    assert found == ["script", "utf16.txt"]
    assert {s.path.name for s in skips if s.reason == "binary"} == {"data.txt", "image.png"}


def test_size_limit(tmp_path: Path) -> None:
    write(tmp_path / "small.md", "x" * 100)
    write(tmp_path / "big.md", "x" * 5000)
    found, skips = _walk([tmp_path], max_file_size=1000)
    assert found == ["small.md"]
    assert [(s.path.name, s.reason) for s in skips] == [("big.md", "too large")]


def test_explicit_file_is_taken_even_if_ignored(tmp_path: Path) -> None:
    write(tmp_path / ".gitignore", "*.md\n")
    target = write(tmp_path / "x.md", "named on the command line")
    found, _ = _walk([target])
    assert found == ["x.md"]


def test_default_noise_ignored_and_can_be_reenabled(tmp_path: Path) -> None:
    write(tmp_path / "logo.svg", "<svg></svg>")
    write(tmp_path / "app.min.js", "var a=1")
    write(tmp_path / "doc.md", "doc")
    found, _ = _walk([tmp_path])
    assert found == ["doc.md"]
    write(tmp_path / ".semsearchignore", "!*.svg\n")
    found, _ = _walk([tmp_path])
    assert found == ["doc.md", "logo.svg"]


def test_the_scan_keys_are_the_stored_path_keys(tmp_path: Path) -> None:
    import os

    from semsearch.store import path_key, path_keys

    index_dir = tmp_path / "proj" / ".semsearch"
    key_of = path_keys(index_dir)
    odd = os.fsdecode(b"caf\xe9.txt")  # not UTF-8: kept as its bytes
    for path in (
        tmp_path / "proj",
        tmp_path / "proj" / "a.md",
        tmp_path / "proj" / "deep" / "b c.md",
        tmp_path / "proj" / odd,
        tmp_path / "elsewhere" / "x.md",
        tmp_path / "projection" / "y.md",  # shares the project's name as a prefix, not its folder
    ):
        assert key_of(str(path)) == path_key(index_dir, path), path
    assert key_of(str(tmp_path / "proj")) == b"."
    assert key_of(str(tmp_path / "proj" / odd)) == b"caf\xe9.txt"
    assert key_of(str(tmp_path / "projection" / "y.md")) == os.fsencode(str(tmp_path / "projection" / "y.md"))


def test_overlapping_roots_are_walked_once_without_a_symlink_loop(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    write(tmp_path / "docs" / "sub" / "b.md", "beta")
    write(tmp_path / "docs" / "sub" / "deeper" / "c.md", "gamma")
    for roots in (["docs", "docs/sub"], ["docs/sub", "docs"], ["docs", "docs/sub/", "./docs", "docs/sub/deeper"]):
        skips: list[Skip] = []
        found = [
            e.path.relative_to(tmp_path).as_posix()
            for e in walk([tmp_path / r for r in roots], WalkOptions(), skips.append)
        ]
        assert sorted(found) == ["docs/a.md", "docs/sub/b.md", "docs/sub/deeper/c.md"], roots
        assert len(found) == 3 and skips == [], (roots, skips)


def test_a_nested_root_keeps_the_ignore_rules_of_the_root_around_it(tmp_path: Path) -> None:
    write(tmp_path / "docs" / ".gitignore", "*.log\n")
    write(tmp_path / "docs" / "sub" / "b.md", "beta")
    write(tmp_path / "docs" / "sub" / "debug.log", "noise")
    write(tmp_path / "docs" / ".notes" / "n.md", "a hidden folder named on the command line is taken")
    skips: list[Skip] = []
    roots = [tmp_path / "docs", tmp_path / "docs" / "sub", tmp_path / "docs" / ".notes"]
    found = sorted(e.path.relative_to(tmp_path).as_posix() for e in walk(roots, WalkOptions(), skips.append))
    assert found == ["docs/.notes/n.md", "docs/sub/b.md"]
    assert [(s.path.name, s.reason) for s in skips] == [(".gitignore", "hidden"), ("debug.log", "ignored")]


def test_a_link_back_to_a_root_is_still_a_symlink_loop(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "sub" / "b.md", "beta")
    os.symlink("..", tmp_path / "docs" / "sub" / "up")
    skips: list[Skip] = []
    found = list(walk([tmp_path / "docs", tmp_path / "docs" / "sub"], WalkOptions(), skips.append))
    assert len(found) == 1 and [(s.path.name, s.reason) for s in skips] == [("up", "symlink loop")]


def test_a_fifo_named_and_inside_a_root_is_counted_once_and_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    fifo = tmp_path / "docs" / "pipe"
    os.mkfifo(fifo)
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: object, *args: object, **kw: object) -> int:
        opened.append(os.fsdecode(path))  # type: ignore[arg-type]
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    for roots in ([fifo, tmp_path / "docs"], [tmp_path / "docs", fifo], [fifo, fifo]):
        skips: list[Skip] = []
        found = [e.path.name for e in walk(roots, WalkOptions(), skips.append)]
        assert found == (["a.md"] if len(set(roots)) == 2 else [])
        assert [(s.path.name, s.reason, s.warn) for s in skips] == [("pipe", "not a regular file", True)], roots
    assert str(fifo) not in opened


def test_an_ignore_file_with_lines_git_refuses_is_read_without_them(tmp_path: Path, fake_model) -> None:
    """`ok\\` (a trailing backslash) and `[z-a]` are lines git accepts in an ignore file and leaves
    out; they crashed every walk (a traceback from index, status and watchers)."""
    from semsearch import Index

    write(tmp_path / "n" / ".gitignore", "ok\\\n[z-a]\n*.log\n")
    write(tmp_path / "n" / ".semsearchignore", "[z-a]\nskip.md\n")
    write(tmp_path / "n" / "a.txt", "Kingfishers dive.\n")
    write(tmp_path / "n" / "b.log", "a log line\n")
    write(tmp_path / "n" / "skip.md", "# Skipped\n\nNot indexed.\n")
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        summary = index.update([tmp_path / "n"])
        assert summary.indexed == 1 and summary.skipped["ignored"] == 2
        assert index.status().changed_since == 0
