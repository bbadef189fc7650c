"""ONNX Runtime kernel-time breakdown: categories, warm-up exclusion, and the Markdown table."""

from __future__ import annotations

import numpy as np
import pytest

from mmdet_deploy.benchmarks.profile import CATEGORIES, categorise, format_profiles, summarise_events


@pytest.mark.parametrize(
    ("op", "shapes", "category"),
    [
        ("MatMulIntegerToFloat", [[1, 1960, 768], [768, 3072]], "int8 GEMM/conv"),
        ("QLinearConv", [[10, 56, 56, 64]], "int8 GEMM/conv"),
        ("MatMul", [[1, 1960, 768], [768, 3072]], "float GEMM/conv"),  # a linear layer: 2-D weight
        ("FusedMatMul", [[1, 12, 1960, 64], [1, 12, 1960, 64]], "attention MatMul (float)"),
        ("MatMul", [[1, 12, 1960, 1960], [1, 12, 1960, 64]], "attention MatMul (float)"),
        ("MatMul", [[120, 197, 64], [120, 64, 197]], "attention MatMul (float)"),
        ("Conv", [[10, 64, 56, 56], [64, 64, 3, 3]], "float GEMM/conv"),
        ("Softmax", [[1, 12, 1960, 1960]], "softmax"),
        ("InstanceNormalization", [[10, 32, 25088]], "normalisation"),
        ("DequantizeLinear", [[10, 56, 56, 256]], "Q/DQ"),
        ("ReorderOutput", [[10, 64, 56, 56]], "layout (Transpose/Reorder)"),
        ("Erf", [[1, 1960, 3072]], "other"),
    ],
)
def test_categorise(op: str, shapes: list[list[int]], category: str) -> None:
    assert categorise(op, shapes) == category


def _event(cat: str, name: str, ts: int, dur: int, op: str = "", shapes: list[list[int]] | None = None) -> dict:
    args = {"op_name": op, "input_type_shape": [{"float": s} for s in shapes or []]} if op else {}
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_summary_leaves_out_warmup_runs_and_averages_per_run() -> None:
    events = [
        _event("Session", "model_run", 0, 100),  # warm-up: its kernels must not count
        _event("Node", "mm_kernel_time", 10, 90, "MatMul", [[1, 4, 8], [8, 8]]),
        _event("Session", "model_run", 200, 100),
        _event("Node", "mm_kernel_time", 210, 30, "MatMul", [[1, 4, 8], [8, 8]]),
        _event("Node", "q_kernel_time", 240, 10, "QuantizeLinear", [[1, 4, 8]]),
        _event("Node", "mm_fence_before", 205, 999, "MatMul"),  # not a kernel record
        _event("Session", "model_run", 400, 100),
        _event("Node", "mm_kernel_time", 410, 50, "MatMul", [[1, 4, 8], [8, 8]]),
        _event("Node", "q_kernel_time", 460, 10, "QuantizeLinear", [[1, 4, 8]]),
    ]
    summary = summarise_events(events, runs=2)
    assert summary["kernel_ms"] == pytest.approx((30 + 10 + 50 + 10) / 2 / 1000)
    assert summary["op_types"]["MatMul"]["ms"] == pytest.approx(0.040) and summary["op_types"]["MatMul"]["nodes"] == 1
    cats = summary["categories"]
    assert cats["float GEMM/conv"]["share"] == pytest.approx(0.8) and cats["Q/DQ"]["share"] == pytest.approx(0.2)
    assert set(cats) == set(CATEGORIES)
    with pytest.raises(ValueError, match="fewer than the 4"):
        summarise_events(events, runs=4)


def test_profile_table_has_one_row_per_category_and_a_total() -> None:
    summary = summarise_events(
        [_event("Session", "model_run", 0, 10), _event("Node", "s_kernel_time", 1, 2000, "Softmax", [[1, 2]])], runs=1
    )
    table = format_profiles({"fp32": summary, "int8": summary})
    assert table.count("\n") == len(CATEGORIES) + 2
    assert "| softmax | 2 (100.0 %) | 2 (100.0 %) |" in table and "| **kernel total** | 2 | 2 |" in table


def test_profile_onnx_on_a_real_session(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from mmdet_deploy.benchmarks.profile import profile_onnx

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    result = profile_onnx(path, {"x": np.ones((4, 8), np.float32)}, threads=1, runs=3, warmup=2)
    assert result["runs"] == 3 and result["op_types"]["Softmax"]["nodes"] == 1
    assert result["categories"]["softmax"]["ms"] > 0 and result["categories"]["float GEMM/conv"]["ms"] > 0
