"""The benchmarks' harness: paths, the machine note, arguments and JSON, repeated timings, children.

A script runs from the repository root as ``python benchmarks/TOPIC/SCRIPT.py``; its first lines
put the repository on ``sys.path`` and import this module::

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
    from benchmarks.harness import ...

What a script then has at hand:

- ``arguments(__doc__, work="NAME")``: a parser with ``--data`` (../shared/data), ``--work``
  (/tmp/bench-work/NAME) and ``--json FILE`` (alias ``--json-out``);
- ``start(args)``: prints the machine note (CPU model and features, load average) and makes the
  work folder; ``write_json(args.json, figures)`` adds the command, the date and the machine;
- ``require_data(args.data, "scifact")``: the path, or exit 2 with one line when it is missing;
- ``repeat(fn, runs)``, ``each(fn, queries)``, ``interleave({"a": fa, "b": fb}, queries)``:
  ``Timings`` (median, p50, p95) of repeated calls, variants taken in turn so that machine noise
  falls on each alike; ``ratio(a, b)``;
- ``run_child(cmd)``: a command's wall time and its own peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
REPO = Path(__file__).resolve().parents[1]
# The script put the repository first on sys.path (this module, this tree's semsearch); the tests'
# helpers (pg_server, ray_cluster, serve_process, embed_server, test_ocr) come from tests/, last so
# that they shadow nothing.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:
    sys.path.append(str(REPO / "tests"))
DEFAULT_DATA = REPO.parent / "shared" / "data"
BUNDLED_DATA = REPO / "benchmarks" / "data"  # the small data sets kept in the repository
DEFAULT_WORK = Path("/tmp/bench-work")
PYTHON = sys.executable


# -- the machine ------------------------------------------------------------------------------------

# The CPU features the figures depend on: AVX-512 VNNI makes --precision auto pick int8; bf16 units
# (AVX-512 BF16, AMX) make bf16 fast; AVX2 is the floor of onnxruntime's fast kernels.
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Machine:
    host: str
    cpu: str
    cpus: int
    features: tuple[str, ...]
    load: tuple[float, ...]

    def note(self) -> str:
        bf16 = "yes" if {"avx512_bf16", "amx_bf16"} & set(self.features) else "no"
        return (
            f"{self.host}: {self.cpu}, {self.cpus} CPUs, {' '.join(self.features) or 'no AVX2'}, bf16 units: {bf16}, "
            f"load average {self.load[0]:.2f} {self.load[1]:.2f} {self.load[2]:.2f} "
            f"(a load above the CPU count means noisy timings)"
        )


def machine() -> Machine:
    """This machine now: CPU model and count, which of :data:`FEATURES` it has, the load average."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return Machine(platform.node(), cpu, os.cpu_count() or 0, tuple(f for f in FEATURES if f in flags), tuple(load))


def machine_note() -> str:
    return machine().note()


# -- arguments, the start and the JSON --------------------------------------------------------------


