"""An update's expensive work on a Ray cluster: reading (OCR of scans included), chunking and
embedding, as Ray Data stages.

The driver (the process that runs ``semsearch index --ray``) still walks, decides what changed,
reuses stored vectors and writes the index, with the same crash safety: only the changed files go
to the cluster, and what comes back is stored and committed here as a local run stores it. The
files' bytes travel through Ray's object store (the workers need not see the driver's disk); the
stages are

1. read and cut: a task per file (``num_cpus=1``, placed by SPREAD), the driver's reader and chunker;
2. embed: an actor pool of one actor up to one per CPU of the cluster, less one per node left to
   reading (Ray Data grows it while the embedding is behind), or one per GPU where the cluster
   has GPUs (:func:`_pool_size`); each loads the index's model once, the same model and
   precision as the index records, and runs one onnxruntime thread per CPU Ray gives it.

Ray Data's streaming executor bounds what is in flight (backpressure); results come back in any
order as they are done. Files go in windows of at most :data:`WINDOW_BYTES` (the bytes in the
object store at once). A run of fewer than :data:`SMALL_FILES` files (and under
:data:`SMALL_BYTES`) stays local: a cluster's start costs more than it saves (benchmarks/RESULTS.md).
Nothing of Ray is imported unless an executor runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import InvalidOptionError, SemsearchError
from semsearch.indexing.options import IndexEvent
from semsearch.indexing.pipeline import Prepared, ReadPlan, Todo, prepare_data, read_todo

if TYPE_CHECKING:
    import numpy as np

    from semsearch.models import ModelInfo

SMALL_FILES = 8
SMALL_BYTES = 4 << 20
WINDOW_BYTES = 256 << 20  # file bytes handed to the cluster at once
WINDOW_FILES = 2000
PROGRESS_EVERY = 2.0  # seconds between reports of each node's share
EMBED_BATCH = 4  # files per call of an embedding actor (small: the calls spread over the actors)
# What each stage asks of a node's CPUs: a file's reading (a task), an embedding actor (which runs
# that many onnxruntime threads). Half CPUs starved the reading stage (Ray Data's resource budgets).
STAGE_CPUS = 1
EMBED_SLICE = 256  # chunks per model call inside it, shortest first (as a local run)
# What the workers' processes need of the driver's environment.
FORWARDED_ENV = (
    "ORT_DISABLE_TELEMETRY",
    "RAY_USAGE_STATS_ENABLED",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "SEMSEARCH_CACHE",
)


class ClusterError(SemsearchError):
    """The Ray cluster cannot be reached or used (a version mismatch, a failed stage)."""


@dataclass(frozen=True)
class _Spec:
    """What a worker needs to read and cut as the driver would (no callables, no cache)."""

    plan: ReadPlan
    model: ModelInfo


class RayExecutor:
    """Send an update's changed files to a Ray cluster (*address*: ``HOST:PORT``, ``ray://...``,
    or None / "local" for a Ray instance started here)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        gpus_per_actor: float | None = None,
        small_files: int = SMALL_FILES,
        shared_paths: bool = False,
    ) -> None:
        """*shared_paths*: the workers read each file at its path (every node sees the same
        files at the same paths: a network file system), instead of its bytes shipped from here.
        *gpus_per_actor*: None, one GPU per embedding actor where the cluster has GPUs and the
        index's precision runs on one (fp32, fp16, bf16; int8 runs on CPUs); 0: CPUs only."""
        self.address = None if address in (None, "", "local") else address
        self.shared_paths = shared_paths
        self.gpus_per_actor = gpus_per_actor
        self.small_files = small_files
        self.read_on: Counter[str] = Counter()  # files read and cut by each node (its id) this run
        self.embedded_on: Counter[str] = Counter()  # files embedded by each node's actors
        self.pages_on: Counter[str] = Counter()  # pages read by OCR on each node
        self.chunks_on: Counter[str] = Counter()  # chunks embedded on each node
        self._started = 0.0

    def takes(self, todo: list[Todo]) -> bool:
        return len(todo) >= self.small_files or sum(entry.size for entry, _, _ in todo) >= SMALL_BYTES

    def prepare(
        self, todo: list[Todo], plan: ReadPlan, model: ModelInfo, on_event: Callable[[IndexEvent], None]
    ) -> Iterator[tuple[Todo, Prepared | Exception]]:
        ray = connect(self.address, on_event)
        spec = _Spec(replace(plan, measure=None, read_options=_plain(plan.read_options)), model)
        nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
        pool = _pool_size(ray.cluster_resources(), model.precision, self.gpus_per_actor, nodes)
        self._started = started = time.perf_counter()
        chunks, said = 0, 0.0
        for window in _windows(todo):
            rows: list[dict[str, Any]] = []
            for n in window:
                if self.shared_paths:  # read where the work is
                    rows.append({"n": n, "item": _objects([todo[n]]), "data": None})
                    continue
                data = read_todo(todo[n], plan.max_size)  # here: the workers need not see this disk
                if isinstance(data, Exception):
                    yield todo[n], data
                else:
                    rows.append({"n": n, "item": _objects([todo[n]]), "data": data})  # an object column
            if not rows:
                continue
            for n, prepared, read_on, embedded_on in self._run_window(ray, rows, spec, nodes, pool):
                self.read_on[read_on] += 1
                if isinstance(prepared, Prepared):
                    chunks += len(prepared.chunks)
                    self.pages_on[read_on] += prepared.pages_ocr
                    if embedded_on:
                        self.chunks_on[embedded_on] += len(prepared.chunks)
                if embedded_on:
                    self.embedded_on[embedded_on] += 1
                if time.perf_counter() - said > PROGRESS_EVERY:  # each node's share so far
                    said = time.perf_counter()
                    on_event(IndexEvent("cluster", self._shares()))
                yield todo[n], prepared
        seconds = max(time.perf_counter() - started, 1e-9)
        on_event(
            IndexEvent(
                "message", f"cluster: {_count(nodes, 'node')}, {chunks / seconds:.0f} chunks/s; {self._shares()}"
            )
        )

    def _shares(self) -> str:
        """Each node's share so far: files read (and cut) there, pages read by OCR there, chunks
        embedded there and at what rate."""
        seconds = max(time.perf_counter() - self._started, 1e-9)
        shares = []
        for node in sorted(set(self.read_on) | set(self.embedded_on)):
            pages = f" ({self.pages_on[node]} OCR pages)" if self.pages_on[node] else ""
            chunks = self.chunks_on[node]
            shares.append(f"node {node[:8]}: read {_count(self.read_on[node], 'file')}{pages}, "
                          f"embedded {_count(chunks, 'chunk')} ({chunks / seconds:.0f}/s)")  # fmt: skip
        return "; ".join(shares)

    def _run_window(
        self, ray: Any, rows: list[dict[str, Any]], spec: _Spec, nodes: int, pool: tuple[int, float]
    ) -> Iterator[tuple[int, Any, str, str]]:
        import ray.data

        for name in ("ray.data", "ray"):  # its notes are not the user's business: errors only
            logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        blocks = min(len(rows), 4 * nodes * 2)
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        with warnings.catch_warnings():
            # Each file's task placed by SPREAD: left to Ray Data, a handful of heavy files (scans
            # to OCR) went to one node, 8 of 9 (benchmarks/RESULTS.md). Ray 2.60 warns that
            # ray_remote_args_fn goes in 2.64, and has no other way to ask for it yet.
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map(_cut, fn_kwargs={"spec": spec}, num_cpus=STAGE_CPUS, ray_remote_args_fn=_spread)
        if not spec.model.endpoint:  # a served model is asked by the driver, as without a cluster
            # The model travels with the class (no constructor arguments in the object store,
            # which a restarted actor could find gone).
            embed = type("Embed", (_Embed,), {"model": spec.model})
            ds = ds.map_batches(
                embed,
                batch_size=EMBED_BATCH,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool[0]),
                num_cpus=STAGE_CPUS,
                num_gpus=pool[1] or None,
            )  # fmt: skip  (an actor lost with its node is made again elsewhere: Ray Data's default)
        try:
            for row in ds.iter_rows():
                yield int(row["n"]), row["prepared"], str(row["read_on"]), str(row.get("embedded_on", ""))
        except SemsearchError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray's errors carry a traceback several screens long
            raise ClusterError(f"the cluster's run failed: {_first_line(exc)}") from None


