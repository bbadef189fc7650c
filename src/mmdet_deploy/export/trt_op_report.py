"""TensorRT compatibility report of an ONNX graph: operators, training-mode ops, dynamic dimensions.

The operator table is transcribed from the ONNX-TensorRT parser's support matrix for TensorRT 10
(onnx/onnx-tensorrt, ``docs/operators.md`` on the ``release/10.x`` branches: "TensorRT 10.0 supports
operators in the inclusive range of opset 9 to opset 20"). It lists operators of the default ONNX domain
the parser imports; anything else (other domains, ops marked N there) is flagged. It is a static check:
it cannot prove that a build succeeds, only catch what certainly will not parse.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

#: Source of :data:`TRT10_SUPPORTED_OPS`.
TABLE_SOURCE = "onnx/onnx-tensorrt docs/operators.md (release/10.x), TensorRT 10.0 support matrix, opsets 9-20"

TRT10_SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand
    EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
    Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish
    Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
    RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
    Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze STFT
    Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)

#: Ops that only make sense while training (or that the exporter emits for training-mode normalisation).
TRAINING_OPS = frozenset({"Dropout", "BatchNormalizationTraining", "Gradient", "Momentum", "Adagrad", "Adam"})

#: Arithmetic that, when fed by ``Shape``, means the graph computes shapes at run time (e.g. SAME padding).
SHAPE_ARITHMETIC_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Ceil", "Floor", "Clip", "Max", "Min", "Mod", "Cast", "Range", "Equal", "Where"}
)


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?"))
    return dims


def shape_arithmetic_nodes(model: Any) -> list[str]:
    """Nodes doing arithmetic on values derived from ``Shape`` (batch slicing/concat is allowed)."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [o for n in model.graph.node if n.op_type == "Shape" for o in n.output]
    seen: set[str] = set()
    found: list[str] = []
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            key = node.name or ",".join(node.output)
            if key in seen:
                continue
            seen.add(key)
            if node.op_type in SHAPE_ARITHMETIC_OPS:
                found.append(f"{node.op_type}:{node.name}")
            if node.op_type not in ("Reshape", "Expand", "ConstantOfShape", "Tile"):
                frontier.extend(node.output)
    return found


def trt_compatibility(model: Any, batch_dim: int = 0) -> dict[str, Any]:
    """Check an ``onnx.ModelProto`` against the TensorRT 10 table; returns a JSON-ready report."""
    ops = Counter((n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}") for n in model.graph.node)
    unsupported = sorted(op for op in ops if op not in TRT10_SUPPORTED_OPS)
    training = sorted(op for op in ops if op in TRAINING_OPS)
    training += [
        f"BatchNormalization:{n.name} (training_mode=1)"
        for n in model.graph.node
        if n.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i == 1 for a in n.attribute)
    ]
    dynamic: list[str] = []
    for vi in list(model.graph.input) + list(model.graph.output):
        for axis, d in enumerate(_dims(vi)):
            if axis != batch_dim and not isinstance(d, int):
                dynamic.append(f"{vi.name}[{axis}]={d}")
            if isinstance(d, int) and d <= 0 and axis != batch_dim:
                dynamic.append(f"{vi.name}[{axis}] unknown")
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    shape_math = shape_arithmetic_nodes(model)
    ok = not unsupported and not training and not dynamic
    return {
        "compatible": ok,
        "table_source": TABLE_SOURCE,
        "opsets": opsets,
        "node_count": len(model.graph.node),
        "op_counts": dict(sorted(ops.items())),
        "unsupported_ops": unsupported,
        "training_ops": training,
        "non_batch_dynamic_dims": dynamic,
        "shape_arithmetic_nodes": shape_math,
        "opset_in_trt10_range": 9 <= opsets.get("ai.onnx", 0) <= 20,
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable summary of :func:`trt_compatibility` (a few lines)."""
    lines = [
        f"TensorRT 10 compatibility: {'OK' if report['compatible'] else 'PROBLEMS FOUND'} "
        f"({report['node_count']} nodes, opsets {report['opsets']}; table: {report['table_source']})",
        f"  unsupported ops: {', '.join(report['unsupported_ops']) or 'none'}",
        f"  training-mode ops: {', '.join(report['training_ops']) or 'none'}",
        f"  non-batch dynamic dims: {', '.join(report['non_batch_dynamic_dims']) or 'none'}",
        f"  shape arithmetic nodes: {len(report['shape_arithmetic_nodes'])}",
    ]
    if not report["opset_in_trt10_range"]:
        lines.append("  warning: the default-domain opset is outside TensorRT 10's range 9-20")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path
