"""The built-in rule-based fp16 converter and the rules every converter follows.

:func:`convert_model_fp16` rewrites an fp32 ``onnx.ModelProto`` into mixed fp16/fp32 with fp32 inputs and
outputs, following the rules described in :mod:`mmdet_deploy.export.precision` (which chooses between this
converter and NVIDIA ModelOpt, carries the metadata over, saves and checks). Needs only ``onnx`` and numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmdet_deploy.deps import require
from mmdet_deploy.errors import ExportError

log = logging.getLogger(__name__)

#: Op types that stay fp32 by default.
DEFAULT_KEEP_FP32_OPS: frozenset[str] = frozenset(
    {
        # normalisations: statistics over many elements
        "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
        "LpNormalization", "MeanVarianceNormalization", "RMSNormalization", "SkipLayerNormalization",
        # softmax family
        "Softmax", "LogSoftmax",
        # reductions that accumulate
        "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceProd", "CumSum",
        # range explosions
        "Pow", "Exp", "Log", "Sqrt", "Reciprocal",
        # float-typed parameter inputs (scales/roi) or dtype attributes: keep exact
        "Resize", "Upsample", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
        "EyeLike", "ConstantOfShape", "Range", "CastLike",
    }
)  # fmt: skip

#: Ops whose precision follows their non-constant inputs (data movement, selection, comparison).
FOLLOW_INPUT_OPS: frozenset[str] = frozenset(
    {
        "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
        "GatherElements", "GatherND", "Expand", "Tile", "Identity", "Pad", "DepthToSpace", "SpaceToDepth",
        "Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Max", "Min", "ReduceMax",
        "ReduceMin", "ArgMax", "ArgMin", "Relu", "Clip", "MaxPool", "TopK", "ScatterND", "ScatterElements",
    }
)  # fmt: skip

#: Ops that accept any input type: their inputs are never cast (their outputs are fp32 or not float).
ANY_INPUT_OPS: frozenset[str] = frozenset({"Shape", "Size", "Cast", "NonZero", "IsNaN", "IsInf"})

#: Ops the built-in converter refuses (control flow with subgraphs, explicit quantisation).
UNSUPPORTED_OPS: frozenset[str] = frozenset({"If", "Loop", "Scan", "QuantizeLinear", "DequantizeLinear"})

FP16_MAX = 65504.0
_FLOAT = 1  # onnx.TensorProto.FLOAT
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_LOW, _HIGH, _ANY = "fp16", "fp32", "any"


@dataclass
class Fp16Stats:
    """What a conversion did (for logs, tests and the contract's ``extra``)."""

    converter: str
    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts_added: int = 0
    clamped_values: int = 0
    fp32_op_types: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fp32_op_types": sorted(self.fp32_op_types)}


def convert_model_fp16(
    model: Any,
    *,
    keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
    keep_fp32_nodes: Iterable[str] = (),
) -> tuple[Any, Fp16Stats]:
    """The built-in converter: return a mixed-precision copy of an fp32 ``onnx.ModelProto`` and its stats.

    The input model is not modified. Metadata is copied unchanged (see :func:`convert_fp16` for the
    contract update).
    """
    onnx = require("onnx", "fp16 conversion")
    keep_ops = frozenset(keep_fp32_ops)
    keep_nodes = frozenset(keep_fp32_nodes)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for node in graph.node:
        if node.op_type in UNSUPPORTED_OPS or any(a.type in (5, 10) for a in node.attribute):  # GRAPH(S)
            raise ExportError(
                f"node {node.name or node.op_type!r} ({node.op_type}) is not supported by the built-in fp16 "
                "converter; install NVIDIA ModelOpt (pip install 'mmdet-deploy[gpu]') to convert this model"
            )
    _constants_to_initializers(onnx, graph)
    types = _float_types(onnx, out)
    modes = _classify(graph, types, keep_ops, keep_nodes)
    stats = Fp16Stats(converter="mmdet_deploy", fp32_op_types=sorted(keep_ops))
    _rewrite(onnx, graph, types, modes, stats)
    del graph.value_info[:]
    return out, stats


def _constants_to_initializers(onnx: Any, graph: Any) -> None:
    """Turn float ``Constant`` nodes into initializers so they convert like weights."""
    kept = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs and attrs["value"].t.data_type == _FLOAT:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _float_types(onnx: Any, model: Any) -> dict[str, int]:
    """Element type of every tensor: ONNX shape inference, completed from the op schemas where it stops.

    ONNX type inference gives up after some function ops (GroupNormalization-21 for one); the
    schemas still say which output shares a type parameter with which input, which is all we need.
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    opsets = {o.domain or "": o.version for o in model.opset_import}
    for node in model.graph.node:
        for idx, out in enumerate(node.output):
            if out and out not in types:
                found = _schema_output_type(onnx, node, idx, types, opsets.get(node.domain or "", 0))
                if found:
                    types[out] = found
    return types


def _schema_output_type(onnx: Any, node: Any, idx: int, types: dict[str, int], opset: int) -> int:
    """Output ``idx``'s element type from the op schema and the known input types (0: unknown)."""
    if node.op_type == "Cast":
        return next((a.i for a in node.attribute if a.name == "to"), 0)
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # unknown op or domain (onnx raises SchemaError)
        return 0
    if not schema.outputs:
        return 0
    param = schema.outputs[min(idx, len(schema.outputs) - 1)].type_str
    allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}.get(param, [param])
    if len(allowed) == 1:
        return _TYPE_BY_STR.get(allowed[0], 0)
    for j, name in enumerate(node.input):
        if name and name in types and schema.inputs:
            if schema.inputs[min(j, len(schema.inputs) - 1)].type_str == param:
                return types[name]
    return 0