def connect(address: str | None, on_event: Callable[[IndexEvent], None] = lambda e: None) -> Any:
    """Ray, connected to *address* (None: a local instance), and checked: the same Ray and
    semsearch versions on every node."""
    # Ray reports usage by default: a local instance's head sends it to ray.io, and Ray Data's
    # driver starts a thread that asks a Prometheus on localhost:9090 every few seconds for as
    # long as the process lives. semsearch sends nothing: off unless the user chose otherwise.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    loopback = _on_loopback(address)
    if loopback:
        # Ray swaps 127.0.0.1 (and a local instance's own address) for the machine's address on
        # its network, where a cluster on loopback does not listen (and where nothing of a
        # local run should go): this switch makes it keep the loopback address.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise InvalidOptionError("--ray needs Ray: pip install 'semsearch[ray]'", options=("ray",)) from None
    if loopback:
        import ray._private.ray_constants as constants

        constants.ENABLE_RAY_CLUSTER = False  # read at Ray's import: set too if it was imported before
    if not ray.is_initialized():
        if address is not None:
            _reachable(address)  # ray.init would try for minutes
        # The driver's own C++ log lines (an actor's restart policy, say) would land on the
        # user's terminal: they stay in Ray's log files; failures reach us as exceptions.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        try:
            with _stderr_closed():  # ray.init's C++ side says where its log level came from
                # "local": always a new instance here. None would join the cluster named in
                # /tmp/ray/ray_current_cluster, which outlives its cluster (a run hung on one gone).
                ray.init(address=address or "local", log_to_driver=False, include_dashboard=False,
                         logging_level=logging.ERROR,
                         runtime_env={"env_vars": env})  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError (versions), ...
            where = f"at {address}" if address else "(a local instance)"
            hint = ""
            if address and "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
                # A local ray.init() wrote it; from then on Ray connects with token auth.
                hint = " (~/.ray/auth_token makes Ray use token auth: set RAY_AUTH_MODE as the cluster's nodes have it)"
            raise ClusterError(f"cannot use the Ray cluster {where}: {_first_line(exc)}{hint}") from None
    _check_versions(ray)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    on_event(IndexEvent("message", f"cluster: {_count(len(nodes), 'node')}, {cpus} CPUs ({address or 'local'})"))
    return ray


