"""What this machine offers a model: usable cores, int8 units, a GPU. Detected, never assumed."""

from __future__ import annotations

import os
import platform
import shutil
import sys

from semsearch.errors import ModelOptionError


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which a container may restrict below cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pick_device(device: str | None) -> str:
    """Resolve ``auto``: a GPU when one is present, else the CPU. A GPU asked for by name must be
    there for PyTorch (a clear error here, not PyTorch's assertion at the first tensor)."""
    import torch

    if device and device != "auto":
        if device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            number = int(device.partition(":")[2] or 0)
            if number >= count:
                have = f"{count} CUDA device{'s' if count != 1 else ''}" if count else "no CUDA device"
                raise ModelOptionError(f"{{device}} {device}: PyTorch here sees {have}", options=("device",))
        elif device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise ModelOptionError("{device} mps: PyTorch here has no MPS (Apple GPU) support", options=("device",))
        return device

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


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
    try:
        return pick_device("auto") != "cpu"
    except ImportError:
        return False
