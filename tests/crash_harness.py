"""Run the real `semsearch` CLI in this process with the fake model, for the crash tests.

    python tests/crash_harness.py index CORPUS --index DIR ...

Environment (all optional):
    HARNESS_KILL_AT=EVENT:N      SIGKILL this process at the N-th (1-based) occurrence of EVENT.
    HARNESS_PAUSE_AT=EVENT:N     at that point create HARNESS_PAUSE_FILE and wait until it is removed.
    HARNESS_EMBED_LOG=PATH       append the number of chunks embedded by this run (at normal exit).
    HARNESS_COMMIT_SECONDS=S     durable-progress interval of the indexer (default: the indexer's).
    HARNESS_GROUP_CHUNKS=N       chunks embedded and stored together (default: the indexer's).
    HARNESS_MERGE_SHARE=F        merge the vector deltas into the base past this share (0: every update).

The tests also fork pytest's process and call ``install`` in the child (no interpreter start-up,
no tiktoken reload), then run ``semsearch.cli.main``: the same code as the console script.

An EVENT is a name from ``_HOOKS`` below ("commit", "embed", ...), with a trailing "+" meaning
"right after the call returned" instead of "right before it". Only the hooks run test code: the
index is written by the real code paths, and the kill is a real SIGKILL (no cleanup, no atexit).
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
import time
from pathlib import Path

from fake_embedder import FAKE_DIM, FakeEmbedder


def fake_info():
    from semsearch.models import ModelInfo

    return ModelInfo(name="fake-harness", fingerprint="sha256:fake-harness-1", dim=FAKE_DIM, max_tokens=256)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, n = value.rpartition(":")
    return name, int(n)


KILL: tuple[str, int] | None = None
PAUSE: tuple[str, int] | None = None
PAUSE_FILE: Path | None = None
COUNTS: dict[str, int] = {}


def _point(event: str) -> None:
    COUNTS[event] = COUNTS.get(event, 0) + 1
    n = COUNTS[event]
    if (event, n) == KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    if (event, n) == PAUSE and PAUSE_FILE is not None:
        PAUSE_FILE.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while PAUSE_FILE.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def _hook(owner: object, attr: str, event: str) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        _point(event)
        result = original(*args, **kwargs)
        _point(event + "+")
        return result

    setattr(owner, attr, wrapper)


class _Local:
    """Stands in for semsearch.models.LocalModel."""

    loaded = False
    embedder_instance = FakeEmbedder()

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def info(self):
        return fake_info()

    def measure(self):
        return lambda text: len(text.split()) + 2

    def embedder(self) -> FakeEmbedder:
        return self.embedder_instance

    def query_embedder(self) -> FakeEmbedder:
        return FakeEmbedder()

    def finish_build(self, on_note) -> None:
        return None


def install_fake_model() -> None:
    """Make the CLI index and query with FakeEmbedder (call in a child process, or monkeypatch)."""
    from semsearch.models import register_model

    register_model(fake_info().name, _Local)
    os.environ["SEMSEARCH_MODEL"] = fake_info().name


def install(
    kill_at: str | None = None,
    pause_at: str | None = None,
    pause_file: Path | None = None,
    commit_seconds: float | None = None,
    group_chunks: int | None = None,
) -> None:
    """Patch this process: fake model, event hooks, optional kill or pause point. Never in pytest's own process."""
    global KILL, PAUSE, PAUSE_FILE
    from semsearch import files, indexing, store

    install_fake_model()
    if os.environ.get("HARNESS_MERGE_SHARE"):  # merge the deltas at this share of the base
        from semsearch.vectors import segments

        segments.MERGE_SHARE = float(os.environ["HARNESS_MERGE_SHARE"])
    KILL, PAUSE, PAUSE_FILE = _parse(kill_at), _parse(pause_at), pause_file
    COUNTS.clear()
    _Local.embedder_instance = FakeEmbedder()
    for owner, attr, event in [
        (_Local.embedder_instance, "embed_documents", "embed"),
        (store.IndexWriter, "commit", "commit"),
        (store.IndexWriter, "add_file", "add_file"),
        (store.IndexWriter, "remove_file", "remove_file"),
        (store.IndexWriter, "finalize", "finalize"),
        (store.IndexWriter, "_purge", "purge"),
        (store.IndexWriter, "_write_base", "write_base"),
        (store.IndexWriter, "_write_delta", "write_delta"),
        (store, "publish_build", "publish"),
        (files, "write_atomic", "write_atomic"),
        (files, "sha256_file", "sha256"),
        (store, "open_writer", "open_writer"),
        (os, "replace", "replace"),
        (os, "fsync", "fsync"),
        (os, "unlink", "unlink"),
    ]:
        _hook(owner, attr, event)
    from semsearch.pgstore.writer import PgWriter

    for attr in ("commit", "add_file", "remove_file", "finalize", "_post", "_vacuum"):
        _hook(PgWriter, attr, f"pg_{attr}")
    if commit_seconds is not None:
        indexing.DEFAULT_TUNING.commit_seconds = commit_seconds
    if group_chunks is not None:
        indexing.DEFAULT_TUNING.group_chunks = group_chunks


def embedded() -> int:
    return _Local.embedder_instance.documents_embedded


def main() -> None:
    from semsearch import cli

    env = os.environ.get
    install(
        env("HARNESS_KILL_AT"),
        env("HARNESS_PAUSE_AT"),
        Path(env("HARNESS_PAUSE_FILE")) if env("HARNESS_PAUSE_FILE") else None,
        float(env("HARNESS_COMMIT_SECONDS")) if env("HARNESS_COMMIT_SECONDS") else None,
        int(env("HARNESS_GROUP_CHUNKS")) if env("HARNESS_GROUP_CHUNKS") else None,
    )
    if env("HARNESS_EMBED_LOG"):
        log = Path(env("HARNESS_EMBED_LOG"))
        atexit.register(lambda: log.open("a").write(f"{embedded()}\n"))
    sys.argv = ["semsearch", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
