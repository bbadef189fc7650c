"""TensorRT 10.x legacy INT8 path: an entropy calibrator fed from a calibration set, with an explicit cache file.

TensorRT 11 removed ``IInt8*Calibrator`` (deployment-facts section 3): there, INT8 comes from the Q/DQ ONNX
of :mod:`mmdet_deploy.calibration.quantize`. On 10.x, ``mmdet-export build --int8 --calib DIR`` calls
:func:`make_entropy_calibrator`. The batching, device copies and cache handling live in plain classes
(:class:`CalibrationBatcher`, :class:`CalibratorCore`) so they can be tested without TensorRT; the class that
derives from ``trt.IInt8EntropyCalibrator2`` is created inside the factory because tensorrt is imported lazily.

The cache is the file the caller names. Next to it, ``<cache>.json`` records the calibration set's fingerprint:
a cache made from another set is ignored (and rewritten) rather than silently reused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmdet_deploy.calibration.dataset import CALIBRATION, CalibrationSet, CalibrationSetError
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, UsageError

logger = logging.getLogger(__name__)


class DeviceAllocator(Protocol):
    """Device memory as the calibrator needs it: allocate, copy host -> device, free."""

    def malloc(self, nbytes: int) -> int: ...

    def copy_to_device(self, ptr: int, host: np.ndarray) -> None: ...

    def free(self, ptr: int) -> None: ...


class CudaRuntimeAllocator:
    """:class:`DeviceAllocator` on the CUDA runtime through cuda-bindings (``cuda.bindings.runtime``)."""

    def __init__(self) -> None:
        self.cudart = require("cuda.bindings.runtime", "the TensorRT INT8 calibrator")

    def _check(self, err: Any, what: str) -> None:
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise BackendError(f"{what} failed: {err}")

    def malloc(self, nbytes: int) -> int:
        err, ptr = self.cudart.cudaMalloc(nbytes)
        self._check(err, f"cudaMalloc({nbytes})")
        return int(ptr)

    def copy_to_device(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        (err,) = self.cudart.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, kind)
        self._check(err, "cudaMemcpy host->device")

    def free(self, ptr: int) -> None:
        (err,) = self.cudart.cudaFree(ptr)
        self._check(err, "cudaFree")


class CalibrationBatcher:
    """Full batches ``{name: float32 (B, T, 3, H, W)}`` of one split, in manifest order.

    TensorRT calibrates with a fixed batch (the calibration profile), so a last partial batch is dropped
    (and logged); fewer clips than one batch is an error.
    """

    def __init__(self, calib: CalibrationSet, input_names: Sequence[str], batch_size: int,
                 split: str = CALIBRATION) -> None:
        if batch_size < 1:
            raise UsageError(f"calibration batch size {batch_size} must be >= 1")
        missing = [n for n in input_names if n not in calib.manifest["input_names"]]
        if missing:
            raise CalibrationSetError(
                f"{calib.root}: the network needs inputs {missing} that the calibration set does not hold "
                f"(it holds {calib.manifest['input_names']})"
            )
        self.calib = calib
        self.input_names = tuple(input_names)
        self.batch_size = batch_size
        self.entries = calib.split(split)
        self.num_batches = len(self.entries) // batch_size
        if self.num_batches == 0:
            raise CalibrationSetError(
                f"{calib.root}: {len(self.entries)} {split} clips cannot fill one batch of {batch_size}"
            )
        dropped = len(self.entries) - self.num_batches * batch_size
        if dropped:
            logger.info("calibration: the last %d clip(s) do not fill a batch of %d; skipped", dropped, batch_size)
        shape = tuple(int(d) for d in calib.manifest["clip_shape"])
        self.batch_shape = (batch_size, *shape)
        self.batch_nbytes = int(np.prod(self.batch_shape)) * np.dtype(np.float32).itemsize
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def next_batch(self) -> dict[str, np.ndarray] | None:
        """The next full batch, or None when the split is exhausted."""
        if self._next >= self.num_batches:
            return None
        start = self._next * self.batch_size
        self._next += 1
        loaded = [self.calib.load(e) for e in self.entries[start : start + self.batch_size]]
        return {n: np.ascontiguousarray(np.stack([c[n] for c in loaded]), dtype=np.float32) for n in self.input_names}


class CalibratorCore:
    """Everything an ``IInt8EntropyCalibrator2`` does, without TensorRT: one device buffer per input."""

    def __init__(self, batcher: CalibrationBatcher, cache_file: Path, allocator: DeviceAllocator,
                 fingerprint: str) -> None:
        self.batcher = batcher
        self.cache_file = Path(cache_file)
        self.allocator = allocator
        self.fingerprint = fingerprint
        self.buffers = {n: allocator.malloc(batcher.batch_nbytes) for n in batcher.input_names}
        self.batches_served = 0

    @property
    def info_file(self) -> Path:
        """``<cache>.json``: which calibration set and inputs the cache was computed from."""
        return self.cache_file.with_name(self.cache_file.name + ".json")

    def get_batch_size(self) -> int:
        return self.batcher.batch_size

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        """Copy the next batch to the device; return one device pointer per name, or None when done."""
        unknown = [n for n in names if n not in self.buffers]
        if unknown:
            raise BackendError(f"TensorRT asked for calibration inputs {unknown}; known: {list(self.buffers)}")
        batch = self.batcher.next_batch()
        if batch is None:
            return None
        for name in names:
            self.allocator.copy_to_device(self.buffers[name], batch[name])
        self.batches_served += 1
        return [self.buffers[n] for n in names]

    def read_calibration_cache(self) -> bytes | None:
        """The cache bytes, unless missing or recorded as made from another calibration set."""
        if not self.cache_file.is_file():
            return None
        if self.info_file.is_file():
            try:
                info = json.loads(self.info_file.read_text())
            except ValueError:
                info = {}
            if info.get("calibration_fingerprint") != self.fingerprint:
                logger.warning("%s was computed from another calibration set; recalibrating", self.cache_file)
                return None
        else:
            logger.info("using calibration cache %s as given (no record of its calibration set)", self.cache_file)
        return self.cache_file.read_bytes()

    def write_calibration_cache(self, cache: Any) -> None:
        """Write the cache file and its record (fingerprint, inputs, batch size)."""
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        self.cache_file.write_bytes(bytes(cache))
        record = {"calibration_fingerprint": self.fingerprint, "calibration_set": str(self.batcher.calib.root),
                  "input_names": list(self.batcher.input_names), "batch_size": self.batcher.batch_size,
                  "batches": self.batcher.num_batches}
        self.info_file.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")

    def close(self) -> None:
        """Free the device buffers (idempotent)."""
        for ptr in self.buffers.values():
            self.allocator.free(ptr)
        self.buffers = {}


def make_entropy_calibrator(
    trt: Any,
    calib_dir: Path,
    cache_file: Path,
    input_names: Sequence[str],
    batch_size: int,
    *,
    split: str = CALIBRATION,
    contract: ModelContract | None = None,
    allocator: DeviceAllocator | None = None,
) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` fed from the calibration set in ``calib_dir``.

    ``trt`` is the imported tensorrt module (10.x). ``contract``, when given, must match the set's
    preprocessing. ``allocator`` defaults to :class:`CudaRuntimeAllocator`. The device buffers are freed by
    ``.core.close()`` or when the calibrator is garbage-collected.
    """
    calib = CalibrationSet.open(calib_dir)
    if contract is not None:
        calib.check_compatible(contract)
    core = CalibratorCore(CalibrationBatcher(calib, input_names, batch_size, split), Path(cache_file),
                          allocator or CudaRuntimeAllocator(), calib.fingerprint)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        """TensorRT's entropy calibrator 2 over a calibration set (see :class:`CalibratorCore`)."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.core = core

        def get_batch_size(self) -> int:
            return self.core.get_batch_size()

        def get_batch(self, names: Sequence[str], *_: Any) -> list[int] | None:
            return self.core.get_batch(names)

        def read_calibration_cache(self) -> bytes | None:
            return self.core.read_calibration_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            self.core.write_calibration_cache(cache)

        def __del__(self) -> None:  # the builder drops the calibrator after the build: free the buffers then
            try:
                self.core.close()
            except Exception:  # never raise from a finaliser (the CUDA context may already be gone)
                pass

    return EntropyCalibrator()
