"""OpenVINO around the backend: mmdet-run, quantize --engine nncf, the gate and the parity check on OpenVINO,
and NaN failing every gate (tiny model and synthetic models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmdet_deploy.calibration.gate import compare, enforce
from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import ParityError, UsageError
from mmdet_deploy.parity import compare_logits
from mmdet_deploy.runtime.results import load_results
from runtime_fixtures import build_synthetic_model

pytest.importorskip("openvino")
runner = CliRunner()
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _invoke(app: object, *args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])  # type: ignore[arg-type]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# -- mmdet-run --------------------------------------------------------------------------------------------------
def test_mmdet_run_openvino_on_the_sample_folder_matches_onnxruntime(tmp_path: Path) -> None:
    from mmdet_deploy.cli.run import app

    model = build_synthetic_model(tmp_path / "m.onnx")
    code, output = _invoke(app, SAMPLES, "--model", model, "--out", tmp_path / "ort", "-q")
    assert code == 0, output
    code, output = _invoke(app, SAMPLES, "--model", model, "--out", tmp_path / "ov", "-q", "--backend", "openvino",
                           "--threads", "2", "--ov-cache", tmp_path / "cache")
    assert code == 0, output
    ort_rows, ov_rows = load_results(tmp_path / "ort" / "results.csv"), load_results(tmp_path / "ov" / "results.csv")
    assert [r.filename for r in ov_rows] == [r.filename for r in ort_rows] and len(ov_rows) >= 3
    for a, b in zip(ort_rows, ov_rows, strict=True):
        assert a.status == b.status and a.label == b.label
        if a.prob_fake is not None:
            assert abs(a.prob_fake - b.prob_fake) < 1e-5
    backend = json.loads((tmp_path / "ov" / "summary.json").read_text())["backend"]
    assert backend["backend"] == "openvino" and backend["inference_precision"] == "f32"
    assert backend["cache"] == "built (no entry)" and backend["threads"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "bf16"], "--precision only apply to --backend openvino"),
        (["--ov-cache", "c"], "--ov-cache only apply to --backend openvino"),
        (["--backend", "openvino", "--providers", "cpu"], "--providers only apply to --backend onnxruntime"),
        (["--backend", "openvino", "--precision", "fp16"], "openvino precision must be one of fp32, bf16"),
        (["--backend", "openvino", "--ov-hint", "fast"], "openvino hint must be one of"),
    ],
)
def test_mmdet_run_refuses_options_of_other_backends(tmp_path: Path, extra: list[str], message: str) -> None:
    from mmdet_deploy.cli.run import app

    model = build_synthetic_model(tmp_path / "m.onnx")
    code, output = _invoke(app, SAMPLES, "--model", model, "--out", tmp_path / "out", *extra)
    assert code == 2 and message in output, output
    assert not (tmp_path / "out" / "results.csv").exists()


def test_mmdet_run_without_openvino_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mmdet_deploy.cli.run import app

    model = build_synthetic_model(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, output = _invoke(app, SAMPLES, "--model", model, "--out", tmp_path / "out", "--backend", "openvino")
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "pip install 'mmdet-deploy[openvino]'" in lines[0], output


# -- NaN fails every gate -----------------------------------------------------------------------------------------
def test_nan_fails_the_parity_comparison() -> None:
    ref = np.array([[0.0, 1.0], [0.0, -1.0]])
    stats = compare_logits(ref, np.array([[0.0, math.nan], [0.0, -1.0]]))
    assert stats.nonfinite == 1 and not stats.within(float("inf"), float("inf"))
    assert compare_logits(ref, ref).within(0.0)


def test_nan_fails_the_int8_gate_even_where_the_decision_would_agree(tmp_path: Path) -> None:
    # p(fake) NaN compares False with the threshold, like the fp32 model's below-threshold clip: it would read
    # as an agreeing "real". A non-finite score agrees with nothing, and fails the gate by itself.
    ref = {"logits": np.array([[1.0, 0.0], [2.0, 0.0]]), "prob_fake": np.array([0.27, 0.12])}
    cand = {"logits": np.array([[math.nan, 0.0], [2.0, 0.0]]), "prob_fake": np.array([math.nan, 0.12])}
    report = compare(ref, cand, 0.5, 0.99, "logits")
    assert report.agreement == 0.5 and report.nonfinite == 1 and not report.passed
    with pytest.raises(ParityError, match="1 of 2 held-out clips gave NaN or infinite outputs"):
        enforce(report, tmp_path / "gate.json")
    assert compare(ref, ref, 0.5, 0.99, "logits").passed


# -- quantize --engine nncf, and the gate on OpenVINO --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_features(tiny_onnx_factory) -> Path:
    return tiny_onnx_factory("simplified", with_features=True).path


@pytest.fixture(scope="module")
def calib(tiny_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_calibration_support import synthetic_set

    contract = ModelContract.from_onnx(tiny_features)
    out = tmp_path_factory.mktemp("calib") / "set"
    synthetic_set(out, contract)
    return out


def test_quantize_engine_nncf_with_the_gate_on_openvino(tiny_features: Path, calib: Path, tmp_path: Path) -> None:
    import onnx

    from mmdet_deploy.calibration.nncf_quantize import sensitive_violations, telemetry_disabled
    from mmdet_deploy.cli.export import app

    out = tmp_path / "tiny.nncf.onnx"
    code, output = _invoke(app, "quantize", "--onnx", tiny_features, "--calib", calib, "--out", out,
                           "--engine", "nncf", "--threads", "2")
    report = json.loads(out.with_suffix(".gate.json").read_text())
    gate, quant = report["gate"], report["quantize"]
    assert code == (0 if gate["passed"] else 3), output
    assert gate["backend"] == "openvino" and gate["cosine_on"] == "features" and gate["nonfinite"] == 0
    assert gate["agreement"] == 1.0 and gate["max_abs_dprob"] < 0.02 and "(openvino)" in output
    assert quant["engine"] == "nncf" and quant["graph"]["quantised"]["MatMul"] > 0
    model = onnx.load(str(out))
    assert sensitive_violations(model) == []
    info = ModelContract.from_onnx(model, "nncf").extra["int8"]
    assert info["engine"] == "nncf" and info["preset"] == "mixed" and info["model_type"] == "transformer"
    assert telemetry_disabled()
    code, output = _invoke(app, "quantize", "--onnx", tiny_features, "--calib", calib, "--out", tmp_path / "x.onnx",
                           "--engine", "nncf", "--method", "entropy")
    assert code == 2 and "NNCF's own range estimators" in output


def test_ort_quantised_file_gated_on_openvino(tiny_features: Path, calib: Path, tmp_path: Path) -> None:
    from mmdet_deploy.calibration.gate import run_gate
    from mmdet_deploy.calibration.quantize import quantize_onnx

    int8 = quantize_onnx(tiny_features, calib, tmp_path / "tiny.int8.onnx", engine="ort").path
    on_ov = run_gate(tiny_features, int8, calib, threads=2, backend="openvino")
    on_ort = run_gate(tiny_features, int8, calib, threads=2)
    assert on_ov.backend == "openvino" and on_ov.passed and on_ov.clips == on_ort.clips == 4
    assert abs(on_ov.max_abs_dprob - on_ort.max_abs_dprob) < 5e-3  # two runtimes, one quantised model


def test_nncf_keeps_sensitive_ops_in_float(tiny_features: Path) -> None:
    import onnx

    from mmdet_deploy.calibration.nncf_quantize import ignored_names
    from mmdet_deploy.calibration.qdq import name_nodes

    model = onnx.load(str(tiny_features))
    name_nodes(model)
    by_name = {n.name: n for n in model.graph.node}
    default = set(ignored_names(model, {"matmul", "conv"}))
    types = {by_name[n].op_type for n in default}
    assert {"LayerNormalization", "InstanceNormalization", "Softmax", "Erf", "Add"} <= types
    assert not any(by_name[n].op_type == "Gemm" for n in default)
    with_attention = set(ignored_names(model, {"matmul", "conv", "attention"}))
    attention = default - with_attention
    assert attention and all(by_name[n].op_type == "MatMul" for n in attention)
    assert ignored_names(model, {"all"}) == []


# -- mmdet-export onnx --check-backend ------------------------------------------------------------------------------
def test_export_check_on_openvino(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from mmdet_deploy.cli.export import app

    out = tmp_path / "tiny.onnx"
    code, output = _invoke(app, "onnx", "--weights", tiny_checkpoint, "--out", out, "--config", "tiny",
                           "--check-backend", "onnxruntime,openvino,openvino-bf16")
    assert code == 0, output
    report = json.loads(out.with_name("tiny.parity.json").read_text())
    backends = report["backends"]
    assert list(backends) == ["onnxruntime", "openvino", "openvino-bf16"] and report["passed"]
    assert backends["openvino"]["tolerance"]["max_abs_logit"] == 1e-4
    assert backends["openvino-bf16"]["tolerance"] == {"max_abs_logit": 5e-2, "max_abs_prob_fake": 1e-2}
    assert backends["openvino"]["overall"]["max_abs"] <= 1e-4
    assert report["overall"] == backends["onnxruntime"]["overall"]
    assert output.count("PASSED") == 3
    code, output = _invoke(app, "onnx", "--weights", tiny_checkpoint, "--out", tmp_path / "x.onnx", "--config",
                           "tiny", "--check-backend", "tensorrt")
    assert code == 2 and "--check-backend" in output


def test_parse_check_backends() -> None:
    from mmdet_deploy.export.parity_check import parse_check_backends

    assert parse_check_backends("openvino, onnxruntime,openvino") == ["openvino", "onnxruntime"]
    with pytest.raises(UsageError):
        parse_check_backends("")
