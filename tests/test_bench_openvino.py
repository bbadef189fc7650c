"""mmdet-bench for issue 14 with fake backends (fast): interleaved rounds, the OpenVINO targets, the fastest
end-to-end row, and the PERF_COUNT summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.benchmarks.artefacts import ArtefactStore, BuildContext
from mmdet_deploy.benchmarks.capabilities import CAPABILITIES, Environment
from mmdet_deploy.benchmarks.interleave import round_policy
from mmdet_deploy.benchmarks.matrix import MatrixSettings, run_matrix
from mmdet_deploy.benchmarks.ov_profile import categorise_layer, format_profiles, is_int8_kernel, summarise_layers
from mmdet_deploy.benchmarks.targets import openvino_targets
from mmdet_deploy.benchmarks.timing import TimingPolicy
from test_bench_fakes import FAKE_BUILDERS, FakeBackend

OV_ENV = Environment(
    modules=frozenset({"torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf"}),
    ort_providers=("CPUExecutionProvider",),
)
ROWS = tuple(r for r in CAPABILITIES if r.device == "cpu" and r.name != "torch-compile-fp32")


class CountingBackend(FakeBackend):
    """A fake that appends its name to a shared journal on every call (to see the interleaving)."""

    journal: list[str] = []

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        CountingBackend.journal.append(f"{self.name_}:{inputs['original'].shape[0]}")
        return super()._infer(inputs)


def _factory(name: str, path: str, device: str, **options: object) -> CountingBackend:
    backend = CountingBackend(path, device=device, **options)
    backend.name_ = f"{name}:{options.get('precision', '')}:{Path(path).name}"
    return backend


@pytest.fixture
def store(tmp_path: Path) -> tuple[ArtefactStore, Path]:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"fake")
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.random.default_rng(0).normal(size=(3, 10, 3, 8, 8)).astype(np.float32))
    ctx = BuildContext(weights, "tiny", "simplified", tmp_path / "cache", lambda: np.zeros((1, 10, 3, 8, 8)))
    return ArtefactStore(ctx, FAKE_BUILDERS), inputs


def test_interleaved_rows_alternate_and_keep_every_figure(store: tuple[ArtefactStore, Path], tmp_path: Path) -> None:
    artefacts, inputs = store
    settings = MatrixSettings(device="cpu", batch_sizes=(1, 2), policy=TimingPolicy(1, 3, 0.0), config="tiny",
                              fidelity_clips=3, isolate=False, interleave=True, rounds=3, threads=2)
    CountingBackend.journal.clear()
    records = {r["key"]: r for r in run_matrix(ROWS, OV_ENV, artefacts, inputs, settings, tmp_path / "w", _factory)}
    for key in ("ov-fp32@cpu", "ov-bf16@cpu", "ov-int8@cpu", "ov-int8-nncf@cpu", "ort-fp32@cpu"):
        rec = records[key]
        assert rec["status"] == "ok", rec
        for bs in ("1", "2"):
            assert rec["batches"][bs]["reps"] == 3 and rec["batches"][bs]["rounds"] == 3
            assert rec["batches"][bs]["warmup"] == 1  # first round only
        assert rec["memory"]["rss_method"].startswith("RSS growth") and rec["memory"]["process_peak_rss_mb"] > 0
        assert rec["fidelity"]["clips"] == 3 and rec["fidelity"]["nonfinite"] == 0
    assert records["ov-int8-nncf@cpu"]["options"] == {"precision": "bf16"}
    assert records["ov-int8-nncf@cpu"]["fidelity"]["max_abs_dlogit"] == pytest.approx(0.02, rel=1e-3)
    # batch 1, round 1: every row once (warm-up) and once timed, one row after another, before round 2 starts
    first_round = CountingBackend.journal[: 2 * len(ROWS)]
    assert len({entry.rsplit(":", 1)[0] for entry in first_round}) == len(ROWS)
    assert all(entry.endswith(":1") for entry in first_round)


def test_reopen_keeps_one_backend_open_at_a_time(store: tuple[ArtefactStore, Path], tmp_path: Path) -> None:
    artefacts, inputs = store
    settings = MatrixSettings(device="cpu", batch_sizes=(1,), policy=TimingPolicy(1, 3, 0.0), config="tiny",
                              fidelity_clips=3, isolate=False, interleave=True, rounds=3, threads=2, reopen=True)
    opened: list[CountingBackend] = []

    def factory(name: str, path: str, device: str, **options: object) -> CountingBackend:
        assert all(not b._is_open for b in opened), "a second backend opened while another was open"
        backend = _factory(name, path, device, **options)
        opened.append(backend)
        return backend

    records = {r["key"]: r for r in run_matrix(ROWS, OV_ENV, artefacts, inputs, settings, tmp_path / "w", factory)}
    assert len(opened) == 3 * len(ROWS)  # one open per row and round
    for key in ("ov-fp32@cpu", "ov-int8-nncf@cpu", "torch-eager-fp32@cpu"):
        cell = records[key]["batches"]["1"]
        assert records[key]["status"] == "ok" and cell["reps"] == 3 and cell["warmup"] == 3  # one per turn
        assert records[key]["fidelity"]["clips"] == 3


def test_round_policy_splits_the_budget() -> None:
    policy = TimingPolicy(warmup=2, min_reps=5, time_budget_s=9.0, max_reps=100)
    first, later = round_policy(policy, 3, True), round_policy(policy, 3, False)
    assert (first.warmup, first.min_reps, first.time_budget_s) == (2, 2, 3.0)
    assert later.warmup == 0 and later.max_reps == 34


def _rec(key: str, precision: str, p50: float, fid: dict | None = None) -> dict:
    return {"key": key, "status": "ok", "precision": precision, "device": "cpu", "fidelity": fid,
            "batches": {"1": {"status": "ok", "p50_ms_per_clip": p50}}}


def _fid(dlogit: float, dprob: float, agreement: float = 1.0) -> dict:
    return {"clips": 5, "max_abs_dlogit": dlogit, "max_abs_dprob": dprob, "decision_agreement": agreement,
            "nonfinite": 0}


def test_openvino_targets() -> None:
    records = [
        _rec("ort-fp32@cpu", "fp32", 3000.0, _fid(1e-6, 1e-7)),
        _rec("ov-fp32@cpu", "fp32", 3000.0, _fid(2e-5, 1e-6)),
        _rec("ov-bf16@cpu", "bf16", 1500.0, _fid(0.06, 0.004)),  # fast enough, but outside the logit bound
        _rec("ort-int8@cpu", "int8", 1700.0, _fid(0.02, 0.003)),
        _rec("ov-int8@cpu", "int8", 900.0, _fid(0.03, 0.02)),  # fastest, dp too large
    ]
    e2e = {"speedup_vs_seed": 2.7, "overlap_efficiency": 0.93, "pipeline": {"row": "ov-int8@cpu"}}
    t = openvino_targets(records, e2e, "media")
    assert t[0]["status"] == "met" and t[0]["threshold"] == 1e-4 and t[0]["unit"] == "max"
    assert t[1]["status"] == "not met: outside the bf16 tolerances" and t[1]["value"] == pytest.approx(2.0)
    assert t[2]["value"] == pytest.approx(3000 / 900) and t[2]["status"] == "not met: fidelity outside the bound"
    assert "ov-int8@cpu" in t[2]["detail"] and "media clips" in t[2]["detail"]
    assert t[3]["status"] == "met" and "overlap 93.0 %" in t[3]["detail"]
    records[4]["fidelity"] = _fid(0.03, 0.004)
    assert openvino_targets(records, e2e, "media")[2]["status"] == "met"
    assert openvino_targets(records, e2e, "synthetic")[2]["status"].startswith("not met: fidelity measured on synth")
    assert openvino_targets(records, {**e2e, "overlap_efficiency": 0.8}, "media")[3]["status"] == (
        "not met: overlap efficiency below 90 %")
    assert openvino_targets(records[:1], None, "media")[0]["status"] == "n/a: ov-fp32@cpu not in this run (--rows)"


def test_end_to_end_runs_with_the_fastest_faithful_cpu_row() -> None:
    from mmdet_deploy.benchmarks.e2e import choose_row

    records = [
        _rec("torch-eager-fp32@cpu", "fp32", 5000.0, _fid(0.0, 0.0)),
        _rec("ort-fp32@cpu", "fp32", 3000.0, _fid(1e-6, 1e-7)),
        _rec("ov-int8@cpu", "int8", 900.0, _fid(0.03, 0.02, agreement=0.8)),  # fastest, changes decisions
        _rec("ov-bf16@cpu", "bf16", 1500.0, _fid(0.01, 0.004)),
    ]
    assert choose_row(records, "cpu")["key"] == "ov-bf16@cpu"
    assert choose_row(records, "cpu", "ov-int8")["key"] == "ov-int8@cpu"  # asked for by name


def test_perf_count_summary() -> None:
    assert is_int8_kernel("brgconv_avx512_amx_I8") and is_int8_kernel("jit_uni_u8") and is_int8_kernel("brgemm_i8")
    assert not is_int8_kernel("brgconv_avx512_f32") and not is_int8_kernel("jit_avx512_bf16")
    assert categorise_layer("Convolution", "brgconv_avx512_amx_I8") == "int8 GEMM/conv"
    assert categorise_layer("FullyConnected", "brgemm_avx512_amx_bf16") == "float GEMM/conv"
    assert categorise_layer("ScaledDotProductAttention", "ref_any_bf16") == "attention (MatMul, SDPA)"
    assert categorise_layer("Subgraph", "jit_avx512_f32") == "elementwise (fused Subgraph, Eltwise)"
    assert categorise_layer("Subgraph", "", "node_MatMul_12,node_Softmax_13,node_transpose_1") == (
        "attention (MatMul, SDPA)")
    assert categorise_layer("FullyConnectedQuantizedLegacy", "") == "int8 GEMM/conv"
    assert categorise_layer("FakeQuantize", "jit_avx512_f32") == "Q/DQ (FakeQuantize)"
    layers = [
        {"node": "c1", "type": "Convolution", "exec_type": "brgconv_avx512_amx_I8", "real_ms": 6.0},
        {"node": "c2", "type": "Convolution", "exec_type": "brgconv_avx512_f32", "real_ms": 2.0},
        {"node": "r1", "type": "Reorder", "exec_type": "jit_uni_I8", "real_ms": 1.0},
        {"node": "m1", "type": "MVN", "exec_type": "jit_avx512_f32", "real_ms": 1.0},
    ]
    summary = summarise_layers(layers)
    assert summary["total_ms"] == pytest.approx(10.0) and summary["int8_gemm_share"] == pytest.approx(0.75)
    assert summary["categories"]["layout, precision (Reorder, Transpose, Convert)"]["share"] == pytest.approx(0.1)
    assert summary["kernels"][0] == {"type": "Convolution", "exec_type": "brgconv_avx512_amx_I8", "ms": 6.0,
                                     "share": 0.6, "nodes": 1}
    table = format_profiles({"ov-int8@cpu": summary})
    assert table[0].startswith("| category | ov-int8@cpu") and table[-1] == "| int8 share of GEMM/conv time | 75 % |"


def test_openvino_tuning_runs_every_hint_and_batch(tmp_path: Path) -> None:
    """The tuning tool on the synthetic model: model level for both hints, pipeline level on the samples."""
    pytest.importorskip("openvino")
    from mmdet_deploy.benchmarks import ov_tuning
    from runtime_fixtures import build_synthetic_model

    model = build_synthetic_model(tmp_path / "m.onnx")
    samples = Path(__file__).resolve().parent.parent / "samples"
    out = tmp_path / "tuning.json"
    assert ov_tuning.main(["--model", str(model), "--precision", "fp32", "--batch-sizes", "1,2", "--min-reps", "1",
                           "--budget-s", "0", "--media", str(samples), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    cells = {(c["hint"], c["batch"]): c for c in result["model_level"]}
    assert set(cells) == {(h, b) for h in ("latency", "throughput") for b in (1, 2)}
    assert all(c["ms_per_clip"] > 0 and c["reps"] >= 2 for c in cells.values())  # one per round, 2 rounds
    assert cells[("latency", 1)]["requests"] == 1
    runs = {(r["hint"], r["batch"]): r for r in result["pipeline"]}
    assert set(runs) == set(cells) and all(r["files"] == 3 and r["files_per_s"] > 0 for r in runs.values())
