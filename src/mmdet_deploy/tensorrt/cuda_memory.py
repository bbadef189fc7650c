"""Pinned host buffers, device memory, streams and graphs for the TensorRT backend (devices: :mod:`.gpu`).

Two interchangeable implementations of :class:`CudaMemory`:

* :class:`CudartMemory` (default) uses ``cuda-bindings`` (``from cuda.bindings import runtime``), the
  library NVIDIA's own TensorRT samples moved to; it shares the primary CUDA context with PyTorch.
* :class:`TorchMemory` uses PyTorch CUDA tensors and streams, for processes that already hold torch.

Nothing here imports CUDA at module import time. Every CUDA call is checked; a failure raises
:class:`~mmdet_deploy.errors.BackendError` with CUDA's own error string.

Unverified on hardware in this repository (no GPU on the development machines): written against the
documented cuda-bindings runtime API (``cudaMalloc``, ``cudaMallocHost``, ``cudaMemcpyAsync``,
``cudaStreamBeginCapture``/``EndCapture``, ``cudaGraphInstantiate``/``Launch``).
"""

from __future__ import annotations

import ctypes
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, UsageError
from mmdet_deploy.tensorrt.gpu import GpuInfo, check, cudart, select_device

MEMORY_KINDS = ("cuda-bindings", "torch")


@dataclass
class HostDeviceBuffer:
    """A flat pinned host array and a device allocation of the same size (allocated once)."""

    host: np.ndarray
    device_ptr: int
    owner: Any = None  # keeps torch tensors alive in TorchMemory

    @property
    def nbytes(self) -> int:
        return int(self.host.nbytes)


