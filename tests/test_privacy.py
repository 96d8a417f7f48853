"""Private by default: owner-only files, no network at run time, no pickle, verified model files."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

import semsearch
from semsearch.cli import app


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []
    local_connect = socket.socket.connect

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access is not allowed in this test")

    def local_only(self: socket.socket, address: object) -> None:
        if self.family == socket.AF_UNIX:  # a socket file of this user's (the model server): no network
            return local_connect(self, address)  # type: ignore[arg-type]
        return refuse(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_index_folder_and_files_are_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fake_cli: FakeModel) -> None:
    write(tmp_path / "docs" / "a.txt", "Owner only words.")
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert run("index", "docs", "-q").exit_code == 0
        write(tmp_path / "docs" / "b.txt", "More words.")
        assert run("index", "-q").exit_code == 0
    finally:
        os.umask(old)
    index = tmp_path / ".semsearch"
    assert stat.S_IMODE(index.stat().st_mode) == 0o700
    for path in index.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"


def test_index_and_query_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel,
                                         no_network: list[object]) -> None:
    write(tmp_path / "docs" / "a.txt", "The heron waits in the shallows.")
    monkeypatch.chdir(tmp_path)
    result = run("index", "docs")
    assert result.exit_code == 0, result.output
    for args in (["query", "heron shallows"], ["query", "heron", "--json", "--mode", "hybrid"], ["status"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
    assert no_network == []


@pytest.mark.model
@pytest.mark.parametrize("model_server", ["0", "1"])
def test_real_model_index_and_query_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    no_network: list[object], model_server: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even when allowed to try, nothing may connect
    monkeypatch.setenv("SEMSEARCH_MODEL_SERVER", model_server)  # its own process: AF_UNIX only (resident.py)
    monkeypatch.setenv("SEMSEARCH_MODEL_SERVER_IDLE", "2")
    monkeypatch.setenv("SEMSEARCH_RUNTIME_DIR", str(tmp_path / "rt"))
    write(tmp_path / "docs" / "a.txt", "The heron waits in the shallows for fish.")
    write(tmp_path / "docs" / "b.txt", "Compilers translate source code into machine code.")
    monkeypatch.chdir(tmp_path)
    result = run("index", "docs")
    assert result.exit_code == 0, result.output
    for _ in range(2):  # with the server: the first starts it, the second asks it
        result = run("query", "a bird catching fish", "-k", "1", "--json")
        assert result.exit_code == 0, result.output
        assert "a.txt" in json.loads(result.stdout)["path"]
    assert no_network == []
    assert len(list((tmp_path / "rt").glob("*.sock"))) == (1 if model_server == "1" else 0)


def test_no_pickle_anywhere() -> None:
    package = Path(semsearch.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        for needle in ("import pickle", "from pickle", "pickle.load", "torch.load(", "allow_pickle=True",
                       "import marshal", "import shelve", "joblib"):
            assert needle not in text, f"{source.name} uses {needle}"


def test_model_files_are_verified_against_a_known_hash(tmp_path: Path) -> None:
    from semsearch.models import resolve as embed

    spec = embed.resolve_model(None)
    fingerprint = embed.model_fingerprint(spec)
    assert fingerprint.startswith("sha256:")
    # A changed weights file changes the fingerprint, or is refused.
    copy = tmp_path / "model"
    import shutil

    shutil.copytree(spec.path, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    try:
        changed = embed.model_fingerprint(embed.resolve_model(str(copy)))
    except semsearch.errors.ModelError as exc:
        assert "model.safetensors" in str(exc) or "hash" in str(exc).lower()
    else:
        assert changed != fingerprint


@pytest.mark.model
def test_onnxruntime_records_and_sends_nothing(tmp_path: Path) -> None:
    """onnxruntime (1.32) queues usage events under ~/.cache/Microsoft and tries to send them to
    Microsoft unless ORT_DISABLE_TELEMETRY is set: semsearch sets it, in every process it runs."""
    from test_e2e import run as run_process

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "SEMSEARCH_RUNTIME_DIR": str(tmp_path / "rt")}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    env.pop("SEMSEARCH_INDEX", None)
    write(tmp_path / "docs" / "a.txt", "The heron waits in the shallows for fish.")
    assert run_process(["index", "docs"], cwd=tmp_path, env=env).returncode == 0
    for _ in range(2):  # the first query starts the model server (a process of its own), the second asks it
        assert run_process(["query", "a bird catching fish", "-k", "1"], cwd=tmp_path, env=env).returncode == 0
    assert not (home / ".cache" / "Microsoft").exists()
    run_process(["model-server", "--stop"], cwd=tmp_path, env=env)
