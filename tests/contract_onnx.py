"""A small valid ONNX with the real input/output names and an embedded contract (TensorRT and fp16 tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def make_contract_onnx(path: Path, *, frames: int = 2, image_size: int = 16, seed: int = 0) -> Path:
    """A small valid fp32 ONNX with the real input/output names and an embedded contract.

    original, recons (B, frames, 3, S, S) -> Add -> ReduceMean -> Pow/Sqrt -> LayerNormalization ->
    MatMul/Add -> ``logits`` (B, 2); Softmax -> Gather -> ``prob_fake`` (B,). Its layers cover every
    pinning rule (norm, reduce, softmax, pow, unary) and it runs on ONNX Runtime CPU.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mmdet_deploy.contract import METADATA_KEY, ModelContract

    rng = np.random.default_rng(seed)
    contract = ModelContract(config="tiny", frames=frames, image_size=image_size, exporter="test")

    def const(name: str, value: Any, dtype: Any = np.float32) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    inits = [
        const("axes", [2, 3, 4], np.int64), const("two", 2.0), const("one", 1.0),
        const("ln_scale", 1 + 0.1 * rng.normal(size=2)), const("ln_bias", 0.1 * rng.normal(size=2)),
        const("W", rng.normal(0, 0.5, (2, 2))), const("b", 0.1 * rng.normal(size=2)),
        const("fake_index", 1, np.int64),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Add", ["original", "recons"], ["s"], name="add_clips"),
        helper.make_node("ReduceMean", ["s", "axes"], ["m"], keepdims=0, name="pool"),
        helper.make_node("Pow", ["m", "two"], ["p"], name="square"),
        helper.make_node("Add", ["p", "one"], ["p1"], name="plus_one"),
        helper.make_node("Sqrt", ["p1"], ["r"], name="root"),
        helper.make_node("Add", ["m", "r"], ["q"], name="mix"),
        helper.make_node("LayerNormalization", ["q", "ln_scale", "ln_bias"], ["ln"], axis=-1, name="norm"),
        helper.make_node("MatMul", ["ln", "W"], ["mm"], name="head"),
        helper.make_node("Add", ["mm", "b"], ["logits"], name="head_bias"),
        helper.make_node("Softmax", ["logits"], ["sm"], axis=1, name="softmax"),
        helper.make_node("Gather", ["sm", "fake_index"], ["prob_fake"], axis=1, name="pick_fake"),
    ]
    clip = ["batch", frames, 3, image_size, image_size]
    graph = helper.make_graph(
        nodes,
        "contract_test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, clip) for n in ("original", "recons")],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("prob_fake", TensorProto.FLOAT, ["batch"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.add(key=METADATA_KEY, value=contract.to_json())
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
