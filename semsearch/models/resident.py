"""A resident query model: one process keeps the query embedder loaded; short-lived ones ask it.

Starting onnxruntime's session and the tokenizer is most of a one-shot ``semsearch query``
(benchmarks/RESULTS.md). A model server (``semsearch model-server``, started in the background
by the first query that finds none, gone after ``idle`` seconds without a request) holds the
embedder and answers over a Unix socket that only this user can reach. It embeds one request
as the query would in-process (the same export, the same session options, one query per run), so
the vectors are the same to the bit. Anything wrong with it (none running, a stale socket, a
different model, a broken reply) makes the caller embed in-process, as without it.

The protocol, one request per connection: a JSON line ``{"v": 1, "fingerprint": ..., "texts":
[...]}``; the reply a JSON line ``{"ok": true, "dim": D, "count": N}`` followed by N x D
little-endian float32, or ``{"ok": false, "error": ...}``. An empty ``texts`` is a handshake.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.models.base import ModelInfo

if TYPE_CHECKING:
    import subprocess

    import numpy as np

    from semsearch.models.base import QueryEmbedder

VERSION = 1
IDLE_SECONDS = 900.0  # a server with no request for this long exits
START_SECONDS = 20.0  # how long a query waits for the server it started before embedding itself
CONNECT_SECONDS = 2.0  # a connected server that answers slower than this is not used
ANSWER_SECONDS = 60.0  # a server that takes longer over a query is given up (the model here answers)
MAX_REQUEST = 1 << 20  # bytes of one request line
MAX_TEXTS = 256
ENV_SWITCH = "SEMSEARCH_MODEL_SERVER"  # "0": never use or start one
ENV_IDLE = "SEMSEARCH_MODEL_SERVER_IDLE"
ENV_DIR = "SEMSEARCH_RUNTIME_DIR"
_OFF = f" ({ENV_SWITCH}=0 stops trying)"


class ResidentError(Exception):
    """The model server could not answer (the caller embeds in-process instead)."""


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "no", "false", "off")


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(ENV_IDLE, IDLE_SECONDS)))
    except ValueError:
        return IDLE_SECONDS


def runtime_dir() -> Path:
    """A folder only this user may enter: ``$SEMSEARCH_RUNTIME_DIR``, ``$XDG_RUNTIME_DIR/semsearch``
    or ``/tmp/semsearch-UID``; made 0700 if new, refused if another user owns it or others may enter."""
    base = os.environ.get(ENV_DIR)
    if base:
        folder = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "semsearch"
    else:
        folder = Path("/tmp") / f"semsearch-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ResidentError(f"{folder} is not a private folder of this user")
    return folder


def _paths(fingerprint: str) -> tuple[Path, Path]:
    """The server's socket and lock file for a model and this install of semsearch (each its own
    server: one left by an older install never answers a newer one). Short names: a socket's
    path may hold about 100 bytes."""
    name = hashlib.sha256(f"{fingerprint}\0{_code_stamp()}".encode()).hexdigest()[:16]
    folder = runtime_dir()
    return folder / f"m-{name}.sock", folder / f"m-{name}.lock"


@functools.cache
def _code_stamp() -> str:
    """This install's version, protocol and the model code's files (names, sizes, mtimes): a
    server runs the code that embeds as this process would. Taken once per process."""
    from semsearch.version import __version__

    here = Path(__file__).resolve().parent
    parts = [__version__, str(VERSION), str(here)]
    for file in sorted(here.glob("*.py")):
        st = file.stat()
        parts.append(f"{file.name}:{st.st_size}:{st.st_mtime_ns}")
    return "\0".join(parts)


# -- the client ------------------------------------------------------------------------------


class ResidentEmbedder:
    """A :class:`QueryEmbedder` that asks the model server of *info* over its socket; once the
    server fails to answer, the embedder from *fallback* (loaded then) answers instead."""

    def __init__(self, path: Path, info: ModelInfo, fallback: Callable[[], QueryEmbedder]) -> None:
        self._path = path
        self._info = info
        self._fallback = fallback
        self._local: QueryEmbedder | None = None
        self.max_tokens = info.max_tokens

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if self._local is None:
            try:
                return _ask(self._path, self._info, list(texts))
            except ResidentError:
                self._local = self._fallback()
        return self._local.embed_queries(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-pieces per text, as the model reads them (the server's tokenizer)."""
        if self._local is None:
            try:
                return _count(self._path, self._info, list(texts))
            except ResidentError:
                self._local = self._fallback()
        count = getattr(self._local, "count_tokens", None)
        return list(count(texts)) if count is not None else [0 for _ in texts]


