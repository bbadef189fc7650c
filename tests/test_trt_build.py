"""Engine builder: precision plan per TensorRT major, flags, pinning, profile, timing cache, errors.

Most tests here run against ``tests/fake_tensorrt.py``, a recording fake of the ``tensorrt`` module.
They check OUR logic (which calls we make for TensorRT 10 and 11, and how we report failures); they
prove nothing about TensorRT itself. The real build is exercised only by the ``trt``/``gpu`` tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from contract_onnx import make_contract_onnx
from fake_tensorrt import engine_description, make_fake_tensorrt
from mmdet_deploy.errors import BackendError, ContractError, ExportError, MissingDependencyError, UsageError
from mmdet_deploy.export.tensorrt import builder as builder_mod
from mmdet_deploy.export.tensorrt.builder import BuildOptions, build_engine
from mmdet_deploy.tensorrt import compat
from mmdet_deploy.tensorrt.gpu import GpuInfo
from mmdet_deploy.tensorrt.sidecar import read_sidecar

H200 = GpuInfo(index=0, name="NVIDIA H200", compute_capability=(9, 0))


# -- the plan (pure logic) -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("major", "requested", "onnx_kind", "calib", "typed", "flags", "pin", "calibrator"),
    [
        (10, "fp32", "fp32", False, False, (), False, False),
        (10, "fp16", "fp32", False, False, ("FP16", "OBEY_PRECISION_CONSTRAINTS"), True, False),
        (10, "fp16", "fp16", False, True, (), False, False),
        (10, "int8", "fp32", True, False, ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"), True, True),
        (10, "int8", "int8", False, False, ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"), True, False),
        (11, "fp32", "fp32", False, True, (), False, False),
        (11, "fp16", "fp16", False, True, (), False, False),
        (11, "int8", "int8", False, True, (), False, False),
        (12, "fp16", "fp16", False, True, (), False, False),
    ],
)
def test_plan_per_major(
    major: int, requested: str, onnx_kind: str, calib: bool, typed: bool, flags: tuple, pin: bool, calibrator: bool
) -> None:
    plan = compat.plan_precision(major, requested, onnx_kind, calib=calib)
    assert (plan.strongly_typed, plan.set_flags, plan.pin_fp32_layers, plan.calibrator) == (
        typed,
        flags,
        pin,
        calibrator,
    )
    assert plan.precision == requested


def test_plan_strict_fp32_clears_tf32() -> None:
    assert compat.plan_precision(10, "fp32", "fp32", strict_fp32=True).clear_flags == ("TF32",)
    assert compat.plan_precision(11, "fp16", "fp16", strict_fp32=False).clear_flags == ()


@pytest.mark.parametrize(
    ("major", "requested", "onnx_kind", "calib", "message"),
    [
        (11, "fp16", "fp32", False, "mmdet-export onnx --precision fp16"),
        (11, "int8", "fp32", False, "mmdet-export quantize"),
        (11, "int8", "fp16", True, "mmdet-export quantize"),
        (10, "int8", "fp32", False, "--calib DIR"),
        (10, "fp32", "fp16", False, "build with --fp16"),
        (10, "fp16", "int8", False, "--int8"),
        (10, "int8", "int8", True, "drop --calib"),
        (10, "fp16", "fp32", True, "--calib is only used with --int8"),
        (9, "fp32", "fp32", False, "TensorRT >= 10"),
    ],
)
def test_plan_refusals_say_what_to_do(major: int, requested: str, onnx_kind: str, calib: bool, message: str) -> None:
    with pytest.raises(UsageError) as info:
        compat.plan_precision(major, requested, onnx_kind, calib=calib)
    assert message in str(info.value)


# -- builds against the fake -----------------------------------------------------------------------
@pytest.fixture
def onnx_fp32(tmp_path: Path) -> Path:
    return make_contract_onnx(tmp_path / "model.onnx")


@pytest.fixture
def onnx_fp16(tmp_path: Path, onnx_fp32: Path) -> Path:
    from mmdet_deploy.export.precision import convert_fp16

    return convert_fp16(onnx_fp32, tmp_path / "model.fp16.onnx", use_modelopt=False)


def install_fake(monkeypatch: pytest.MonkeyPatch, version: str, gpu: GpuInfo = H200, **kwargs: object) -> object:
    trt = make_fake_tensorrt(version, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(builder_mod, "select_device", lambda index: gpu)
    return trt


def test_trt10_fp16_weak_typing_pins_risky_layers(monkeypatch, tmp_path, onnx_fp32) -> None:
    trt = install_fake(monkeypatch, "10.3.0")
    out = tmp_path / "m.engine"
    result = build_engine(onnx_fp32, out, BuildOptions(precision="fp16", opt_batch=2, max_batch=4, workspace_gb=0.5))
    desc = engine_description(out)
    assert desc["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS", "TF32"]
    assert desc["strongly_typed"] is False
    assert ("create_network", 0) in trt.calls
    # norm, reduce, softmax, pow and sqrt are pinned; the Adds, MatMul and Gather are not
    assert sorted(result.pinned_layers) == ["norm", "pool", "root", "softmax", "square"]
    pinned_calls = {c[1] for c in trt.calls if c[0] == "layer.precision"}
    assert pinned_calls == set(result.pinned_layers)
    assert ("config.set_memory_pool_limit", "WORKSPACE", 1 << 29) in trt.calls
    # one profile, batch axis only, every input, from the contract
    assert desc["inputs"]["original"] == [[1, 2, 3, 16, 16], [2, 2, 3, 16, 16], [4, 2, 3, 16, 16]]
    assert set(desc["inputs"]) == {"original", "recons"}


def test_trt10_fp16_onnx_builds_strongly_typed(monkeypatch, tmp_path, onnx_fp16) -> None:
    trt = install_fake(monkeypatch, "10.3.0")
    result = build_engine(onnx_fp16, tmp_path / "m.engine", BuildOptions(precision="fp16"))
    assert ("create_network", 2) in trt.calls  # 1 << STRONGLY_TYPED
    assert result.pinned_layers == ()
    assert not [c for c in trt.calls if c[0] == "config.set_flag"]
    assert result.info.strongly_typed and result.info.precision == "fp16"


def test_trt11_strongly_typed_without_removed_flags(monkeypatch, tmp_path, onnx_fp16) -> None:
    trt = install_fake(monkeypatch, "11.4.1")
    build_engine(onnx_fp16, tmp_path / "m.engine", BuildOptions(precision="fp16", strict_fp32=True))
    desc = engine_description(tmp_path / "m.engine")
    assert desc["strongly_typed"] and desc["flags"] == []  # TF32 cleared
    assert ("config.clear_flag", "TF32") in trt.calls
    assert not [c for c in trt.calls if c[0] in ("layer.precision", "layer.set_output_type")]


def test_trt11_refuses_fp16_from_fp32_onnx_before_building(monkeypatch, tmp_path, onnx_fp32) -> None:
    trt = install_fake(monkeypatch, "11.0.0")
    with pytest.raises(UsageError, match="--precision fp16"):
        build_engine(onnx_fp32, tmp_path / "m.engine", BuildOptions(precision="fp16"))
    assert ("Builder",) not in trt.calls
    assert not (tmp_path / "m.engine").exists()


def test_trt10_int8_uses_entropy_calibrator(monkeypatch, tmp_path, onnx_fp32) -> None:
    trt = install_fake(monkeypatch, "10.3.0")
    made = []

    class Core:
        closed = False

        def close(self) -> None:
            Core.closed = True

    class Calibrator:
        core = Core()

    calibrator = Calibrator()

    def fake_factory(trt_mod, calib_dir, cache_file, input_names, batch_size, *, contract):
        made.append((calib_dir, cache_file, tuple(input_names), batch_size, contract.config))
        return calibrator

    calib_mod = type(sys)("mmdet_deploy.calibration.trt_calibrator")
    calib_mod.make_entropy_calibrator = fake_factory
    monkeypatch.setitem(sys.modules, "mmdet_deploy.calibration.trt_calibrator", calib_mod)
    calib = tmp_path / "frames"
    calib.mkdir()
    out = tmp_path / "m.engine"
    build_engine(onnx_fp32, out, BuildOptions(precision="int8", calib_dir=calib, opt_batch=2, max_batch=2))
    assert made == [(calib, tmp_path / "m.engine.calib.cache", ("original", "recons"), 2, "tiny")]
    assert ("config.int8_calibrator", calibrator) in trt.calls
    assert Core.closed  # device buffers of the calibrator freed after the build
    assert any(c[0] == "config.set_calibration_profile" for c in trt.calls)
    assert engine_description(out)["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "TF32"]


def test_timing_cache_is_written_then_read(monkeypatch, tmp_path, onnx_fp32) -> None:
    trt = install_fake(monkeypatch, "10.3.0")
    cache = tmp_path / "caches" / "h200.cache"
    opts = BuildOptions(timing_cache=cache)
    build_engine(onnx_fp32, tmp_path / "a.engine", opts)
    assert cache.read_bytes().startswith(b"FAKECACHE-10.3.0:")
    trt.calls.clear()
    build_engine(onnx_fp32, tmp_path / "b.engine", opts)
    assert ("config.create_timing_cache", cache.read_bytes()) in trt.calls
    assert ("config.set_timing_cache", True) in trt.calls


def test_mismatched_timing_cache_is_replaced(monkeypatch, tmp_path, onnx_fp32) -> None:
    trt = install_fake(monkeypatch, "10.3.0")
    cache = tmp_path / "old.cache"
    cache.write_bytes(b"FAKECACHE-10.0.0:old")
    build_engine(onnx_fp32, tmp_path / "a.engine", BuildOptions(timing_cache=cache))
    assert [c for c in trt.calls if c[0] == "config.set_timing_cache"] == [
        ("config.set_timing_cache", False),
        ("config.set_timing_cache", True),
    ]
    assert cache.read_bytes().startswith(b"FAKECACHE-10.3.0:")


def test_sidecar_records_the_build(monkeypatch, tmp_path, onnx_fp32) -> None:
    install_fake(monkeypatch, "10.3.0")
    out = tmp_path / "m.engine"
    result = build_engine(onnx_fp32, out, BuildOptions(precision="fp16", opt_level=5, max_batch=8, opt_batch=4))
    side = read_sidecar(out)
    assert result.sidecar == tmp_path / "m.engine.json"
    assert (side.tensorrt_version, side.gpu_name, side.compute_capability) == ("10.3.0", "NVIDIA H200", "9.0")
    assert side.precision == "fp16" and dict(side.profile) == {"min": 1, "opt": 4, "max": 8}
    assert side.build_options["opt_level"] == 5 and side.build_options["onnx_precision"] == "fp32"
    contract = side.model_contract()
    assert contract.precision == "fp16" and contract.versions["tensorrt"] == "10.3.0" and contract.frames == 2
    import hashlib

    assert side.onnx_sha256 == hashlib.sha256(onnx_fp32.read_bytes()).hexdigest()
    assert side.engine_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.with_name("m.engine.json").read_text())["sidecar_version"] == 1


# -- errors -----------------------------------------------------------------------------------------
def test_parser_errors_are_all_listed(monkeypatch, tmp_path, onnx_fp32) -> None:
    errors = (("UNSUPPORTED_NODE", "No importer registered for op: Foo", 3), ("INVALID_NODE", "bad attr", 7))
    install_fake(monkeypatch, "10.3.0", parse_errors=errors)
    with pytest.raises(ExportError) as info:
        build_engine(onnx_fp32, tmp_path / "m.engine")
    text = str(info.value)
    assert "2 error(s)" in text and "No importer registered for op: Foo" in text and "[node 7]" in text


def test_build_failure_reports_tensorrt_errors(monkeypatch, tmp_path, onnx_fp32) -> None:
    install_fake(monkeypatch, "10.3.0", build_fails=True)
    with pytest.raises(ExportError, match="no implementation for layer X"):
        build_engine(onnx_fp32, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


def test_tensorrt_missing_names_the_extra(monkeypatch, tmp_path, onnx_fp32) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmdet-deploy\[gpu\]'"):
        build_engine(onnx_fp32, tmp_path / "m.engine")


def test_tensorrt_too_old(monkeypatch, tmp_path, onnx_fp32) -> None:
    install_fake(monkeypatch, "8.6.1")
    with pytest.raises(MissingDependencyError, match="needs TensorRT >= 10"):
        build_engine(onnx_fp32, tmp_path / "m.engine")


def test_no_fast_fp16_on_trt10_gpu(monkeypatch, tmp_path, onnx_fp32) -> None:
    install_fake(monkeypatch, "10.3.0", fast_fp16=False)
    with pytest.raises(ExportError, match="has no fast fp16"):
        build_engine(onnx_fp32, tmp_path / "m.engine", BuildOptions(precision="fp16"))


def test_no_fast_fp16_on_trt11_judged_by_compute_capability(monkeypatch, tmp_path, onnx_fp16) -> None:
    old = GpuInfo(index=0, name="Old GPU", compute_capability=(5, 0))
    install_fake(monkeypatch, "11.0.0", gpu=old)
    with pytest.raises(ExportError, match=r"Old GPU \(compute capability 5.0\) has no fast fp16"):
        build_engine(onnx_fp16, tmp_path / "m.engine", BuildOptions(precision="fp16"))


def test_no_gpu_is_a_clear_error(monkeypatch, tmp_path, onnx_fp32) -> None:
    """The real cuda-bindings path: on a machine without a usable GPU the build stops with one line."""
    from cuda.bindings import runtime as rt

    err, count = rt.cudaGetDeviceCount()
    if int(err) == 0 and count:
        pytest.skip("a GPU is usable here")
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0"))
    with pytest.raises(BackendError, match="no CUDA GPU is usable here"):
        build_engine(onnx_fp32, tmp_path / "m.engine")


def test_contract_and_input_mismatch(monkeypatch, tmp_path) -> None:
    import onnx

    from mmdet_deploy.contract import METADATA_KEY, ModelContract

    path = make_contract_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.metadata_props[0].value = ModelContract(config="tiny", frames=3, image_size=16).to_json()
    onnx.save(model, str(path))
    install_fake(monkeypatch, "10.3.0")
    with pytest.raises(ContractError, match="input original has shape"):
        build_engine(path, tmp_path / "m.engine")
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match=METADATA_KEY):
        build_engine(path, tmp_path / "m.engine")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BuildOptions(opt_batch=8, max_batch=4), "1 <= min <= opt <= max"),
        (BuildOptions(opt_level=7), "--opt-level must be 0..5"),
        (BuildOptions(workspace_gb=0), "--workspace"),
        (BuildOptions(precision="bf16"), "unknown precision"),
        (BuildOptions(precision="fp16", calib_dir=Path("x")), "--calib is only used with --int8"),
        (BuildOptions(precision="int8", calib_dir=Path("/nonexistent/frames")), "calibration directory not found"),
    ],
)
def test_option_errors(tmp_path, onnx_fp32, options: BuildOptions, message: str) -> None:
    with pytest.raises(UsageError) as info:
        build_engine(onnx_fp32, tmp_path / "m.engine", options)
    assert message in str(info.value)


def test_missing_onnx(tmp_path) -> None:
    with pytest.raises(UsageError, match="ONNX file not found"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine")


# -- the CLI (a thin layer over build_engine) -------------------------------------------------------
def test_cli_build_with_fake(monkeypatch, tmp_path, onnx_fp32) -> None:
    from typer.testing import CliRunner

    from mmdet_deploy.cli.export import app

    install_fake(monkeypatch, "10.3.0")
    out = tmp_path / "m.engine"
    args = ["build", "--onnx", str(onnx_fp32), "--fp16", "--max-batch", "2", "--opt-level", "4", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fp16, weakly typed, batch 1-2 opt 1) for NVIDIA H200 (sm 9.0), TensorRT 10.3.0" in result.output
    assert "5 norm/softmax/reduction layers pinned to fp32" in result.output
    assert read_sidecar(out).build_options["opt_level"] == 4


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--fp16", "--int8"], 2, "choose one of --fp16 and --int8"),
        (["--opt-level", "9"], 2, "--opt-level must be 0..5"),
        (["--calib", "frames"], 2, "--calib is only used with --int8"),
    ],
)
def test_cli_usage_errors(tmp_path, onnx_fp32, extra: list[str], code: int, message: str) -> None:
    from typer.testing import CliRunner

    from mmdet_deploy.cli.export import app

    result = CliRunner().invoke(app, ["build", "--onnx", str(onnx_fp32), "--out", str(tmp_path / "m.engine"), *extra])
    assert result.exit_code == code
    assert message in result.output


def test_cli_without_tensorrt_is_one_line(monkeypatch, tmp_path, onnx_fp32) -> None:
    from typer.testing import CliRunner

    from mmdet_deploy.cli.export import app

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(app, ["build", "--onnx", str(onnx_fp32), "--out", str(tmp_path / "m.engine")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'mmdet-deploy[gpu]'" in lines[0]
