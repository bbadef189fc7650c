"""The TensorRT 10 entropy calibrator's own logic (batching, device copies, cache file), against fakes.

These tests prove nothing about TensorRT itself: the ``trt`` module and the device allocator are fakes
that record what the calibrator asks for. They check that the batches handed over are the calibration
split's arrays in manifest order, that the cache is the named file, and that a stale cache is not reused.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.calibration.dataset import CalibrationSetError
from mmdet_deploy.calibration.trt_calibrator import make_entropy_calibrator
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import BackendError, ContractError
from test_calibration_support import synthetic_set, toy_contract


class FakeAllocator:
    """Device memory as host byte arrays keyed by fake pointers."""

    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.freed: list[int] = []
        self._next = 0x1000

    def malloc(self, nbytes: int) -> int:
        ptr, self._next = self._next, self._next + nbytes + 256
        self.memory[ptr] = bytearray(nbytes)
        return ptr

    def copy_to_device(self, ptr: int, host: np.ndarray) -> None:
        data = np.ascontiguousarray(host).tobytes()
        assert len(data) <= len(self.memory[ptr]), "copy larger than the buffer"
        self.memory[ptr][: len(data)] = data

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)

    def read(self, ptr: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(bytes(self.memory[ptr]), dtype=np.float32).reshape(shape)


class _FakeCalibratorBase:
    """Stands in for ``trt.IInt8EntropyCalibrator2`` (the subclass must call its ``__init__``)."""

    def __init__(self) -> None:
        self.base_initialised = True


fake_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=_FakeCalibratorBase, __version__="10.3.0")


@pytest.fixture()
def calib(tmp_path: Path):
    return synthetic_set(tmp_path / "calib", toy_contract(), sources=20, holdout=0.2, min_clips=16)


def test_batches_are_the_calibration_split_in_order(calib, tmp_path: Path) -> None:
    alloc = FakeAllocator()
    cal = make_entropy_calibrator(fake_trt, calib.root, tmp_path / "model.calib.cache", ["recons", "original"], 3,
                                  allocator=alloc)
    assert isinstance(cal, _FakeCalibratorBase) and cal.base_initialised
    assert cal.get_batch_size() == 3
    entries = calib.split("calibration")
    assert len(entries) == 16  # 20 sources, 4 held out
    shape = (3, 2, 3, 16, 16)
    served = 0
    while True:
        ptrs = cal.get_batch(["original", "recons"])
        if ptrs is None:
            break
        assert ptrs == [cal.core.buffers["original"], cal.core.buffers["recons"]]  # in the order asked for
        expected = np.stack([calib.load(e)["original"] for e in entries[3 * served : 3 * served + 3]])
        np.testing.assert_array_equal(alloc.read(ptrs[0], shape), expected)
        served += 1
    assert served == 5  # 16 clips -> 5 full batches of 3, the last clip dropped
    assert cal.get_batch(["original", "recons"]) is None
    with pytest.raises(BackendError, match="clip_feature"):
        cal.get_batch(["clip_feature"])
    buffers = sorted(cal.core.buffers.values())
    cal.core.close()
    assert sorted(alloc.freed) == buffers
    cal.core.close()  # idempotent
    assert sorted(alloc.freed) == buffers


def test_cache_is_the_named_file_and_a_stale_one_is_ignored(calib, tmp_path: Path) -> None:
    cache = tmp_path / "caches" / "engine.calib.cache"
    cal = make_entropy_calibrator(fake_trt, calib.root, cache, ["original", "recons"], 2, allocator=FakeAllocator())
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(memoryview(b"TRT-10 EntropyCalibration2\n"))
    assert cache.read_bytes() == b"TRT-10 EntropyCalibration2\n"
    record = json.loads(cache.with_name(cache.name + ".json").read_text())
    assert record["calibration_fingerprint"] == calib.fingerprint and record["batch_size"] == 2
    again = make_entropy_calibrator(fake_trt, calib.root, cache, ["original", "recons"], 2, allocator=FakeAllocator())
    assert again.read_calibration_cache() == b"TRT-10 EntropyCalibration2\n"
    other = synthetic_set(tmp_path / "other", toy_contract(), sources=16, seed=7, min_clips=16)
    stale = make_entropy_calibrator(fake_trt, other.root, cache, ["original", "recons"], 2, allocator=FakeAllocator())
    assert stale.read_calibration_cache() is None  # made from another set: recalibrate
    cache.with_name(cache.name + ".json").unlink()
    assert stale.read_calibration_cache() == b"TRT-10 EntropyCalibration2\n"  # a user's cache, used as given


def test_refusals(calib, tmp_path: Path) -> None:
    with pytest.raises(CalibrationSetError, match="cannot fill one batch"):
        make_entropy_calibrator(fake_trt, calib.root, tmp_path / "c", ["original", "recons"], 17,
                                allocator=FakeAllocator())
    with pytest.raises(CalibrationSetError, match="mm_tokens"):
        make_entropy_calibrator(fake_trt, calib.root, tmp_path / "c", ["original", "recons", "mm_tokens"], 2,
                                allocator=FakeAllocator())
    with pytest.raises(ContractError, match="image_size"):
        make_entropy_calibrator(fake_trt, calib.root, tmp_path / "c", ["original", "recons"], 2,
                                contract=ModelContract(frames=2), allocator=FakeAllocator())
    with pytest.raises(CalibrationSetError, match="not a calibration set"):
        make_entropy_calibrator(fake_trt, tmp_path, tmp_path / "c", ["original"], 1, allocator=FakeAllocator())
