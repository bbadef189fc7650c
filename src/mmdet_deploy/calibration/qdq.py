"""Which nodes of a ViT-style graph get Q/DQ, and the rules checked on the quantised graph.

The rule for a transformer (deployment-facts section 4): quantise the weight-bearing linear layers
(MatMul with a constant weight, Gemm) and the convolutions; keep residual Add, LayerNormalization,
GroupNormalization, Softmax, GELU and everything else in float. In the quantised graph this is visible
as: *a dequantised activation only feeds a quantised node* (MatMul/Gemm/Conv chosen here), or, for the
output of a quantised Conv, a normalisation or ReLU that computes in float on it (directly or through the
Reshape of an exported GroupNorm: Reshape -> InstanceNormalization). That output Q/DQ is what lets
ONNX Runtime on CPU run the convolution as ``QLinearConv``; TensorRT fuses it either way. A graph
output never carries a dequantised value. :func:`enforce_float_consumers` repairs a graph produced by a
quantiser that put Q/DQ elsewhere; :func:`float_rule_violations` lists what breaks the rule.

These functions take and return ``onnx.ModelProto`` objects; the caller imports onnx.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mmdet_deploy.errors import UsageError

#: ``--ops`` tokens -> meaning. ``all`` is the deliberately unsafe setting (quantise every op ORT can).
OP_GROUPS = {
    "matmul": "MatMul with a constant weight, and Gemm (the linear layers)",
    "conv": "Conv, except grouped/depthwise convolutions (the fixed high-pass blurs)",
    "attention": "MatMul between two activations (q.k^T and attn.v); off by default",
    "all": "every compute op (norms, residual adds, softmax...), outputs included (collapses ViTs; for tests)",
}
DEFAULT_OPS = "matmul,conv"
#: Normalisations that may read the (re-quantised) output of a quantised Conv; they compute in float.
NORMS = frozenset({"GroupNormalization", "BatchNormalization", "InstanceNormalization"})
#: Float ops allowed to read the (re-quantised) output of a quantised Conv (directly, or through the Reshape
#: of an exported GroupNorm).
CONV_OUTPUT_CONSUMERS = NORMS | {"Relu"}
QUANTISABLE = frozenset({"MatMul", "Gemm", "Conv"})


def parse_ops(text: str) -> frozenset[str]:
    """Parse ``--ops`` (comma-separated tokens of :data:`OP_GROUPS`)."""
    tokens = frozenset(t.strip().lower() for t in text.split(",") if t.strip())
    unknown = sorted(tokens - OP_GROUPS.keys())
    if unknown or not tokens:
        raise UsageError(f"--ops {text!r}: unknown or empty; use a comma-separated subset of {', '.join(OP_GROUPS)}")
    if "all" in tokens and len(tokens) > 1:
        raise UsageError("--ops all cannot be combined with other tokens")
    return tokens


def name_nodes(model: Any) -> int:
    """Give every unnamed node a unique name (node selection works by name); returns how many were named."""
    used = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_{i}"
            while candidate in used:
                candidate += "_"
            node.name = candidate
            used.add(candidate)
            named += 1
    return named


def constant_tensors(model: Any) -> set[str]:
    """Tensors whose value does not depend on the graph inputs (initializers and constant sub-graphs)."""
    graph = model.graph
    const = {i.name for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    const -= inputs  # an initializer overridable as an input is not a constant
    for node in graph.node:  # nodes are topologically sorted in a valid ONNX graph
        if node.op_type == "Constant" or (node.input and all((not x) or x in const for x in node.input)):
            const.update(o for o in node.output if o)
    return const


def _attr(node: Any, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _weight_size(node: Any, sizes: Mapping[str, int]) -> int:
    return sizes.get(node.input[1], 0) if len(node.input) > 1 else 0


def select_nodes(model: Any, ops: Iterable[str]) -> list[str]:
    """Names of the nodes to quantise under ``ops`` (not for ``all``, which defers to the quantiser).

    Of several Convs reading the same tensor (a stem and the frequency stem, a bottleneck's first conv and
    its downsample), only the one with the largest kernel is quantised: ONNX Runtime on CPU cannot fuse
    DQ -> Conv -> Q into QLinearConv when one int8 input feeds two of them, and an unfused one would run in
    float *and* pay for the dequantisation.
    """
    ops = frozenset(ops)
    const = constant_tensors(model)
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    chosen: list[str] = []
    convs: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type == "Gemm" and "matmul" in ops:
            chosen.append(node.name)
        elif node.op_type == "MatMul" and len(node.input) == 2:
            weight = node.input[1] in const or node.input[0] in const
            if ("matmul" in ops and weight) or ("attention" in ops and not weight):
                chosen.append(node.name)
        elif node.op_type == "Conv" and "conv" in ops and _attr(node, "group", 1) == 1:
            convs[node.input[0]].append(node)
    keep = {max(group, key=lambda n: _weight_size(n, sizes)).name for group in convs.values()}
    return [n.name for n in model.graph.node if n.name in keep or n.name in chosen]


#: Op types quantised under ``--ops all``: every compute op of the exported graph, LayerNorm, residual adds
#: and softmax included. Left out: shape-only ops, and InstanceNormalization (the exported GroupNorm), for
#: which ONNX Runtime 1.32's QDQ quantiser writes a graph that ONNX Runtime then refuses to load.
ALL_OP_TYPES = (
    "MatMul", "Gemm", "Conv", "Add", "Sub", "Mul", "Div", "Softmax", "LayerNormalization", "Relu", "Erf", "Gelu",
    "Concat", "MaxPool", "Transpose", "Sigmoid", "Tanh",
)


def _maps(model: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    producers = {o: n for n in model.graph.node for o in n.output if o}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in model.graph.node:
        for x in n.input:
            if x:
                consumers[x].append(n)
    return producers, consumers


def _activation_pairs(model: Any) -> list[tuple[Any, Any]]:
    """(QuantizeLinear, DequantizeLinear) pairs on activations (weights have a DQ fed by an initializer)."""
    producers, _ = _maps(model)
    pairs = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                pairs.append((q, node))
    return pairs


def _feeds_norm(consumer: Any, consumers: Mapping[str, list[Any]]) -> bool:
    """True for a norm/ReLU, or a Reshape whose every consumer is a norm (GroupNorm exported as
    Reshape -> InstanceNormalization -> Reshape -> Mul -> Add)."""
    if consumer.op_type in CONV_OUTPUT_CONSUMERS:
        return True
    after = consumers.get(consumer.output[0], []) if consumer.op_type == "Reshape" else []
    return bool(after) and all(c.op_type in NORMS for c in after)


def _allowed(consumer: Any, float_producer: Any | None, quantised: set[str],
             consumers: Mapping[str, list[Any]]) -> bool:
    if consumer.name in quantised:
        return True
    return (
        float_producer is not None
        and float_producer.op_type == "Conv"
        and float_producer.name in quantised
        and _feeds_norm(consumer, consumers)
    )


def float_rule_violations(model: Any, quantised: Iterable[str]) -> list[str]:
    """Every place where a dequantised activation reaches something other than a quantised node.

    Returns human-readable lines (empty when the graph follows the rule).
    """
    quantised = set(quantised)
    producers, consumers = _maps(model)
    outputs = {o.name for o in model.graph.output}
    problems = []
    for q, dq in _activation_pairs(model):
        src = producers.get(q.input[0])
        for c in consumers.get(dq.output[0], []):
            if not _allowed(c, src, quantised, consumers):
                problems.append(f"{c.op_type} {c.name!r} reads dequantised {q.input[0]!r}")
        if dq.output[0] in outputs:
            problems.append(f"graph output {dq.output[0]!r} is dequantised")
    return problems


def _rename(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        for seq in (node.input, node.output):
            for k, name in enumerate(seq):
                if name == old:
                    seq[k] = new
    for vi in list(model.graph.value_info):
        if vi.name in (old, new):
            model.graph.value_info.remove(vi)


def enforce_float_consumers(model: Any, quantised: Iterable[str]) -> int:
    """Rewire every consumer that breaks the rule to the float tensor; drop Q/DQ left unused.

    Returns the number of rewired edges (0 when the quantiser already followed the rule).
    """
    quantised = set(quantised)
    producers, consumers = _maps(model)
    outputs = {o.name for o in model.graph.output}
    changes = 0
    for q, dq in _activation_pairs(model):
        float_name, dq_out = q.input[0], dq.output[0]
        src = producers.get(float_name)
        for c in consumers.get(dq_out, []):
            if not _allowed(c, src, quantised, consumers):
                for k, name in enumerate(c.input):
                    if name == dq_out:
                        c.input[k] = float_name
                        changes += 1
        if dq_out in outputs:  # the quantiser renamed the float tensor; give the output its float value back
            moved = f"{dq_out}__dq"
            _rename(model, dq_out, moved)
            _rename(model, float_name, dq_out)
            changes += 1
    if changes:
        _drop_unused(model)
    return changes


def _drop_unused(model: Any) -> None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        _, consumers = _maps(model)
        dead = [
            n
            for n in graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(o in outputs or consumers.get(o) for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    _, consumers = _maps(model)
    for init in list(graph.initializer):
        if init.name not in consumers and init.name not in outputs:
            graph.initializer.remove(init)


def quantised_nodes(model: Any) -> list[Any]:
    """Nodes of :data:`QUANTISABLE` types that read at least one dequantised tensor (weight or activation)."""
    producers, _ = _maps(model)
    return [
        n
        for n in model.graph.node
        if n.op_type in QUANTISABLE
        and any(producers.get(x) is not None and producers[x].op_type == "DequantizeLinear" for x in n.input)
    ]


def qdq_summary(model: Any) -> dict[str, Any]:
    """Counts for the report: Q/DQ nodes, quantised nodes per op type, float MatMul/Gemm/Conv left."""
    counts = Counter(n.op_type for n in model.graph.node)
    quant = quantised_nodes(model)
    qtypes = Counter(n.op_type for n in quant)
    return {
        "quantize_linear": counts.get("QuantizeLinear", 0),
        "dequantize_linear": counts.get("DequantizeLinear", 0),
        "quantised": dict(sorted(qtypes.items())),
        "float": {t: counts.get(t, 0) - qtypes.get(t, 0) for t in sorted(QUANTISABLE) if counts.get(t, 0)},
    }
