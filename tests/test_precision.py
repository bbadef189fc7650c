"""Precision-ready (mixed fp16) ONNX: structure, metadata, parity on ONNX Runtime CPU, errors."""

from __future__ import annotations

import logging
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from contract_onnx import make_contract_onnx
from mmdet_deploy.contract import METADATA_KEY, ModelContract
from mmdet_deploy.errors import ExportError, MissingDependencyError, UsageError
from mmdet_deploy.export import fp16_converter
from mmdet_deploy.export.fp16_converter import DEFAULT_KEEP_FP32_OPS, convert_model_fp16
from mmdet_deploy.export.precision import convert_fp16, onnx_precision

FP16_LOGIT_ATOL = 5e-2
FP16_PROB_ATOL = 1e-2
CHANNELS = 8


def conv_norm_model(path: Path, seed: int = 0) -> Path:
    """Conv -> GroupNormalization -> Relu -> Reshape/Transpose -> LayerNormalization -> MatMul -> Softmax,
    with an initializer shared by an fp16 and an fp32 node, and a Shape output."""
    rng = np.random.default_rng(seed)

    def f32(name: str, value: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    c = CHANNELS
    inits = [
        f32("w", rng.normal(0, 0.2, (c, 3, 3, 3))), f32("b", rng.normal(0, 0.1, (c,))),
        f32("gs", 1 + 0.1 * rng.normal(size=c)), f32("gb", 0.1 * rng.normal(size=c)),
        numpy_helper.from_array(np.array([0, c, -1], dtype=np.int64), "shp"),
        f32("ls", 1 + 0.1 * rng.normal(size=c)), f32("lb", 0.1 * rng.normal(size=c)),
        f32("W", rng.normal(0, 0.5, (c, 2))), f32("Wb", rng.normal(0, 0.1, (2,))),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "ax"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("GroupNormalization", ["c", "gs", "gb"], ["g"], num_groups=2, epsilon=1e-5, name="gn"),
        helper.make_node("Relu", ["g"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shp"], ["rs"], name="flatten"),
        helper.make_node("Transpose", ["rs"], ["t"], perm=[0, 2, 1], name="tokens"),
        helper.make_node("LayerNormalization", ["t", "ls", "lb"], ["ln"], axis=-1, epsilon=1e-6, name="ln"),
        helper.make_node("MatMul", ["ln", "W"], ["mm"], name="head"),
        helper.make_node("Add", ["mm", "Wb"], ["a"], name="head_bias"),
        helper.make_node("Softmax", ["a"], ["sm"], axis=-1, name="softmax"),
        helper.make_node("ReduceMean", ["a", "ax"], ["logits"], keepdims=0, name="pool_logits"),
        helper.make_node("ReduceMean", ["sm", "ax"], ["probs"], keepdims=0, name="pool_probs"),
        helper.make_node("Pow", ["Wb", "Wb"], ["wbp"], name="pow_of_shared"),  # Wb: used by fp16 and fp32 nodes
        helper.make_node("Shape", ["a"], ["a_shape"], name="shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("wbp", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("a_shape", TensorProto.INT64, [3]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.metadata_props.add(key="author", value="test")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    return fp16_converter._float_types(onnx, model)


def test_conv_norm_model_parity_and_structure(tmp_path: Path) -> None:
    src = conv_norm_model(tmp_path / "m.onnx")
    dst = convert_fp16(src, tmp_path / "m16.onnx", use_modelopt=False)
    x = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    ref, got = run(src, {"x": x}), run(dst, {"x": x})
    assert np.abs(ref[0] - got[0]).max() <= FP16_LOGIT_ATOL
    assert np.abs(ref[1] - got[1]).max() <= FP16_PROB_ATOL
    assert np.array_equal(ref[3], got[3])
    assert all(a.dtype == b.dtype for a, b in zip(ref, got, strict=True))  # fp32 I/O kept

    model = onnx.load(str(dst))
    types_ = tensor_types(model)
    by_name = {n.name: n for n in model.graph.node}
    for node in model.graph.node:
        float_inputs = [types_.get(i) for i in node.input if types_.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if node.op_type in DEFAULT_KEEP_FP32_OPS:
            assert set(float_inputs) == {TensorProto.FLOAT}, node.name
    for name in ("conv", "head", "head_bias"):
        assert {types_[i] for i in by_name[name].input if i in types_} == {TensorProto.FLOAT16}, name
    # follow-input ops after an fp32 norm stay fp32: no cast pair around Relu/Reshape/Transpose
    assert {types_[by_name[n].input[0]] for n in ("relu", "flatten", "tokens")} == {TensorProto.FLOAT}
    # the shared weight keeps its fp32 original and gains an fp16 copy
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert inits["Wb"] == TensorProto.FLOAT and inits["Wb__fp16"] == TensorProto.FLOAT16
    assert inits["W"] == TensorProto.FLOAT16  # only used in fp16: converted in place
    assert [(p.key, p.value) for p in model.metadata_props] == [("author", "test")]
    assert onnx_precision(model) == "fp16"


def test_contract_model_parity_and_contract(tmp_path: Path) -> None:
    src = make_contract_onnx(tmp_path / "c.onnx")
    dst = convert_fp16(src, tmp_path / "out" / "c16.onnx", use_modelopt=False)
    rng = np.random.default_rng(2)
    feeds = {n: rng.normal(size=(2, 2, 3, 16, 16)).astype(np.float32) for n in ("original", "recons")}
    ref, got = run(src, feeds), run(dst, feeds)
    assert np.abs(ref[0] - got[0]).max() <= FP16_LOGIT_ATOL and np.abs(ref[1] - got[1]).max() <= FP16_PROB_ATOL
    model = onnx.load(str(dst))
    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}, "converted")
    assert contract.precision == "fp16" and contract.config == "tiny" and contract.exporter == "test"
    record = contract.extra["fp16_conversion"]
    assert (
        record["converter"] == "mmdet_deploy"
        and record["fp16_nodes"] > 0
        and "LayerNormalization" in record["fp32_op_types"]
    )


def test_keep_nodes_and_custom_op_list(tmp_path: Path) -> None:
    src = conv_norm_model(tmp_path / "m.onnx")
    model, stats = convert_model_fp16(onnx.load(str(src)), keep_fp32_ops={"Softmax"}, keep_fp32_nodes={"head"})
    types_ = tensor_types(model)
    nodes = {n.name: n for n in model.graph.node}
    assert types_[nodes["head"].input[0]] == TensorProto.FLOAT
    assert types_[nodes["ln"].input[0]] == TensorProto.FLOAT16  # LayerNormalization no longer kept
    assert stats.fp32_op_types == ["Softmax"]


def test_out_of_range_weights_are_clamped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_contract_onnx(tmp_path / "c.onnx")
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "W":
            init.CopyFrom(numpy_helper.from_array(np.array([[1e6, 0.5], [-2e5, 1.0]], dtype=np.float32), "W"))
    with caplog.at_level(logging.WARNING):
        converted, stats = convert_model_fp16(model)
    assert stats.clamped_values == 2 and "clamped" in caplog.text
    w = {i.name: numpy_helper.to_array(i) for i in converted.graph.initializer}["W"]
    assert w.dtype == np.float16 and np.isfinite(w).all() and w.max() == np.float16(65504)


def test_errors(tmp_path: Path) -> None:
    src = make_contract_onnx(tmp_path / "c.onnx")
    with pytest.raises(UsageError, match="ONNX file not found"):
        convert_fp16(tmp_path / "missing.onnx", tmp_path / "x.onnx")
    with pytest.raises(UsageError, match="must not overwrite"):
        convert_fp16(src, src)
    dst = convert_fp16(src, tmp_path / "c16.onnx", use_modelopt=False)
    with pytest.raises(ExportError, match="already fp16"):
        convert_fp16(dst, tmp_path / "again.onnx", use_modelopt=False)
    loop = onnx.load(str(src))
    loop.graph.node.append(helper.make_node("DequantizeLinear", ["a", "b"], ["c"], name="dq"))
    with pytest.raises(ExportError):
        convert_model_fp16(loop)


def test_modelopt_is_called_as_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording fake of ``modelopt.onnx.autocast``: checks the call we make, proves nothing about ModelOpt."""
    src = make_contract_onnx(tmp_path / "c.onnx")
    seen: dict[str, object] = {}

    def convert_to_mixed_precision(**kwargs: object) -> onnx.ModelProto:
        seen.update(kwargs)
        converted, _ = convert_model_fp16(onnx.load(str(kwargs["onnx_path"])))
        del converted.metadata_props[:]  # pretend the converter dropped the metadata
        return converted

    autocast = types.ModuleType("modelopt.onnx.autocast")
    autocast.convert_to_mixed_precision = convert_to_mixed_precision
    for name in ("modelopt", "modelopt.onnx"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "modelopt.onnx.autocast", autocast)
    dst = convert_fp16(src, tmp_path / "c16.onnx", use_modelopt=True)
    assert seen["keep_io_types"] is True and seen["low_precision_type"] == "fp16"
    assert "LayerNormalization" in seen["op_types_to_exclude"] and seen["onnx_path"] == str(src)
    meta = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    contract = ModelContract.from_json(meta[METADATA_KEY])
    assert contract.precision == "fp16" and contract.extra["fp16_conversion"]["converter"] == "modelopt-autocast"


def test_modelopt_required_but_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelopt", None)
    monkeypatch.setitem(sys.modules, "modelopt.onnx", None)
    monkeypatch.setitem(sys.modules, "modelopt.onnx.autocast", None)
    with pytest.raises(MissingDependencyError, match="nvidia-modelopt"):
        convert_fp16(make_contract_onnx(tmp_path / "c.onnx"), tmp_path / "c16.onnx", use_modelopt=True)


# -- the real tiny model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    from mmdet_deploy.export.onnx_export import export_onnx
    from mmdet_deploy.model import write_demo_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    weights = write_demo_checkpoint(root / "tiny.pth", config="tiny", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_onnx(weights, root / "tiny.onnx", config="tiny", parity_clips=1)
    return weights, result.path


def test_tiny_model_fp16_parity_vs_pytorch(tiny_export: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from mmdet_deploy.model import load_model

    weights, onnx_path = tiny_export
    dst = convert_fp16(onnx_path, tmp_path / "tiny.fp16.onnx", use_modelopt=False)
    rng = np.random.default_rng(7)
    feeds = {n: rng.normal(size=(2, 10, 3, 224, 224)).astype(np.float32) for n in ("original", "recons")}
    logits, prob = run(dst, feeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(weights, config="tiny")
    with torch.inference_mode():
        ref = model(torch.from_numpy(feeds["original"]), torch.from_numpy(feeds["recons"]))
        ref_prob = torch.softmax(ref, dim=1)[:, 1].numpy()
    assert np.abs(logits - ref.numpy()).max() <= FP16_LOGIT_ATOL
    assert np.abs(prob - ref_prob).max() <= FP16_PROB_ATOL
    model16 = onnx.load(str(dst))
    assert onnx_precision(model16) == "fp16"
    contract = ModelContract.from_metadata({p.key: p.value for p in model16.metadata_props}, "tiny fp16")
    assert contract.precision == "fp16" and contract.config == "tiny" and contract.demo_weights
