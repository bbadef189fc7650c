"""The capability table is data: every row well-formed, availability decided with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdet_deploy.benchmarks.capabilities import (
    ARTEFACT_KINDS,
    CAPABILITIES,
    REFERENCE,
    Capability,
    Environment,
    availability,
    select_rows,
)
from mmdet_deploy.contract import PRECISIONS
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime.backends.base import BACKENDS

EVERYTHING = Environment(
    modules=frozenset({"torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "triton", "openvino", "nncf"}),
    cuda_devices=1,
    ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    cxx=True,
    flags=frozenset({"compile"}),
)
CPU_ONLY = Environment(
    modules=frozenset({"torch", "onnx", "onnxscript", "onnxruntime"}),
    ort_providers=("CPUExecutionProvider",),
    cxx=True,
)


def _row(key: str) -> Capability:
    return next(r for r in CAPABILITIES if r.key == key)


def test_rows_are_well_formed() -> None:
    keys = [r.key for r in CAPABILITIES]
    assert len(keys) == len(set(keys))
    for row in CAPABILITIES:
        assert row.backend in BACKENDS
        assert row.artefact in ARTEFACT_KINDS
        assert row.device in ("cpu", "cuda")
        assert row.precision in (*PRECISIONS, "bf16")
    for key in REFERENCE.values():
        assert _row(key).backend == "torch" and _row(key).precision == "fp32"


def test_the_issue_rows_exist() -> None:
    keys = {r.key for r in CAPABILITIES}
    for key in ("torch-eager-fp32@cpu", "torch-eager-fp32@cuda", "torch-fp16-graphs@cuda", "torch-bf16-graphs@cuda",
                "torch-compile-fp32@cpu", "ort-fp32@cpu", "ort-int8@cpu", "ort-cuda-fp32@cuda", "ort-trt-fp16@cuda",
                "trt-fp32@cuda", "trt-fp16@cuda", "trt-int8@cuda", "ov-fp32@cpu", "ov-bf16@cpu", "ov-int8@cpu",
                "ov-int8-nncf@cpu"):  # fmt: skip
        assert key in keys


def test_everything_available_with_everything_installed() -> None:
    for row in CAPABILITIES:
        assert availability(row, EVERYTHING, row.device).status == "available", row.key


def test_unavailable_rows_say_why() -> None:
    assert availability(_row("trt-fp16@cuda"), CPU_ONLY, "cuda").status == "unavailable: tensorrt not installed"
    assert availability(_row("torch-fp16-graphs@cuda"), CPU_ONLY, "cuda").status == "unavailable: no CUDA device"
    no_provider = Environment(EVERYTHING.modules, 1, ("CPUExecutionProvider",), True)
    status = availability(_row("ort-cuda-fp32@cuda"), no_provider, "cuda").status
    assert status.startswith("unavailable: onnxruntime has no CUDAExecutionProvider")
    no_ort = Environment(frozenset({"torch", "onnx", "onnxscript"}))
    assert availability(_row("ort-fp32@cpu"), no_ort, "cpu").status == "unavailable: onnxruntime not installed"
    # the artefact's own needs count: no exporter, no ONNX rows
    no_export = Environment(frozenset({"torch", "onnxruntime"}))
    assert availability(_row("ort-int8@cpu"), no_export, "cpu").status == "unavailable: onnx not installed"
    assert availability(_row("ov-fp32@cpu"), CPU_ONLY, "cpu").status == "unavailable: openvino not installed"
    with_ov = Environment(CPU_ONLY.modules | {"openvino"}, 0, CPU_ONLY.ort_providers, True)
    assert availability(_row("ov-int8@cpu"), with_ov, "cpu").runnable  # the ORT quantiser's file
    assert availability(_row("ov-int8-nncf@cpu"), with_ov, "cpu").status == "unavailable: nncf not installed"


def test_skips_other_device_and_flags() -> None:
    assert availability(_row("ort-fp32@cpu"), EVERYTHING, "cuda").status == "skipped: --device cuda"
    # a reason to be unavailable wins over the device skip: the report says why, not only "other device"
    assert availability(_row("trt-fp32@cuda"), CPU_ONLY, "cpu").status == "unavailable: tensorrt not installed"
    no_flag = Environment(CPU_ONLY.modules, 0, CPU_ONLY.ort_providers, True)
    status = availability(_row("torch-compile-fp32@cpu"), no_flag, "cpu")
    assert not status.runnable and status.status.startswith("skipped: off by default; enable with --compile")
    no_cxx = Environment(CPU_ONLY.modules, 0, CPU_ONLY.ort_providers, False, frozenset({"compile"}))
    assert availability(_row("torch-compile-fp32@cpu"), no_cxx, "cpu").status.startswith("unavailable: no C++")


def test_select_rows() -> None:
    assert select_rows(None) == CAPABILITIES
    chosen = select_rows(["ort-fp32", "trt-int8@cuda"])
    assert [r.key for r in chosen] == ["ort-fp32@cpu", "trt-int8@cuda"]
    assert [r.key for r in select_rows(["torch-eager-fp32"])] == ["torch-eager-fp32@cpu", "torch-eager-fp32@cuda"]
    with pytest.raises(UsageError, match="unknown benchmark rows"):
        select_rows(["ort-fp64"])


@pytest.mark.parametrize("row", CAPABILITIES, ids=lambda r: r.key)
def test_every_row_builds_its_backend_with_the_options_it_passes(row: Capability, tmp_path: Path) -> None:
    """Option names must match what each backend accepts (construction only: nothing is opened or imported)."""
    from mmdet_deploy.benchmarks.matrix import MatrixSettings, backend_options
    from mmdet_deploy.runtime.backends import create_backend

    options = backend_options(row, MatrixSettings(device=row.device, config="tiny", threads=2))
    backend = create_backend(row.backend, tmp_path / "artefact", device=row.device, **options)
    assert backend.name == row.backend and backend.device == row.device
