"""Crash safety, resumption and concurrency of `semsearch index`.

The index command runs in a child process (a fork of this one, or a fresh interpreter through
tests/crash_harness.py) with a fake embedder, and is SIGKILLed either from outside after a time
offset or by itself at the N-th occurrence of an event (before/after a commit, the vector file
replace, the manifest replace, ...). After every kill, two promises are checked:

1. the index answers exactly as before the interrupted run, or exactly as after it (never a mix,
   never an error other than "no index yet" when there was none);
2. the next `semsearch index` finishes the job: the answers equal those of an uninterrupted run,
   and a first build does not re-embed the files it had already committed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import crash_harness as harness
import pytest

from semsearch.errors import IndexNotFoundError, SemsearchError
from semsearch.search import Searcher, SearchOptions
from semsearch.store import INDEX_DIR_NAME, IndexReader

HARNESS = Path(__file__).with_name("crash_harness.py")
QUERIES = ["alpha river engine", "violin garden kernel", "w17 w230 w99", "mountain delta"]
WORDS = [f"w{i}" for i in range(300)] + ["alpha", "beta", "gamma", "delta", "river", "mountain", "engine", "kernel", "garden", "violin"]


# --------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Run:
    code: int | None  # exit code, None when killed
    killed: bool
    output: str
    embedded: int
    counts: dict[str, int]


def run_forked(
    cwd: Path,
    args: list[str],
    *,
    kill_at: str | None = None,
    kill_after: float | None = None,
    pause_at: str | None = None,
    pause_file: Path | None = None,
    uid: int | None = None,
    fsize: int | None = None,
    setup: object = None,
    wait: bool = True,
) -> Run | int:
    """Run `semsearch ARGS` in a forked child with the fake model; optionally kill it."""
    out = cwd.parent / f".out-{cwd.name}"
    info = cwd.parent / f".info-{cwd.name}"
    for f in (out, info):
        f.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 98
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.chdir(cwd)
            if fsize is not None:
                import resource

                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            if callable(setup):
                setup()
            harness.install(kill_at, pause_at, pause_file, commit_seconds=0.0, group_chunks=48)
            from semsearch import cli

            sys.argv = ["semsearch", *args]
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            with open(info, "w") as handle:
                handle.write(repr((harness.embedded(), dict(harness.COUNTS))))
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            with_flush = (sys.stdout, sys.stderr)
            for stream in with_flush:
                with contextlib.suppress(Exception):  # a child about to exit: nothing to report to
                    stream.flush()
            os._exit(code)
    if not wait:
        return pid
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return collect(pid, status, out, info)


def collect(pid: int, status: int, out: Path, info: Path) -> Run:
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    embedded, counts = (0, {})
    if info.exists():
        report = info.read_text()
        if report or not killed:  # a kill by time can land between creating the file and writing it
            embedded, counts = eval(report)
    text = out.read_text(errors="replace") if out.exists() else ""
    return Run(code, killed, text, embedded, counts)


def signature(work: Path, url: str | None = None) -> object:
    """What queries answer from the index in ``work`` (or at *url*, a PostgreSQL index): hits of
    several queries in two modes."""
    from semsearch.engines import open_reader

    try:
        reader = open_reader(work / INDEX_DIR_NAME, url)
    except IndexNotFoundError:
        return "no index"
    with reader:
        searcher = Searcher(reader, harness.FakeEmbedder)
        result: list[object] = [reader.stats().files, reader.count]
        for query in QUERIES:
            for mode in ("semantic", "lexical"):
                hits = searcher.search(query, SearchOptions(top_k=6, mode=mode))
                result.append(sorted(
                    (os.path.relpath(h.chunk.path, work), h.chunk.ordinal, round(h.score, 4)) for h in hits))
        return result


def write_corpus(root: Path, n: int, seed: int, paragraphs: int = 5) -> None:
    rng = random.Random(seed)
    for i in range(n):
        path = root / f"d{i % 4}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(50)) + "." for _ in range(paragraphs)))


def change_corpus(root: Path) -> None:
    """Edit, delete and add files (a typical update)."""
    rng = random.Random(99)
    for i in range(0, 8, 2):
        (root / f"d{i % 4}" / f"f{i}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(120)) + " edited.")
    for i in (1, 5, 9):
        (root / f"d{i % 4}" / f"f{i}.txt").unlink()
    write_corpus(root / "new", 6, seed=7)


INDEX_ARGS = ["index", "corpus", "--index", INDEX_DIR_NAME, "-q"]


def check_output(run: Run) -> None:
    assert "Traceback" not in run.output, run.output


def sweep(base: Path, scratch: Path, args: list[str], points: list[tuple[str, object]]) -> list[str]:
    """Kill a run at each point on a copy of ``base``; check both promises. Returns failures."""
    before = signature(base)
    reference = scratch / "reference"
    shutil.copytree(base, reference, symlinks=True)
    done = run_forked(reference, args)
    assert done.code == 0, done.output
    after = signature(reference)
    assert after != before
    total_chunks = done.embedded
    failures: list[str] = []
    survived: list[str] = []
    for number, (kind, point) in enumerate(points):
        work = scratch / f"k{number}"
        shutil.copytree(base, work, symlinks=True)
        if kind == "event":
            run = run_forked(work, args, kill_at=str(point))
        else:
            run = run_forked(work, args, kill_after=float(point))
        label = f"{kind}:{point}"
        try:
            check_output(run)
            try:
                seen = signature(work)
            except SemsearchError as exc:
                raise AssertionError(f"the index does not open after the kill: {exc}") from None
            assert seen in (before, after), "answers are neither the old nor the new index"
            committed = _committed_chunks(work)
            again = run_forked(work, args)
            check_output(again)
            assert again.code == 0, again.output
            assert signature(work) == after, "the next run did not finish the job"
            if before == "no index" and run.killed:
                # Durable progress: what a killed first build committed is not embedded again.
                assert again.embedded <= total_chunks - committed, (again.embedded, total_chunks, committed)
            survived.append(f"{label}{' (killed)' if run.killed else ' (finished first)'}")
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nkill points survived ({len(survived)}/{len(points)}): " + ", ".join(survived))
    return failures


def _committed_chunks(work: Path) -> int:
    """Chunks of an unfinished new build that are durable in its database."""
    total = 0
    for db in (work / INDEX_DIR_NAME).glob("meta-*.sqlite"):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn, contextlib.suppress(sqlite3.Error):
            total = max(total, conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        conn.close()
    return total


def timing(base: Path, scratch: Path, args: list[str]) -> tuple[float, dict[str, int]]:
    work = scratch / "timing"
    shutil.copytree(base, work, symlinks=True)
    started = time.monotonic()
    run = run_forked(work, args)
    seconds = time.monotonic() - started
    shutil.rmtree(work)
    assert run.code == 0, run.output
    return seconds, run.counts


def event_points(counts: dict[str, int]) -> list[tuple[str, object]]:
    """Kill points spread over a run, from the event counts of an uninterrupted one."""
    commits = counts.get("commit", 0)
    wanted = [
        "open_writer+:1",
        "embed:2",
        f"embed:{max(1, counts.get('embed', 1) // 2)}",
        f"commit+:{max(1, commits // 3)}",
        f"add_file:{max(1, counts.get('add_file', 1) * 2 // 3)}",
        "remove_file+:1",
        "finalize:1",
        "write_base:1",  # a merge (or a new base), before and after its file is written
        "write_base+:1",
        "write_delta:1",
        "write_delta+:1",
        "replace:2",  # the vector file (the first replace of a new build is building.json)
        "fsync:2",
        "sha256+:1",
        f"commit:{commits - 1}",  # the commit that flips the generation
        f"commit+:{commits - 1}",  # flipped, manifest not yet replaced
        "publish:1",
        "write_atomic+:2",  # manifest replaced, building.json still there
        "unlink:1",
        "purge:1",
        "purge+:1",
    ]
    out: list[tuple[str, object]] = []
    for point in wanted:
        name, _, n = point.rpartition(":")
        if counts.get(name, 0) >= int(n) >= 1 and ("event", point) not in out:
            out.append(("event", point))
    return out


def time_points(seconds: float, n: int) -> list[tuple[str, object]]:
    return [("time", round(seconds * (i + 0.5) / n, 3)) for i in range(n)]


@pytest.fixture(autouse=True, scope="module")
def _preloaded() -> None:
    """Load what every run needs once here, so forked children start warm."""
    import hnswlib  # noqa: F401
    import pathspec  # noqa: F401
    import pypdf  # noqa: F401
    import rich.console
    import rich.progress  # noqa: F401

    import semsearch.cli
    import semsearch.indexing
    from semsearch.chunk import get_encoding

    get_encoding()
    from typer.testing import CliRunner

    CliRunner().invoke(semsearch.cli.app, ["index", "--help"])  # typer imports much lazily
    harness.FakeEmbedder().embed_documents([" ".join(WORDS) + " edited"])


# --------------------------------------------------------------------------------------------
# The kill sweeps


def test_kills_during_first_build(tmp_path: Path) -> None:
    base = tmp_path / "base"
    write_corpus(base / "corpus", 24, seed=1)
    seconds, counts = timing(base, tmp_path, INDEX_ARGS)
    points = event_points(counts) + time_points(seconds, 3)
    failures = sweep(base, tmp_path, INDEX_ARGS, points)
    assert len(points) >= 14
    assert not failures, "\n".join(failures)


def test_kills_during_update(tmp_path: Path) -> None:
    base = tmp_path / "base"
    write_corpus(base / "corpus", 24, seed=1)
    assert run_forked(base, INDEX_ARGS).code == 0
    change_corpus(base / "corpus")
    seconds, counts = timing(base, tmp_path, INDEX_ARGS)
    points = event_points(counts) + time_points(seconds, 3)
    failures = sweep(base, tmp_path, INDEX_ARGS, points)
    assert len(points) >= 10
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("merge", ["delta", "merge"])
def test_kills_during_an_update_that_writes_a_delta_or_merges(
    tmp_path: Path, merge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base"
    write_corpus(base / "corpus", 24, seed=2)
    # A small corpus: each edit is over a tenth of it, so the share is set for each case.
    monkeypatch.setenv("HARNESS_MERGE_SHARE", "1")
    assert run_forked(base, INDEX_ARGS).code == 0
    (base / "corpus" / "d3" / "f3.txt").write_text(" ".join(WORDS[:30]) + " a small edit\n")
    (base / "corpus" / "d0" / "f4.txt").unlink()
    assert run_forked(base, INDEX_ARGS).code == 0  # a first delta, with tombstones
    (base / "corpus" / "d1" / "f5.txt").write_text(" ".join(WORDS[5:40]) + " another edit\n")
    if merge == "merge":
        monkeypatch.setenv("HARNESS_MERGE_SHARE", "0")  # this update merges the deltas into the base
    seconds, counts = timing(base, tmp_path, INDEX_ARGS)
    assert counts.get("write_base" if merge == "merge" else "write_delta", 0) == 1, counts
    points = event_points(counts) + time_points(seconds, 2)
    failures = sweep(base, tmp_path, INDEX_ARGS, points)
    assert len(points) >= 10
    assert not failures, "\n".join(failures)


def test_kills_during_rebuild_with_new_settings(tmp_path: Path) -> None:
    base = tmp_path / "base"
    write_corpus(base / "corpus", 16, seed=3)
    assert run_forked(base, INDEX_ARGS).code == 0
    args = [*INDEX_ARGS, "--chunk-tokens", "48", "--overlap-tokens", "8"]
    _seconds, counts = timing(base, tmp_path, args)
    points = event_points(counts)
    failures = sweep(base, tmp_path, args, points)
    assert len(points) >= 8
    assert not failures, "\n".join(failures)


def test_kill_of_a_real_process_from_outside(tmp_path: Path) -> None:
    """The console-script path in a fresh interpreter, SIGKILLed at time offsets."""
    base = tmp_path / "base"
    write_corpus(base / "corpus", 30, seed=5)
    env = {**os.environ, "HARNESS_COMMIT_SECONDS": "0", "HARNESS_GROUP_CHUNKS": "48"}
    for number, offset in enumerate((1.0,)):
        work = tmp_path / f"p{number}"
        shutil.copytree(base, work)
        proc = subprocess.Popen([sys.executable, str(HARNESS), *INDEX_ARGS], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(offset)
        proc.kill()
        output = proc.communicate()[0].decode(errors="replace")
        assert "Traceback" not in output
        assert signature(work) in ("no index", signature_after_full_run(base, tmp_path / f"r{number}"))
        done = subprocess.run([sys.executable, str(HARNESS), *INDEX_ARGS], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert signature(work) == signature_after_full_run(base, tmp_path / f"r{number}")


_AFTER: dict[Path, object] = {}


def signature_after_full_run(base: Path, scratch: Path) -> object:
    if base not in _AFTER:
        shutil.copytree(base, scratch)
        assert run_forked(scratch, INDEX_ARGS).code == 0
        _AFTER[base] = signature(scratch)
    return _AFTER[base]


# --------------------------------------------------------------------------------------------
# Concurrency


def _pause(work: Path, args: list[str], event: str) -> tuple[int, Path]:
    flag = work.parent / f".pause-{work.name}"
    flag.unlink(missing_ok=True)
    pid = run_forked(work, args, pause_at=event, pause_file=flag, wait=False)
    deadline = time.monotonic() + 30
    while not flag.exists():
        assert time.monotonic() < deadline, "the writer never reached the pause point"
        time.sleep(0.01)
    return pid, flag


def _finish(pid: int, work: Path) -> Run:
    _, status = os.waitpid(pid, 0)
    return collect(pid, status, work.parent / f".out-{work.name}", work.parent / f".info-{work.name}")


def test_second_writer_stops_with_clear_message_and_dead_holder_is_noticed(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_corpus(work / "corpus", 10, seed=2)
    pid, _flag = _pause(work, INDEX_ARGS, "embed:1")
    second = run_forked(work, INDEX_ARGS)
    assert second.code == 2
    assert f"another `semsearch index` (pid {pid})" in second.output
    assert second.output.count("\n") == 1
    # The holder dies without any cleanup: the kernel drops its flock, the next run proceeds.
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    third = run_forked(work, INDEX_ARGS)
    assert third.code == 0, third.output
    assert signature(work) != "no index"


def test_second_writer_waits_when_asked(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_corpus(work / "corpus", 10, seed=2)
    pid, flag = _pause(work, INDEX_ARGS, "embed:1")
    waiter = run_forked(work, [*INDEX_ARGS, "--wait", "30"], wait=False)
    time.sleep(0.3)
    flag.unlink()  # let the first run finish; the second gets the lock then
    assert _finish(pid, work).code == 0
    _, status = os.waitpid(waiter, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _reader_during_a_run(tmp_path: Path, event: str, sees: str, args: list[str], edit: bool) -> None:
    """Index, optionally edit the corpus, then pause a second run (*args*) at *event*: a new reader
    sees the state *sees* ("before"/"after" the run), and a reader opened before the run began keeps
    answering from its own state even after the run has finished and replaced files."""
    work = tmp_path / "w"
    write_corpus(work / "corpus", 16, seed=4)
    assert run_forked(work, INDEX_ARGS).code == 0
    before = signature(work)
    if edit:
        change_corpus(work / "corpus")
    reader = IndexReader(work / INDEX_DIR_NAME)
    try:
        pid, flag = _pause(work, args, event)
        try:
            during = signature(work)
        finally:
            flag.unlink()
            assert _finish(pid, work).code == 0
        after = signature(work)
        assert after != before
        assert during == (before if sees == "before" else after)
        hits = Searcher(reader, harness.FakeEmbedder).search(QUERIES[0], SearchOptions(top_k=6, mode="semantic"))
        assert sorted((os.path.relpath(h.chunk.path, work), h.chunk.ordinal, round(h.score, 4)) for h in hits) == before[2]
    finally:
        reader.close()


@pytest.mark.parametrize(("event", "sees"), [
    ("commit+:2", "before"), ("sha256+:1", "before"), ("finalize:1", "before"), ("unlink:1", "after")])
def test_queries_during_an_update_see_the_last_committed_state(tmp_path: Path, event: str, sees: str) -> None:
    _reader_during_a_run(tmp_path, event, sees, INDEX_ARGS, edit=True)


@pytest.mark.parametrize(("event", "sees"), [("commit+:3", "before"), ("publish:1", "before"), ("unlink:1", "after")])
def test_queries_during_a_rebuild_see_the_last_committed_state(tmp_path: Path, event: str, sees: str) -> None:
    # The rebuild deletes the old database and vector file the early reader has open.
    _reader_during_a_run(tmp_path, event, sees, [*INDEX_ARGS, "--chunk-tokens", "48", "--overlap-tokens", "8"],
                         edit=False)


# --------------------------------------------------------------------------------------------
# Full disk, read-only folder


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_index(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_corpus(work / "corpus", 30, seed=6)
    assert run_forked(work, INDEX_ARGS).code == 0
    before = signature(work)
    write_corpus(work / "corpus" / "more", 60, seed=8, paragraphs=12)
    sizes = sorted(p.stat().st_size for p in (work / INDEX_DIR_NAME).iterdir())
    # Writes that would make any file larger than the limit fail (EFBIG), like a full disk.
    for limit in (sizes[-1] + 4096, sizes[-1] + 200_000):
        run = run_forked(work, INDEX_ARGS, fsize=limit)
        check_output(run)
        assert run.code == 2, run.output
        line = run.output.strip().splitlines()[-1]
        assert line.startswith("semsearch: error:") and "intact" in line, run.output
        assert signature(work) == before
    assert run_forked(work, INDEX_ARGS).code == 0
    assert signature(work) != before


def _hnswlib_with_short_writes() -> None:
    """In the child: hnswlib's save_index leaves a short file, as it does on a full disk."""
    import types

    import hnswlib

    real = hnswlib.Index

    class Index:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._index = real(*args, **kwargs)

        def __getattr__(self, name: str) -> object:
            return getattr(self._index, name)

        def save_index(self, path: str) -> None:
            self._index.save_index(path)
            os.truncate(path, os.path.getsize(path) - 100)

    shim = types.ModuleType("hnswlib")
    shim.Index = Index
    sys.modules["hnswlib"] = shim


