"""The model of a local index: resolved offline, embedded by onnxruntime on a CPU, by PyTorch on a GPU."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from semsearch.errors import ModelError, ModelOptionError
from semsearch.models.base import Embedder, ModelInfo, QueryEmbedder
from semsearch.models.hardware import gpu_present, int8_fast, torch_sees_gpu
from semsearch.models.resolve import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAMES,
    ModelSpec,
    export_dir_for,
    model_fingerprint,
    model_stamp,
    pick_prompt,
    read_prompts,
    resolve_model,
    static_model_facts,
)
from semsearch.models.tokenizer import ModelTokenizer
from semsearch.models.torch_backend import SentenceTransformerEmbedder

PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


class LocalModel:
    """The model for `semsearch index`: facts without torch, the heavy embedder on first use.

    Documents are embedded by the light runtime (onnxruntime, the model's ONNX export made once
    per model) on the CPU, in float32 or int8; on a GPU, or for ``bf16``, by sentence-transformers.
    ``precision="auto"`` keeps the precision an existing index was built with; for a new index it
    picks int8 on CPUs with int8 dot-product units (VNNI/AMX), where it is faster than float32 at
    the same retrieval quality, float16 autocast on a CUDA GPU, else float32. bf16 stays available
    but is not chosen automatically: it was slower than float32 on the CPUs measured (the figures
    are in benchmarks/RESULTS.md).
    """

    def __init__(
        self,
        name: str | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        known: ModelInfo | None = None,
        on_note: Callable[[str], None] = lambda message: None,
        threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelOptionError(
                f"{{precision}} must be one of {', '.join(PRECISIONS)} (got {precision})", options=("precision",)
            )
        if device is not None and not DEVICE.fullmatch(device):
            raise ModelOptionError(
                f"{{device}} must be auto, cpu, cuda, cuda:N or mps (got {device})", options=("device",)
            )
        self.spec: ModelSpec = resolve_model(name)
        self.device = device or "auto"
        self.precision = precision
        self._known = known
        self._on_note = on_note
        self.threads = threads  # onnxruntime's threads for documents (None: every usable core)
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
            return (
                "fp16"
                if self.device.startswith("cuda") or (self.device == "auto" and sys.platform != "darwin")
                else "fp32"
            )
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
            name=self.spec.name,
            fingerprint=fingerprint,
            dim=dim,
            max_tokens=max_tokens,
            query_prompt=pick_prompt(prompts, QUERY_PROMPT_NAMES),
            document_prompt=pick_prompt(prompts, DOCUMENT_PROMPT_NAMES),
            stamp=stamp,
            precision=precision,
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
            self._torch = SentenceTransformerEmbedder(
                self.spec, None if self.device == "auto" else self.device, torch_precision
            )
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
                raise ModelOptionError(
                    f"{{precision}} {info.precision} needs a CUDA GPU; this run would embed on "
                    f"{on_torch.device} (use fp32, int8 or bf16)",
                    options=("precision",),
                )
            embedder = on_torch
        if embedder.dim != info.dim:
            raise ModelError(f"model {self.spec.name} gives {embedder.dim}-d vectors, its config says {info.dim}")
        self._embedder = embedder
        return embedder

    def _onnx_embedder(self, precision: str) -> Embedder:
        from semsearch.models.onnx_runtime import OnnxEmbedder, OnnxExportError
        from semsearch.models.quantize import quantize_int8

        target = self.ensure_export(self._on_note)
        if target is None:
            if precision == "int8":
                raise ModelError("int8 needs the model's ONNX export, which failed", remedy="use_fp32")
            return self.torch_embedder()  # float32 either way
        try:
            if precision == "int8":
                quantize_int8(target)
            return OnnxEmbedder.load(target, precision, threads=self.threads)
        except OnnxExportError as exc:
            raise ModelError(str(exc), remedy="use_fp32") from None

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def query_embedder(self) -> QueryEmbedder:
        return load_query_embedder(self._known or self.info(), self._on_note)

    def finish_build(self, on_note: Callable[[str], None]) -> None:
        """Make the ONNX export the query path runs, unless it is known to be there and sound
        (checked once per process when the build loaded the model)."""
        if self.loaded or not (export_dir_for(self.info().fingerprint) / "export.json").is_file():
            self.ensure_export(on_note)

    def ensure_export(self, on_note: Callable[[str], None] = lambda s: None) -> Path | None:
        """Make the ONNX export the query path uses, once per model fingerprint.

        Checked (loaded, checksums verified) once per process: `index` asks again after the build.
        """
        from semsearch.models.onnx_export import export_onnx
        from semsearch.models.onnx_runtime import OnnxEmbedder, OnnxExportError

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


def load_query_embedder(
    model: ModelInfo, on_note: Callable[[str], None] = lambda s: None, threads: int = 1
) -> QueryEmbedder:
    """The fastest embedder that reproduces the index's model.

    The ONNX export (onnxruntime + tokenizers, no torch) is used when it exists for the index's
    model fingerprint and passes its checks; otherwise sentence-transformers, with a note.
    *threads*: onnxruntime's threads for one query (1 suits a one-shot query; a long-lived
    process on an idle machine answers sooner on 2; the vectors are the same).
    """
    target = export_dir_for(model.fingerprint)
    if os.environ.get("SEMSEARCH_BACKEND", "auto") != "torch":
        from semsearch.models.onnx_runtime import OnnxEmbedder, OnnxExportError

        if (target / "export.json").is_file():
            try:
                # One thread by default: a short query runs faster on one core than split over
                # two when the machine is busy (benchmarks/RESULTS.md).
                onnx = OnnxEmbedder.load(target, threads=max(1, threads))
                if onnx.dim == model.dim:
                    return onnx
                on_note("the ONNX export does not match the index's model; using sentence-transformers")
            except OnnxExportError as exc:
                on_note(f"{exc}; using sentence-transformers")
    local = LocalModel(model.name, known=model)
    info = local.info()
    if info.fingerprint != model.fingerprint:
        raise ModelError(f"the index was built with a different version of {model.name}", remedy="rebuild")
    if os.environ.get("SEMSEARCH_BACKEND", "auto") != "torch" and not (target / "export.json").is_file():
        # No export here yet (a reader of a team's index, which never runs `index`; a cleared
        # cache): made once, as `index` would, and every later query runs without torch.
        made = local.ensure_export(on_note)
        if made is not None:
            from semsearch.models.onnx_runtime import OnnxEmbedder, OnnxExportError

            try:
                onnx = OnnxEmbedder.load(made, threads=max(1, threads))
                if onnx.dim == model.dim:
                    return onnx
            except OnnxExportError as exc:
                on_note(f"{exc}; using sentence-transformers")
    return local.torch_embedder()
