"""``mmdet-bench`` with the OpenVINO rows on the tiny model, as the base report is made: interleaved in one
process, INT8 calibrated on (and fidelity measured on the held-out clips of) a set sampled from media,
PERF_COUNT profiles, end to end on the fastest faithful CPU row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdet_deploy.cli.bench import app

ROWS = "torch-eager-fp32,ort-fp32,ov-fp32,ov-bf16,ov-int8,ov-int8-nncf"


def test_openvino_rows_interleaved_with_media_calibration(tmp_path: Path) -> None:
    for module in ("torch", "onnxscript", "openvino", "nncf", "av", "skimage", "matplotlib"):
        pytest.importorskip(module)
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["--out", str(out), "--config", "tiny", "--quick", "--batch-sizes", "1",
                                      "--rows", ROWS, "--interleave", "--rounds", "2", "--profile", "1",
                                      "--calibration", "media", "--calibration-files", "10", "--threads", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {r["key"]: r for r in report["rows"]}
    assert report["calibration"]["counts"]["holdout"] >= 1 and report["settings"]["interleave"] is True
    clips = report["calibration"]["fidelity_clips"]
    for key in ("ov-fp32@cpu", "ov-bf16@cpu", "ov-int8@cpu", "ov-int8-nncf@cpu", "ort-fp32@cpu"):
        rec = rows[key]
        assert rec["status"] == "ok", rec
        assert rec["batches"]["1"]["rounds"] == 2 and rec["fidelity"]["clips"] == clips
        assert rec["fidelity"]["nonfinite"] == 0 and rec["fidelity"]["decision_agreement"] == 1.0
    assert rows["ov-fp32@cpu"]["fidelity"]["max_abs_dlogit"] <= 1e-4
    assert rows["ov-fp32@cpu"]["describe"]["inference_precision"] == "f32"
    assert rows["ov-bf16@cpu"]["fidelity"]["max_abs_dlogit"] <= 5e-2
    assert rows["ov-bf16@cpu"]["fidelity"]["max_abs_dprob"] <= 1e-2
    for key in ("ov-int8@cpu", "ov-int8-nncf@cpu"):
        assert rows[key]["describe"]["int8"] is True and rows[key]["fidelity"]["max_abs_dprob"] < 0.02
        assert rows[key]["profile"]["int8_gemm_share"] > 0  # int8 kernels really ran
    for key in ("ov-fp32@cpu", "ov-bf16@cpu"):
        assert rows[key]["profile"]["int8_gemm_share"] == 0 and rows[key]["profile"]["total_ms"] > 0
    nncf = rows["ov-int8-nncf@cpu"]["artefact_path"]
    assert nncf.endswith("-int8-nncf.onnx")
    targets = report["targets"][5:]
    assert len(targets) == 4 and not any(t["status"].startswith("n/a") for t in targets[:3]), targets
    assert "media clips" in targets[2]["detail"]
    e2e = report["e2e"]
    fastest = min((r for r in rows.values() if r["status"] == "ok"), key=lambda r: r["batches"]["1"]["p50_ms_per_clip"])
    assert e2e["pipeline"]["row"] == fastest["key"]  # every row here kept the reference's decisions
    md = (out / "report.md").read_text()
    assert "## Where the time goes on OpenVINO (PERF_COUNT)" in md and "| int8 share of GEMM/conv time |" in md
    assert "held-out clips of a calibration set sampled from generated media" in md
