"""Which precision documents are embedded in: chosen once per index, recorded, never mixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeModel, write

from semsearch.cli.messages import describe
from semsearch.errors import ModelError
from semsearch.indexing import IndexOptions, build_index
from semsearch.models import ModelInfo
from semsearch.models import local as models
from semsearch.models.local import LocalModel
from semsearch.store import read_manifest


def _known(precision: str) -> ModelInfo:
    return ModelInfo(name="all-MiniLM-L6-v2", fingerprint="sha256:x", dim=384, max_tokens=256, precision=precision)


@pytest.mark.parametrize(("vnni", "driver", "torch_gpu", "expected"), [
    (True, False, False, "int8"), (False, False, False, "fp32"), (True, True, True, "fp16"),
    (True, True, False, "int8"),  # a GPU driver beside a CPU-only torch: still the CPU's choice
])
def test_auto_picks_by_hardware_for_a_new_index(monkeypatch: pytest.MonkeyPatch, vnni: bool, driver: bool,
                                                 torch_gpu: bool, expected: str) -> None:
    asked: list[bool] = []
    monkeypatch.setattr(models, "int8_fast", lambda: vnni)
    monkeypatch.setattr(models, "gpu_present", lambda: driver)
    monkeypatch.setattr(models, "torch_sees_gpu", lambda: asked.append(True) or torch_gpu)
    monkeypatch.setattr(models.sys, "platform", "linux")
    model = LocalModel(None)
    assert model.resolve_precision() == expected
    assert model.resolve_precision() == expected
    assert len(asked) == (1 if driver else 0)  # torch is asked once, and only when a driver is there


def test_auto_keeps_the_precision_of_the_existing_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "int8_fast", lambda: True)
    monkeypatch.setattr(models, "gpu_present", lambda: False)
    assert LocalModel(None, known=_known("fp32")).resolve_precision() == "fp32"
    assert LocalModel(None, known=_known("int8")).resolve_precision() == "int8"
    # fp16 needs a GPU: without one, auto falls back to this machine's choice (a rebuild, announced).
    assert LocalModel(None, known=_known("fp16")).resolve_precision() == "int8"
    # An explicit choice wins.
    assert LocalModel(None, precision="fp32", known=_known("int8")).resolve_precision() == "fp32"


def test_fp16_without_a_cuda_device_is_refused_not_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    class OnCpu:  # what SentenceTransformerEmbedder resolves to when torch finds no CUDA device
        device, precision, dim = "cpu", "fp32", 384

    model = LocalModel(None, precision="fp16", device="cpu")
    monkeypatch.setattr(model, "torch_embedder", lambda: OnCpu())
    with pytest.raises(ModelError, match=r"^precision fp16 needs a CUDA GPU; this run would embed on cpu") as caught:
        model.embedder()
    assert describe(caught.value).startswith("--precision fp16 needs a CUDA GPU; this run would embed on cpu")


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ModelError, match=r"^precision must be one of") as caught:
        LocalModel(None, precision="fp8")
    assert describe(caught.value).startswith("--precision must be one of")


class _Precise(FakeModel):
    def __init__(self, precision: str) -> None:
        super().__init__()
        self._info = ModelInfo(**{**self._info.__dict__, "precision": precision})


def test_a_precision_change_rebuilds_instead_of_mixing(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "a.txt", "alpha beta gamma")
    options = IndexOptions(roots=[tmp_path / "docs"], index_dir=tmp_path / ".semsearch")
    events: list[str] = []
    build_index(options, _Precise("fp32"))
    assert read_manifest(options.index_dir).model.precision == "fp32"
    same = build_index(options, _Precise("fp32"))
    assert same.unchanged == 1 and same.indexed == 0
    again = build_index(options, _Precise("int8"), lambda e: events.append(e.message))
    assert again.indexed == 1 and "precision changed (fp32 -> int8)" in again.rebuild_reason
    assert any("precision changed" in text for text in events)
    assert read_manifest(options.index_dir).model.precision == "int8"
