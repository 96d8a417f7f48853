"""Damaged index folders: every command answers with exit 2 and one line naming the file and the
remedy, never a traceback or a native crash; `semsearch index --rebuild` recovers."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch.cli import app
from semsearch.store import FORMAT_VERSION

REMEDY = "semsearch index --rebuild"
REPAIR = "run `semsearch index` to repair it"  # a vector file: written again from the stored vectors


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    for i in range(12):
        write(tmp_path / "docs" / f"note{i}.txt", f"Note {i} about rivers, engines and violin lessons number {i}.\n" * 8)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["index", "docs", "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def only(index: Path, prefix: str, suffix: str = "") -> Path:
    """The one file of *index* named *prefix*...*suffix* (without *suffix*: a vector file's sketch apart)."""
    names = [p for p in index.iterdir() if p.name.startswith(prefix) and not p.name.endswith(("-wal", "-shm"))]
    (found,) = [p for p in names if p.name.endswith(suffix)] if suffix else [
        p for p in names if not p.name.endswith(".sketch")
    ]
    return found


def garble(path: Path, at: float = 0.5, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, min(len(data), start + n)):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def foreign(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def foreign_sqlite(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.close()


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "garbled": garble,
    "foreign": foreign,
    "empty": empty,
}


def assert_clean_error(result, name: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("semsearch: error:"), lines[0]
    assert name in lines[0], lines[0]
    if name.startswith("vectors-"):
        assert REPAIR in lines[0], lines[0]
    else:
        assert REMEDY in lines[0] or "upgrade semsearch" in lines[0], lines[0]
    assert "Traceback" not in result.output


def assert_recovers(project: Path, *paths: str) -> None:
    """`index --rebuild` makes a working index again (given the folders when the damaged
    database was the only record of them)."""
    result = run("index", *paths, "--rebuild", "-q")
    assert result.exit_code == 0, result.output
    result = run("query", "violin lessons")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("target", ["manifest.json", "meta-", "vectors-"])
def test_damaged_file_gives_one_line_and_remedy(project: Path, target: str, damage: str) -> None:
    index = project / ".semsearch"
    path = only(index, target)
    if target == "meta-" and damage == "garbled":
        garble(path, at=0.0, n=100)  # the header: SQLite would otherwise read around the damage
    else:
        DAMAGE[damage](path)
    for command in (["query", "violin lessons"], ["query", "violin", "--mode", "hybrid", "--json"], ["status"]):
        result = run(*command)
        if command[0] == "status" and target == "vectors-":
            assert result.exit_code == 0  # status does not read the vectors
            continue
        assert_clean_error(result, path.name)
    if target == "vectors-":  # --verify's advice is the repair, as the query's
        verified = run("status", "--verify")
        assert verified.exit_code == 2 and "run `semsearch index` to repair it" in verified.stderr.splitlines()[-1]
    result = run("index", "-q")
    if target != "vectors-":
        assert_clean_error(result, path.name)
    else:  # repaired from the vectors the database keeps, without --rebuild
        assert result.exit_code == 0, result.output
        assert run("query", "violin lessons").exit_code == 0
        assert run("status", "--verify").exit_code == 0
    assert_recovers(project, *(["docs"] if target == "meta-" else []))


def test_garbled_pages_inside_the_database(project: Path) -> None:
    """Damage past the header shows up only when a query reads those pages."""
    path = only(project / ".semsearch", "meta-")
    size = path.stat().st_size
    data = bytearray(path.read_bytes())
    for offset in range(4096, size, 4096):  # every page but the first
        data[offset + 8:offset + 4000] = os.urandom(3992)
    path.write_bytes(bytes(data))
    for mode in ("semantic", "lexical", "hybrid"):
        result = run("query", "violin lessons", "--mode", mode)
        assert_clean_error(result, path.name)
    assert_recovers(project, "docs")


def test_foreign_sqlite_database(project: Path) -> None:
    path = only(project / ".semsearch", "meta-")
    foreign_sqlite(path)
    assert_clean_error(run("query", "violin"), path.name)
    assert_clean_error(run("status"), path.name)
    assert_recovers(project, "docs")


def test_missing_files(project: Path) -> None:
    index = project / ".semsearch"
    vectors = only(index, "vectors-")
    vectors.unlink()
    assert_clean_error(run("query", "violin"), vectors.name)
    assert_recovers(project)
    db = only(index, "meta-")
    db.unlink()
    assert_clean_error(run("query", "violin"), db.name)
    assert_recovers(project, "docs")


@pytest.mark.parametrize("damage", [*sorted(DAMAGE), "missing"])
def test_a_damaged_sketch_costs_only_its_shortcut(project: Path, damage: str) -> None:
    """A vector file's sketch only speeds up scoped searches: damaged or gone, every answer is
    the same, `status --verify` names it in one line, and the next rebuild writes it again."""
    index = project / ".semsearch"
    before = [run("query", "violin lessons", "--json").stdout, run("query", "rivers", "--glob", "*.txt").stdout]
    path = only(index, "vectors-", ".sketch")
    if damage == "missing":
        path.unlink()
    else:
        DAMAGE[damage](path)
    assert [run("query", "violin lessons", "--json").stdout, run("query", "rivers", "--glob", "*.txt").stdout] == before
    result = run("status", "--verify")
    assert result.exit_code != 0
    named = [line for line in result.output.splitlines() if path.name in line]
    assert len(named) == 1 and ("missing" in named[0] or "damaged" in named[0] or "checksum" in named[0]), result.output
    assert run("index", "-q").exit_code == 0
    assert_recovers(project)
    assert only(index, "vectors-", ".sketch").is_file()
    assert run("status", "--verify").exit_code == 0


def test_garbage_wal_and_building_files_are_harmless(project: Path) -> None:
    index = project / ".semsearch"
    db = only(index, "meta-")
    write(index / f"{db.name}-wal", os.urandom(10000))
    write(index / "building.json", b"\x00garbage{")
    write(index / "lock", os.urandom(100))
    result = run("query", "violin lessons")
    assert result.exit_code == 0, result.output
    result = run("index", "-q")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("manifest_text", [
    "[]", '"text"', "{}", '{"format": "semsearch-index"}', '{"format": "semsearch-index", "format_version": "1"}',
    '{"format": "semsearch-index", "format_version": 1, "epoch": 1}',
    '{"format": "semsearch-index", "format_version": 1, "epoch": 1, "database": "../../etc/passwd"}',
    "\ufeff{", "null",
])
def test_odd_manifests(project: Path, manifest_text: str) -> None:
    manifest = project / ".semsearch" / "manifest.json"
    if "passwd" in manifest_text:
        data = json.loads(manifest.read_text())
        data["database"] = "../../etc/passwd"
        manifest_text = json.dumps(data)
    manifest.write_text(manifest_text)
    assert_clean_error(run("query", "violin"), "manifest.json")
    assert_recovers(project)


def test_newer_format_version_is_refused_clearly(project: Path) -> None:
    manifest = project / ".semsearch" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    manifest.write_text(json.dumps(data))
    for command in (["query", "violin"], ["status"], ["index", "-q"]):
        result = run(*command)
        assert_clean_error(result, "manifest.json")
        assert "newer" in result.stderr and "upgrade semsearch" in result.stderr
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION + 1  # left alone
    assert_recovers(project)


def test_older_format_version_is_rebuilt_by_index(project: Path) -> None:
    manifest = project / ".semsearch" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 1  # older than the in-place upgrades reach (UPGRADABLE_FORMATS)
    manifest.write_text(json.dumps(data))
    result = run("query", "violin")
    assert_clean_error(result, "manifest.json")
    assert "old format" in result.stderr
    result = run("index")  # no path: the roots come from the old database
    assert result.exit_code == 0, result.output
    assert "older version of semsearch" in result.stderr
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION
    result = run("query", "violin lessons", "--json", "-k", "1")
    assert result.exit_code == 0 and "docs/note" in json.loads(result.stdout)["path"]


def test_manifest_that_is_a_directory_or_unreadable(project: Path) -> None:
    manifest = project / ".semsearch" / "manifest.json"
    manifest.unlink()
    manifest.mkdir()
    result = run("query", "violin", "--index", ".semsearch")
    assert result.exit_code == 2 and "manifest.json" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    manifest.rmdir()
