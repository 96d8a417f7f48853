"""The index folder's life: what counts as an index, what semsearch may delete, damage that is not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch import Index
from semsearch.api import find_index
from semsearch.cli import app
from semsearch.store import TAG, discard_empty_index, is_index_dir, is_own_file

REMEDY = "run `semsearch index --rebuild`"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below *folder*: its content and modification time."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def one_line_error(result, *words: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semsearch: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    write(tmp_path / "docs" / "violin.md", "# Violin\n\nViolin lessons start with the bow hold.\n")
    write(tmp_path / "docs" / "rivers.txt", "Rivers carry silt to the delta.\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- point 1: a user's folder is never taken for an index --------------------------------------


def test_a_folder_of_the_users_files_is_refused_and_left_untouched(project: Path) -> None:
    """The audit's steps: a web app's folder with a manifest.json and files named like the index's."""
    folder = project / "app"
    write(folder / "manifest.json", '{"name":"PWA"}\n')
    write(folder / "meta-analysis.csv", "1\n")
    write(folder / "vectors-2024.csv", "2\n")
    write(folder / "lock", "my own lock file\n")
    before = snapshot(folder)
    assert not is_index_dir(folder)
    for extra in ([], ["--rebuild"]):
        line = one_line_error(run("index", "docs", "--index", "app", *extra), "app", "not an index", "--index")
        assert "--rebuild" not in line  # no advice that would overwrite the folder
        assert snapshot(folder) == before
    for command in (["query", "violin"], ["status"], ["status", "--verify"], ["similar", "docs/violin.md"]):
        line = one_line_error(run(*command, "--index", "app"), "no index at")
        assert "--rebuild" not in line
    assert snapshot(folder) == before and sorted(os.listdir(folder)) == sorted(before)


def test_a_project_with_its_own_manifest_stands_for_its_index(project: Path) -> None:
    """The README's MCP form, `--index /path/to/project`, for a project with a manifest.json."""
    write(project / "manifest.json", '{"name":"PWA", "start_url": "/"}\n')
    assert run("index", "docs", "-q").exit_code == 0
    assert is_index_dir(project / ".semsearch") and not is_index_dir(project)
    assert find_index(project) == project / ".semsearch"  # what `semsearch mcp --index PROJECT` opens
    result = run("query", "violin bow", "--index", str(project), "-k", "1", "-l")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "docs/violin.md"
    assert run("status", "--index", str(project)).exit_code == 0
    # Writing is never done in the project folder: refused, with the index's place.
    before = snapshot(project)
    one_line_error(run("index", "--index", str(project), "-q"), f"(its index is {project / '.semsearch'})")
    assert snapshot(project) == before
    assert json.loads((project / "manifest.json").read_text()) == {"name": "PWA", "start_url": "/"}


def test_cleanups_delete_only_semsearchs_own_files(project: Path) -> None:
    """Files someone else put in an index folder outlive every rebuild, resume and cleanup."""
    assert run("index", "docs", "-q").exit_code == 0
    index = project / ".semsearch"
    strays = {
        "meta-analysis.csv": "1\n",
        "vectors-2024.csv": "2\n",
        "meta-1.sqlite.bak": "3\n",
        "vectors-1-1.hnsw.orig": "4\n",
        "notes.txt": "5\n",
    }
    for name, text in strays.items():
        write(index / name, text)
    (index / "meta-7.sqlite").mkdir()  # a folder of that name is not semsearch's file either
    for args in (["--rebuild"], ["--chunk-tokens", "64"], []):
        result = run("index", "-q", *args)
        assert result.exit_code == 0, result.output
        for name, text in strays.items():
            assert (index / name).read_text() == text
        assert (index / "meta-7.sqlite").is_dir()
    databases = sorted(p.name for p in index.glob("meta-*.sqlite") if p.is_file())
    assert len(databases) == 1  # the old builds' own files went
    assert run("query", "violin", "-l", "-k", "1").stdout.strip() == "docs/violin.md"