class CudaMemory(ABC):
    """Allocation, transfers and one stream on one device."""

    kind = ""

    def __init__(self, device: int) -> None:
        self.device = device

    @property
    @abstractmethod
    def stream_handle(self) -> int:
        """The raw ``cudaStream_t`` as an int (what ``execute_async_v3`` takes)."""

    @abstractmethod
    def gpu_info(self) -> GpuInfo:
        """Name and compute capability of this memory's device."""

    @abstractmethod
    def alloc(self, count: int, dtype: np.dtype) -> HostDeviceBuffer:
        """A pinned host array of ``count`` elements and a device buffer of the same byte size."""

    @abstractmethod
    def to_device(self, buf: HostDeviceBuffer, count: int) -> None:
        """Enqueue the copy of the first ``count`` elements host -> device on the stream."""

    @abstractmethod
    def to_host(self, buf: HostDeviceBuffer, count: int) -> None:
        """Enqueue the copy of the first ``count`` elements device -> host on the stream."""

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Free every buffer and the stream (idempotent)."""


class CudartMemory(CudaMemory):
    """:class:`CudaMemory` on cuda-bindings: ``cudaMallocHost`` / ``cudaMalloc`` / ``cudaMemcpyAsync``."""

    kind = "cuda-bindings"

    def __init__(self, device: int) -> None:
        super().__init__(device)
        self._rt = cudart()
        self._gpu = select_device(device)  # clear error when there is no usable GPU
        flags = self._rt.cudaStreamNonBlocking
        self._stream = check(self._rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")
        self._host_ptrs: list[int] = []
        self._device_ptrs: list[int] = []

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def gpu_info(self) -> GpuInfo:
        return self._gpu

    def alloc(self, count: int, dtype: np.dtype) -> HostDeviceBuffer:
        dtype = np.dtype(dtype)
        nbytes = max(1, int(count)) * dtype.itemsize
        host_ptr = int(check(self._rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._host_ptrs.append(host_ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(host_ptr)
        host = np.ctypeslib.as_array(raw).view(dtype)[: int(count)]
        device_ptr = int(check(self._rt.cudaMalloc(nbytes), "cudaMalloc"))
        self._device_ptrs.append(device_ptr)
        return HostDeviceBuffer(host=host, device_ptr=device_ptr)

    def to_device(self, buf: HostDeviceBuffer, count: int) -> None:
        nbytes = int(count) * buf.host.itemsize
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self._rt.cudaMemcpyAsync(buf.device_ptr, buf.host.ctypes.data, nbytes, kind, self._stream), "H2D copy")

    def to_host(self, buf: HostDeviceBuffer, count: int) -> None:
        nbytes = int(count) * buf.host.itemsize
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self._rt.cudaMemcpyAsync(buf.host.ctypes.data, buf.device_ptr, nbytes, kind, self._stream), "D2H copy")

    def synchronize(self) -> None:
        check(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        rt = self._rt
        if self._stream is not None:
            rt.cudaStreamSynchronize(self._stream)
        for ptr in self._device_ptrs:
            rt.cudaFree(ptr)
        for ptr in self._host_ptrs:
            rt.cudaFreeHost(ptr)
        self._device_ptrs, self._host_ptrs = [], []
        if self._stream is not None:
            rt.cudaStreamDestroy(self._stream)
            self._stream = None


class TorchMemory(CudaMemory):
    """:class:`CudaMemory` on PyTorch: pinned CPU tensors, CUDA tensors and a ``torch.cuda.Stream``."""

    kind = "torch"

    def __init__(self, device: int) -> None:
        super().__init__(device)
        self._torch = require("torch", "TensorRT buffers as torch tensors")
        if not self._torch.cuda.is_available():
            raise BackendError("memory='torch' needs a CUDA build of PyTorch and a visible GPU (none is usable here)")
        if not 0 <= device < self._torch.cuda.device_count():
            raise UsageError(f"CUDA device {device} does not exist ({self._torch.cuda.device_count()} visible)")
        self._device = self._torch.device(f"cuda:{device}")
        self._stream = self._torch.cuda.Stream(device=self._device)
        self._buffers: list[HostDeviceBuffer] = []

    @property
    def stream_handle(self) -> int:
        return int(self._stream.cuda_stream)

    def gpu_info(self) -> GpuInfo:
        props = self._torch.cuda.get_device_properties(self._device)
        return GpuInfo(index=self.device, name=str(props.name).strip(), compute_capability=(props.major, props.minor))

    def alloc(self, count: int, dtype: np.dtype) -> HostDeviceBuffer:
        torch = self._torch
        tdtype = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
        host_t = torch.empty(max(1, int(count)), dtype=tdtype, pin_memory=True)
        dev_t = torch.empty(max(1, int(count)), dtype=tdtype, device=self._device)
        buf = HostDeviceBuffer(
            host=host_t.numpy()[: int(count)], device_ptr=int(dev_t.data_ptr()), owner=(host_t, dev_t)
        )
        self._buffers.append(buf)
        return buf

    def to_device(self, buf: HostDeviceBuffer, count: int) -> None:
        host_t, dev_t = buf.owner
        with self._torch.cuda.stream(self._stream):
            dev_t[: int(count)].copy_(host_t[: int(count)], non_blocking=True)

    def to_host(self, buf: HostDeviceBuffer, count: int) -> None:
        host_t, dev_t = buf.owner
        with self._torch.cuda.stream(self._stream):
            host_t[: int(count)].copy_(dev_t[: int(count)], non_blocking=True)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        if self._buffers:
            self._stream.synchronize()
        self._buffers = []


def make_memory(kind: str, device: int) -> CudaMemory:
    """A :class:`CudaMemory` of ``kind`` (``"cuda-bindings"`` or ``"torch"``) on ``device``."""
    if kind == "cuda-bindings":
        return CudartMemory(device)
    if kind == "torch":
        return TorchMemory(device)
    raise UsageError(f"unknown memory kind {kind!r}; choose one of {', '.join(MEMORY_KINDS)}")


class CudaGraph:
    """One CUDA graph captured from work enqueued on a stream, replayed with one launch."""

    def __init__(self) -> None:
        self._rt = cudart()
        self._graph: Any = None
        self._exec: Any = None

    def capture(self, stream: int, enqueue: Any) -> None:
        """Capture what ``enqueue()`` puts on ``stream``; on failure the capture is ended and re-raised."""
        rt = self._rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        except BaseException:
            rt.cudaStreamEndCapture(stream)
            raise
        self._graph = check(rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        self._exec = check(rt.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: int) -> None:
        check(self._rt.cudaGraphLaunch(self._exec, stream), "cudaGraphLaunch")

    def close(self) -> None:
        if self._exec is not None:
            self._rt.cudaGraphExecDestroy(self._exec)
            self._exec = None
        if self._graph is not None:
            self._rt.cudaGraphDestroy(self._graph)
            self._graph = None