def _exchange(
    path: Path, info: ModelInfo, texts: list[str], op: str | None, timeout: float
) -> tuple[dict[str, Any], Any]:
    """Send one request to the server at *path*: its reply's JSON head (``ok`` checked) and the
    stream the rest of the reply follows on (read it inside the caller's ``with``)."""
    request: dict[str, Any] = {"v": VERSION, "fingerprint": info.fingerprint, "texts": texts}
    if op is not None:
        request["op"] = op
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_SECONDS)
        conn.connect(str(path))
        conn.settimeout(timeout)
        conn.sendall(json.dumps(request).encode() + b"\n")
        stream = conn.makefile("rb")
        head = json.loads(stream.readline(MAX_REQUEST) or b"{}")
    except (OSError, ValueError) as exc:
        conn.close()
        raise ResidentError(str(exc)) from None
    conn.close()  # the stream keeps the socket open until it is closed
    if not isinstance(head, dict) or not head.get("ok"):
        stream.close()
        raise ResidentError(str(head.get("error", "no reply") if isinstance(head, dict) else "a bad reply"))
    return head, stream


def _ask(path: Path, info: ModelInfo, texts: list[str]) -> np.ndarray:
    import numpy as np

    head, stream = _exchange(path, info, texts, None, ANSWER_SECONDS if texts else CONNECT_SECONDS)
    with stream:
        try:
            dim, count = int(head["dim"]), int(head["count"])
            if dim != info.dim or count != len(texts):
                raise ResidentError(f"a reply of {count} x {dim} for {len(texts)} x {info.dim}")
            body = stream.read(dim * count * 4)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ResidentError(str(exc)) from None
    if len(body) != dim * count * 4:
        raise ResidentError("a short reply")
    return np.frombuffer(body, dtype="<f4").reshape(count, dim).astype(np.float32)


