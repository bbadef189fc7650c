"""Peak memory of one benchmark row: host RSS and GPU memory.

Host. Each row normally runs in a fresh worker process (see :mod:`.matrix`), so the kernel's high-water
mark of that process's own address space (``VmHWM`` in ``/proc/self/status``) is the row's peak resident
set: the Python interpreter and imported libraries included, nothing left over from other rows. (Not
``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the parent's high-water mark into a forked child and
keeps it across ``execve``, so a worker started by a parent that once held 2 GB would report 2 GB.)
The report gives it as
``peak_rss_mb`` and also ``rss_delta_mb`` = peak - RSS just before the backend was created (what the
model, its runtime and the timed calls added). When rows run in-process (tests, ``--no-isolate``) the
high-water mark is process-wide and useless per row; :class:`RssSampler` then samples ``psutil`` RSS
every few milliseconds and keeps the maximum (a short spike between samples can be missed).

GPU. ``torch.cuda.max_memory_allocated`` covers PyTorch's caching allocator only, so the report also
samples device-level usage (``cudaMemGetInfo``: total - free) before the backend opens and after every
timed batch size, and gives the largest increase over the first sample (``gpu_used_mb``); that covers
TensorRT and ONNX Runtime allocations too.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import Any

MB = 1024 * 1024


def current_rss_mb() -> float:
    """Resident set size of this process now (MiB); psutil when installed, else /proc/self/statm."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def max_rss_mb() -> float | None:
    """High-water RSS of this process's own address space (MiB): ``VmHWM`` on Linux.

    Elsewhere ``getrusage`` ``ru_maxrss`` (which may include a parent's peak); None where neither exists.
    """
    status = "/proc/self/status"
    if os.path.exists(status):
        with open(status) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class RssSampler:
    """Context manager that samples this process's RSS every ``interval_s`` seconds and keeps the peak (MiB)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def __enter__(self) -> RssSampler:
        self.start_mb = self.peak_mb = current_rss_mb()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())


class GpuMemory:
    """Device-level and PyTorch-allocator GPU memory of one row (MiB); inert when CUDA is not in use."""

    def __init__(self, device: str) -> None:
        self.active = False
        self._torch: Any = None
        self.baseline_mb = 0.0
        self.peak_used_mb = 0.0
        if device != "cuda":
            return
        try:
            import torch
        except ImportError:
            return
        if torch.cuda.is_available():
            self.active = True
            self._torch = torch
            torch.cuda.reset_peak_memory_stats()
            self.baseline_mb = self._used()
            self.peak_used_mb = self.baseline_mb

    def _used(self) -> float:
        free, total = self._torch.cuda.mem_get_info()
        return (total - free) / MB

    def sample(self) -> None:
        """Record the current device-level usage (call after each synchronised batch of work)."""
        if self.active:
            self.peak_used_mb = max(self.peak_used_mb, self._used())

    def summary(self) -> dict[str, float | None]:
        """``gpu_used_mb`` (device-level peak increase) and ``gpu_torch_peak_mb`` (PyTorch allocator peak)."""
        if not self.active:
            return {"gpu_used_mb": None, "gpu_torch_peak_mb": None}
        self.sample()
        return {
            "gpu_used_mb": self.peak_used_mb - self.baseline_mb,
            "gpu_torch_peak_mb": self._torch.cuda.max_memory_allocated() / MB,
        }
