"""Q/DQ placement on a hand-built ViT-like graph: what is quantised, what stays float, what the file carries."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.calibration.qdq import enforce_float_consumers, float_rule_violations, parse_ops, select_nodes
from mmdet_deploy.calibration.quantize import quantize_onnx
from mmdet_deploy.contract import ModelContract, read_contract
from mmdet_deploy.errors import ContractError, UsageError
from test_calibration_support import build_toy_vit, synthetic_set, toy_contract

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: Ops that must compute in float on float inputs (the issue: no Q/DQ around Add/LayerNorm/Softmax...).
FLOAT_OPS = {"Add", "Sub", "Mul", "LayerNormalization", "Softmax", "Gelu"}


def _graph(model) -> tuple[dict, dict]:
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict = defaultdict(list)
    for n in model.graph.node:
        for x in n.input:
            consumers[x].append(n)
    return producers, consumers


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("toy")
    model = build_toy_vit(root / "toy.onnx")
    synthetic_set(root / "calib", toy_contract(), sources=12, holdout=0.25, min_clips=8)
    return model, root / "calib"


@pytest.fixture(scope="module")
def safe(toy, tmp_path_factory: pytest.TempPathFactory):
    model, calib = toy
    out = tmp_path_factory.mktemp("q") / "toy.int8.onnx"
    return quantize_onnx(model, calib, out)


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"original": x, "recons": x}), strict=True))


def test_parse_ops() -> None:
    assert parse_ops("matmul,conv") == {"matmul", "conv"}
    assert parse_ops(" Conv ") == {"conv"}
    for bad in ("", "matmul,softmax", "all,conv"):
        with pytest.raises(UsageError):
            parse_ops(bad)


def test_selection_takes_linear_layers_and_convs_only(toy) -> None:
    model = onnx.load(str(toy[0]))
    chosen = set(select_nodes(model, {"matmul", "conv"}))
    by_name = {n.name: n for n in model.graph.node}
    assert {by_name[c].op_type for c in chosen} == {"MatMul", "Gemm", "Conv"}
    # the 8 weight MatMuls, the head Gemm and 4 convs; not q.k^T / attn.v, not the depthwise blurs, and of
    # the 3x3 and 1x1 convs reading the same tensor only the 3x3 one
    assert sum(by_name[c].op_type == "MatMul" for c in chosen) == 8
    assert {c for c in chosen if by_name[c].op_type == "Conv"} == {
        "Conv_original_c0", "Conv_recons_c0", "Conv_original_c1", "Conv_recons_c1"}
    assert "MatMul_b0_s0" not in chosen and "MatMul_b0_o" not in chosen
    with_attention = set(select_nodes(model, {"matmul", "attention"}))
    assert {"MatMul_b0_s0", "MatMul_b0_o"} <= with_attention


def test_exclusion_rules_visible_in_the_quantised_graph(safe) -> None:
    model = onnx.load(str(safe.path))
    producers, consumers = _graph(model)
    kinds = defaultdict(set)
    for n in model.graph.node:
        if n.op_type in FLOAT_OPS:
            for x in n.input:
                if x in producers:
                    kinds[n.op_type].add(producers[x].op_type)
            # nor is the output of a residual/bias Add or of Softmax re-quantised (they feed float ops, or the
            # attention MatMul, which stays float). LayerNorm and GELU outputs *are* quantised: they are the
            # inputs of the linear layers that follow.
            if n.op_type in {"Add", "Softmax"}:
                assert not any(c.op_type == "QuantizeLinear" for c in consumers[n.output[0]]), n.name
    for op, sources in kinds.items():
        assert "DequantizeLinear" not in sources, f"{op} reads a dequantised tensor"
    # every dequantised activation feeds a quantised MatMul/Gemm/Conv, or a GroupNorm after a quantised Conv
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in producers:
            readers = {c.op_type for c in consumers[n.output[0]]}
            assert readers <= {"MatMul", "Gemm", "Conv", "GroupNormalization"}, readers
    assert not any(producers[o.name].op_type == "DequantizeLinear" for o in model.graph.output)
    quantised = {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
                 and any(x in producers and producers[x].op_type == "DequantizeLinear" for x in n.input)}
    assert float_rule_violations(model, quantised) == []
    assert safe.graph["quantised"] == {"Conv": 4, "Gemm": 1, "MatMul": 8}
    # float: the blurs and the 1x1 downsamples; q.k^T and attn.v of both blocks
    assert safe.graph["float"] == {"Conv": 4, "Gemm": 0, "MatMul": 4}


def test_weights_int8_per_channel_symmetric_and_activations_int8(safe) -> None:
    from onnx import numpy_helper

    model = onnx.load(str(safe.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers, _ = _graph(model)
    checked = 0
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.input[1] not in producers:
            continue
        dq = producers[n.input[1]]
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        w, scale, zp = inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]]
        assert w.dtype == np.int8 and zp.dtype == np.int8 and not zp.any()
        assert scale.shape == (w.shape[1],)  # one scale per output channel
        act = producers[n.input[0]]
        assert act.op_type == "DequantizeLinear" and inits[act.input[2]].dtype == np.int8
        assert not inits[act.input[2]].any()  # symmetric activations: zero point 0 (what TensorRT needs)
        checked += 1
    assert checked == 8


def test_contract_is_kept_with_int8_precision_and_the_model_runs(toy, safe) -> None:
    contract = read_contract(onnx.load(str(safe.path)), "int8")
    original = read_contract(onnx.load(str(toy[0])), "fp32")
    assert contract.precision == "int8" and original.precision == "fp32"
    assert contract.replace(precision="fp32", extra=original.extra) == original
    record = contract.extra["int8"]
    assert record["method"] == "minmax" and record["ops"] == "conv,matmul" and record["engine"] == "ort"
    assert record["calibration_clips"] == 9 and len(record["calibration_fingerprint"]) == 64
    x = np.random.default_rng(5).standard_normal((2, 2, 3, 16, 16)).astype(np.float32)
    ref, got = _run(toy[0], x), _run(safe.path, x)
    assert set(got) == {"logits", "prob_fake", "features"}
    f, g = ref["features"].ravel(), got["features"].ravel()
    assert f @ g / np.linalg.norm(f) / np.linalg.norm(g) > 0.99
    assert np.abs(ref["prob_fake"] - got["prob_fake"]).max() < 0.05


def test_quantising_all_ops_puts_qdq_around_float_ops(toy, tmp_path: Path) -> None:
    """The check above can fail: with --ops all, Add/LayerNorm/Softmax read dequantised tensors."""
    result = quantize_onnx(toy[0], toy[1], tmp_path / "all.onnx", ops="all")
    model = onnx.load(str(result.path))
    producers, _ = _graph(model)
    around = {n.op_type for n in model.graph.node if n.op_type in FLOAT_OPS
              and any(x in producers and producers[x].op_type == "DequantizeLinear" for x in n.input)}
    assert {"Add", "LayerNormalization", "Softmax"} <= around
    assert result.nodes_selected == -1


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods(toy, tmp_path: Path, method: str) -> None:
    result = quantize_onnx(toy[0], toy[1], tmp_path / f"{method}.onnx", method=method)
    assert read_contract(onnx.load(str(result.path)), method).extra["int8"]["method"] == method
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 16, 16)).astype(np.float32)
    assert np.isfinite(_run(result.path, x)["logits"]).all()


def test_repair_of_a_quantiser_that_ignores_the_rule(toy, tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from mmdet_deploy.calibration.dataset import CalibrationSet
    from mmdet_deploy.calibration.quantize import CalibrationReader

    plain = tmp_path / "plain.onnx"  # ORT's defaults: Conv/MatMul outputs quantised, DQs shared with Adds
    quantize_static(str(toy[0]), str(plain), CalibrationReader(CalibrationSet.open(toy[1])),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(str(plain))
    chosen = select_nodes(model, {"matmul", "conv", "attention"})
    assert float_rule_violations(model, chosen)
    assert enforce_float_consumers(model, chosen) > 0
    assert float_rule_violations(model, chosen) == []
    onnx.checker.check_model(model)
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 16, 16)).astype(np.float32)
    out = _run(fixed, x)
    assert out["features"].shape == (1, 32) and np.isfinite(out["logits"]).all()


def test_refusals(toy, safe, tmp_path: Path) -> None:
    model, calib = toy
    with pytest.raises(UsageError, match="must differ"):
        quantize_onnx(model, calib, model)
    with pytest.raises(UsageError, match="precision is int8"):
        quantize_onnx(safe.path, calib, tmp_path / "again.onnx")
    with pytest.raises(UsageError, match="unknown calibration method"):
        quantize_onnx(model, calib, tmp_path / "x.onnx", method="mse")
    with pytest.raises(UsageError, match="ModelOpt has no percentile"):
        quantize_onnx(model, calib, tmp_path / "x.onnx", method="percentile", engine="modelopt")
    other = synthetic_set(tmp_path / "big", ModelContract(config="tiny", frames=2, image_size=32), sources=8,
                          min_clips=8)
    with pytest.raises(ContractError, match="image_size"):
        quantize_onnx(model, other.root, tmp_path / "x.onnx")
    bare = onnx.load(str(model))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ContractError, match="no 'mmdet_deploy.contract'"):
        quantize_onnx(tmp_path / "bare.onnx", calib, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_memory_bounded_calibration_wraps_and_restores_ort() -> None:
    from onnxruntime.quantization import calibrate

    from mmdet_deploy.calibration.quantize import memory_bounded_calibration

    original = calibrate.CalibraterBase.create_inference_session
    with memory_bounded_calibration():
        assert calibrate.CalibraterBase.create_inference_session is not original
    assert calibrate.CalibraterBase.create_inference_session is original
