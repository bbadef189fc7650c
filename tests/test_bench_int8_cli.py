"""``mmdet-bench int8``: the fp32 vs INT8 benchmark under Typer (one-line errors, JSON out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdet_deploy.cli.bench import app
from mmdet_deploy.contract import ModelContract
from runtime_fixtures import build_synthetic_model
from test_calibration_support import synthetic_set

pytest.importorskip("onnxruntime")
runner = CliRunner()


def test_int8_subcommand_writes_the_benchmark_json(tmp_path: Path) -> None:
    contract = ModelContract(config="tiny")
    model = build_synthetic_model(tmp_path / "m.onnx", contract)
    calib = synthetic_set(tmp_path / "set", contract, sources=16, holdout=0.25)
    out = tmp_path / "bench" / "int8.json"
    # The same model on both sides: the wiring is what is tested, and the gate must then agree fully.
    result = runner.invoke(app, ["int8", "--fp32", str(model), "--int8", str(model), "--calib", str(calib.root),
                                 "--threads", "1", "--rounds", "1", "--min-reps", "2", "--budget-s", "0",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["fp32_latency_ms"]["reps"] == 2 and report["int8_latency_ms"]["reps"] == 2
    assert report["gate"]["agreement"] == 1.0 and report["gate"]["clips"] == 4
    assert report["fp32_size_bytes"] == report["int8_size_bytes"] == model.stat().st_size
    assert json.loads(result.output) == report


def test_int8_subcommand_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["int8", "--fp32", str(tmp_path / "a.onnx"), "--int8", str(tmp_path / "b.onnx"),
                                 "--calib", str(tmp_path / "none")])
    assert result.exit_code != 0 and result.output.startswith("error: ") and "Traceback" not in result.output
    result = runner.invoke(app, ["--quick", "int8", "--fp32", "a", "--int8", "b", "--calib", "c"])
    assert result.exit_code == 2 and "belong to the main benchmark" in result.output
