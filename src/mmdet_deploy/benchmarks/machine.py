"""What machine a report was measured on: CPU, cores, memory, GPU and library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

#: Distributions whose versions every report records (absent ones are reported as ``None``).
VERSIONED = (
    "mmdet-deploy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy",
    "opencv-python-headless", "opencv-python", "av", "mediapipe", "dlib", "psutil", "matplotlib", "openvino", "nncf",
)
#: CPU features that decide which int8 / bf16 kernels a CPU backend can use (from /proc/cpuinfo).
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED` (``None`` when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def cpu_features() -> list[str]:
    """Which of :data:`CPU_FEATURES` this CPU has (empty where /proc/cpuinfo does not exist)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return []
    flags = next((ln.partition(":")[2].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return [f for f in CPU_FEATURES if f in flags]


def gpu_info() -> list[dict[str, Any]]:
    """One entry per visible CUDA device (name, memory in GiB, compute capability); empty without CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "compute_capability": f"{props.major}.{props.minor}",
            }
        )
    return gpus


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS does not report it.

    Recorded at the start and the end of a run: a value above the core count means other work shared
    the machine and inflated the latencies.
    """
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The machine as a JSON-ready dict; ``threads`` is the intra-op thread count the benchmark used."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "threads": threads,
        "gpus": gpu_info(),
        "versions": versions(),
        "cpu_features": cpu_features(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["physical_cores"] = None
        info["ram_gib"] = None
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cpu_affinity"] = None
    return info
