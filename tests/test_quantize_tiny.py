"""INT8 of the real (tiny) exported model: calibrate-set -> quantize -> gate, a bad quantisation, the benchmark.

Demo weights: the figures here exercise the machinery only; they say nothing about real accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.calibration.gate import report_path, run_gate
from mmdet_deploy.calibration.quantize import quantize_onnx
from mmdet_deploy.calibration.scoring import store_threshold
from mmdet_deploy.contract import read_contract
from test_calibration_support import synthetic_set

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_features(tiny_onnx_factory) -> Path:
    """The tiny model exported with the pooled ``features`` output."""
    return tiny_onnx_factory("simplified", with_features=True).path


def _photos(folder: Path, count: int) -> Path:
    """Crops of scikit-image's sample photographs (real image statistics), 256x256 PNG."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = photos[i % len(photos)]
        y, x = rng.integers(0, img.shape[0] - 256), rng.integers(0, img.shape[1] - 256)
        Image.fromarray(np.ascontiguousarray(img[y : y + 256, x : x + 256])).save(folder / f"photo{i:02d}.png")
    return folder


def test_calibrate_quantize_and_gate_from_the_cli(tiny_features: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmdet_deploy.cli.export import app

    runner = CliRunner()
    data = _photos(tmp_path / "photos", 10)
    calib = tmp_path / "calibration" / "photos"
    result = runner.invoke(app, ["calibrate-set", "--data", str(data), "--model", str(tiny_features), "--out",
                                 str(calib), "--preset", "frames", "--clips", "10", "--min-clips", "8",
                                 "--holdout", "0.3"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "tiny.int8.onnx"
    result = runner.invoke(app, ["quantize", "--onnx", str(tiny_features), "--calib", str(calib), "--out", str(out)])
    report = json.loads(report_path(out).read_text())
    gate = report["gate"]
    assert result.exit_code == (0 if gate["passed"] else 3), result.output
    assert gate["clips"] == 3 and gate["cosine_on"] == "features"
    assert gate["flips"] == round((1 - gate["agreement"]) * 3) and gate["passed"] == (gate["agreement"] >= 0.99)
    assert gate["cosine_min"] > 0.99 and gate["max_abs_dprob"] < 0.02
    assert gate["mean_abs_dprob"] <= gate["max_abs_dprob"]
    assert "demo weights" in gate["note"]
    q = report["quantize"]
    assert q["graph"]["quantised"]["MatMul"] > 0 and q["graph"]["quantised"]["Conv"] > 0
    convs = [n for n in onnx.load(str(tiny_features)).graph.node if n.op_type == "Conv"]
    grouped = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    readers: dict[str, int] = {}
    for n in convs:
        if n not in grouped:
            readers[n.input[0]] = readers.get(n.input[0], 0) + 1
    depthwise, shared = len(grouped), sum(k - 1 for k in readers.values())
    # float: the 6 depthwise high-pass blurs, and all but one conv of each group reading the same tensor
    assert depthwise == 6 and shared > 0 and q["graph"]["float"]["Conv"] == depthwise + shared
    contract = read_contract(onnx.load(str(out)), "int8")
    assert contract.precision == "int8" and contract.extra["int8"]["calibration_clips"] == 7
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 10, 3, 224, 224), np.float32)
    logits, prob = sess.run(["logits", "prob_fake"], {"original": x, "recons": x})
    assert logits.shape == (2, 2) and prob.shape == (2,) and np.isfinite(logits).all()


def test_a_deliberately_bad_quantisation_fails_the_gate(tiny_features: Path, tmp_path: Path) -> None:
    """All ops quantised, with ranges calibrated on inputs 10^4 times too small: every activation saturates.

    The fp32 model's threshold is moved to the median of its held-out scores, so fp32 calls half the clips
    fake; an INT8 model that lost its inputs cannot reproduce that split and must fall below 99 %.
    """
    from typer.testing import CliRunner

    from mmdet_deploy.calibration.gate import output_names, run_split, session
    from mmdet_deploy.cli.export import app

    fp32 = shutil.copy(tiny_features, tmp_path / "fp32.onnx")
    contract = read_contract(onnx.load(str(fp32)), "fp32")
    calib = synthetic_set(tmp_path / "bad", contract, sources=20, holdout=0.2, calibration_scale=1e-4)
    sess = session(fp32)
    assert "features" in output_names(sess)
    held = run_split(sess, calib, "holdout", ["prob_fake"])["prob_fake"].ravel()
    assert len(held) == 4 and len(np.unique(held)) == 4
    store_threshold(fp32, float(np.median(held)), "test: median of the held-out scores")
    out = tmp_path / "bad.int8.onnx"
    result = CliRunner().invoke(app, ["quantize", "--onnx", str(fp32), "--calib", str(calib.root), "--out", str(out),
                                      "--ops", "all"])
    assert result.exit_code == 3, result.output
    assert "accuracy gate failed" in result.output
    assert out.is_file() and report_path(out).is_file()  # the files are kept
    gate = json.loads(report_path(out).read_text())["gate"]
    assert not gate["passed"] and gate["agreement"] < 0.99 and gate["positive_rate_fp32"] == 0.5


def test_gate_falls_back_to_logits_without_a_features_output(tiny_onnx: Path, tmp_path: Path) -> None:
    contract = read_contract(onnx.load(str(tiny_onnx)), "fp32")
    calib = synthetic_set(tmp_path / "set", contract, sources=16, holdout=0.25)
    result = quantize_onnx(tiny_onnx, calib.root, tmp_path / "m.int8.onnx")
    report = run_gate(tiny_onnx, result.path, calib)
    assert report.cosine_on == "logits" and report.clips == 4 and report.cosine_min > 0.99


def test_int8_benchmark_reports_both_models_on_the_same_inputs(tiny_features: Path, tmp_path: Path) -> None:
    from mmdet_deploy.benchmarks.int8 import int8_benchmark
    from mmdet_deploy.benchmarks.timing import TimingPolicy

    contract = read_contract(onnx.load(str(tiny_features)), "fp32")
    calib = synthetic_set(tmp_path / "set", contract, sources=16, holdout=0.25)
    int8 = quantize_onnx(tiny_features, calib.root, tmp_path / "m.int8.onnx").path
    policy = TimingPolicy(warmup=0, min_reps=2, time_budget_s=0.0)
    result = int8_benchmark(tiny_features, int8, calib.root, threads=1, policy=policy, rounds=1, profile_runs=1)
    assert result["fp32_latency_ms"]["reps"] == 2 and result["int8_latency_ms"]["reps"] == 2
    fp32_cats, int8_cats = (result["profile"][k]["categories"] for k in ("fp32", "int8"))
    assert fp32_cats["int8 GEMM/conv"]["ms"] == 0 and fp32_cats["Q/DQ"]["ms"] == 0
    assert int8_cats["int8 GEMM/conv"]["ms"] > 0 and int8_cats["attention MatMul (float)"]["ms"] > 0
    assert result["speedup"] == pytest.approx(result["fp32_latency_ms"]["p50_ms"] / result["int8_latency_ms"]["p50_ms"])
    assert result["int8_size_bytes"] == int8.stat().st_size and result["demo_weights"] is True
    assert result["gate"]["clips"] == 4 and result["gate"]["cosine_on"] == "features"