def test_own_file_names() -> None:
    for name in (
        "manifest.json", "building.json", "lock", TAG, "ocr-cache.sqlite", "ocr-cache.sqlite-wal",
        "meta-3.sqlite", "meta-3.sqlite-wal", "meta-3.sqlite-shm", "meta-12.sqlite-journal",
        "vectors-3-7.hnsw", "vectors-3-7.hnsw.sketch", "vectors-3-8-delta.hnsw", "vectors-3-8-delta.hnsw.sketch",
        ".manifest.json.tmp-123", ".vectors-3-7.hnsw.tmp", ".vectors-3-7.hnsw.sketch.tmp-9",
    ):  # fmt: skip
        assert is_own_file(name), name
    for name in (
        "meta-analysis.csv", "vectors-2024.csv", "meta-1.sqlite.bak", "meta-.sqlite", "vectors-1.hnsw",
        "manifest.json.bak", "notes.txt", "lock.txt", ".manifest.json.tmp-x", "vectors-1-1.hnsw.orig",
    ):  # fmt: skip
        assert not is_own_file(name), name


def test_a_failed_first_run_removes_only_its_own_files(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    model = FakeModel()

    def failing(texts: object) -> object:
        raise KeyboardInterrupt

    model.embedder_instance.embed_documents = failing  # type: ignore[method-assign]
    write(tmp_path / "docs" / "a.md", "# A\n\nSome text to embed.\n")
    with Index.create(folder, provider=model) as index, pytest.raises(KeyboardInterrupt):
        index.update([tmp_path / "docs"])
    assert not folder.exists()  # a folder it made and stored nothing in is gone
    # A file of the user's that appeared in the folder meanwhile stays, and so does the folder.
    write(folder / TAG, b"semsearch-index\n")
    write(folder / "meta-1.sqlite", b"")
    write(folder / "notes.txt", "mine\n")
    discard_empty_index(folder)
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_an_index_from_before_the_tag_is_recognised_and_tagged(project: Path) -> None:
    assert run("index", "docs", "-q").exit_code == 0
    index = project / ".semsearch"
    (index / TAG).unlink()
    assert is_index_dir(index)  # by its manifest's content
    assert run("query", "violin", "-l", "-k", "1").stdout.strip() == "docs/violin.md"
    assert run("index", "-q").exit_code == 0
    assert (index / TAG).read_bytes().startswith(b"semsearch-index\n")
    # Its manifest damaged too: its database still says whose folder it is, and --rebuild works.
    (index / TAG).unlink()
    (index / "manifest.json").write_text("garbage")
    assert is_index_dir(index)
    one_line_error(run("index", "-q"), "manifest.json", REMEDY)
    result = run("index", "--rebuild", "-q")
    assert result.exit_code == 0, result.output
    assert run("query", "violin", "-l", "-k", "1").stdout.strip() == "docs/violin.md"


# -- point 6: a missing database is damage, never a new empty index ----------------------------


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_missing_database_is_reported_never_replaced_by_an_empty_one(project: Path, damage: str) -> None:
    assert run("index", "docs", "-q").exit_code == 0
    index = project / ".semsearch"
    (db,) = [p for p in index.glob("meta-*.sqlite")]
    if damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    for _ in range(2):  # the first failed run must not turn the damage into a healthy empty index
        one_line_error(run("index", "-q"), db.name, REMEDY)
        assert os.path.exists(db) == (damage == "empty")
        assert not db.exists() or db.stat().st_size == 0
        one_line_error(run("query", "violin"), db.name, REMEDY)
        one_line_error(run("status", "--verify"), db.name, REMEDY)
    # The remedy as said: no folder to give (their list outlived the database, in roots.json).
    result = run("index", "--rebuild", "-q")
    assert result.exit_code == 0, result.output
    assert run("query", "violin", "-l", "-k", "1").stdout.strip() == "docs/violin.md"
    assert run("status", "--verify").exit_code == 0
    assert "roots    docs" in run("status").stdout


# -- point 7: a read-only index folder or a full disk is not damage ----------------------------


def _refuse_writable_opens(monkeypatch: pytest.MonkeyPatch, message: str, code: int) -> None:
    """SQLite as an unprivileged user sees a read-only folder (root ignores a folder's mode): a
    WAL database opened without ``immutable`` fails, with the error SQLite gives there."""
    import sqlite3

    from semsearch.store import database

    real = sqlite3.connect

    def connect(target: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        if "immutable=1" not in str(target):
            exc = sqlite3.OperationalError(message)
            exc.sqlite_errorcode = code  # type: ignore[attr-defined]
            raise exc
        return real(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(database.sqlite3, "connect", connect)


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def test_a_read_only_index_is_queried(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("index", "docs", "-q").exit_code == 0
    index = project / ".semsearch"
    _read_only(index)
    try:
        if os.geteuid() == 0:
            _refuse_writable_opens(monkeypatch, "attempt to write a readonly database", 8)
        before = snapshot(index)
        assert run("query", "violin bow", "-l", "-k", "1").stdout.strip() == "docs/violin.md"
        result = run("similar", "docs/violin.md", "-l")
        assert result.exit_code == 0 and result.stdout.strip() == "docs/rivers.txt", result.output
        result = run("status", "--verify")
        assert result.exit_code == 0 and "verified ok" in result.stdout, result.output
        assert snapshot(index) == before
    finally:
        for path in [index, *index.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)


@pytest.mark.parametrize(
    ("situation", "message", "code", "said"),
    [
        ("read-only, log not empty", "unable to open database file", 14, "read-only"),
        ("disk full", "unable to open database file", 14, "the disk is full"),
        ("disk full", "database or disk is full", 13, "the disk is full"),
    ],
)
def test_what_stops_sqlite_is_said_not_called_damage(
    project: Path, monkeypatch: pytest.MonkeyPatch, situation: str, message: str, code: int, said: str
) -> None:
    from semsearch.store import database

    assert run("index", "docs", "-q").exit_code == 0
    (db,) = (project / ".semsearch").glob("meta-*.sqlite")
    _refuse_writable_opens(monkeypatch, message, code)
    if situation == "disk full":
        monkeypatch.setattr(database, "disk_full", lambda folder: True)
        monkeypatch.setattr(database, "_wal_holds_data", lambda path: True)  # no immutable fallback
    else:
        write(Path(f"{db}-wal"), b"\0" * 100)  # a log whose changes a reader must see
        monkeypatch.setattr(database.os, "access", lambda path, mode: mode != os.W_OK)
    for command in (["query", "violin"], ["status"], ["index", "-q"]):
        line = one_line_error(run(*command), said)
        assert "is damaged" not in line and "--rebuild" not in line, line
        assert "not damaged" in line or command[0] == "index", line


# -- newcomer point 2: a first build under way is not an interrupted one -----------------------


def test_a_first_build_under_way_names_its_builder(project: Path) -> None:
    from semsearch.store import IndexLock

    assert run("index", "docs", "-q").exit_code == 0
    index = project / ".semsearch"
    os.replace(index / "manifest.json", index / "building.json")  # a first build, not published yet
    with IndexLock(index):  # held by a live process: this one
        for command in (["query", "violin"], ["status"], ["similar", "docs/violin.md"]):
            line = one_line_error(run(*command), f"being built by pid {os.getpid()}, 2 files stored so far")
            assert "did not finish" not in line and "try again when it finishes" in line
    # No live holder: an interrupted build, to finish.
    for command in (["query", "violin"], ["status"]):
        line = one_line_error(run(*command), "did not finish", "run `semsearch index` there to finish it")
        assert "being built" not in line
    result = run("index", "-q")
    assert result.exit_code == 0, result.output
    assert run("query", "violin", "-l", "-k", "1").stdout.strip() == "docs/violin.md"


def _python_for(uid: int) -> list[str] | None:
    """A command that runs this Python's interpreter, packages and semsearch as user *uid* (this
    interpreter, or the system's of the same version when this one lives where *uid* cannot go)."""
    import shutil
    import site
    import subprocess
    import sys

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if not python:
            continue
        try:
            ran = subprocess.run([python, "-c", "import semsearch, numpy, hnswlib"], user=uid, capture_output=True,
                                 env={"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                                     *site.getsitepackages()])})  # fmt: skip
        except OSError:
            continue
        if ran.returncode == 0:
            return [python]
    return None


def test_a_read_only_index_is_queried_by_a_user_who_cannot_write_it(tmp_path: Path) -> None:
    """For real: an unprivileged user queries an index in a folder it may read, not write."""
    import shutil
    import site
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to switch users (test_a_read_only_index_is_queried runs for real without)")
    nobody = 65534
    python = _python_for(nobody)
    if python is None:
        pytest.skip("no Python the unprivileged user can run")
    top = Path("/tmp") / f"semsearch-ro-{os.getpid()}"  # a place the other user may enter
    shutil.rmtree(top, ignore_errors=True)
    try:
        write(top / "docs" / "violin.md", "# Violin\n\nViolin lessons start with the bow hold.\n")
        write(top / "docs" / "rivers.txt", "Rivers carry silt to the delta.\n")
        with Index.create(top / ".semsearch", provider=FakeModel()) as index:
            index.update([top / "docs"])
        for path in [top, *top.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)  # readable by all, writable by none but root
        before = snapshot(top)
        script = (
            "import json, sys; sys.path.insert(0, sys.argv[2]); from conftest import FakeModel\n"
            "from semsearch import Index\n"
            "with Index.open(sys.argv[1], provider=FakeModel()) as ix:\n"
            "    print(json.dumps([[h.chunk.path.name for h in ix.search('violin bow', k=1)],\n"
            "        [h.chunk.path.name for h in ix.similar(sys.argv[1] + '/docs/violin.md', k=1)],\n"
            "        ix.status(verify=True).problems]))\n"
        )
        env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *site.getsitepackages()]),
               "SEMSEARCH_MODEL_SERVER": "0", "HOME": str(top)}  # fmt: skip
        ran = subprocess.run([*python, "-c", script, str(top), str(Path(__file__).parent)], user=nobody,
                             capture_output=True, text=True, env=env, cwd=top)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout) == [["violin.md"], ["rivers.txt"], []]
        assert snapshot(top) == before  # no -shm, no -wal: nothing written
    finally:
        for path in [top, *top.rglob("*")] if top.exists() else []:
            path.chmod(0o700)
        shutil.rmtree(top, ignore_errors=True)


def test_a_first_run_killed_while_it_wrote_the_tag_is_taken_up_again(tmp_path: Path, fake_model: FakeModel) -> None:
    """Killed between the tag's temporary file and its rename, a first run leaves a folder that
    holds only that file: the next run takes it (and removes the leftover), never refuses it."""
    write(tmp_path / "notes" / "a.txt", "Kingfishers dive for fish.\n")
    (tmp_path / ".semsearch").mkdir(mode=0o700)
    write(tmp_path / ".semsearch" / f".{TAG}.tmp-4242", b"semsearch-index\n")
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        assert index.update([tmp_path / "notes"]).indexed == 1
    assert not (tmp_path / ".semsearch" / f".{TAG}.tmp-4242").exists()
    assert is_index_dir(tmp_path / ".semsearch")


def test_paths_through_a_link_to_the_project_are_the_same_places(tmp_path: Path, fake_model: FakeModel) -> None:
    """A shell whose $PWD goes through a symlink names the project's files by the link's path:
    queries, `similar` and `index` take them as the same places (audit of issue 23: refused as
    outside the indexed folders, and indexed a second time)."""
    project = tmp_path / "real project"
    write(project / "notes" / "birds.txt", "Plovers run along the shore.\n")
    write(project / "notes" / "fish.txt", "Trout rise at dusk.\n")
    link = tmp_path / "plink"
    link.symlink_to(project, target_is_directory=True)
    with Index.create(project / ".semsearch", provider=fake_model) as index:
        index.update([project / "notes"])
        assert [h.chunk.path.name for h in index.search("plovers", k=1, paths=[link / "notes"])] == ["birds.txt"]
        assert [h.chunk.path.name for h in index.similar(link / "notes" / "birds.txt", k=1)] == ["fish.txt"]
        summary = index.update([link / "notes"])
        assert summary.indexed == 0 and index.status().chunks == 2
        assert index.status().roots == ["notes"]
