"""A Ray node on loopback for the tests and benchmarks: `ray start ... --block` as a child
process, stopped with every process under it by PID (never `ray stop`, which ends every Ray
process on the machine by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """`ray start ... --block`: the node's processes are its descendants."""

    def __init__(self, *args: str, env: dict[str, str], cores: str | None = None) -> None:
        """*cores*: the CPUs (``taskset -c`` form) the node's processes may run on, as if it were
        a machine of its own (its workers' onnxruntime and OCR see only those)."""
        pinned = ["taskset", "-c", cores] if cores else []
        self.proc = subprocess.Popen([*pinned, str(RAY), "start", "--block", "--disable-usage-stats", *args],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the node: `ray start`, and every process under it (raylet, GCS, and the workers,
        which Ray puts in sessions of their own), each by its PID, gathered while they live."""
        pids = [self.proc.pid, *_descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(pid) for pid in pids[1:]):
            time.sleep(0.2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