def test_short_vector_file_write_is_an_error_not_a_committed_index(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_corpus(work / "corpus", 12, seed=6)
    assert run_forked(work, INDEX_ARGS).code == 0
    before = signature(work)
    change_corpus(work / "corpus")
    run = run_forked(work, INDEX_ARGS, setup=_hnswlib_with_short_writes)
    check_output(run)
    assert run.code == 2 and "written incompletely" in run.output and "intact" in run.output, run.output
    assert signature(work) == before
    assert run_forked(work, INDEX_ARGS).code == 0
    assert signature(work) != before


def test_read_only_index_folder_gives_a_clear_error(tmp_path: Path) -> None:
    # Root ignores permissions: the child drops to an unprivileged user so they apply.
    if os.getuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    nobody = 65534
    try:
        runs = subprocess.run([sys.executable, "-c", "import encodings.utf_16_le"], user=nobody, capture_output=True)
    except OSError:
        runs = None
    if runs is None or runs.returncode != 0:  # e.g. a Python installed in a home folder only root may enter
        pytest.skip("the unprivileged user cannot run this Python (its files are not readable to it)")
    top = Path(os.path.realpath("/tmp")) / f"semsearch-ro-{os.getpid()}"
    shutil.rmtree(top, ignore_errors=True)
    try:
        work = top / "w"
        write_corpus(work / "corpus", 8, seed=9)
        assert run_forked(work, INDEX_ARGS).code == 0
        before = signature(work)
        write_corpus(work / "corpus" / "more", 4, seed=10)
        for path in [top, *top.rglob("*")]:
            os.chown(path, nobody, nobody)
        os.chmod(work / INDEX_DIR_NAME, 0o500)
        run = run_forked(work, INDEX_ARGS, uid=nobody)
        check_output(run)
        assert run.code == 2, run.output
        assert run.output.strip().startswith("semsearch: error:") and run.output.count("\n") == 1, run.output
        os.chmod(work / INDEX_DIR_NAME, 0o700)
        assert signature(work) == before
    finally:
        shutil.rmtree(top, ignore_errors=True)
