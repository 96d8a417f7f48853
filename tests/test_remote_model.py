"""A model served over the OpenAI embeddings API (``--model openai:NAME``), against a real server
process on loopback (tests/embed_server.py): the bundled model behind HTTP, or vectors made from
the words (``--fake``) where only the wire is tested. Batching, concurrency, 429 with Retry-After,
500s, timeouts, a server that changes model, a wrong key, a server that dies mid-build."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write
from typer.testing import CliRunner

from semsearch.api import Index
from semsearch.cli.app import app
from semsearch.errors import ModelError
from semsearch.indexing import Tuning
from semsearch.models.remote import PROBES

SERVER = Path(__file__).with_name("embed_server.py")
KEY = "sk-test-4f1c9e2b7d"


class Server:
    """tests/embed_server.py in its own process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"embed_server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.port = int(line)
        self.base = f"http://127.0.0.1:{self.port}/v1"

    def control(self, reset: bool = False, **settings: Any) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/control", data=json.dumps(settings).encode(), method="POST",
            headers={"Content-Type": "application/json", **({"X-Reset-Stats": "1"} if reset else {})},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def fake_server() -> Iterator[Server]:
    server = Server("--fake", "--name", "fake-embed", "--name", "e5-small-v2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model_server() -> Iterator[Server]:
    server = Server("--name", "all-minilm")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TEAM_EMBED_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def notes(root: Path, n: int = 12) -> Path:
    topics = [
        ("harbour", "The harbour pilot guides the freighter past the breakwater at dawn."),
        ("violin", "A violin maker carves spruce tops and varnishes the maple ribs."),
        ("bread", "Sourdough bread rises overnight; the baker scores the loaf before baking."),
        ("chess", "The chess opening sacrifices a pawn to seize the centre early."),
        ("glacier", "A glacier carves the valley, leaving moraines and meltwater lakes."),
        ("compiler", "The compiler lowers the syntax tree to bytecode and folds constants."),
    ]
    for i in range(n):
        name, text = topics[i % len(topics)]
        write(root / "notes" / f"{name}-{i:02d}.md", f"# {name} {i}\n\n{text}\n\nEntry {i}: {text.lower()}\n")
    return root / "notes"


def test_index_and_query_through_a_served_bundled_model(model_server: Server, tmp_path: Path) -> None:
    """The README's path: index with --model openai:NAME --api-base, then query with no flags."""
    notes(tmp_path)
    result = run("index", "notes", "--model", "openai:all-minilm", "--api-base", model_server.base, "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / ".semsearch" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "openai:all-minilm"
    assert manifest["model"]["endpoint"] == model_server.base and manifest["model"]["dim"] == 384
    assert manifest["model"]["precision"] == "remote" and manifest["model"]["probe"]
    status = run("status")
    assert "openai:all-minilm (384-d, remote, remote:" in status.output and f"at {model_server.base}" in status.output
    result = run("query", "a ship entering port at sunrise", "--json", "-k", "3")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert hits and "harbour" in hits[0]["path"]
    # The same ranking as the bundled model run locally (the server embeds in float32).
    with Index.open(tmp_path / ".semsearch") as served:
        remote = [h.chunk.path.name for h in served.search("carving a spruce instrument", k=3, mode="semantic")]
    with Index.create(tmp_path / "local-idx", precision="fp32") as local:
        local.update([tmp_path / "notes"])
        here = [h.chunk.path.name for h in local.search("carving a spruce instrument", k=3, mode="semantic")]
    assert remote[0] == here[0] and remote[0].startswith("violin")


def test_batches_concurrency_and_a_smaller_batch_on_413(fake_server: Server, tmp_path: Path) -> None:
    notes(tmp_path, 40)
    fake_server.control(delay=0.15)
    with Index.create(tmp_path / ".semsearch", model="openai:fake-embed", api_base=fake_server.base,
                      api_batch=8, api_concurrency=4, chunk_tokens=64) as index:  # fmt: skip
        summary = index.update([tmp_path / "notes"])
        stats = fake_server.stats()
        assert stats["largest_batch"] == 8
        assert stats["most_at_once"] >= 2  # requests overlapped
        assert stats["texts"] >= summary.chunks_total
        fake_server.control(reset=True, delay=0.0, max_batch=3)
        write(tmp_path / "notes" / "new.md", "\n\n".join(f"Paragraph {i} about lanterns." for i in range(30)))
        index.update()
        stats = fake_server.stats()
        assert stats["largest_batch"] <= 3 and stats["served"] >= 1
        assert index.search("lanterns", k=1)[0].chunk.path.name == "new.md"


def test_retries_honour_retry_after_and_ride_out_500s(fake_server: Server, tmp_path: Path) -> None:
    notes(tmp_path, 6)
    fake_server.control(fail=[{"status": 429, "retry_after": "1", "count": 2}, {"status": 500, "count": 1},
                              {"status": 503, "count": 1}])  # fmt: skip
    started = time.monotonic()
    with Index.create(tmp_path / ".semsearch", model="openai:fake-embed", api_base=fake_server.base) as index:
        index.update([tmp_path / "notes"])
        assert index.search("glacier valley", k=1)[0].chunk.path.name.startswith("glacier")
    arrivals = fake_server.stats()["arrivals"]
    assert arrivals[1] - arrivals[0] >= 0.95 and arrivals[2] - arrivals[1] >= 0.95  # Retry-After: 1
    assert time.monotonic() - started >= 2.0


def test_a_slow_answer_times_out_and_is_asked_again(fake_server: Server, tmp_path: Path) -> None:
    notes(tmp_path, 3)
    with Index.create(tmp_path / ".semsearch", model="openai:fake-embed", api_base=fake_server.base,
                      api_timeout=0.5, api_retries=2) as index:  # fmt: skip
        index.update([tmp_path / "notes"])
        write(tmp_path / "notes" / "late.md", "A note that arrives late, about tides.")
        fake_server.control(delay=1.5)
        with pytest.raises(ModelError, match=r"failed after 3 attempts: no answer within 0.5 s"):
            index.update()
        assert index.status(check_disk=False).files == 3  # what was indexed stays
        fake_server.control(delay=0.0)
        assert index.update().indexed == 1
        assert index.search("tides", k=1)[0].chunk.path.name == "late.md"


def test_one_line_errors_for_key_model_and_server(fake_server: Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    notes(tmp_path, 3)
    fake_server.control(key=KEY)
    base = ["index", "notes", "--model", "openai:fake-embed", "--api-base", fake_server.base]
    result = run(*base)
    assert result.exit_code == 2 and "wants a key" in result.output and "set OPENAI_API_KEY" in result.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    result = run(*base)
    assert result.exit_code == 2 and "refused the key in OPENAI_API_KEY" in result.output
    assert "sk-wrong" not in result.output
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("TEAM_EMBED_KEY", KEY)
    result = run("index", "notes", "--model", "openai:nomodel", "--api-base", fake_server.base,
                 "--api-key-env", "TEAM_EMBED_KEY")  # fmt: skip
    assert result.exit_code == 2 and "has no model 'nomodel'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    closed = Server("--fake")
    closed.stop()  # a port nothing listens on any more
    result = run("index", "notes", "--model", "openai:fake-embed", "--api-base", closed.base)
    assert result.exit_code == 2 and "cannot reach the embedding server" in result.output
    assert "connection refused" in result.output.lower()
    # The key's variable is remembered by name: later runs and queries need no flags.
    result = run(*base, "--api-key-env", "TEAM_EMBED_KEY", "-q")
    assert result.exit_code == 0, result.output
    assert run("query", "compiler bytecode", "-k", "1").exit_code == 0
    assert run("index", "-q").exit_code == 0
    for path in (tmp_path / ".semsearch").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_server_that_changed_model_is_refused(fake_server: Server, tmp_path: Path) -> None:
    notes(tmp_path, 4)
    assert run("index", "notes", "--model", "openai:fake-embed", "--api-base", fake_server.base, "-q").exit_code == 0
    fake_server.control(rotate=True)  # another model behind the same name and the same dimension
    write(tmp_path / "notes" / "more.md", "A new note about lighthouses.")
    result = run("index", "-q")
    assert result.exit_code == 2 and "is not the one this index was built with" in result.output
    assert "--rebuild" in result.output
    result = run("query", "lighthouse")
    assert result.exit_code == 2 and "is not the one this index was built with" in result.output
    fake_server.control(rotate=False)
    assert run("query", "lighthouse", "-k", "1").exit_code == 0


def test_a_server_dying_mid_build_loses_nothing_and_the_next_run_resends_only_the_rest(tmp_path: Path) -> None:
    notes(tmp_path, 30)
    server = Server("--fake", "--name", "fake-embed")
    try:
        server.control(die_after=6)  # the probe, then 5 batches of 4 chunks
        index = Index.create(tmp_path / ".semsearch", model="openai:fake-embed", api_base=server.base,
                             api_batch=4, api_concurrency=1, api_retries=1, chunk_tokens=48)  # fmt: skip
        with index, pytest.raises(ModelError, match="connection refused"):
            index.update([tmp_path / "notes"], tuning=Tuning(group_chunks=8, embed_slice=8, commit_seconds=0))

    finally:
        server.stop()
    again = Server("--fake", "--name", "fake-embed")
    try:
        result = run("index", "--api-base", again.base)  # the first build resumed: no other flag
        assert result.exit_code == 0, result.output
        kept = re.search(r"indexed (\d+) files, (\d+) unchanged", result.output)
        assert kept and int(kept[2]) > 0 and int(kept[1]) + int(kept[2]) == 30, result.output
        sent = again.stats()["texts"]
        with Index.open(tmp_path / ".semsearch") as index:
            status = index.status(check_disk=False)
            assert status.files == 30
            assert sent <= status.chunks - 8 + len(PROBES)  # at least the first group was kept
            assert index.search("sourdough loaf", k=1)[0].chunk.path.name.startswith("bread")
    finally:
        again.stop()


def test_known_families_get_their_prompts(fake_server: Server, tmp_path: Path) -> None:
    notes(tmp_path, 2)
    with Index.create(tmp_path / ".semsearch", model="openai:e5-small-v2", api_base=fake_server.base) as index:
        index.update([tmp_path / "notes"])
        assert any(f.startswith("passage: ") for f in fake_server.stats()["first_inputs"])
        fake_server.control(reset=True)
        index.search("bread", k=1, mode="semantic")
    firsts = fake_server.stats()["first_inputs"]
    assert firsts == [firsts[0]] and firsts[0].startswith("semsearch probe")  # the check, in the query's request
    manifest = json.loads((tmp_path / ".semsearch" / "manifest.json").read_text())
    assert (manifest["model"]["query_prompt"], manifest["model"]["document_prompt"]) == ("query: ", "passage: ")


@pytest.mark.parametrize("engine", ["local", "postgres"])
def test_a_moved_server_is_given_once_and_remembered(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The endpoint given on a later run replaces the recorded one (the same model: no rebuild),
    on both engines; queries then go there with no flag."""
    notes(tmp_path, 6)
    where = str(tmp_path / ".semsearch") if engine == "local" else request.getfixturevalue("pg_url")
    first = Server("--fake", "--name", "fake-embed")
    try:
        result = run("index", "notes", "--index", where, "--model", "openai:fake-embed", "--api-base", first.base, "-q")
        assert result.exit_code == 0, result.output
    finally:
        first.stop()
    moved = Server("--fake", "--name", "fake-embed")
    try:
        assert run("query", "glacier", "--index", where).exit_code == 2  # the old address answers no more
        write(tmp_path / "notes" / "tide.md", "Tide tables for the harbour mouth.")
        result = run("index", "--index", where, "--api-base", moved.base)
        assert result.exit_code == 0 and "indexed 1 file," in result.output, result.output
        result = run("query", "tide tables", "--index", where, "--json", "-k", "1")
        assert result.exit_code == 0 and "tide.md" in result.output, result.output
    finally:
        moved.stop()


def test_openai_base_url_is_honoured_for_a_new_index(fake_server: Server, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """As the official SDK: OPENAI_BASE_URL when no --api-base is given; the index then records it."""
    notes(tmp_path, 2)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.base + "/")
    result = run("index", "notes", "--model", "openai:fake-embed", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / ".semsearch" / "manifest.json").read_text())
    assert manifest["model"]["endpoint"] == fake_server.base and manifest["model"]["key_env"] == "OPENAI_API_KEY"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # the index's own endpoint comes first
    assert run("query", "bread", "-k", "1").exit_code == 0
    result = run("index", "notes", "--model", "openai:fake-embed", "--api-base", "ftp://example.org/v1")
    assert result.exit_code == 2 and "--api-base must be an http(s) URL" in result.output
    result = run("index", "notes", "--model", "openai:fake-embed", "--api-base", "http://user:s3cret@127.0.0.1:9/v1")
    assert result.exit_code == 2 and "s3cret" not in result.output


def test_an_index_of_a_served_model_is_published_to_postgres_as_it_is(
    fake_server: Server, tmp_path: Path, pg_url: str
) -> None:
    """`index --from` copies the stored vectors and the model's record (endpoint, probes): the team's
    index then queries the same server, and the copy sent no document to it."""
    notes(tmp_path, 6)
    assert run("index", "notes", "--model", "openai:fake-embed", "--api-base", fake_server.base, "-q").exit_code == 0
    fake_server.control(reset=True)
    result = run("index", "--index", pg_url, "--from", str(tmp_path / ".semsearch"))
    assert result.exit_code == 0, result.output
    assert fake_server.stats()["texts"] == 0  # nothing embedded again
    result = run("query", "glacier valley moraines", "--index", pg_url, "-k", "1", "-l", "--mode", "semantic")
    assert result.exit_code == 0 and result.output.startswith("notes/glacier"), result.output
    assert fake_server.stats()["requests"] == 1  # the query (with its probe), at the recorded endpoint