def _on_loopback(address: str | None) -> bool:
    """Whether *address* is this machine's loopback (or None: a local instance)."""
    if address is None or address == "local":
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _reachable(address: str) -> None:
    """A TCP connection to the cluster's address (GCS or Ray Client port), or a one-line error."""
    import socket
    import urllib.parse

    where = address if "://" in address else f"tcp://{address}"
    try:
        parts = urllib.parse.urlsplit(where)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        if address == "auto":
            return  # RAY_ADDRESS or a cluster started on this machine: Ray finds it
        raise InvalidOptionError(f"--ray takes HOST:PORT, ray://HOST:PORT or local (got {address})", options=("ray",))
    try:
        with socket.create_connection((host, port), timeout=10):
            pass
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or str(exc))
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {why}") from None


def _check_versions(ray: Any) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from semsearch.version import __version__

    @ray.remote(num_cpus=0)
    def versions() -> str:
        try:
            from semsearch.version import __version__ as there
        except ImportError:
            return "none"
        return there

    for node in (n for n in ray.nodes() if n.get("Alive")):
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        try:
            there = ray.get(versions.options(scheduling_strategy=strategy).remote(), timeout=120)
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.GetTimeoutError):
            continue  # a node that died and is not known as dead yet: it will get no work either
        except ray.exceptions.RayError as exc:
            raise ClusterError(
                f"cannot use the Ray cluster's node {node['NodeManagerAddress']}: {_first_line(exc)}"
            ) from None
        if there != __version__:
            what = "no semsearch" if there == "none" else f"semsearch {there}"
            raise ClusterError(
                f"the cluster's node {node['NodeManagerAddress']} has {what}, this is {__version__}: "
                "install the same version on every node"
            )


