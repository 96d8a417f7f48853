"""Helpers shared by the benchmark scripts (not part of the semsearch package).

Child processes are timed by wall clock and reaped with ``os.wait4`` so each one's own peak RSS is
known (``resource.getrusage(RUSAGE_CHILDREN)`` only gives the maximum over all children).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A script runs as `python benchmarks/TOPIC/SCRIPT.py`: it puts the repository first on sys.path to
# import this module (and this tree's semsearch); the tests' helpers (pg_server, ray_cluster,
# serve_process, test_ocr's scanned_pdf) come from tests/, last so that they shadow nothing.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:
    sys.path.append(str(REPO / "tests"))
BUNDLED_DATA = REPO / "benchmarks" / "data"  # small data sets kept in the repository
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_WORK = Path("/tmp/bench-work")
PYTHON = sys.executable


def semsearch_cmd() -> list[str]:
    """How to start the CLI: the console script beside this Python, else ``python -m semsearch``."""
    script = Path(PYTHON).with_name("semsearch")
    return [str(script)] if script.is_file() else [PYTHON, "-m", "semsearch"]


def require_data(data: Path, *parts: str) -> Path:
    """The path under the shared data folder, or exit 2 with a clear message when it is missing."""
    path = data.joinpath(*parts)
    if not path.exists():
        sys.stderr.write(
            f"error: shared data not found: {path}\n"
            f"  These benchmarks read ../shared/data beside the repository (see its README.md);\n"
            f"  pass --data PATH to point at another copy.\n"
        )
        sys.exit(2)
    return path


@dataclass
class Run:
    seconds: float
    max_rss_kb: int
    returncode: int
    stdout: bytes
    stderr: bytes


# Runs a command and reports its wall time and peak RSS on the fd it is given. A child's ru_maxrss includes the
# memory of the process it was forked from (the kernel keeps the high-water mark across exec): a
# benchmark holding a million vectors would add them to every child's figure, so children are
# started from this small launcher (about 10 MB, the floor of every RSS figure).
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), f"{time.perf_counter() - started} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def run_child(
    cmd: list[str],
    *,
    stdin_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> Run:
    """Run ``cmd`` to completion; wall time from just before its spawn to reaping, and its own
    peak RSS (through :data:`LAUNCHER`)."""
    import signal
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen([PYTHON, "-c", LAUNCHER, str(write_end), *cmd], stdin=stdin, stdout=out,
                                    stderr=err, env=env, cwd=cwd, pass_fds=(write_end,), start_new_session=True)
            os.close(write_end)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            report = os.read(read_end, 200).decode().split()
        finally:
            os.close(read_end)
            if stdin_path:
                stdin.close()
        out.seek(0)
        err.seek(0)
        if len(report) == 3:
            result = Run(float(report[0]), int(report[1]), int(report[2]), out.read(), err.read())
        else:  # killed, or the launcher failed
            result = Run(float("nan"), 0, proc.returncode if proc.returncode else -9, out.read(), err.read())
    if check and result.returncode not in (0, 1):  # semsearch: 1 = nothing found
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr.decode(errors='replace')[-3000:]}"
        )
    return result


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


TARGET_HEAD = ("figure", "value", "target / ratio", "")


def print_table(title: str, rows: Sequence[Sequence[object]], head: Sequence[str] = TARGET_HEAD) -> None:
    """Rows under *head* (default: figure, value, target / reference, verdict), columns aligned."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n== {title} ==")
    print("  ".join(str(h).ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def machine_note() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = "?"
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    bf16 = "yes" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "no"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, bf16 units: {bf16}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a load above the CPU count means noisy timings)"
    )


def write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.pop("SEMSEARCH_INDEX", None)
    env.pop("SEMSEARCH_MODE", None)
    env.pop("SEMSEARCH_BACKEND", None)
    # Every cold query loads its own model (as the figures before the model server did, and as an
    # older revision run beside this tree does); bench_query.py measures the server on purpose.
    env["SEMSEARCH_MODEL_SERVER"] = "0"
    if extra:
        env.update(extra)
    return env


def scifact_texts(data: Path, count: int) -> Iterator[tuple[str, str]]:
    """The first *count* SciFact abstracts as (id, "title, a blank line, the text")."""
    corpus = require_data(data, "scifact", "corpus.jsonl")
    with corpus.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= count:
                return
            doc = json.loads(line)
            yield str(doc["_id"]), f"{doc['title']}\n\n{doc['text']}\n"