def arguments(doc: str | None, *, work: str | Path | None = "", data: bool = True, json: bool = True) -> argparse.ArgumentParser:
    """A parser with *doc* as its description and the options the benchmarks share: ``--data`` (the
    shared data folder), ``--work`` (DEFAULT_WORK/*work*, or *work* itself when a Path; None: no such
    option) and ``--json FILE`` (also spelt ``--json-out``; ``args.json``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if data:
        ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the shared data folder (default {DEFAULT_DATA})")
    if work is not None:
        folder = work if isinstance(work, Path) else DEFAULT_WORK / work
        ap.add_argument("--work", type=Path, default=folder, help=f"scratch folder (default {folder})")
    if json:
        ap.add_argument("--json", "--json-out", dest="json", type=Path, default=None, help="also write the figures as JSON here")
    return ap


def start(args: argparse.Namespace | None = None) -> str:
    """Print the machine note (flushed: the runs are long) and make ``args.work``; the note."""
    note = machine_note()
    print(f"machine: {note}", flush=True)
    work = getattr(args, "work", None)
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    return note


def write_json(path: Path | None, data: dict) -> None:
    """*data* as JSON at *path* (nothing without a path), after the command, the UTC date and, unless
    *data* has its own, the machine note (taken now: at the end of the run)."""
    if path is None:
        return
    head = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip
    if "machine" not in data:
        head["machine"] = machine_note()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**head, **data}, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def require_data(data: Path, *parts: str) -> Path:
    """The path under the shared data folder, or exit 2 with one line when it is missing."""
    path = data.joinpath(*parts)
    if not path.exists():
        sys.stderr.write(f"error: shared data not found: {path} (pass --data PATH; see benchmarks/README.md)\n")
        sys.exit(2)
    return path


def writable_copy(source: Path, dest: Path) -> Path:
    """*source* copied to *dest*, every file and folder writable by this user (the shared data is
    read-only: a benchmark that edits its copy must be able to)."""
    shutil.copytree(source, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dest


def scifact_texts(data: Path, count: int) -> Iterator[tuple[str, str]]:
    """The first *count* SciFact abstracts as (id, "title, a blank line, the text")."""
    corpus = require_data(data, "scifact", "corpus.jsonl")
    with corpus.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= count:
                return
            doc = json.loads(line)
            yield str(doc["_id"]), f"{doc['title']}\n\n{doc['text']}\n"


def scifact_files(data: Path, folder: Path, count: int) -> int:
    """The first *count* SciFact abstracts as FOLDER/ID.txt (the folder made afresh); how many."""
    require_data(data, "scifact", "corpus.jsonl")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    n = 0
    for doc_id, text in scifact_texts(data, count):
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
        n += 1
    return n


def fastapi_index(data: Path, work: Path, given: Path | None = None, name: str = "fastapi-idx") -> tuple[Path, float | None]:
    """The index to query: *given* (checked), else WORK/NAME of the FastAPI docs, built with the CLI
    the first time (its seconds returned; it also makes the model's ONNX export if missing)."""
    if given is not None:
        if not (given / "manifest.json").is_file():
            sys.exit(f"error: no semsearch index at {given}")
        return given.resolve(), None
    docs = require_data(data, "fastapi-docs")
    index_dir = work / name
    if (index_dir / "manifest.json").is_file():
        return index_dir, None
    print(f"building the fastapi-docs index at {index_dir} (once; the first index also makes the ONNX export) ...",
          flush=True)  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    built = run_child([*semsearch_cmd(), "index", str(docs), "--index", str(index_dir), "-q"], env=bench_env())
    return index_dir, built.seconds


# -- repeated timings -------------------------------------------------------------------------------


@dataclass
class Timings:
    """The seconds of repeated runs of one thing."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return median(self.seconds)

    @property
    def p50(self) -> float:
        return pct(self.seconds, 50)

    @property
    def p95(self) -> float:
        return pct(self.seconds, 95)

    def stats(self, scale: float = 1.0) -> dict[str, float]:
        return stats(self.seconds, scale)


def repeat(fn: Callable[[], object], runs: int, *, warmup: int = 0) -> Timings:
    """Call *fn* *warmup* times untimed, then *runs* times, each timed."""
    for _ in range(warmup):
        fn()
    out = Timings([])
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.seconds.append(time.perf_counter() - started)
    return out


def each(fn: Callable[[T], object], inputs: Iterable[T]) -> Timings:
    """One timed call of *fn* per input (a query each, say)."""
    return interleave({"": fn}, inputs)[""]


def take_turns(variants: Mapping[str, Callable[[T], R]], inputs: Iterable[T]) -> dict[str, list[R]]:
    """Each variant called on each input, the variants taking turns (a(x1), b(x1), a(x2), b(x2), ...):
    a slow minute of a shared machine falls on every variant alike, so their ratio holds where their
    absolute figures do not. What each call returned, by variant."""
    out: dict[str, list[R]] = {name: [] for name in variants}
    for x in inputs:
        for name, fn in variants.items():
            out[name].append(fn(x))
    return out


def interleave(variants: Mapping[str, Callable[[T], object]], inputs: Iterable[T], *, warmup: int = 0) -> dict[str, Timings]:
    """:func:`take_turns`, timed: the seconds of each call by variant. ``range(n)`` as *inputs* for n
    runs of functions that ignore theirs; *warmup* untimed rounds on the first input."""
    inputs = list(inputs)
    for _ in range(warmup if inputs else 0):
        for fn in variants.values():
            fn(inputs[0])

    def timed(fn: Callable[[T], object]) -> Callable[[T], float]:
        def call(x: T) -> float:
            started = time.perf_counter()
            fn(x)
            return time.perf_counter() - started

        return call

    return {name: Timings(seconds) for name, seconds in take_turns({n: timed(f) for n, f in variants.items()}, inputs).items()}


def ratio(a: float | None, b: float | None) -> str:
    """a / b as "1.23x"; "n/a" when either is missing or zero."""
    return f"{a / b:.2f}x" if a and b else "n/a"


def stats(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, p50, p95, max and mean of *values*, each times *scale* (1000: milliseconds)."""
    vals = [v * scale for v in values]
    nan = float("nan")
    return {"n": len(vals), "p50": pct(vals, 50), "p95": pct(vals, 95), "max": max(vals) if vals else nan,
            "mean": sum(vals) / len(vals) if vals else nan}  # fmt: skip


def pct(values: Sequence[float], q: float) -> float:
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


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- child processes --------------------------------------------------------------------------------


def semsearch_cmd() -> list[str]:
    """How to start the CLI: the console script beside this Python, else ``python -m semsearch``."""
    script = Path(PYTHON).with_name("semsearch")
    return [str(script)] if script.is_file() else [PYTHON, "-m", "semsearch"]


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a child: offline, no index or mode of the user's, no model server."""
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


# -- printing --------------------------------------------------------------------------------------


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