def _count(path: Path, info: ModelInfo, texts: list[str]) -> list[int]:
    head, stream = _exchange(path, info, texts, "count", CONNECT_SECONDS)
    stream.close()
    try:
        counts = [int(n) for n in head["counts"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ResidentError(f"a bad reply ({exc})") from None
    if len(counts) != len(texts):
        raise ResidentError("a bad reply")
    return counts


def _up(path: Path, info: ModelInfo) -> bool:
    """Whether a server of *info*'s model answers a handshake at *path*."""
    if not path.exists():
        return False
    try:
        _ask(path, info, [])
    except ResidentError:
        return False
    return True


def connect(info: ModelInfo) -> Path | None:
    """The socket of a running server of *info*'s model, if one answers a handshake."""
    try:
        path, _ = _paths(info.fingerprint)
    except (OSError, ResidentError):
        return None
    return path if _up(path, info) else None


def resident_embedder(
    info: ModelInfo, fallback: Callable[[], QueryEmbedder], on_note: Callable[[str], None]
) -> QueryEmbedder:
    """*info*'s query embedder through its model server (started now if none runs), else the one
    *fallback* loads in this process. Only for the ONNX export of a model (what the server loads)."""
    from semsearch.models.resolve import export_dir_for

    if not enabled() or os.environ.get("SEMSEARCH_BACKEND", "auto") == "torch":
        return fallback()
    if not (export_dir_for(info.fingerprint) / "export.json").is_file():
        return fallback()
    path = _connect_or_start(info, on_note)
    return ResidentEmbedder(path, info, fallback) if path is not None else fallback()


def _connect_or_start(info: ModelInfo, on_note: Callable[[str], None]) -> Path | None:
    """The server of *info*'s model: the running one, else one started now and waited for (None:
    it could not be started, or it did not answer within START_SECONDS)."""
    try:
        path, lock = _paths(info.fingerprint)
        if _up(path, info):
            return path
        process = _start(info, path.with_suffix(".log"))
    except (OSError, ResidentError) as exc:
        on_note(f"the model server could not be started ({exc}); the query model loads here{_OFF}")
        return None
    deadline = time.monotonic() + START_SECONDS
    # Until it answers; if it ends first, another server took the lock (and is loading) or it failed.
    while time.monotonic() < deadline and (process.poll() is None or _lock_held(lock)):
        if _up(path, info):
            return path
        time.sleep(0.01)
    if _up(path, info):
        return path
    if process.poll() is None:
        on_note(f"the model server did not answer in time; the query model loads here{_OFF}")
    else:
        log = path.with_suffix(".log")
        on_note(f"the model server stopped before answering (see {log}); the query model loads here{_OFF}")
    return None


def _lock_held(lock: Path) -> bool:
    import fcntl

    try:
        with open(lock, "rb") as handle:  # not created: a stopped server took its lock file away
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def _open_lock(path: Path) -> Any:
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")


def _start(info: ModelInfo, log_path: Path) -> subprocess.Popen[bytes]:
    """The server, as a process of its own session (a Ctrl-C at the terminal does not reach it),
    in ``/`` (it keeps no folder of the user's busy), its messages in *log_path*."""
    import subprocess

    command = [sys.executable, "-m", "semsearch", "model-server", "--model", json.dumps(asdict(info))]
    with open(log_path, "wb") as log:
        os.chmod(log.name, 0o600)
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )


# -- the server ------------------------------------------------------------------------------


def serve(
    info: ModelInfo,
    load: Callable[[ModelInfo], QueryEmbedder],
    *,
    idle: float | None = None,
    on_note: Callable[[str], None] = lambda s: None,
) -> int:
    """Hold *info*'s query embedder (from *load*) and answer on its socket until *idle* seconds
    pass without a request. 0: served and stopped; 1: another server holds the lock."""
    import fcntl

    idle = idle_seconds() if idle is None else idle
    path, lock_path = _paths(info.fingerprint)
    lock = _open_lock(lock_path)  # held for the server's life
    owned = False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 1
        if not _same_file(lock, lock_path):
            return 1  # the server before took its lock file away as this one opened it: try later
        owned = True
        # Who holds it, for `semsearch model-server --status` and `--stop`.
        record = {"pid": os.getpid(), "model": info.name, "fingerprint": info.fingerprint, "started": time.time()}
        lock.truncate(0)
        lock.write(json.dumps(record).encode() + b"\n")
        lock.flush()
        embedder = load(info)
        if threading.current_thread() is threading.main_thread():
            # `semsearch model-server --stop` (SIGTERM): stop as when idle, its files removed.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a server that died: the lock says none is running
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen(16)
            listener.settimeout(0.5)
            _Server(listener, embedder, info, idle, on_note).run()
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            ending = sys.exc_info()[1]
            if ending is None or (isinstance(ending, SystemExit) and ending.code in (0, None)):
                with contextlib.suppress(FileNotFoundError):  # idle, or SIGTERM: nothing to read there
                    path.with_suffix(".log").unlink()  # (a server that failed keeps it)
        return 0
    finally:
        if owned:
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()  # still held: a server starting now makes a new one
        lock.close()


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except OSError:
        return False


@dataclass(frozen=True)
class RunningServer:
    """A model server of this user (``pid`` None: one too old to say, or still starting)."""

    pid: int | None
    model: str
    started: float | None
    socket: Path


def running_servers() -> list[RunningServer]:
    """This user's model servers: those whose lock is held in this user's private folder."""
    try:
        folder = runtime_dir()
    except (OSError, ResidentError):
        return []
    found = []
    for lock in sorted(folder.glob("m-*.lock")):
        if not _lock_held(lock):
            continue
        try:
            record = json.loads(lock.read_bytes() or b"{}")
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict):
            record = {}
        pid = record.get("pid")
        started = record.get("started")
        found.append(
            RunningServer(
                pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                model=str(record.get("model", "?")),
                started=float(started) if isinstance(started, (int, float)) else None,
                socket=lock.with_suffix(".sock"),
            )
        )
    return found


