"""The model matrix with fake backends: every row present, unavailable and failing rows with their reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.benchmarks.artefacts import ArtefactStore, BuildContext
from mmdet_deploy.benchmarks.capabilities import CAPABILITIES
from mmdet_deploy.benchmarks.matrix import MatrixSettings, fidelity, run_matrix
from mmdet_deploy.benchmarks.timing import TimingPolicy
from test_bench_fakes import CPU_ENV, FAKE_BUILDERS, failing_builder, fake_factory

SETTINGS = MatrixSettings(
    device="cpu", batch_sizes=(1, 2), policy=TimingPolicy(1, 3, 0.0), config="tiny", fidelity_clips=3, isolate=False
)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, BuildContext]:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not really a checkpoint")
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, rng.normal(size=(3, 10, 3, 8, 8)).astype(np.float32))
    ctx = BuildContext(weights, "tiny", "simplified", tmp_path / "cache", lambda: np.zeros((1, 10, 3, 8, 8)))
    return weights, inputs, ctx


def _by_key(records: list[dict]) -> dict[str, dict]:
    return {r["key"]: r for r in records}


def test_matrix_runs_available_rows_and_explains_the_rest(
    setup: tuple[Path, Path, BuildContext], tmp_path: Path
) -> None:
    _, inputs, ctx = setup
    store = ArtefactStore(ctx, FAKE_BUILDERS)
    records = run_matrix(CAPABILITIES, CPU_ENV, store, inputs, SETTINGS, tmp_path / "work", fake_factory())
    assert [r["key"] for r in records] == [r.key for r in CAPABILITIES]  # every row, in table order
    rows = _by_key(records)
    assert rows["trt-fp16@cuda"]["status"] == "unavailable: tensorrt not installed"
    assert rows["torch-fp16-graphs@cuda"]["status"] == "unavailable: no CUDA device"
    assert rows["torch-compile-fp32@cpu"]["status"].startswith("skipped: off by default")
    for key in ("torch-eager-fp32@cpu", "ort-fp32@cpu", "ort-int8@cpu"):
        rec = rows[key]
        assert rec["status"] == "ok", rec
        assert set(rec["batches"]) == {"1", "2"}
        for bs, fig in rec["batches"].items():
            assert fig["reps"] >= 3 and fig["warmup"] == 1
            assert fig["p95_ms_per_clip"] >= fig["p50_ms_per_clip"] > 0
            assert fig["clips_per_s"] == pytest.approx(int(bs) / (fig["p50_ms"] / 1e3))
        assert rec["memory"]["peak_rss_mb"] > 0 and rec["load_s"] >= 0
        assert rec["describe"]["fake"] is True
    assert rows["torch-eager-fp32@cpu"]["fidelity"]["max_abs_dlogit"] == 0.0
    assert rows["ort-fp32@cpu"]["fidelity"]["max_abs_dlogit"] == pytest.approx(1e-6, rel=0.1)
    assert rows["ort-int8@cpu"]["fidelity"]["max_abs_dlogit"] == pytest.approx(0.05, rel=1e-3)
    assert rows["ort-int8@cpu"]["fidelity"]["clips"] == 3
    assert rows["ort-int8@cpu"]["artefact_size_mb"] > 0 and rows["ort-int8@cpu"]["build_s"] >= 0
    assert rows["trt-fp16@cuda"]["fidelity"] is None and rows["trt-fp16@cuda"]["batches"] == {}


def test_failing_build_and_failing_backend_keep_their_rows(
    setup: tuple[Path, Path, BuildContext], tmp_path: Path
) -> None:
    _, inputs, ctx = setup
    store = ArtefactStore(ctx, {"onnx-fp32": FAKE_BUILDERS["onnx-fp32"], "onnx-int8": failing_builder})
    factory = fake_factory(onnxruntime={"explode": True})
    rows = _by_key(run_matrix(CAPABILITIES, CPU_ENV, store, inputs, SETTINGS, tmp_path / "work", factory))
    assert rows["ort-int8@cpu"]["status"] == "failed: building onnx-int8: the fake quantiser refused"
    assert rows["ort-fp32@cpu"]["status"] == "failed: RuntimeError: the fake accelerator caught fire"
    assert rows["torch-eager-fp32@cpu"]["status"] == "ok"


def test_batches_above_the_artefact_maximum_are_not_applicable(
    setup: tuple[Path, Path, BuildContext], tmp_path: Path
) -> None:
    _, inputs, ctx = setup
    store = ArtefactStore(ctx, FAKE_BUILDERS)
    factory = fake_factory(onnxruntime={"max_batch": 1})
    rows = _by_key(run_matrix(CAPABILITIES, CPU_ENV, store, inputs, SETTINGS, tmp_path / "work", factory))
    assert rows["ort-fp32@cpu"]["batches"]["2"]["status"] == "n/a: artefact max batch 1"
    assert rows["ort-fp32@cpu"]["batches"]["1"]["status"] == "ok"
    assert rows["ort-fp32@cpu"]["fidelity"]["clips"] == 3  # computed in chunks of the largest batch that ran


def test_a_failing_batch_size_keeps_the_others(setup: tuple[Path, Path, BuildContext], tmp_path: Path) -> None:
    _, inputs, ctx = setup
    store = ArtefactStore(ctx, FAKE_BUILDERS)
    factory = fake_factory(onnxruntime={"memory_batches": 1})
    rows = _by_key(run_matrix(CAPABILITIES, CPU_ENV, store, inputs, SETTINGS, tmp_path / "work", factory))
    ort = rows["ort-fp32@cpu"]
    assert ort["status"] == "ok"
    assert ort["batches"]["2"]["status"] == "failed: RuntimeError: fake out of memory"
    assert ort["batches"]["1"]["status"] == "ok" and ort["fidelity"]["clips"] == 3


def test_artefacts_are_cached_between_runs(setup: tuple[Path, Path, BuildContext]) -> None:
    _, _, ctx = setup
    first = ArtefactStore(ctx, FAKE_BUILDERS).get("onnx-int8")
    second = ArtefactStore(ctx, FAKE_BUILDERS).get("onnx-int8")
    assert first.path == second.path and first.path is not None and first.path.parent == ctx.cache_dir
    assert not first.cached and second.cached and second.build_s == first.build_s
    assert ArtefactStore(ctx, {}).get("engine-fp16").error is not None  # no builder: an error, not a crash


def test_cached_artefacts_are_rebuilt_when_the_building_code_changes(
    setup: tuple[Path, Path, BuildContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmdet_deploy.benchmarks import artefacts

    _, _, ctx = setup
    assert ArtefactStore(ctx, FAKE_BUILDERS).get("onnx-fp32").cached is False
    assert ArtefactStore(ctx, FAKE_BUILDERS).get("onnx-fp32").cached is True
    monkeypatch.setattr(artefacts, "builder_fingerprint", lambda: "another exporter")
    rebuilt = ArtefactStore(ctx, FAKE_BUILDERS).get("onnx-fp32")
    assert rebuilt.cached is False and rebuilt.path is not None
    assert ArtefactStore(ctx, FAKE_BUILDERS).get("onnx-fp32").cached is True  # the new build is reused


def test_code_fingerprint_changes_with_the_code_and_the_libraries(tmp_path: Path) -> None:
    from mmdet_deploy.benchmarks.artefacts import code_fingerprint

    (tmp_path / "export").mkdir()
    module = tmp_path / "export" / "onnx_export.py"
    module.write_text("GELU = 'torch order'\n")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "other.py").write_text("x = 1\n")
    first = code_fingerprint(tmp_path, ("export",), ("numpy",))
    assert first == code_fingerprint(tmp_path, ("export",), ("numpy",))
    (tmp_path / "runtime" / "other.py").write_text("x = 2\n")  # not a builder package: no effect
    assert code_fingerprint(tmp_path, ("export",), ("numpy",)) == first
    module.write_text("GELU = 'fusible order'\n")
    second = code_fingerprint(tmp_path, ("export",), ("numpy",))
    assert second != first
    assert code_fingerprint(tmp_path, ("export",), ("numpy", "onnxruntime")) != second  # a library joins
    assert code_fingerprint(tmp_path, ("export",), ("numpy", "no-such-dist")) == second  # absent: ignored


def test_fidelity_figures() -> None:
    ref = {"logits": [[0.0, 1.0], [0.0, -1.0], [0.0, 0.1], [0.0, 2.0]], "prob_fake": [0.73, 0.27, 0.52, 0.88]}
    out = {"logits": [[0.0, 1.1], [0.0, -1.0], [0.0, -0.1], [0.0, 2.0]], "prob_fake": [0.75, 0.27, 0.48, 0.88]}
    fid = fidelity(ref, out, threshold=0.5)
    assert fid["clips"] == 4
    assert fid["max_abs_dlogit"] == pytest.approx(0.2)
    assert fid["max_abs_dprob"] == pytest.approx(0.04)
    assert fid["decision_agreement"] == pytest.approx(0.75)
