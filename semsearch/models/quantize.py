"""int8 dynamic quantization of an ONNX export, verified against its float32 graph (no torch)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from semsearch.models.onnx_export import verification_texts
from semsearch.models.onnx_runtime import (
    INT8_MIN_COSINE,
    INT8_MODEL_FILE,
    INT8_RECORD_FILE,
    MODEL_FILE,
    OnnxEmbedder,
    OnnxExportError,
    read_export_manifest,
    read_int8_record,
    sha256_file,
)


def quantize_int8(export_dir: Path, *, min_cosine: float = INT8_MIN_COSINE) -> dict[str, Any]:
    """Make ``model-int8.onnx`` beside an export's float32 graph, once, and verify it; return its record.

    Dynamic int8 quantization of the MatMul weights only (per channel): the word-embedding table
    stays float32 (quantizing it saves memory but no time and costs accuracy). The result is
    checked against the float32 graph on the sample texts; below ``min_cosine`` it is deleted
    and :class:`OnnxExportError` raised. Needs ``onnx`` and onnxruntime's quantization tools, no torch.
    """
    export_dir = Path(export_dir)
    with contextlib.suppress(OnnxExportError):
        made = read_int8_record(export_dir, read_export_manifest(export_dir))
        # Only a verified graph counts: a run killed before the check leaves an unverified record.
        if made.get("verification", {}).get("min_cosine", -1.0) >= min_cosine:
            return made  # made already (its checksum is checked when it is loaded)
    reference = OnnxEmbedder.load(export_dir)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxExportError(f"int8 quantization needs onnxruntime's quantization tools ({exc})") from exc
    tmp = export_dir / f".{INT8_MODEL_FILE}.{os.getpid()}.tmp"
    try:
        root_logger = logging.getLogger()  # the quantizer logs advice through the root logger
        was_disabled, root_logger.disabled = root_logger.disabled, True
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(
                    export_dir / MODEL_FILE,
                    tmp,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    op_types_to_quantize=["MatMul"],
                )
        finally:
            root_logger.disabled = was_disabled
        os.replace(tmp, export_dir / INT8_MODEL_FILE)
    except OnnxExportError:
        raise
    except Exception as exc:  # the quantizer raises many kinds for graphs it cannot handle
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OnnxExportError(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
    texts = verification_texts()
    record: dict[str, Any] = {
        "source_sha256": reference.manifest.model_sha256,
        "sha256": sha256_file(export_dir / INT8_MODEL_FILE),
        "quantization": "dynamic int8, MatMul weights per channel (onnxruntime.quantization)",
    }
    record_path = export_dir / INT8_RECORD_FILE
    tmp_record = export_dir / f".{INT8_RECORD_FILE}.{os.getpid()}.tmp"
    tmp_record.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp_record, record_path)
    int8 = OnnxEmbedder.load(export_dir, "int8")
    cosines = np.sum(reference.embed_documents(texts) * int8.embed_documents(texts), axis=1)
    record["verification"] = {
        "texts": len(texts),
        "min_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
    }
    if cosines.min() < min_cosine:
        for name in (INT8_MODEL_FILE, INT8_RECORD_FILE):
            with contextlib.suppress(OSError):
                (export_dir / name).unlink()
        raise OnnxExportError(
            f"the int8 graph is too far from float32 (lowest cosine {cosines.min():.4f} < {min_cosine})"
        )
    tmp_record.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_record, record_path)
    return record
