"""Report files: every column and figure written, targets evaluated, with fake backends (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdet_deploy.benchmarks.report import E2E_COLUMNS, MATRIX_COLUMNS, TARGET_COLUMNS, render_markdown
from mmdet_deploy.benchmarks.suite import BenchSettings, resolve, run_benchmark
from mmdet_deploy.benchmarks.targets import evaluate_targets, speedup
from mmdet_deploy.errors import UsageError
from test_bench_fakes import FAKE_BUILDERS, fake_factory

pytest.importorskip("torch")  # the peak matmul is measured with torch
pytest.importorskip("matplotlib")


def _header(columns: tuple[str, ...]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    weights = out / "w.pth"
    weights.write_bytes(b"fake")
    settings = BenchSettings(out=out / "report", weights=weights, config="tiny", batch_sizes=(1, 2), quick=True,
                             e2e=False, rows=("torch-eager-fp32", "ort-fp32", "ort-int8", "trt-fp16"))  # fmt: skip
    return run_benchmark(settings, factory=fake_factory(), builders=FAKE_BUILDERS)


def test_report_files_have_every_column(report: dict) -> None:
    paths = {k: Path(v) for k, v in report["paths"].items()}
    md = paths["md"].read_text()
    for columns in (MATRIX_COLUMNS, TARGET_COLUMNS):
        assert _header(columns) in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    for key in ("machine", "model", "settings", "method", "peaks", "artefacts", "rows", "e2e", "targets"):
        assert key in data
    for key in ("cpu", "logical_cores", "physical_cores", "ram_gib", "gpus", "versions", "load_average"):
        assert key in data["machine"]
    for lib in ("python", "torch", "onnxruntime", "tensorrt"):
        assert lib in data["machine"]["versions"]
    assert data["model"]["flops_per_clip"] == pytest.approx(7.0146e9, rel=1e-3)


def test_report_rows_carry_every_figure(report: dict) -> None:
    rows = {r["key"]: r for r in report["rows"]}
    assert set(rows) == {"torch-eager-fp32@cpu", "torch-eager-fp32@cuda", "ort-fp32@cpu", "ort-int8@cpu",
                         "trt-fp16@cuda"}  # fmt: skip
    assert rows["trt-fp16@cuda"]["status"].startswith("unavailable: ")
    ort = rows["ort-fp32@cpu"]
    for fig in ort["batches"].values():
        for key in ("p50_ms_per_clip", "p95_ms_per_clip", "clips_per_s", "tflops", "peak_share", "reps"):
            assert fig[key] is not None
        assert fig["tflops"] == pytest.approx(report["model"]["flops_per_clip"] * fig["clips_per_s"] / 1e12)
    for key in ("peak_rss_mb", "rss_delta_mb", "gpu_used_mb"):
        assert key in ort["memory"]
    for key in ("max_abs_dlogit", "max_abs_dprob", "decision_agreement"):
        assert key in ort["fidelity"]
    assert {"load_s", "build_s", "artefact_size_mb"} <= set(ort)
    md_lines = [ln for ln in Path(report["paths"]["md"]).read_text().splitlines() if ln.startswith("| ort-fp32@cpu")]
    assert len(md_lines) == 2  # one line per batch size
    assert all(ln.count("|") == len(MATRIX_COLUMNS) + 1 for ln in md_lines)


def test_targets_in_report(report: dict) -> None:
    targets = {t["target"]: t for t in report["targets"]}
    assert len(targets) == 9  # issue 5's five, issue 14's four (OpenVINO)
    ov = report["targets"][5:]
    assert [t["status"] for t in ov[:2]] == [
        "n/a: ov-fp32@cpu not in this run (--rows)", "n/a: ov-bf16@cpu not in this run (--rows)"]
    assert ov[2]["status"].startswith("not met") and "ort-int8@cpu" in ov[2]["detail"]  # beside ort-fp32
    ort = next(t for name, t in targets.items() if name.startswith("CPU: ONNX Runtime fp32"))
    assert ort["status"] in ("met", "not met") and ort["value"] > 0
    gpu = next(t for name, t in targets.items() if name.startswith("GPU:"))
    assert gpu["status"].startswith("n/a: ")
    e2e = [t for name, t in targets.items() if name.startswith("End-to-end")]
    assert all(t["status"] == "n/a: end-to-end not run (--no-e2e)" for t in e2e)


def _rec(key: str, p50: dict[str, float], status: str = "ok") -> dict:
    batches = {bs: {"status": "ok", "p50_ms_per_clip": v} for bs, v in p50.items()}
    return {"key": key, "status": status, "batches": batches}


def test_speedup_and_target_logic() -> None:
    records = [
        _rec("torch-eager-fp32@cpu", {"1": 100.0, "4": 90.0}),
        _rec("ort-fp32@cpu", {"1": 80.0, "4": 100.0}),
        _rec("ort-int8@cpu", {"4": 40.0}),
        _rec("torch-eager-fp32@cuda", {}, "unavailable: no CUDA device"),
    ]
    s = speedup(records, "ort-fp32@cpu", "torch-eager-fp32@cpu")
    assert s is not None and s["batch"] == 1 and s["ratio"] == pytest.approx(1.25) and s["by_batch"]["4"] == 0.9
    e2e = {"overlap_efficiency": 0.8, "speedup_vs_seed": 3.0}
    targets = evaluate_targets(records, e2e)
    assert [t["status"] for t in targets[:4]] == ["met", "met", "not met", "met"]  # INT8: 90 / 40 = 2.25x at batch 4
    assert targets[4]["status"] == "n/a: torch-fp16-graphs@cuda not in this run (--rows)"
    records.append(_rec("torch-fp16-graphs@cuda", {}, "unavailable: no CUDA device"))
    assert evaluate_targets(records, None)[4]["status"] == "n/a: torch-fp16-graphs@cuda unavailable: no CUDA device"


def test_markdown_end_to_end_table() -> None:
    side = {"files_per_s": 2.0, "clips_per_s": 2.0, "wall_s": 3.0, "media_files": 6, "counts": {"error": 0},
            "stage_s": {"decode": 1.0}, "row": "ort-fp32@cpu", "overlap_efficiency": 0.95}  # fmt: skip
    seed = {"files_per_s": 0.5, "files": 6, "errors": {}, "wall_s": 12.0, "stages_s": {"decode": 2.0}}
    report = {
        "machine": {"cpu": "x", "logical_cores": 2, "physical_cores": 2, "ram_gib": 1, "gpus": [], "versions": {}},
        "model": {"config": "tiny", "head": "simplified", "flops_per_clip": 7e9, "weights": "w", "demo_weights": True},
        "method": {"threads": 2, "notes": ["n"]}, "peaks": {}, "started": "now", "duration_s": 1.0, "targets": [],
        "rows": [], "e2e": {"pipeline": side, "seed": seed, "speedup_vs_seed": 4.0, "media": {}},
    }  # fmt: skip
    md = render_markdown(report)
    assert _header(E2E_COLUMNS) in md
    assert "| mmdet-run pipeline | ort-fp32@cpu | 6 | 0 | 2 |" in md
    assert "| seed-style |" in md and "Speed-up over seed-style: 4x" in md


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"config": "huge"}, "--config"), ({"head": "fusion"}, "--head"), ({"device": "tpu"}, "--device"),
     ({"batch_sizes": (0,)}, "--batch-sizes"), ({"min_reps": 0}, "invalid timing policy")],  # fmt: skip
)
def test_settings_validation(tmp_path: Path, changes: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        resolve(BenchSettings(out=tmp_path, **changes))


def test_defaults_depend_on_model_size(tmp_path: Path) -> None:
    base = resolve(BenchSettings(out=tmp_path, config="base"))
    assert base.batch_sizes == (1, 2) and base.min_reps == 3 and base.warmup == 1
    assert base.cache_dir == tmp_path / "artefacts"
    tiny = resolve(BenchSettings(out=tmp_path, config="tiny", quick=True))
    assert tiny.batch_sizes == (1, 4) and tiny.time_budget_s == pytest.approx(0.3)


def test_end_to_end_row_choice_and_headline() -> None:
    from mmdet_deploy.benchmarks.e2e import choose_row, compare

    records = [{"key": "torch-eager-fp32@cpu", "status": "ok"}, {"key": "ort-fp32@cpu", "status": "failed: x"},
               {"key": "ort-int8@cpu", "status": "ok"}]  # fmt: skip
    assert choose_row(records, "cpu")["key"] == "torch-eager-fp32@cpu"  # ort-fp32 preferred, but it failed
    assert choose_row(records, "cpu", "ort-int8")["key"] == "ort-int8@cpu"
    assert choose_row(records, "cpu", "ort-fp32") is None
    assert choose_row(records, "cuda") is None
    out = compare({"files_per_s": 3.0, "overlap_efficiency": 0.5, "overlap_detail": "d"}, {"files_per_s": 1.5})
    assert out["speedup_vs_seed"] == 2.0 and out["overlap_efficiency"] == 0.5
