"""TensorRT runtime backend and engine sidecars.

The backend tests run against ``tests/fake_tensorrt.py`` (a recording fake of ``tensorrt``) and a
host-memory fake of CUDA: they check OUR logic (sidecar refusal, binding, batching, copies) and prove
nothing about TensorRT or CUDA. Real engines run only in the ``trt``/``gpu`` tests at the end.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from contract_onnx import make_contract_onnx
from fake_cuda import FakeMemory
from fake_tensorrt import fake_engine_logits, make_fake_tensorrt
from mmdet_deploy.errors import ContractError, EngineMismatchError, UsageError
from mmdet_deploy.export.tensorrt import builder as builder_mod
from mmdet_deploy.export.tensorrt.builder import BuildOptions, build_engine
from mmdet_deploy.runtime.backends import create_backend
from mmdet_deploy.runtime.backends.base import softmax_fake
from mmdet_deploy.tensorrt import cuda_memory, gpu
from mmdet_deploy.tensorrt.gpu import GpuInfo
from mmdet_deploy.tensorrt.sidecar import (
    EngineSidecar,
    check_compatible,
    read_sidecar,
    rebuild_command,
    sidecar_path,
    write_sidecar,
)

H200 = GpuInfo(index=0, name="NVIDIA H200", compute_capability=(9, 0))
ORIGINAL_MAKE_MEMORY = cuda_memory.make_memory


def sample_sidecar(**changes: object) -> EngineSidecar:
    base = EngineSidecar(
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H200",
        compute_capability="9.0",
        precision="fp16",
        profile={"min": 1, "opt": 2, "max": 4},
        onnx_sha256="a" * 64,
        engine_sha256="b" * 64,
        contract={"head": "simplified", "config": "tiny", "contract_version": 1},
        onnx_path="models/tiny.fp16.onnx",
        build_options={"strict_fp32": False},
    )
    return replace(base, **changes)


# -- sidecar ----------------------------------------------------------------------------------------
def test_sidecar_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    side = sample_sidecar()
    assert write_sidecar(engine, side) == sidecar_path(engine) == tmp_path / "m.engine.json"
    assert read_sidecar(engine) == side
    assert read_sidecar(engine).model_contract().config == "tiny"


def test_sidecar_missing_or_broken(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(ContractError, match="engine file not found"):
        read_sidecar(engine)
    engine.write_bytes(b"x")
    with pytest.raises(ContractError, match="no sidecar m.engine.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ContractError, match="unreadable engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"sidecar_version": 1, "precision": "fp16"}')
    with pytest.raises(ContractError, match="lacks tensorrt_version, gpu_name"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"sidecar_version": 9}')
    with pytest.raises(ContractError, match="sidecar version 9"):
        read_sidecar(engine)


def test_compatible_sidecar_passes() -> None:
    side = sample_sidecar()
    assert (
        check_compatible(side, "m.engine", tensorrt_version="10.3.0", gpu_name="NVIDIA H200", compute_capability="9.0")
        == []
    )


@pytest.mark.parametrize(
    ("installed", "gpu", "cc", "expected"),
    [
        ("10.4.0", "NVIDIA H200", "9.0", "TensorRT 10.3.0 (installed: 10.4.0)"),
        ("10.3.0", "NVIDIA L4", "8.9", "compute capability 9.0 (this GPU: NVIDIA L4, 8.9)"),
        ("10.3.0", "NVIDIA H100 80GB HBM3", "9.0", "GPU NVIDIA H200 (this GPU: NVIDIA H100 80GB HBM3"),
    ],
)
def test_mismatch_is_refused_with_rebuild_command(installed: str, gpu: str, cc: str, expected: str) -> None:
    side = sample_sidecar()
    with pytest.raises(EngineMismatchError) as info:
        check_compatible(side, "out/m.engine", tensorrt_version=installed, gpu_name=gpu, compute_capability=cc)
    text = str(info.value)
    assert expected in text
    assert "rebuild it here with: mmdet-export build --onnx models/tiny.fp16.onnx --fp16" in text
    assert "--opt-batch 2 --max-batch 4 --out out/m.engine" in text


def test_same_capability_other_name_only_warns_when_not_strict() -> None:
    side = sample_sidecar()
    warnings = check_compatible(
        side,
        "m.engine",
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100",
        compute_capability="9.0",
        strict_device=False,
    )
    assert len(warnings) == 1 and "NVIDIA H100" in warnings[0]


def test_rebuild_command_quotes_paths() -> None:
    side = sample_sidecar(onnx_path="my models/x.onnx", precision="int8", build_options={"calib_dir": "frames dir"})
    assert rebuild_command(side, "a b.engine") == (
        "mmdet-export build --onnx 'my models/x.onnx' --int8 --calib 'frames dir' --opt-batch 2 --max-batch 4 "
        "--out 'a b.engine'"
    )


# -- backend against the fakes --------------------------------------------------------------------
@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, object, dict]:
    store: dict[int, np.ndarray] = {}
    trt = make_fake_tensorrt("10.3.0", device_memory=store)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(builder_mod, "select_device", lambda index: H200)
    onnx_path = make_contract_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    build_engine(onnx_path, engine, BuildOptions(opt_batch=2, max_batch=3))
    memories: list[FakeMemory] = []

    def fake_memory(kind: str, device: int, gpu: GpuInfo = H200) -> FakeMemory:
        memories.append(FakeMemory(device, store, gpu))
        return memories[-1]

    monkeypatch.setattr(cuda_memory, "make_memory", fake_memory)
    return engine, trt, {"store": store, "memories": memories}


def clips(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (batch, 2, 3, 16, 16)
    return {"original": rng.normal(size=shape).astype(np.float32), "recons": rng.normal(size=shape).astype(np.float32)}


def test_backend_runs_batches_and_splits_large_ones(built) -> None:
    engine, trt, state = built
    with create_backend("tensorrt", engine, device="cuda:0") as backend:
        assert backend.max_batch == 3 and backend.contract.config == "tiny"
        for batch in (1, 3, 7):
            x = clips(batch, seed=batch)
            out = backend.infer(x)
            expected = fake_engine_logits(x)
            np.testing.assert_allclose(out["logits"], expected, rtol=1e-6)
            np.testing.assert_allclose(out["prob_fake"], softmax_fake(expected), rtol=1e-5)
        memory = state["memories"][0]
        # 7 clips at max batch 3 -> chunks 3, 3, 1; buffers were allocated once (4 tensors)
        assert len(state["store"]) == 4
        shapes = [c for c in trt.calls if c[0] == "context.set_input_shape" and c[1] == "original"]
        assert [s[2][0] for s in shapes] == [3, 1, 3, 1]
        assert backend.describe()["precision"] == "fp32"
    assert memory.closed


def test_backend_refuses_other_gpu(built, monkeypatch) -> None:
    engine, _, state = built
    l4 = GpuInfo(index=0, name="NVIDIA L4", compute_capability=(8, 9))
    monkeypatch.setattr(cuda_memory, "make_memory", lambda kind, device: FakeMemory(device, state["store"], l4))
    with pytest.raises(EngineMismatchError, match="rebuild it here with: mmdet-export build"):
        create_backend("tensorrt", engine, device="cuda").open()


def test_backend_refuses_other_tensorrt(built, monkeypatch) -> None:
    engine, _, _ = built
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.4.0"))
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10.3.0 \(installed: 10.4.0\)"):
        create_backend("tensorrt", engine, device="cuda").open()


def test_backend_refuses_a_replaced_engine(built) -> None:
    engine, _, state = built
    engine.write_bytes(engine.read_bytes() + b" ")
    with pytest.raises(ContractError, match="does not match its sidecar"):
        create_backend("tensorrt", engine, device="cuda").open()
    assert state["memories"][-1].closed


def test_backend_option_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="runs on a CUDA GPU"):
        create_backend("tensorrt", tmp_path / "m.engine", device="cpu")
    with pytest.raises(UsageError, match="unknown options"):
        create_backend("tensorrt", tmp_path / "m.engine", device="cuda", graphs=True)
    with pytest.raises(UsageError, match="memory must be one of"):
        create_backend("tensorrt", tmp_path / "m.engine", device="cuda", memory="pycuda")


def test_backend_without_tensorrt(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    from mmdet_deploy.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"mmdet-deploy\[gpu\]"):
        create_backend("tensorrt", tmp_path / "m.engine", device="cuda").open()


def test_parse_device() -> None:
    assert [gpu.parse_device(d) for d in ("cuda", "cuda:2", "1", 3)] == [0, 2, 1, 3]
    with pytest.raises(UsageError):
        gpu.parse_device("cpu")


def test_importing_the_backend_stays_lean() -> None:
    code = (
        "import sys, mmdet_deploy.runtime.backends.tensorrt, mmdet_deploy.export.tensorrt;"
        "heavy = [m for m in ('tensorrt', 'torch', 'onnx', 'cuda.bindings') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- real hardware ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-3), ("fp16", 5e-2)])
def test_real_engine_parity_tiny(tmp_path: Path, precision: str, atol: float) -> None:
    """Build and run a real engine from the tiny model; compare with PyTorch fp32 (needs GPU + TensorRT)."""
    torch = pytest.importorskip("torch")
    from mmdet_deploy.export.onnx_export import export_onnx
    from mmdet_deploy.export.precision import convert_fp16
    from mmdet_deploy.model import load_model, write_demo_checkpoint

    weights = write_demo_checkpoint(tmp_path / "tiny.pth", config="tiny", seed=0)
    onnx_path = export_onnx(weights, tmp_path / "tiny.onnx", config="tiny").path
    if precision == "fp16":
        onnx_path = convert_fp16(onnx_path, tmp_path / "tiny.fp16.onnx")
    engine = tmp_path / f"tiny.{precision}.engine"
    build_engine(onnx_path, engine, BuildOptions(precision=precision, max_batch=2, strict_fp32=precision == "fp32"))
    model = load_model(weights, config="tiny")
    with create_backend("tensorrt", engine, device="cuda") as backend:
        spec = backend.contract.inputs[0]
        x = {
            n: np.random.default_rng(1).normal(size=spec.concrete(2)).astype(np.float32)
            for n in backend.contract.input_names
        }
        out = backend.infer(x)
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(x[n]) for n in backend.contract.input_names)).numpy()
    assert np.abs(out["logits"] - ref).max() <= atol
    if precision == "fp16":
        assert np.abs(out["prob_fake"] - softmax_fake(ref)).max() <= 1e-2


def test_cuda_graph_used_for_the_fixed_batch_only(built, monkeypatch) -> None:
    engine, trt, _ = built
    events: list[str] = []

    class FakeGraph:
        """Records capture/launch; "replays" by calling the captured enqueue again."""

        def capture(self, stream: int, enqueue) -> None:
            events.append("capture")
            self.enqueue = enqueue

        def launch(self, stream: int) -> None:
            events.append("launch")
            self.enqueue()

        def close(self) -> None:
            events.append("close")

    monkeypatch.setattr(cuda_memory, "CudaGraph", FakeGraph)
    with create_backend("tensorrt", engine, device="cuda", cuda_graph=True, graph_batch=2) as backend:
        for batch in (2, 2, 1, 2):
            x = clips(batch, seed=10 + batch)
            np.testing.assert_allclose(backend.infer(x)["logits"], fake_engine_logits(x), rtol=1e-6)
    # capture at the first batch of 2, replay, drop it when the shape changes, capture again
    assert events == ["capture", "launch", "launch", "close", "capture", "launch", "close"]


def test_backend_without_gpu_is_a_clear_error(built, monkeypatch) -> None:
    """The real cuda-bindings memory on a machine without a usable GPU."""
    from cuda.bindings import runtime as rt

    err, count = rt.cudaGetDeviceCount()
    if int(err) == 0 and count:
        pytest.skip("a GPU is usable here")
    engine, _, _ = built
    monkeypatch.setattr(cuda_memory, "make_memory", ORIGINAL_MAKE_MEMORY)
    from mmdet_deploy.errors import BackendError

    with pytest.raises(BackendError, match="no CUDA GPU is usable here"):
        create_backend("tensorrt", engine, device="cuda").open()
