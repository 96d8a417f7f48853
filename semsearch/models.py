"""Which model embeds an index and its queries: resolution, fingerprints, the ONNX query path."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from semsearch.embed import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAMES,
    Embedder,
    ModelSpec,
    ModelTokenizer,
    SentenceTransformerEmbedder,
    model_fingerprint,
    pick_prompt,
    read_prompts,
    resolve_model,
)
from semsearch.errors import ModelError
from semsearch.store import ModelInfo

if TYPE_CHECKING:
    import numpy as np


def cache_dir() -> Path:
    """Per-user cache (ONNX exports of models; never any indexed text)."""
    explicit = os.environ.get("SEMSEARCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semsearch"


def export_dir_for(fingerprint: str) -> Path:
    return cache_dir() / "onnx" / fingerprint.replace("sha256:", "")[:40]


def model_stamp(path: Path) -> str:
    """A cheap digest of the model files' names, sizes and mtimes (a changed file changes it)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def static_model_facts(path: Path) -> tuple[int, int]:
    """(dimension, max tokens) from a sentence-transformers folder's config, without torch."""
    dim = _read_json(path / "1_Pooling" / "config.json").get("word_embedding_dimension") or \
        _read_json(path / "config.json").get("hidden_size") or 0
    max_tokens = _read_json(path / "sentence_bert_config.json").get("max_seq_length") or \
        _read_json(path / "config.json").get("max_position_embeddings") or 512
    return int(dim), int(max_tokens)


PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return handle.read(1 << 16)
    except OSError:
        return ""


def int8_fast() -> bool:
    """True when this CPU has int8 dot-product units (VNNI or AMX), where int8 inference pays."""
    flags = _cpu_flags()
    return any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8"))


def gpu_present() -> bool:
    """A cheap guess, without importing torch, that a GPU is there for torch to use."""
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        return True
    return sys.platform == "darwin" and platform.machine() == "arm64"


def torch_sees_gpu() -> bool:
    """Whether torch can use a GPU here (imports torch: ask only after :func:`gpu_present`)."""
    from semsearch.embed import pick_device

    try:
        return pick_device("auto") != "cpu"
    except ImportError:
        return False


