"""The resident query model: a server over a Unix socket, its clients, and what happens when it fails."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write
from fake_embedder import FakeEmbedder
from test_e2e import corpus, run  # noqa: F401 - the session fixture: an index built by the real model

from semsearch.models import resident
from semsearch.models.base import ModelInfo

INFO = ModelInfo(name="fake", fingerprint="sha256:fake-model", dim=FakeEmbedder().dim, max_tokens=256)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "rt"
    monkeypatch.setenv("SEMSEARCH_RUNTIME_DIR", str(folder))
    monkeypatch.setenv("SEMSEARCH_MODEL_SERVER", "1")
    return folder


def serving(info: ModelInfo = INFO, idle: float = 30.0) -> tuple[threading.Thread, list[int]]:
    """A server of *info* in a thread of this process (a fake embedder), once its socket answers."""
    code: list[int] = []
    thread = threading.Thread(
        target=lambda: code.append(resident.serve(info, lambda _: FakeEmbedder(), idle=idle)), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while resident.connect(info) is None:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not come up"
        time.sleep(0.01)
    return thread, code


def test_the_server_embeds_as_the_model_does(runtime: Path) -> None:
    thread, _ = serving(idle=0.5)
    path = resident.connect(INFO)
    assert path is not None and path.parent == runtime
    assert oct(os.stat(runtime).st_mode & 0o777) == "0o700" and oct(os.stat(path).st_mode & 0o777) == "0o600"
    asked = resident.ResidentEmbedder(path, INFO, fallback=lambda: pytest.fail("the server was there"))
    texts = ["harbour lantern", "copper pylon riddle", ""]
    got = asked.embed_queries(texts)
    assert got.dtype == np.float32 and np.array_equal(got, FakeEmbedder().embed_queries(texts))  # to the bit
    assert asked.count_tokens(["one two three"]) == FakeEmbedder().count_tokens(["one two three"])
    # Idle: it stops, and takes its socket with it.
    thread.join(10)
    assert not thread.is_alive() and not path.exists()


def test_a_second_server_of_the_same_model_leaves_it_to_the_first(runtime: Path) -> None:
    thread, _ = serving(idle=0.5)
    assert resident.serve(INFO, lambda _: pytest.fail("loaded a second model"), idle=0.5) == 1
    thread.join(10)


def test_another_model_or_a_bad_request_gets_no_vectors(runtime: Path) -> None:
    thread, _ = serving(idle=0.5)
    path = resident.connect(INFO)
    assert path is not None
    other = ModelInfo(name="fake", fingerprint="sha256:another", dim=INFO.dim, max_tokens=256)
    with pytest.raises(resident.ResidentError, match="another model"):
        resident._ask(path, other, ["harbour"])  # its own socket would have another name: asked directly
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(path))
        conn.sendall(b"not json\n")
        assert b'"ok": false' in conn.makefile("rb").readline()
    thread.join(10)


def test_a_server_that_goes_away_is_replaced_by_the_model_here(runtime: Path) -> None:
    thread, _ = serving(idle=0.3)
    path = resident.connect(INFO)
    assert path is not None
    loaded: list[FakeEmbedder] = []

    def fallback() -> FakeEmbedder:
        loaded.append(FakeEmbedder())
        return loaded[-1]

    asked = resident.ResidentEmbedder(path, INFO, fallback)
    first = asked.embed_queries(["harbour"])
    thread.join(10)  # idle: gone
    assert np.array_equal(asked.embed_queries(["harbour"]), first) and len(loaded) == 1


def test_a_stale_socket_and_a_shared_folder_are_not_used(runtime: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import socket

    path, _ = resident._paths(INFO.fingerprint)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: what a killed server leaves
    dead.close()
    assert resident.connect(INFO) is None
    thread, _ = serving(idle=0.3)  # a new server takes the socket's place
    assert resident.connect(INFO) == path
    thread.join(10)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("SEMSEARCH_RUNTIME_DIR", str(shared))
    with pytest.raises(resident.ResidentError, match="not a private folder"):
        resident.runtime_dir()
    assert resident.connect(INFO) is None


@pytest.mark.model
def test_cli_queries_through_the_model_server_answer_as_without_it(corpus, tmp_path: Path) -> None:  # noqa: F811
    root, env, _ = corpus
    runtime = tmp_path / "rt"
    served = {**env, "SEMSEARCH_MODEL_SERVER": "1", "SEMSEARCH_RUNTIME_DIR": str(runtime),
              "SEMSEARCH_MODEL_SERVER_IDLE": "3"}  # fmt: skip
    alone = {**env, "SEMSEARCH_MODEL_SERVER": "0", "SEMSEARCH_RUNTIME_DIR": str(runtime)}
    asked = ["how do I enable https", "retry with exponential backoff"]
    expected = [run(["query", q, "--json"], cwd=root, env=alone) for q in asked]
    assert all(r.returncode == 0 for r in expected)
    assert not runtime.exists() or not list(runtime.glob("*.sock"))  # none started when off
    first = run(["query", asked[0], "--json"], cwd=root, env=served)  # starts the server
    assert first.returncode == 0, first.stderr.decode()
    sockets = list(runtime.glob("m-*.sock"))
    assert len(sockets) == 1
    again = [run(["query", q, "--json"], cwd=root, env=served) for q in asked]
    # The same hits with the same scores to the last digit, and nothing more on stderr.
    assert [r.stdout for r in again] == [r.stdout for r in expected] and first.stdout == expected[0].stdout
    assert [r.stderr for r in again] == [r.stderr for r in expected]
    pipe = run(["query", "-", "--json"], cwd=root, env=served, input="\n".join(asked).encode())
    assert pipe.stdout == b"".join(r.stdout for r in expected)
    # Idle for SEMSEARCH_MODEL_SERVER_IDLE seconds, it ends and removes its socket.
    deadline = time.monotonic() + 30
    while sockets[0].exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sockets[0].exists()


def test_no_server_is_started_without_the_models_export(runtime: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "empty-cache"))
    write(tmp_path / "empty-cache" / "placeholder", "")
    local = FakeEmbedder()
    assert resident.resident_embedder(INFO, lambda: local, lambda note: pytest.fail(note)) is local
    assert not list(runtime.glob("*.sock")) if runtime.exists() else True


def _fake_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch.models.resolve import export_dir_for

    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "cache"))
    write(export_dir_for(INFO.fingerprint) / "export.json", "{}")  # looks exported; loads nothing


def test_a_server_that_cannot_start_leaves_the_query_to_the_model_here(runtime: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _fake_export(tmp_path, monkeypatch)
    local = FakeEmbedder()
    notes: list[str] = []
    # The server process starts, fails to load the (fake) model and ends: the note names its log.
    assert resident.resident_embedder(INFO, lambda: local, notes.append) is local
    assert len(notes) == 1 and "stopped before answering" in notes[0] and "SEMSEARCH_MODEL_SERVER=0" in notes[0]
    log = next(runtime.glob("m-*.log"))
    assert oct(log.stat().st_mode & 0o777) == "0o600" and log.read_text().strip()
    # A folder others may enter is never used.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    monkeypatch.setenv("SEMSEARCH_RUNTIME_DIR", str(shared))
    notes.clear()
    assert resident.resident_embedder(INFO, lambda: local, notes.append) is local
    assert len(notes) == 1 and "could not be started" in notes[0] and "not a private folder" in notes[0]
    assert list(shared.iterdir()) == []


def test_a_terminated_server_removes_its_socket(runtime: Path) -> None:
    import signal
    import subprocess
    import sys

    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from fake_embedder import FakeEmbedder\n"
        "from semsearch.models import resident\n"
        "from semsearch.models.base import ModelInfo\n"
        f"info = ModelInfo(name='fake', fingerprint={INFO.fingerprint!r}, dim={INFO.dim}, max_tokens=256)\n"
        "sys.exit(resident.serve(info, lambda _: FakeEmbedder(), idle=60))\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 20
        while resident.connect(INFO) is None:
            assert time.monotonic() < deadline and server.poll() is None, "the server did not come up"
            time.sleep(0.02)
        path = resident.connect(INFO)
        assert path is not None and path.exists()
        server.send_signal(signal.SIGTERM)  # what `pkill -f "semsearch model-server"` sends
        assert server.wait(10) == 0
        assert not path.exists()
    finally:
        if server.poll() is None:
            server.kill()


SERVER_SCRIPT = (
    "import sys; sys.path.insert(0, sys.argv[1])\n"
    "from fake_embedder import FakeEmbedder\n"
    "from semsearch.models import resident\n"
    "from semsearch.models.base import ModelInfo\n"
    f"info = ModelInfo(name='fake', fingerprint={INFO.fingerprint!r}, dim={INFO.dim}, max_tokens=256)\n"
    "sys.exit(resident.serve(info, lambda _: FakeEmbedder(), idle=600))\n"
)


def _server_process(runtime: Path) -> tuple[object, Path]:
    """A model server in a process of its own (named as `semsearch model-server` is), once it answers;
    its log file made as `query` makes it."""
    import subprocess
    import sys

    path, _ = resident._paths(INFO.fingerprint)
    log = open(path.with_suffix(".log"), "wb")  # noqa: SIM115 - the server's stderr, as _start gives it
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(Path(__file__).parent), "model-server"],
        env=os.environ.copy(), stderr=log,
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 30
    while resident.connect(INFO) is None:
        assert time.monotonic() < deadline and server.poll() is None, "the server did not come up"
        time.sleep(0.02)
    return server, path


def test_status_and_stop_find_and_stop_only_this_users_servers(runtime: Path) -> None:
    from typer.testing import CliRunner

    from semsearch.cli import app

    assert CliRunner().invoke(app, ["model-server", "--status"]).exit_code == 1  # none yet
    server, path = _server_process(runtime)
    try:
        status = CliRunner().invoke(app, ["model-server", "--status"])
        assert status.exit_code == 0 and status.stdout.startswith(f"pid {server.pid}: fake, up "), status.output  # type: ignore[attr-defined]
        # A server in this very process (not a `model-server` process) is listed, never signalled.
        serving(ModelInfo(name="fake2", fingerprint="sha256:other", dim=INFO.dim, max_tokens=256), idle=30)
        stopped, left = resident.stop_servers()
        assert [s.pid for s in stopped] == [server.pid] and [s.pid for s in left] == [os.getpid()]  # type: ignore[attr-defined]
        assert server.wait(10) == 0  # type: ignore[attr-defined]
        assert list(runtime.glob(f"{path.stem}.*")) == []  # its socket, lock and log are gone
        stop = CliRunner().invoke(app, ["model-server", "--stop"])
        assert stop.exit_code == 2 and f"could not stop 1 model server(s) (pid {os.getpid()})" in stop.stderr
    finally:
        if server.poll() is None:  # type: ignore[attr-defined]
            server.kill()  # type: ignore[attr-defined]


def test_sigterm_removes_the_servers_lock_log_and_socket(runtime: Path) -> None:
    import signal

    server, path = _server_process(runtime)
    assert path.with_suffix(".lock").exists() and path.with_suffix(".log").exists()
    server.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    assert server.wait(10) == 0  # type: ignore[attr-defined]
    assert list(runtime.glob("m-*")) == []
    assert resident.running_servers() == []
