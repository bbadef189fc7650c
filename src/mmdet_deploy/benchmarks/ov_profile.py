"""Where a model's time goes on OpenVINO: its own per-layer counters (``PERF_COUNT``) by category and kernel.

The OpenVINO counterpart of :mod:`mmdet_deploy.benchmarks.profile` (ONNX Runtime). The CPU plugin reports,
for every executed node of the graph it really runs (after its fusions: ``Subgraph`` is a fused elementwise
chain, ``FullyConnected`` a MatMul with a constant weight, ``ScaledDotProductAttention`` a fused attention),
its layer type, the kernel it chose (``exec_type``, e.g. ``brgconv_avx512_amx_I8``: AMX int8) and its wall
time. :func:`summarise_layers` sums those per category and per (layer type, kernel), so that an fp32, a bf16
and an INT8 compilation of the same model can be compared line by line. A ``Subgraph`` that fused a Softmax
or a MatMul (OpenVINO's snippets tokenise q.k^T -> softmax -> attn.v into one) counts as attention; the ONNX
nodes each executed node fused come from the runtime model. Counters add a little overhead per node; compare
shares, and time with :mod:`benchmarks.timing`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from mmdet_deploy.benchmarks.profile import category_lines

#: Kernel names that compute in int8 (``..._I8``, ``..._i8``, ``..._u8``).
_INT8 = re.compile(r"(^|_)[iu]8($|_)", re.IGNORECASE)
GEMM_TYPES = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "Gemm"})
ATTENTION_TYPES = frozenset({"MatMul", "ScaledDotProductAttention"})
NORM_TYPES = frozenset({"MVN", "NormalizeL2", "GroupNormalization", "RMS", "LayerNorm", "BatchNormInference"})
ELEMENTWISE_TYPES = frozenset({
    "Subgraph", "Eltwise", "Add", "Subtract", "Multiply", "Divide", "Erf", "Gelu", "Relu", "Power", "Sqrt",
    "Exp", "Clamp", "Sigmoid", "Tanh", "Maximum", "Minimum", "MulAdd", "PowerStatic",
})
_ATTENTION_ORIGINS = re.compile(r"softmax|matmul|scaled_dot_product", re.IGNORECASE)

#: Category names in report order.
CATEGORIES = (
    "int8 GEMM/conv", "float GEMM/conv", "attention (MatMul, SDPA)", "softmax", "normalisation",
    "Q/DQ (FakeQuantize)", "layout, precision (Reorder, Transpose, Convert)", "elementwise (fused Subgraph, Eltwise)",
    "other",
)


def is_int8_kernel(exec_type: str) -> bool:
    """True for an OpenVINO kernel that computes in int8."""
    return bool(_INT8.search(exec_type))


def categorise_layer(layer_type: str, exec_type: str, original: str = "") -> str:
    """The category of one executed node (see :data:`CATEGORIES`); ``original``: the ONNX nodes it fused."""
    if layer_type in GEMM_TYPES or layer_type.startswith("FullyConnected"):
        int8 = is_int8_kernel(exec_type) or "Quantized" in layer_type
        return "int8 GEMM/conv" if int8 else "float GEMM/conv"
    if layer_type in ATTENTION_TYPES or (layer_type == "Subgraph" and _ATTENTION_ORIGINS.search(original)):
        return "attention (MatMul, SDPA)"
    if layer_type == "Softmax":
        return "softmax"
    if layer_type in NORM_TYPES:
        return "normalisation"
    if layer_type == "FakeQuantize":
        return "Q/DQ (FakeQuantize)"
    if layer_type in ("Reorder", "Transpose", "Convert"):
        return "layout, precision (Reorder, Transpose, Convert)"
    if layer_type in ELEMENTWISE_TYPES:
        return "elementwise (fused Subgraph, Eltwise)"
    return "other"


def summarise_layers(layers: Iterable[Mapping[str, Any]], top: int = 12) -> dict[str, Any]:
    """Per-run milliseconds by category and by (layer type, kernel), from :meth:`OpenVinoBackend.profile`.

    ``int8_gemm_share``: the share of GEMM/conv time spent in int8 kernels (how much of the heavy compute
    really runs in int8).
    """
    by_cat: Counter[str] = Counter()
    by_kernel: Counter[tuple[str, str]] = Counter()
    nodes: Counter[tuple[str, str]] = Counter()
    for layer in layers:
        ms = float(layer["real_ms"])
        by_cat[categorise_layer(layer["type"], layer["exec_type"], layer.get("original", ""))] += ms
        key = (str(layer["type"]), str(layer["exec_type"]))
        by_kernel[key] += ms
        nodes[key] += 1
    total = sum(by_cat.values())
    gemm = by_cat["int8 GEMM/conv"] + by_cat["float GEMM/conv"]
    return {
        "total_ms": total,
        "categories": {c: {"ms": by_cat[c], "share": by_cat[c] / total if total else 0.0} for c in CATEGORIES},
        "kernels": [{"type": t, "exec_type": e, "ms": ms, "share": ms / total if total else 0.0, "nodes": nodes[(t, e)]}
                    for (t, e), ms in by_kernel.most_common(top)],
        "int8_gemm_share": by_cat["int8 GEMM/conv"] / gemm if gemm else 0.0,
    }


def format_profiles(profiles: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown lines: one column per profiled row, one line per category (ms per run and share)."""
    names = list(profiles)
    lines = category_lines(profiles, CATEGORIES)
    lines.append("| **total** | " + " | ".join(f"{profiles[n]['total_ms']:.0f}" for n in names) + " |")
    lines.append("| int8 share of GEMM/conv time | "
                 + " | ".join(f"{100 * profiles[n]['int8_gemm_share']:.0f} %" for n in names) + " |")
    return lines


def format_kernels(name: str, summary: Mapping[str, Any]) -> list[str]:
    """Markdown lines: the most expensive (layer type, kernel) pairs of one profiled row."""
    lines = [f"| {name}: layer type | kernel | nodes | ms | share |", "|---|---|---|---|---|"]
    for k in summary["kernels"]:
        lines.append(f"| {k['type']} | {k['exec_type']} | {k['nodes']} | {k['ms']:.1f} | {100 * k['share']:.1f} % |")
    return lines
