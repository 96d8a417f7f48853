"""Indexing on a real Ray cluster: two nodes started here on loopback (`ray start --head` and
`ray start --address`, one CPU each, each in a process group of its own, stopped by that group's
PID, never `ray stop`), a real corpus with a scanned PDF page read by OCR, compared with a local
run; a third node killed mid-run; the CLI and its one-line errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_pdf, write
from ray_cluster import RAY, Node, free_port
from test_e2e import run, semsearch_cmd
from test_ocr import scanned_pdf

from semsearch import Index
from semsearch.errors import SemsearchError
from semsearch.indexing import IndexEvent
from semsearch.store import IndexReader

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    if not RAY.exists():
        if os.environ.get("SEMSEARCH_REQUIRE_RAY"):
            pytest.fail("SEMSEARCH_REQUIRE_RAY is set but Ray is not installed (pip install '.[ray]')")
        pytest.skip("Ray is not installed (pip install '.[ray]')")
    port = free_port()
    address = f"127.0.0.1:{port}"
    # One authentication mode everywhere: a local ray.init() on this machine (a user's --ray
    # local) leaves ~/.ray/auth_token, which turns token auth on for whoever starts next.
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    head = Node("--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                "--include-dashboard=false", env=env)  # fmt: skip
    worker: Node | None = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        worker = Node(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", env=env)
        from semsearch.indexing.cluster import connect

        ray = connect(address)
        while sum(1 for n in ray.nodes() if n.get("Alive")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(1 for n in ray.nodes() if n.get("Alive")) == 2, "the worker node did not join"
        yield address, env
    finally:
        import ray

        ray.shutdown()
        if worker is not None:
            worker.stop()
        head.stop()
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "docs"
    for n in range(40):
        write(root / f"note-{n:02d}.md", f"# Note {n}\n\n" + " ".join(
            f"Paragraph {k} of note {n} on tides, kilns and compilers." for k in range(30)) + "\n")  # fmt: skip
    make_pdf(root / "report.pdf", ["Quarterly report on the harbour's dredging works.", "Costs rose by a tenth."])
    scanned_pdf(root / "scan.pdf", [("THE LIGHTHOUSE KEEPER", "logs the storm at midnight")])
    write(root / "code.py", 'def retry(func, attempts=5):\n    """Retry with exponential backoff."""\n')
    return root


def contents(index_dir: Path) -> dict[tuple[str, int], tuple[str, np.ndarray]]:
    """(file, ordinal) -> (text, vector) of every chunk an index holds."""
    with IndexReader(index_dir) as reader:
        records = {record.id: record for record in reader.chunks()}
        vectors = reader.vectors(list(records))
        return {(r.path.name, r.ordinal): (r.text, vectors[cid]) for cid, r in records.items()}


def test_an_update_on_the_cluster_stores_what_a_local_one_does(
    cluster: tuple[str, dict[str, str]], corpus: Path, tmp_path: Path
) -> None:
    from semsearch.indexing.cluster import RayExecutor

    address, _ = cluster
    events: list[str] = []
    shares: list[str] = []
    executor = RayExecutor(address)

    def seen(event: IndexEvent) -> None:
        (shares if event.kind == "cluster" else events).append(event.text)

    with Index.create(tmp_path / "on-ray", precision="fp32") as index:
        summary = index.update([corpus], executor=executor, on_event=seen)
    with Index.create(tmp_path / "here", precision="fp32") as index:
        local = index.update([corpus])
    assert summary.indexed == local.indexed == 43 and summary.chunks_total == local.chunks_total
    # OCR ran on the cluster's workers, and their pages and tokens are in the run's figures.
    assert summary.pages_ocr == local.pages_ocr >= 1 and sum(executor.pages_on.values()) == summary.pages_ocr
    assert summary.tokens_embedded == local.tokens_embedded > 0 and summary.embed_seconds > 0
    assert any(t.startswith("cluster: 2 nodes") and "chunks/s" in t for t in events), events
    assert shares and all(s.startswith("node ") and re.search(r"embedded \d+ chunks? \(", s) for s in shares)  # while it ran
    assert any("OCR pages" in t for t in events if t.startswith("cluster: 2 nodes")), events
    assert sum(executor.read_on.values()) == sum(executor.embedded_on.values()) == 43
    assert sum(executor.chunks_on.values()) == summary.chunks_total
    assert len(set(executor.read_on) | set(executor.embedded_on)) == 2  # both nodes worked
    ours, theirs = contents(tmp_path / "on-ray"), contents(tmp_path / "here")
    assert ours.keys() == theirs.keys()
    assert all(ours[k][0] == theirs[k][0] for k in ours)  # the same chunks
    worst = max(float(np.abs(ours[k][1] - theirs[k][1]).max()) for k in ours)
    assert worst == 0.0, worst  # fp32: bit-equal (a text's fp32 vector does not depend on its batch)
    assert any("LIGHTHOUSE" in text.upper() for text, _ in ours.values())
    # The pages the workers recognized are in this index's OCR cache: a local read takes them.
    with Index.open(tmp_path / "on-ray") as index:
        again = index.update(rebuild=True)
    assert again.pages_ocr == summary.pages_ocr and again.pages_ocr_cached == again.pages_ocr
    # Ray's usage reporting stayed off: no thread left asking a Prometheus on localhost:9090.
    assert not [t.name for t in threading.enumerate() if "usage" in t.name], threading.enumerate()


def test_workers_that_see_the_files_read_them_at_their_paths(
    cluster: tuple[str, dict[str, str]], corpus: Path, tmp_path: Path
) -> None:
    from semsearch.indexing.cluster import RayExecutor

    address, _ = cluster
    executor = RayExecutor(address, shared_paths=True)  # loopback: every node sees this disk
    with Index.create(tmp_path / "shared", precision="int8") as index:  # auto's choice on VNNI CPUs
        summary = index.update([corpus], executor=executor)
    with Index.create(tmp_path / "here", precision="int8") as index:
        index.update([corpus])
    assert summary.indexed == 43 and sum(executor.read_on.values()) == 43
    ours, theirs = contents(tmp_path / "shared"), contents(tmp_path / "here")
    assert ours.keys() == theirs.keys() and all(ours[k][0] == theirs[k][0] for k in ours)
    # int8's dynamic quantization scales by the whole batch, so a vector moves a little with its
    # batch (down to 0.986 cosine between a text alone and in a batch of 64, measured here).
    closest = min(float(ours[k][1] @ theirs[k][1]) for k in ours)
    assert closest > 0.97, closest


def test_a_small_update_stays_here_and_changes_reuse_stored_vectors(
    cluster: tuple[str, dict[str, str]], corpus: Path, tmp_path: Path
) -> None:
    from semsearch.indexing.cluster import RayExecutor

    address, _ = cluster
    work = tmp_path / "docs"
    write(work / "a.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    executor = RayExecutor(address)
    with Index.create(tmp_path / "idx", precision="fp32") as index:
        index.update([work], executor=executor)
        assert not executor.read_on  # one file: not worth the cluster
        for n in range(10):
            write(work / f"copy-{n}.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
        summary = index.update([work], executor=executor)
    assert sum(executor.read_on.values()) == 10 and summary.chunks_reused == 10  # stored vectors taken


def test_a_worker_node_killed_mid_run_loses_nothing(cluster: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    from semsearch.indexing.cluster import RayExecutor

    address, env = cluster
    import ray

    docs = tmp_path / "many"
    for n in range(80):
        write(docs / f"f{n:03d}.md", f"# File {n}\n\n" + " ".join(f"Sentence {k} about item {n}." for k in range(120)))
    third = Node(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", env=env)
    try:
        deadline = time.monotonic() + 60
        while sum(1 for n in ray.nodes() if n.get("Alive")) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(1 for n in ray.nodes() if n.get("Alive")) == 3

        def kill_third(event: object) -> None:
            if getattr(event, "kind", "") == "file" and third.proc.poll() is None:
                third.stop(signal.SIGKILL)  # the node dies mid-run, as a machine does

        with Index.create(tmp_path / "idx", precision="fp32") as index:
            try:
                summary = index.update([docs], executor=RayExecutor(address), on_event=kill_third)
            except SemsearchError as exc:  # the run may fail (one line); the next resumes
                assert "\n" not in str(exc)
                summary = index.update([docs], executor=RayExecutor(address))
            again = index.update([docs])
        assert third.proc.poll() is not None
        assert again.indexed == 0 and again.unchanged == 80
        assert summary.chunks_total == again.chunks_total > 80
    finally:
        third.stop(signal.SIGKILL)


def test_the_cli_and_its_errors(cluster: tuple[str, dict[str, str]], corpus: Path, tmp_path: Path) -> None:
    address, env = cluster
    env = {**env, "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    done = run(["index", str(corpus), "--ray", address, "--index", str(tmp_path / "idx")], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert "cluster: 2 nodes" in done.stderr.decode()
    found = run(
        ["query", "lighthouse keeper storm", "-k", "1", "--index", str(tmp_path / "idx")], cwd=tmp_path, env=env
    )
    assert found.returncode == 0 and b"scan.pdf" in found.stdout
    refused = run(["index", str(corpus), "--ray", f"127.0.0.1:{free_port()}", "--index", str(tmp_path / "other")],
                  cwd=tmp_path, env=env)  # fmt: skip
    lines = refused.stderr.decode().strip().splitlines()  # progress lines, then the error's one line
    assert refused.returncode == 2 and [line for line in lines if "error" in line] == [lines[-1]], lines
    assert lines[-1].startswith("semsearch: error: cannot reach the Ray cluster at 127.0.0.1:")
    assert lines[-1].endswith("connection refused")


def test_ray_local_starts_an_instance_of_its_own_and_leaves_nothing_running(
    cluster: tuple[str, dict[str, str]], corpus: Path, tmp_path: Path
) -> None:
    """`--ray local` starts a new Ray instance (never the one /tmp/ray/ray_current_cluster names,
    which outlives its cluster: a run hung on one gone), and its processes end with the run."""
    import uuid

    _, env = cluster
    mark = uuid.uuid4().hex
    env = {**env, "NO_COLOR": "1", "SEMSEARCH_TEST_MARK": mark}
    env.pop("RAY_ADDRESS", None)
    done = run(["index", str(corpus), "--ray", "local", "--index", str(tmp_path / "idx")], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert "cluster: 1 node, " in done.stderr.decode()  # its own instance, not the test's two nodes
    deadline = time.monotonic() + 30
    while (left := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # a leak: stop it by PID, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"--ray local left {len(left)} processes running"


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds *mark* (the run's and its children's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"SEMSEARCH_TEST_MARK={mark}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_version_mismatch_is_refused(cluster: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    import semsearch.version
    from semsearch.indexing.cluster import ClusterError, connect

    address, _ = cluster
    monkeypatch.setattr(semsearch.version, "__version__", "0.0.0-other")
    with pytest.raises(ClusterError, match=r"has semsearch \S+, this is 0\.0\.0-other: install the same version"):
        connect(address)


def test_embedding_actors_follow_the_clusters_cpus_and_gpus() -> None:
    from semsearch.indexing.cluster import _pool_size

    assert _pool_size({"CPU": 4.0}, "int8", None, 2) == (2, 0.0)  # an actor per CPU but one per node
    assert _pool_size({"CPU": 2.0}, "int8", None, 2) == (1, 0.0)
    assert _pool_size({"CPU": 64.0, "GPU": 4.0}, "fp16", None, 2) == (4, 1.0)  # a GPU each
    assert _pool_size({"CPU": 64.0, "GPU": 4.0}, "int8", None, 2) == (62, 0.0)  # int8 runs on CPUs
    assert _pool_size({"CPU": 64.0, "GPU": 4.0}, "fp32", 0.5, 2) == (8, 0.5)
    assert _pool_size({"CPU": 64.0, "GPU": 4.0}, "fp32", 0, 2) == (62, 0.0)
    assert _pool_size({}, "fp32", None) == (1, 0.0)


def test_without_ray_installed_the_flag_says_how(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['ray'] = None\n"
        "from semsearch.indexing.cluster import connect\n"
        "try:\n    connect('127.0.0.1:1')\nexcept Exception as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "--ray needs Ray: pip install 'semsearch[ray]'" in out.stdout
    assert semsearch_cmd()