def stop_servers(wait: float = 10.0) -> tuple[list[RunningServer], list[RunningServer]]:
    """Stop this user's model servers (SIGTERM to each, then wait for its lock to go): (stopped,
    not stopped). A pid is signalled only while its lock is held and the process is this
    user's ``semsearch model-server``: never another user's, nor a pid reused since."""
    stopped: list[RunningServer] = []
    left: list[RunningServer] = []
    for server in running_servers():
        if server.pid is None or not _is_our_server(server.pid):
            left.append(server)
            continue
        try:
            os.kill(server.pid, signal.SIGTERM)
        except OSError:
            left.append(server)
            continue
        lock = server.socket.with_suffix(".lock")
        deadline = time.monotonic() + wait
        while _lock_held(lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        (left if _lock_held(lock) else stopped).append(server)
    return stopped, left


def _is_our_server(pid: int) -> bool:
    """Whether *pid* is a process of this user running ``semsearch model-server``."""
    if not os.path.isdir("/proc"):
        return True  # no /proc to ask: the pid is the one the held lock in this user's private folder names
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().split(b"\0")
    except OSError:
        return False
    return b"model-server" in command


class _Server:
    def __init__(self, listener: socket.socket, embedder: Any, info: ModelInfo, idle: float,
                 on_note: Callable[[str], None]) -> None:  # fmt: skip
        self._listener = listener
        self._embedder = embedder
        self._info = info
        self._idle = idle
        self._on_note = on_note
        self._last = time.monotonic()
        self._busy = 0
        self._lock = threading.Lock()  # one embedding at a time: requests are single queries
        self._state = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                with self._state:
                    if not self._busy and time.monotonic() - self._last > self._idle:
                        return
                continue
            with self._state:
                self._busy += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(CONNECT_SECONDS)
                line = conn.makefile("rb").readline(MAX_REQUEST)
                conn.settimeout(None)
                conn.sendall(self._reply(line))
        except OSError as exc:
            self._on_note(f"a request failed: {exc}")
        finally:
            with self._state:
                self._busy -= 1
                self._last = time.monotonic()

    def _reply(self, line: bytes) -> bytes:
        import numpy as np

        try:
            request = json.loads(line)
            texts = request["texts"]
            if request.get("v") != VERSION or request.get("fingerprint") != self._info.fingerprint:
                raise ValueError("another model or protocol")
            if not isinstance(texts, list) or len(texts) > MAX_TEXTS or not all(isinstance(t, str) for t in texts):
                raise ValueError("texts must be a list of at most 256 strings")
        except (ValueError, KeyError, TypeError) as exc:
            return json.dumps({"ok": False, "error": f"bad request: {exc}"}).encode() + b"\n"
        if request.get("op") == "count":
            count = getattr(self._embedder, "count_tokens", None)
            with self._lock:
                counts = [int(n) for n in count(texts)] if count is not None else [0 for _ in texts]
            return json.dumps({"ok": True, "counts": counts}).encode() + b"\n"
        if texts:
            with self._lock:
                vectors = np.asarray(self._embedder.embed_queries(texts), dtype="<f4")
        else:
            vectors = np.zeros((0, self._info.dim), dtype="<f4")
        head = {"ok": True, "dim": int(vectors.shape[1]), "count": int(vectors.shape[0])}
        return json.dumps(head).encode() + b"\n" + vectors.tobytes()
