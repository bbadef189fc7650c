"""Where an ONNX model's time goes on ONNX Runtime: kernel time per op type and per category.

ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) records every kernel of the graph it
actually runs (after its fusions and layout changes). This module sums those records per op type and per
category, so that an fp32 and an INT8 model can be compared line by line: how much of the INT8 model
still runs in float, and how much is new glue (Q/DQ, layout transposes). Profiling adds overhead per
kernel, so the totals exceed plain latency; compare shares, and time with :mod:`benchmarks.timing`.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.deps import require

INT8_KERNELS = frozenset({
    "MatMulIntegerToFloat", "QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    "DynamicQuantizeMatMul", "QAttention",
})
FLOAT_KERNELS = frozenset({"MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv", "FusedGemm"})
NORMS = frozenset({
    "InstanceNormalization", "LayerNormalization", "GroupNormalization", "SkipLayerNormalization",
    "BatchNormalization", "SimplifiedLayerNormalization",
})

#: Category names in report order.
CATEGORIES = (
    "int8 GEMM/conv", "float GEMM/conv", "attention MatMul (float)", "softmax", "normalisation",
    "Q/DQ", "layout (Transpose/Reorder)", "other",
)


def categorise(op_type: str, input_shapes: list[list[int]]) -> str:
    """The category of one kernel; a float MatMul of two batched (rank >= 3) tensors is attention.

    A linear layer's weight is 2-D; q.k^T and attn.v multiply two batched activations.
    """
    if op_type in INT8_KERNELS:
        return "int8 GEMM/conv"
    if op_type in ("MatMul", "FusedMatMul") and len(input_shapes) >= 2 and all(len(s) >= 3 for s in input_shapes[:2]):
        return "attention MatMul (float)"
    if op_type in FLOAT_KERNELS:
        return "float GEMM/conv"
    if op_type == "Softmax":
        return "softmax"
    if op_type in NORMS:
        return "normalisation"
    if op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return "Q/DQ"
    if op_type in ("Transpose", "ReorderInput", "ReorderOutput"):
        return "layout (Transpose/Reorder)"
    return "other"


def summarise_events(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """Per-run kernel milliseconds by op type and by category, from the last ``runs`` runs of a profile.

    Earlier runs in the file (warm-up) are left out: a kernel belongs to the ``model_run`` whose time span
    contains it.
    """
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(spans) < runs:
        raise ValueError(f"the profile holds {len(spans)} runs, fewer than the {runs} to summarise")
    start = spans[-runs][0]
    by_op: Counter[str] = Counter()
    count: Counter[str] = Counter()
    by_cat: Counter[str] = Counter()
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event.get("ts", 0) < start:
            continue
        args = event.get("args", {})
        op = args.get("op_name", "?")
        shapes = [list(next(iter(d.values()))) for d in args.get("input_type_shape", []) if d]
        us = float(event.get("dur", 0))
        by_op[op] += us
        count[op] += 1
        by_cat[categorise(op, shapes)] += us
    total = sum(by_op.values())
    scale = 1.0 / (1000.0 * runs)
    return {
        "runs": runs,
        "kernel_ms": total * scale,
        "categories": {c: {"ms": by_cat[c] * scale, "share": by_cat[c] / total if total else 0.0}
                       for c in CATEGORIES},
        "op_types": {op: {"ms": us * scale, "share": us / total if total else 0.0, "nodes": count[op] // runs}
                     for op, us in by_op.most_common()},
    }


def profile_onnx(path: str | Path, feeds: Mapping[str, np.ndarray], *, threads: int | None = None,
                 runs: int = 2, warmup: int = 1) -> dict[str, Any]:
    """Run ``path`` on ONNX Runtime CPU under its profiler: ``warmup`` calls, then ``runs`` summarised calls."""
    ort = require("onnxruntime", "profiling")
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    with tempfile.TemporaryDirectory(prefix="mmdet-profile-") as tmp:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
        for _ in range(warmup + runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    return {"model": str(path), "threads": threads, "warmup": warmup, **summarise_events(events, runs)}


def category_lines(profiles: Mapping[str, Mapping[str, Any]], categories: Iterable[str]) -> list[str]:
    """Markdown header and one line per category: one column per profile (ms per run and share, ``-`` if 0)."""
    names = list(profiles)
    lines = ["| category | " + " | ".join(f"{n} ms (share)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for cat in categories:
        cells = []
        for n in names:
            c = profiles[n]["categories"][cat]
            cells.append(f"{c['ms']:.0f} ({100 * c['share']:.1f} %)" if c["ms"] else "-")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return lines


def format_profiles(profiles: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: one column per profiled model, one row per category (ms per run and share)."""
    names = list(profiles)
    lines = category_lines(profiles, CATEGORIES)
    lines.append("| **kernel total** | " + " | ".join(f"{profiles[n]['kernel_ms']:.0f}" for n in names) + " |")
    return "\n".join(lines)