_TYPE_BY_STR = {"tensor(float)": _FLOAT, "tensor(float16)": FLOAT16, "tensor(int64)": 7, "tensor(bool)": 9}


def _classify(graph: Any, types: dict[str, int], keep_ops: frozenset[str], keep_nodes: frozenset[str]) -> list[str]:
    """Decide fp16 / fp32 / any-input per node, in topological order."""
    precision: dict[str, str] = {vi.name: _HIGH for vi in graph.input if types.get(vi.name) == _FLOAT}
    constants = {init.name for init in graph.initializer}
    modes = []
    for node in graph.node:
        float_in = [i for i in node.input if i and types.get(i) == _FLOAT]
        if node.op_type in ANY_INPUT_OPS:
            mode = _ANY
        elif node.op_type in keep_ops or node.name in keep_nodes or not float_in:
            mode = _HIGH
        elif node.op_type in FOLLOW_INPUT_OPS:
            dynamic = [precision.get(i, _HIGH) for i in float_in if i not in constants]
            mode = _HIGH if dynamic and all(p == _HIGH for p in dynamic) else _LOW
        else:
            mode = _LOW
        for o in node.output:
            if types.get(o) == _FLOAT:
                precision[o] = _LOW if mode == _LOW else _HIGH
        modes.append(mode)
    return modes


def _rewrite(onnx: Any, graph: Any, types: dict[str, int], modes: list[str], stats: Fp16Stats) -> None:
    """Insert casts and convert initializers so that fp16 nodes see fp16 tensors and the rest fp32."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, set[str]] = {}
    for node, mode in zip(graph.node, modes, strict=True):
        for i in node.input:
            consumers.setdefault(i, set()).add(mode)
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}

    versions: dict[str, dict[str, str]] = {n: {_HIGH: n} for n in graph_inputs if types.get(n) == _FLOAT}
    for name, init in inits.items():
        if init.data_type != _FLOAT:
            continue
        if consumers.get(name) == {_LOW} and name not in graph_outputs and name not in graph_inputs:
            stats.clamped_values += _to_fp16_inplace(numpy_helper, init)
            versions[name] = {_LOW: name}
        else:
            versions[name] = {_HIGH: name}

    new_nodes: list[Any] = []

    def version(name: str, want: str) -> str:
        have = versions[name]
        if want in have:
            return have[want]
        new_name = f"{name}__{want}"
        if name in inits and _HIGH in have:  # a weight shared by both regions: store an fp16 copy
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = new_name
            stats.clamped_values += _to_fp16_inplace(numpy_helper, copy)
            graph.initializer.append(copy)
        else:
            src = next(iter(have.values()))
            to = FLOAT16 if want == _LOW else _FLOAT
            new_nodes.append(helper.make_node("Cast", [src], [new_name], to=to, name=f"{new_name}_cast"))
            stats.casts_added += 1
        have[want] = new_name
        return new_name

    for node, mode in zip(graph.node, modes, strict=True):
        if mode != _ANY:  # any-input ops read whichever version carries the original name
            for idx, name in enumerate(node.input):
                if name and types.get(name) == _FLOAT and name in versions:
                    node.input[idx] = version(name, mode)
        if mode == _LOW:
            stats.fp16_nodes += 1
        elif mode == _HIGH:
            stats.fp32_nodes += 1
        pending_output_casts = []
        for idx, out_name in enumerate(node.output):
            if types.get(out_name) != _FLOAT:
                continue
            if mode == _LOW and out_name in graph_outputs:  # keep the output name fp32
                node.output[idx] = f"{out_name}__fp16"
                versions[out_name] = {_LOW: node.output[idx], _HIGH: out_name}
                pending_output_casts.append(
                    helper.make_node("Cast", [node.output[idx]], [out_name], to=_FLOAT, name=f"{out_name}_cast")
                )
            else:
                versions[out_name] = {(_LOW if mode == _LOW else _HIGH): out_name}
        new_nodes.append(node)
        new_nodes.extend(pending_output_casts)
        stats.casts_added += len(pending_output_casts)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _to_fp16_inplace(numpy_helper: Any, tensor: Any) -> int:
    """Convert an fp32 initializer to fp16 in place; values beyond fp16 range are clamped. Returns #clamped."""
    values = numpy_helper.to_array(tensor).astype(np.float32)
    finite_big = np.abs(values) > FP16_MAX
    clamped = int(np.count_nonzero(finite_big))
    if clamped:
        log.warning("%s: %d values beyond the fp16 range clamped to +-%g", tensor.name, clamped, FP16_MAX)
    half = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    tensor.CopyFrom(numpy_helper.from_array(half, tensor.name))
    return clamped
