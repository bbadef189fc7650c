"""FLOPs per clip: the analytic count against the model spec and against PyTorch's own counter."""

from __future__ import annotations

import pytest

from mmdet_deploy.benchmarks.flops import flops_breakdown, flops_per_clip


def test_base_matches_model_spec_figures() -> None:
    parts = flops_breakdown("base")
    assert parts["cnn_branch"] == pytest.approx(105e9, rel=0.01)  # model-spec section 1: 105 GFLOP per branch
    assert parts["blocks"] == pytest.approx(823e9, rel=0.005)  # 823 GFLOP in the 12 blocks
    assert flops_per_clip("base") == pytest.approx(1.05e12, rel=0.01)
    assert parts["total"] == 2 * parts["cnn_branch"] + parts["embed"] + parts["blocks"] + parts["head"]


def test_fusion_head_costs_more_than_simplified() -> None:
    assert flops_per_clip("base", "fusion") > flops_per_clip("base", "simplified") == flops_per_clip("base", "fc")


def test_analytic_count_equals_torch_flop_counter_on_tiny() -> None:
    pytest.importorskip("torch")
    from mmdet_deploy.benchmarks.flops import count_flops_torch
    from mmdet_deploy.model import build_model

    model = build_model("tiny", seed=0).prepare()
    assert count_flops_torch(model, "tiny") == flops_per_clip("tiny")
    assert count_flops_torch(model, "tiny", batch=2) == 2 * flops_per_clip("tiny")


def test_measured_peak_is_positive() -> None:
    pytest.importorskip("torch")
    from mmdet_deploy.benchmarks.flops import measure_peak_tflops
    from mmdet_deploy.benchmarks.timing import TimingPolicy

    peak = measure_peak_tflops("cpu", "float32", size=256, policy=TimingPolicy(1, 3, 0.0))
    assert peak["tflops"] > 0 and peak["size"] == 256 and peak["dtype"] == "float32"
    assert set(peak["by_method"]) == {"torch.mm", "onnxruntime MatMul"}
    assert peak["tflops"] == max(peak["by_method"].values())
