"""`index --watch` / `Index.watch`: real watchfiles on real folders; updates are the plain update."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import FakeModel, write
from test_e2e import run, semsearch_cmd

from semsearch import Index


def _until(check, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_watch_follows_new_edited_moved_and_deleted_files(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "tides.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    model = FakeModel()
    with Index.create(tmp_path / ".semsearch", provider=model) as index:
        index.update([docs])
        updates = []
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=index.watch, kwargs={"on_update": updates.append, "stop": stop, "on_ready": ready.set}
        )
        thread.start()
        try:
            assert ready.wait(30)

            def found(words: str) -> set[str]:
                return {h.chunk.path.name for h in index.search(words, mode="lexical", k=5)}

            write(docs / "new" / "comets.md", "# Comets\n\nA comet's tail points away from the sun.\n")
            assert _until(lambda: "comets.md" in found("comet tail sun"))
            # An editor's atomic save: write a temporary file, rename it over the old one.
            tmp = docs / ".tides.md.swp"
            tmp.write_text("# Tides\n\nNeap tides come at the quarter moons.\n")
            os.replace(tmp, docs / "tides.md")
            assert _until(lambda: "tides.md" in found("neap quarter"))
            os.rename(docs / "new", docs / "moved")
            assert _until(lambda: found("comet tail sun") == {"comets.md"} and index.status().files == 2)
            (docs / "moved" / "comets.md").unlink()
            assert _until(lambda: found("comet tail sun") == set())
            # A burst of saves is one update, not one per file.
            before = len(updates)
            for i in range(20):
                write(docs / f"burst-{i}.md", f"# Note {i}\n\nBurst note number {i} about lighthouses.\n")
            assert _until(lambda: len(found("lighthouses burst")) == 5)
            time.sleep(1.0)
            assert len(updates) - before <= 3
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()
        assert all(u.indexed + u.removed + u.unchanged > 0 for u in updates)


class Watcher:
    """``Index.watch`` in a thread, with what it reports, to wait on: every wait is for the
    watcher's next report (an update, an event), never a fixed time; the timeouts only end a
    test that would otherwise hang, and are generous for a loaded machine."""

    TIMEOUT = 180.0

    def __init__(self, index: Index, **options: object) -> None:
        self.index = index
        self.updates: list = []
        self.messages: list[str] = []
        self.errors: list[BaseException] = []
        self.reports = 0  # how many things it reported: a waiter wakes at each
        self.changed = threading.Condition()
        self.stop, self.ready = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, kwargs=options, name="test-watcher")

    def _report(self, add: object = None, to: list | None = None) -> None:
        with self.changed:
            if to is not None:
                to.append(add)
            self.reports += 1
            self.changed.notify_all()

    def _run(self, **options: object) -> None:
        def on_event(event) -> None:
            if event.kind == "message":
                self._report(event.text, self.messages)

        try:
            self.index.watch(
                on_update=lambda summary: self._report(summary, self.updates),
                on_event=on_event,
                stop=self.stop,
                on_ready=lambda: (self.ready.set(), self._report()),
                **options,
            )
        except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            self.errors.append(exc)
        finally:
            self._report()

    def __enter__(self) -> Watcher:
        self.thread.start()
        assert self.until(self.ready.is_set), self.errors
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=self.TIMEOUT)
        assert not self.thread.is_alive()

    def until(self, check, timeout: float = TIMEOUT) -> bool:
        """Wait until *check()* holds, looking again after each report of the watcher's."""
        deadline = time.monotonic() + timeout
        while True:
            with self.changed:
                seen = self.reports
            if check():  # outside the condition: a search waits for the update in progress
                return True
            if self.errors or not self.thread.is_alive() or time.monotonic() >= deadline:
                return check()
            with self.changed:
                self.changed.wait_for(lambda seen=seen: self.reports != seen, timeout=deadline - time.monotonic())


