"""Exact graph rewrites: the GELU operand order that ONNX Runtime fuses."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from mmdet_deploy.export.graph_passes import gelu_for_fusion  # noqa: E402


def _torch_order_gelu(half_first: bool = True, divisor: float = math.sqrt(2.0)) -> object:
    """x -> Linear bias Add -> GELU as torch's exporter writes it -> y (plus a second use of the GELU input)."""
    scalars = [
        helper.make_tensor("sqrt2", TensorProto.FLOAT, [], [divisor]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("bias", TensorProto.FLOAT, [8], np.linspace(-1, 1, 8).tolist()),
    ]
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["half", "a"] if half_first else ["a", "half"], ["m"]),
        helper.make_node("Mul", ["h", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 8])],
        scalars,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: object, x: np.ndarray, tmp_path: Path, tag: str, fuse: bool = True) -> tuple[np.ndarray, Counter]:
    """Outputs, and the op types of the graph ONNX Runtime actually runs (after its fusions, when ``fuse``)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if fuse else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.optimized_model_filepath = str(tmp_path / f"{tag}.optimized.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    ops = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    return y, ops


def test_gelu_rewrite_is_bit_exact_and_lets_onnxruntime_fuse_it(tmp_path: Path) -> None:
    model = _torch_order_gelu()
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32) * 3
    plain_before, _ = _run(model, x, tmp_path, "plain-before", fuse=False)
    before, ops_before = _run(model, x, tmp_path, "before")
    assert ops_before["Erf"] == 1  # ORT does not fuse the exporter's order

    assert gelu_for_fusion(model) == 1
    onnx.checker.check_model(model)
    plain_after, _ = _run(model, x, tmp_path, "plain-after", fuse=False)
    np.testing.assert_array_equal(plain_after, plain_before)  # scaling by 0.5 is exact: not one bit differs
    after, ops_after = _run(model, x, tmp_path, "after")
    assert ops_after["Erf"] == 0 and ops_after["Mul"] == 0
    assert ops_after["BiasGelu"] + ops_after["Gelu"] == 1
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)  # ORT's fused kernel: its own erf
    assert gelu_for_fusion(model) == 0  # idempotent


@pytest.mark.parametrize("half_first", [True, False])
def test_gelu_rewrite_accepts_either_operand_order_of_the_half(half_first: bool) -> None:
    assert gelu_for_fusion(_torch_order_gelu(half_first=half_first)) == 1


def test_gelu_rewrite_leaves_other_erf_graphs_alone() -> None:
    model = _torch_order_gelu(divisor=2.0)  # not GELU: erf(x / 2)
    before = model.SerializeToString()
    assert gelu_for_fusion(model) == 0
    assert model.SerializeToString() == before


def test_exported_model_has_no_unfusable_gelu_left(tiny_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    assert Counter(n.op_type for n in model.graph.node)["Erf"] > 0
    assert gelu_for_fusion(model) == 0  # the exporter already applied the pass
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tiny_onnx), options, providers=["CPUExecutionProvider"])
    optimized = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert optimized["Erf"] == 0
    assert optimized["BiasGelu"] + optimized["Gelu"] > 0
