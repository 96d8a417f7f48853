"""`semsearch serve --port 0 ...` in a process of its own, for the tests and benchmarks: its stderr
goes to a log file (read for the address it serves at, kept for what it says), stopped by its PID."""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from test_e2e import semsearch_cmd


class Served:
    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="semsearch-serve-", suffix=".log")[1])
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([*semsearch_cmd(), "serve", "--port", "0", *args], cwd=cwd, env=env,
                                         stdout=subprocess.DEVNULL, stderr=log, text=True)  # fmt: skip
        deadline = time.monotonic() + 120
        found = None
        while found is None and time.monotonic() < deadline and self.proc.poll() is None:
            found = re.search(r"serving at (http://\S+/)", self.log.read_text())
            time.sleep(0.05)
        if found is None:
            self.proc.kill()
            raise RuntimeError(f"serve did not start: {self.log.read_text()}")
        self.url = found.group(1)
        self.first_line = self.log.read_text().splitlines()[0]

    def stop(self) -> str:
        """Stop it (Ctrl-C, then kill); what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        said = self.log.read_text()
        self.log.unlink(missing_ok=True)
        return said