class LocalModel:
    """The model for `semsearch index`: facts without torch, the heavy embedder on first use.

    Documents are embedded by the light runtime (onnxruntime, the model's ONNX export made once
    per model) on the CPU, in float32 or int8; on a GPU, or for ``bf16``, by sentence-transformers.
    ``precision="auto"`` keeps the precision an existing index was built with; for a new index it
    picks int8 on CPUs with int8 dot-product units (VNNI/AMX), where it measured ~1.9x the float32
    speed for the same retrieval quality (SciFact nDCG@10 within 0.001; benchmarks/RESULTS.md),
    float16 autocast on a CUDA GPU,
    else float32. bf16 stays available (``--precision bf16``) but is not chosen automatically: on
    the CPUs measured it was slower than float32.
    """

    def __init__(
        self,
        name: str | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        known: ModelInfo | None = None,
        on_note: Callable[[str], None] = lambda message: None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision})")
        if device is not None and not DEVICE.fullmatch(device):
            raise ModelError(f"--device must be auto, cpu, cuda, cuda:N or mps (got {device})")
        self.spec: ModelSpec = resolve_model(name)
        self.device = device or "auto"
        self.precision = precision
        self._known = known
        self._on_note = on_note
        self._info: ModelInfo | None = None
        self._embedder: Embedder | None = None
        self._torch: SentenceTransformerEmbedder | None = None
        self._export: Path | None = None  # the ONNX export folder, once checked
        self._gpu: bool | None = None

    def _on_gpu(self) -> bool:
        """Whether documents go to a GPU: ``--device`` names one, or ``auto`` finds one torch can use."""
        if self.device != "auto":
            return self.device != "cpu"
        if self._gpu is None:
            # The cheap guess first (no torch import where there is no GPU driver), then torch's
            # own answer: a driver beside a CPU-only build of torch still means the CPU (and the
            # onnxruntime path), not float16 requested of a CPU.
            self._gpu = gpu_present() and torch_sees_gpu()
        return self._gpu

    def resolve_precision(self) -> str:
        """The precision documents will be embedded in (what the index records)."""
        if self.precision != "auto":
            return self.precision
        known = self._known.precision if self._known is not None and self._known.name == self.spec.name else ""
        if known in ("fp32", "int8", "bf16") or (known == "fp16" and self._on_gpu()):
            return known  # an existing index keeps its precision: never a mix
        if self._on_gpu():
            return "fp16" if self.device.startswith("cuda") or (self.device == "auto" and sys.platform != "darwin") else "fp32"
        return "int8" if int8_fast() else "fp32"

    def info(self) -> ModelInfo:
        if self._info is not None:
            return self._info
        precision = self.resolve_precision()
        stamp = model_stamp(self.spec.path)
        known = self._known
        if known is not None and known.name == self.spec.name and known.stamp == stamp:
            # Same files as when the index was built: their hash was checked then.
            self._info = replace(known, precision=precision)
            return self._info
        fingerprint = model_fingerprint(self.spec)
        prompts = read_prompts(self.spec.path)
        dim, max_tokens = static_model_facts(self.spec.path)
        if not dim:
            dim = self.torch_embedder().dim
            max_tokens = self.torch_embedder().max_tokens
        self._info = ModelInfo(
            name=self.spec.name, fingerprint=fingerprint, dim=dim, max_tokens=max_tokens,
            query_prompt=pick_prompt(prompts, QUERY_PROMPT_NAMES),
            document_prompt=pick_prompt(prompts, DOCUMENT_PROMPT_NAMES), stamp=stamp, precision=precision,
        )
        return self._info

    def measure(self) -> Callable[[str], int] | None:
        try:
            return ModelTokenizer(self.spec.path, self.info().document_prompt).count
        except ModelError:
            return None

    def torch_embedder(self) -> SentenceTransformerEmbedder:
        if self._torch is None:
            precision = self._info.precision if self._info is not None else self.resolve_precision()
            torch_precision = precision if precision in ("bf16", "fp16") else "fp32"
            self._torch = SentenceTransformerEmbedder(self.spec, None if self.device == "auto" else self.device,
                                                      torch_precision)
        return self._torch

    def embedder(self) -> Embedder:
        """The document embedder for the index's precision (made on first use)."""
        if self._embedder is not None:
            return self._embedder
        info = self.info()
        embedder: Embedder
        if info.precision in ("fp32", "int8") and not (info.precision == "fp32" and self._on_gpu()):
            embedder = self._onnx_embedder(info.precision)
        else:
            on_torch = self.torch_embedder()
            if on_torch.precision != info.precision:  # fp16 asked for where torch has no CUDA device
                raise ModelError(f"--precision {info.precision} needs a CUDA GPU; this run would embed on "
                                 f"{on_torch.device} (use fp32, int8 or bf16)")
            embedder = on_torch
        if embedder.dim != info.dim:
            raise ModelError(f"model {self.spec.name} gives {embedder.dim}-d vectors, its config says {info.dim}")
        self._embedder = embedder
        return embedder

    def _onnx_embedder(self, precision: str) -> Embedder:
        from semsearch.onnx_embed import OnnxEmbedder, OnnxExportError, quantize_int8

        target = self.ensure_export(self._on_note)
        if target is None:
            if precision == "int8":
                raise ModelError("int8 needs the model's ONNX export, which failed; run with --precision fp32")
            return self.torch_embedder()  # float32 either way
        try:
            if precision == "int8":
                quantize_int8(target)
            return OnnxEmbedder.load(target, precision)
        except OnnxExportError as exc:
            raise ModelError(f"{exc}; run with --precision fp32") from None

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def ensure_export(self, on_note: Callable[[str], None] = lambda s: None) -> Path | None:
        """Make the ONNX export the query path uses, once per model fingerprint.

        Checked (loaded, checksums verified) once per process: `index` asks again after the build.
        """
        from semsearch.onnx_embed import OnnxEmbedder, OnnxExportError, export_onnx

        if self._export is not None:
            return self._export
        target = export_dir_for(self.info().fingerprint)
        if (target / "export.json").is_file():
            try:
                OnnxEmbedder.load(target)
                self._export = target
                return target
            except OnnxExportError:
                pass  # damaged: export again
        try:
            on_note("exporting the model to ONNX (once per model)")
            export_onnx(self.torch_embedder().model, target)
        except (OnnxExportError, ModelError, OSError) as exc:
            on_note(f"ONNX export failed, sentence-transformers will be used instead: {exc}")
            return None
        self._export = target
        return target


class QueryEmbedder(Protocol):
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def load_query_embedder(
    model: ModelInfo,
    on_note: Callable[[str], None] = lambda s: None,
) -> tuple[QueryEmbedder, int, str]:
    """The fastest embedder that reproduces the index's model: (embedder, max tokens, backend).

    The ONNX export (onnxruntime + tokenizers, no torch) is used when it exists for the index's
    model fingerprint and passes its checks; otherwise sentence-transformers, with a note.
    """
    if os.environ.get("SEMSEARCH_BACKEND", "auto") != "torch":
        from semsearch.onnx_embed import OnnxEmbedder, OnnxExportError

        target = export_dir_for(model.fingerprint)
        if (target / "export.json").is_file():
            try:
                # One thread: a session starts ~40 ms sooner, and a short query runs faster on
                # one core than split over two (7.7 vs 13.5 ms measured for the first query).
                onnx = OnnxEmbedder.load(target, threads=1)
                if onnx.dim == model.dim:
                    return onnx, onnx.max_tokens, "onnx"
                on_note("the ONNX export does not match the index's model; using sentence-transformers")
            except OnnxExportError as exc:
                on_note(f"{exc}; using sentence-transformers")
        else:
            on_note("no ONNX export of this model yet (run `semsearch index` to make it); using sentence-transformers")
    local = LocalModel(model.name, known=model)
    info = local.info()
    if info.fingerprint != model.fingerprint:
        raise ModelError(
            f"the index was built with a different version of {model.name}; run `semsearch index --rebuild`"
        )
    embedder: Embedder = local.torch_embedder()
    return embedder, embedder.max_tokens, "sentence-transformers"