def test_watch_survives_folders_made_and_removed_and_half_written_files(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    notes = tmp_path / "notes"
    write(docs / "keep.md", "# Keep\n\nThis page stays while folders come and go.\n")
    write(notes / "owls.md", "# Owls\n\nBarn owls hunt voles at dusk.\n")
    model = FakeModel()
    with Index.create(tmp_path / ".semsearch", provider=model) as index:
        index.update([docs, notes])
        with Watcher(index) as watcher:
            until = watcher.until

            def found(words: str) -> set[str]:
                return {h.chunk.path.name for h in index.search(words, mode="lexical", k=5)}

            # A folder tree made, filled, then removed whole while the watcher runs.
            write(docs / "tmp" / "deep" / "glacier.md", "# Glaciers\n\nA calving glacier sheds icebergs.\n")
            assert until(lambda: "glacier.md" in found("calving glacier icebergs")), watcher.errors
            shutil.rmtree(docs / "tmp")
            assert until(lambda: found("calving glacier icebergs") == set()), watcher.errors
            write(docs / "tmp" / "again.md", "# Again\n\nThe same folder name, made anew, holds otters.\n")
            assert until(lambda: "again.md" in found("otters")), watcher.errors
            # A file half-written when first seen: the first update takes what is there, a later
            # one the rest.
            with open(docs / "slow.md", "w") as f:
                f.write("# Slow\n\nThe first half speaks of herons.\n")
                f.flush()
                assert until(lambda: "slow.md" in found("herons")), watcher.errors
                f.write("The second half speaks of kingfishers.\n")
            assert until(lambda: "slow.md" in found("kingfishers")), watcher.errors
            # A watched folder itself removed (its files leave the index), then made again.
            shutil.rmtree(notes)
            assert until(lambda: found("barn owls voles") == set()), watcher.errors
            write(notes / "owls.md", "# Owls\n\nBarn owls hunt voles at dusk, and tawny owls too.\n")
            assert until(lambda: "owls.md" in found("tawny owls")), watcher.errors
            assert "keep.md" in found("folders come and go")
        assert not watcher.errors, watcher.errors


def _precise_model(name: str):
    """A fake model registered as a plugin whose recorded precision follows the options as the
    bundled model's does: asked for, else the index's own, else int8 (this machine's best)."""
    from dataclasses import replace

    from semsearch.models import ModelOptions

    def factory(options: ModelOptions) -> FakeModel:
        precision = options.precision
        if precision == "auto":
            known = options.known
            precision = known.precision if known is not None and known.name == name else "int8"
        model = FakeModel(name=name, fingerprint="sha256:precise-1")
        model._info = replace(model._info, precision=precision)
        return model

    return factory


def test_watch_follows_a_precision_another_run_chose(tmp_path: Path) -> None:
    """Another run rebuilds the index in fp32: the watcher's next update keeps fp32 (no
    rebuild back to the precision it started with)."""
    from semsearch.models import register_model, unregister_model
    from semsearch.store import read_manifest

    name = "fake-precise"
    register_model(name, _precise_model(name))
    try:
        docs = tmp_path / "docs"
        write(docs / "tides.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
        with Index.create(tmp_path / ".semsearch", model=name) as index:
            assert index.update([docs]).rebuild_reason == ""
            assert read_manifest(index.path).model.precision == "int8"
            with Watcher(index) as watcher:
                with Index.open(index.path, model=name, precision="fp32") as other:
                    assert "precision" in other.update().rebuild_reason
                assert read_manifest(index.path).model.precision == "fp32"
                write(docs / "comets.md", "# Comets\n\nA comet's tail points away from the sun.\n")
                assert watcher.until(lambda: any(u.indexed for u in watcher.updates)), watcher.errors
            assert not watcher.errors, watcher.errors
            assert [u.rebuild_reason for u in watcher.updates] == [""] * len(watcher.updates)
            assert not any("rebuilding" in m for m in watcher.messages), watcher.messages
            assert read_manifest(index.path).model.precision == "fp32"
            assert {h.chunk.path.name for h in index.search("comet tail sun", mode="semantic", k=1)} == {"comets.md"}
    finally:
        unregister_model(name)


def test_watch_waits_for_another_run_however_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run holds the index past the watcher's wait: the watcher says once that it
    waits, and updates when the lock is free (it used to exit after 30 s)."""
    from semsearch.errors import IndexLockedError
    from semsearch.store import IndexLock

    refused: list[int] = []
    take = IndexLock.__enter__

    def counted(lock: IndexLock) -> IndexLock:
        try:
            return take(lock)
        except IndexLockedError:
            watcher._report(1, refused)
            raise

    monkeypatch.setattr(IndexLock, "__enter__", counted)
    docs = tmp_path / "docs"
    write(docs / "tides.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    with Index.create(tmp_path / ".semsearch", provider=FakeModel()) as index:
        index.update([docs])
        with Watcher(index, lock_wait=0.0) as watcher:
            with IndexLock(index.path):  # another run's lock (flock: held against any other open)
                write(docs / "comets.md", "# Comets\n\nA comet's tail points away from the sun.\n")
                assert watcher.until(lambda: any("waiting" in m for m in watcher.messages)), watcher.errors
                # Past several of its attempts: still waiting, still alive, said once.
                assert watcher.until(lambda: len(refused) >= 4), watcher.errors
                assert watcher.thread.is_alive() and not watcher.errors
            assert watcher.until(lambda: any(u.indexed for u in watcher.updates)), watcher.errors
            assert {h.chunk.path.name for h in index.search("comet tail sun", mode="lexical", k=1)} == {"comets.md"}
        assert not watcher.errors, watcher.errors
        waiting = [m for m in watcher.messages if "waiting" in m]
        assert len(waiting) == 1 and f"pid {os.getpid()}" in waiting[0], watcher.messages


def test_watch_leaves_merges_to_a_quiet_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An update the watcher runs commits its change as a delta at once; the merge it makes
    due runs once the folders are quiet, as a generation of its own."""
    from semsearch.store import IndexReader
    from semsearch.vectors import segments

    docs = tmp_path / "docs"
    for i in range(10):
        write(docs / f"n{i}.md", f"# Note {i}\n\nA note about harbours, number {i}.\n")
    monkeypatch.setattr(segments, "MERGE_SHARE", 0.0)  # every update makes a merge due
    with Index.create(tmp_path / ".semsearch", provider=FakeModel()) as index:
        index.update([docs])
        updates: list = []
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=index.watch, kwargs={"on_update": updates.append, "stop": stop, "on_ready": ready.set}
        )
        thread.start()

        def layout() -> segments.Layout:
            with IndexReader(index.path) as reader:
                return reader.layout

        try:
            assert ready.wait(30)
            base = layout().base["vector_file"]
            write(docs / "comets.md", "# Comets\n\nA comet's tail points away from the sun.\n")
            assert _until(lambda: any(u.indexed for u in updates))
            assert [(u.merge_due, u.merged) for u in updates if u.indexed] == [(True, False)]
            # Merged in a quiet second after the update: the deltas gone, a new base.
            assert _until(lambda: not layout().deltas and layout().base["vector_file"] != base)
            assert {h.chunk.path.name for h in index.search("comet tail sun", mode="semantic", k=1)} == {"comets.md"}
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()
        assert index.status(verify=True).problems == []


@pytest.mark.model
def test_index_watch_console_script_finds_a_saved_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "SEMSEARCH_CACHE": str(tmp_path / "cache"), "NO_COLOR": "1"}  # outside the project
    tmp_path = tmp_path / "project"
    write(tmp_path / "a.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    env.pop("SEMSEARCH_INDEX", None)
    log = tmp_path.parent / "watch.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([*semsearch_cmd(), "index", ".", "--watch"], cwd=tmp_path, env=env, stderr=err)
    try:
        assert _until(lambda: "watching for changes" in log.read_text(), 300)
        write(tmp_path / "b.md", "# Volcanoes\n\nThe quokka survey counted lava flows near the village.\n")

        def found() -> bool:
            out = run(["query", "quokka survey lava", "-k", "1", "--mode", "lexical"], cwd=tmp_path, env=env)
            return b"b.md" in out.stdout

        assert _until(found, 60), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    rest = log.read_text()
    assert proc.returncode == 0, rest
    assert "stopped watching" in rest and "indexed 1 file" in rest
