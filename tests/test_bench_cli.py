"""``mmdet-bench`` end to end on the tiny model (``--quick``, the CI configuration), and its usage errors."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdet_deploy.cli.bench import app, parse_batch_sizes
from mmdet_deploy.errors import UsageError

runner = CliRunner()


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def test_quick_tiny_run_writes_a_complete_report(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("av")
    pytest.importorskip("skimage")
    out = tmp_path / "bench"
    cpu0 = _cpu_seconds()
    # The OpenVINO rows have their own interleaved run (test_bench_openvino_tiny.py): this one keeps its CPU budget.
    result = runner.invoke(app, ["--out", str(out), "--config", "tiny", "--quick", "--batch-sizes", "1,2",
                                 "--rows", "torch-eager-fp32,ort-fp32,ort-int8,trt-fp16"])
    cpu = _cpu_seconds() - cpu0
    assert result.exit_code == 0, result.output
    # CPU seconds (this process and its workers), not wall time: shared CI machines vary, the work does not.
    # Under 120 CPU-seconds the run stays well under 2 minutes of wall time on a 2-core runner.
    assert cpu < 120, f"--quick on the tiny model used {cpu:.0f} CPU-seconds"
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "report.png").stat().st_size > 0
    assert not list(Path.cwd().glob("*.onnx")), "artefacts must never be written into the cwd"
    rows = {r["key"]: r for r in report["rows"]}
    for key in ("torch-eager-fp32@cpu", "ort-fp32@cpu", "ort-int8@cpu"):
        assert rows[key]["status"] == "ok", rows[key]
        assert set(rows[key]["batches"]) == {"1", "2"}
        assert Path(rows[key]["artefact_path"]).parent.parent == out  # built into OUT/artefacts
        assert rows[key]["memory"]["rss_method"] == "VmHWM of the worker process"  # one process per row
    assert rows["trt-fp16@cuda"]["status"].startswith("unavailable: ")
    # ONNX Runtime fp32 reproduces PyTorch fp32 on the same inputs (deployment-facts tolerance 1e-4)
    assert rows["ort-fp32@cpu"]["fidelity"]["max_abs_dlogit"] < 1e-4
    assert rows["ort-fp32@cpu"]["fidelity"]["decision_agreement"] == 1.0
    assert rows["ort-int8@cpu"]["fidelity"]["clips"] == 4
    e2e = report["e2e"]
    assert e2e["pipeline"]["counts"]["ok"] + e2e["pipeline"]["counts"]["no_face"] == e2e["media"]["files"] == 3
    assert e2e["pipeline"]["counts"]["skipped"] == 0 and e2e["seed"]["errors"] == {}
    assert any(v for k, v in e2e["seed"]["face_detections"].items() if k != "none")  # synthetic faces are found
    assert e2e["speedup_vs_seed"] == pytest.approx(e2e["pipeline"]["files_per_s"] / e2e["seed"]["files_per_s"])
    assert 0 < e2e["overlap_efficiency"]
    for stage in ("decode", "face_detection", "preprocess", "inference", "writing"):
        assert stage in e2e["pipeline"]["stage_s"]
    assert all(t["status"] in ("met", "not met") for t in report["targets"][:4])
    assert report["targets"][4]["status"].startswith("n/a: ")
    assert "| target | measured | threshold | status |" in result.output


def test_no_runnable_row_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "gpu"
    result = runner.invoke(app, ["--out", str(out), "--config", "tiny", "--device", "cuda", "--quick"])
    assert result.exit_code == 1, result.output
    assert "no row could run on --device cuda" in result.output
    report = json.loads((out / "report.json").read_text())  # the report still says why, row by row
    assert {r["status"] for r in report["rows"] if r["device"] == "cuda"} >= {"unavailable: no CUDA device"}
    assert report["e2e"]["status"].startswith("no row to run the pipeline on")


def test_list_rows_shows_every_row_with_its_status() -> None:
    result = runner.invoke(app, ["--list-rows"])
    assert result.exit_code == 0, result.output
    assert "trt-int8@cuda" in result.output and "ort-fp32@cpu" in result.output
    assert "skipped: off by default; enable with --compile" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "tiny"], "--out is required"),
        (["--out", "X", "--batch-sizes", "1,x"], "--batch-sizes"),
        (["--out", "X", "--config", "huge"], "--config"),
        (["--out", "X", "--rows", "ort-fp64"], "unknown benchmark rows"),
        (["--out", "X", "--weights", "/no/such/file.pth", "--config", "tiny"], "no such file"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / "o") if a == "X" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("1,4") == (1, 4)
    assert parse_batch_sizes(None) is None
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises(UsageError):
            parse_batch_sizes(bad)
