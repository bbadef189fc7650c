"""Which CUDA device: parse ``cuda:N``, select it, describe it (name, compute capability).

Shared by the engine builder (which records the GPU in the sidecar) and the TensorRT backend (which
refuses an engine built for another GPU). Every CUDA call goes through :func:`check`; a failure raises
:class:`~mmdet_deploy.errors.BackendError` with CUDA's own error string. Nothing here imports CUDA at
module import time.

Unverified on hardware in this repository (no GPU on the development machines): written against the
documented cuda-bindings runtime API (``cudaGetDeviceCount``, ``cudaSetDevice``, ``cudaGetDeviceProperties``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, UsageError


@dataclass(frozen=True)
class GpuInfo:
    """Identity of one CUDA device, as recorded in engine sidecars."""

    index: int
    name: str
    compute_capability: tuple[int, int]

    @property
    def capability(self) -> str:
        """Compute capability as ``"major.minor"`` (e.g. ``"9.0"`` for H100/H200)."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def parse_device(device: str | int) -> int:
    """CUDA device index from ``"cuda"``, ``"cuda:N"``, ``"N"`` or ``N``; ``"cpu"`` is a usage error."""
    text = str(device).strip().lower()
    if text in ("cuda", "gpu"):
        return 0
    if text.startswith("cuda:"):
        text = text[5:]
    if text.isdigit():
        return int(text)
    raise UsageError(f"device {device!r} is not a CUDA device; use 'cuda' or 'cuda:N' (TensorRT runs on a GPU)")


def cudart() -> ModuleType:
    """The cuda-bindings runtime module (raises MissingDependencyError naming the extra)."""
    return require("cuda.bindings.runtime", "TensorRT on a GPU")


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-bindings ``(err, *values)`` tuple, raising :class:`BackendError` on an error code."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        try:
            _, text = rt.cudaGetErrorString(err)
            message = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the error string itself needs a working runtime
            message = str(err)
        raise BackendError(f"CUDA error in {what}: {message} ({err})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def select_device(index: int = 0) -> GpuInfo:
    """Make ``index`` the current CUDA device and describe it; a clear error when no GPU is usable."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    if int(err) != int(rt.cudaError_t.cudaSuccess) or not count:
        reason = _error_name(rt, err) if int(err) != int(rt.cudaError_t.cudaSuccess) else "0 devices"
        raise BackendError(
            f"no CUDA GPU is usable here ({reason}); TensorRT needs an NVIDIA GPU with its driver installed"
        )
    if not 0 <= index < count:
        raise UsageError(f"CUDA device {index} does not exist; this machine has {count} (0..{count - 1})")
    check(rt.cudaSetDevice(index), "cudaSetDevice")
    props = check(rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(index=index, name=name.rstrip("\x00").strip(), compute_capability=(props.major, props.minor))


def _error_name(rt: ModuleType, err: Any) -> str:
    try:
        _, text = rt.cudaGetErrorString(err)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:
        return str(err)
