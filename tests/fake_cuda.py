"""A host-memory stand-in for CUDA, for the TensorRT backend tests (no GPU needed)."""

from __future__ import annotations

import numpy as np

from mmdet_deploy.tensorrt.cuda_memory import CudaMemory, HostDeviceBuffer
from mmdet_deploy.tensorrt.gpu import GpuInfo


class FakeMemory(CudaMemory):
    """Host-only stand-in for CUDA memory: "device pointers" index numpy arrays in a shared dict."""

    kind = "fake"

    def __init__(self, device: int, store: dict[int, np.ndarray], gpu: GpuInfo) -> None:
        super().__init__(device)
        self.store, self._gpu = store, gpu
        self.copies: list[tuple[str, int]] = []
        self.closed = False

    @property
    def stream_handle(self) -> int:
        return 1234

    def gpu_info(self) -> GpuInfo:
        return self._gpu

    def alloc(self, count: int, dtype: np.dtype) -> HostDeviceBuffer:
        ptr = 0x1000 * (len(self.store) + 1)
        self.store[ptr] = np.zeros(count, dtype=dtype)
        return HostDeviceBuffer(host=np.zeros(count, dtype=dtype), device_ptr=ptr)

    def to_device(self, buf: HostDeviceBuffer, count: int) -> None:
        self.copies.append(("h2d", count))
        self.store[buf.device_ptr][:count] = buf.host[:count]

    def to_host(self, buf: HostDeviceBuffer, count: int) -> None:
        self.copies.append(("d2h", count))
        buf.host[:count] = self.store[buf.device_ptr][:count]

    def synchronize(self) -> None:
        self.copies.append(("sync", 0))

    def close(self) -> None:
        self.closed = True