def _pool_size(
    resources: dict[str, float], precision: str, gpus_per_actor: float | None, nodes: int = 1
) -> tuple[int, float]:
    """The embedding actors' most (one per GPU; or one per CPU but one of each node's, left to
    the reading tasks: each actor runs one onnxruntime thread per CPU Ray gives it) and the
    GPUs each asks for."""
    gpus = float(resources.get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 and precision in ("fp32", "fp16", "bf16") else 0.0
    if gpus_per_actor > 0:
        return max(1, int(gpus // gpus_per_actor)), gpus_per_actor
    return max(1, int(resources.get("CPU", 1) // STAGE_CPUS) - nodes), 0.0


def _spread() -> dict[str, Any]:
    return {"scheduling_strategy": "SPREAD"}


class _Pages:
    """A worker's OCR of one file: pages and seconds (the driver's own count, done there)."""

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0
        self._since: float | None = None

    def __call__(self, path: object, done: int, total: int) -> None:
        now = time.perf_counter()
        if done > 0:
            self.count += 1
            if self._since is not None:
                self.seconds += now - self._since
        self._since = now if done < total else None


class _Recognized:
    """A worker's OCR cache: empty (the driver's cache stays on the driver), keeping each page it
    recognizes for the driver to store in its own."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.pages.get(key)

    def put(self, key: str, text: str) -> None:
        self.pages[key] = text


def _cut(row: dict[str, Any], spec: _Spec) -> dict[str, Any]:
    """Stage 1, a task: one file's bytes (shipped, or read here from a shared path) read as its
    kind and cut into chunks."""
    import ray

    from semsearch.readers import ocr

    context = ray.get_runtime_context()
    ocr.set_threads(_assigned_cpus(context))  # the node's other CPUs are other tasks' and actors'
    pages = _Pages()
    recognized = _Recognized()
    options = replace(spec.plan.read_options, on_ocr=pages, ocr_cache=recognized)
    plan = replace(spec.plan, measure=_measure(spec.model), read_options=options)
    item = row["item"][0]
    data = row["data"] if row["data"] is not None else read_todo(item, plan.max_size)
    prepared = data if isinstance(data, Exception) else prepare_data(item, data, plan)
    if isinstance(prepared, Prepared):
        prepared.pages_ocr, prepared.ocr_seconds = pages.count, pages.seconds
        prepared.ocr_texts = recognized.pages or None
    return {"n": row["n"], "prepared": prepared, "read_on": context.get_node_id()}


def _assigned_cpus(context: Any) -> int:
    """The CPUs Ray gave the task or actor whose runtime *context* this is (at least one)."""
    return max(1, int(context.get_assigned_resources().get("CPU", 1)))


_MEASURES: dict[str, Any] = {}


def _measure(model: ModelInfo) -> Any:
    """The model's token counter, made once per worker process."""
    if model.fingerprint not in _MEASURES:
        from semsearch.models import ModelOptions, model_provider

        _MEASURES[model.fingerprint] = model_provider(model.name, ModelOptions(known=model)).measure()
    return _MEASURES[model.fingerprint]


class _Embed:
    """Stage 2, an actor: the index's model (the subclass's ``model``) loaded once, each batch's
    chunks embedded."""

    model: ModelInfo

    def __init__(self) -> None:
        import ray

        from semsearch.models import ModelOptions, model_provider

        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        # As many threads as CPUs Ray gave the actor: the node's other CPUs are other actors' and
        # reading tasks' (onnxruntime would otherwise take every core of the machine).
        threads = _assigned_cpus(context)
        model = self.model
        options = ModelOptions(precision=model.precision, known=model, threads=threads)
        self.embedder = model_provider(model.name, options).embedder()
        self.dim = model.dim

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        started = time.perf_counter()
        prepared = list(batch["prepared"])
        pending = [(p, i) for p in prepared if isinstance(p, Prepared) for i in range(len(p.chunks))]
        texts = [p.chunks[i].embedding_text() for p, i in pending]
        for p in prepared:
            if isinstance(p, Prepared) and p.chunks:
                p.vectors = np.empty((len(p.chunks), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        for start in range(0, len(order), EMBED_SLICE):
            part = order[start : start + EMBED_SLICE]
            vectors = self.embedder.embed_documents([texts[k] for k in part])
            for k, vector in zip(part, vectors, strict=True):
                p, i = pending[k]
                assert p.vectors is not None
                p.vectors[i] = vector
        seconds = time.perf_counter() - started
        for p in prepared:  # the batch's time, shared by chunks
            if isinstance(p, Prepared) and pending:
                p.embed_seconds = seconds * len(p.chunks) / len(pending)
        return {"n": batch["n"], "prepared": _objects(prepared), "read_on": batch["read_on"],
                "embedded_on": np.array([self.node] * len(prepared))}  # fmt: skip


def _objects(values: list[Any]) -> np.ndarray:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _windows(todo: list[Todo]) -> Iterator[list[int]]:
    window: list[int] = []
    size = 0
    for n, (entry, _, _) in enumerate(todo):
        if window and (size + entry.size > WINDOW_BYTES or len(window) >= WINDOW_FILES):
            yield window
            window, size = [], 0
        window.append(n)
        size += entry.size
    if window:
        yield window


def _plain(options: Any) -> Any:
    """Read options without the driver's OCR cache and progress hook (neither crosses to a worker)."""
    return replace(options, ocr_cache=None, on_ocr=None)


@contextlib.contextmanager
def _stderr_closed() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for a moment (what C++ writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
