"""Precision-ready ONNX: fp32 model in, mixed fp16/fp32 model out, with fp32 inputs and outputs.

This is the input TensorRT 11 needs (it builds strongly typed networks only, so the precision of
every tensor must already be written into the ONNX) and it also works on TensorRT 10.x.

Rules (the same whichever converter runs):

* Numerically risky ops stay fp32 (:data:`DEFAULT_KEEP_FP32_OPS`): LayerNormalization,
  GroupNormalization and the other norms, Softmax, every reduction that sums or averages, and the
  ops whose output range explodes (Pow, Exp, Log, Sqrt, Reciprocal). A LayerNorm decomposed into
  Pow/ReduceMean overflows fp16 (x^2 > 65504); keeping those ops fp32 prevents that.
* Everything else that computes in floating point runs in fp16; Cast nodes are inserted at every
  boundary between the two regions. Cheap data-movement ops (Reshape, Transpose, Concat, ...)
  follow the precision of their inputs so that no extra cast pairs appear around them.
* Graph inputs and outputs keep their fp32 type (``keep_io_types``).
* ``metadata_props`` are preserved; the embedded :class:`~mmdet_deploy.contract.ModelContract`
  gets ``precision="fp16"`` and an ``extra["fp16_conversion"]`` record of how it was converted.

When NVIDIA ModelOpt is importable, its AutoCast (``convert_to_mixed_precision(...,
keep_io_types=True)``) does the conversion with these ops excluded; it additionally keeps nodes
whose measured activations exceed its ``data_max`` threshold in fp32. Otherwise the project's own
rule-based converter (:func:`mmdet_deploy.export.fp16_converter.convert_model_fp16`, which also holds the
op lists) runs; it needs only ``onnx`` and numpy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmdet_deploy.contract import METADATA_KEY, ModelContract
from mmdet_deploy.deps import available, require
from mmdet_deploy.errors import ExportError, UsageError
from mmdet_deploy.export.fp16_converter import DEFAULT_KEEP_FP32_OPS, FLOAT16, Fp16Stats, convert_model_fp16

log = logging.getLogger(__name__)

#: Largest protobuf ONNX writes in one file; larger models go to an external-data file.
_PROTO_LIMIT = 2**31 - 2**26


def onnx_precision(model: Any) -> str:
    """Classify an ONNX model: ``"int8"`` (has Q/DQ nodes), ``"fp16"`` (fp16 weights or casts) or ``"fp32"``."""
    ops = {n.op_type for n in model.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "int8"
    if any(init.data_type == FLOAT16 for init in model.graph.initializer):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in node.attribute):
            return "fp16"
    return "fp32"


def convert_fp16(
    src: str | Path,
    dst: str | Path,
    *,
    keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
    keep_fp32_nodes: Iterable[str] = (),
    use_modelopt: bool | None = None,
) -> Path:
    """Write a mixed-precision (fp16 compute, fp32 I/O) copy of the fp32 ONNX ``src`` to ``dst``.

    ``keep_fp32_ops`` are op types kept fp32 (default :data:`DEFAULT_KEEP_FP32_OPS`);
    ``keep_fp32_nodes`` are node names kept fp32 in addition. ``use_modelopt``: ``None`` uses ModelOpt
    AutoCast when importable and the built-in converter otherwise; ``True`` requires ModelOpt;
    ``False`` always uses the built-in converter. Returns ``dst``. Raises :class:`ExportError` when
    ``src`` is not an fp32 model or the result is not a valid ONNX model.
    """
    onnx = require("onnx", "fp16 conversion")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UsageError(f"ONNX file not found: {src}")
    if src.resolve() == dst.resolve():
        raise UsageError(f"the fp16 model must not overwrite its source: {src}")
    keep_ops = frozenset(keep_fp32_ops)
    keep_nodes = frozenset(keep_fp32_nodes)
    source = onnx.load(str(src))
    kind = onnx_precision(source)
    if kind != "fp32":
        raise ExportError(f"{src}: the model is already {kind}; fp16 conversion needs the fp32 export")

    if use_modelopt is None:
        use_modelopt = available("modelopt")
    if use_modelopt:
        converted, stats = _convert_with_modelopt(src, keep_ops, keep_nodes)
    else:
        converted, stats = convert_model_fp16(source, keep_fp32_ops=keep_ops, keep_fp32_nodes=keep_nodes)
    _copy_metadata(source, converted, stats)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _save_checked(onnx, converted, dst)
    log.info(
        "fp16 model written to %s (%s: %d fp16 nodes, %d fp32 nodes, %d casts)",
        dst, stats.converter, stats.fp16_nodes, stats.fp32_nodes, stats.casts_added,
    )  # fmt: skip
    return dst


def _convert_with_modelopt(src: Path, keep_ops: frozenset[str], keep_nodes: frozenset[str]) -> tuple[Any, Fp16Stats]:
    """ModelOpt AutoCast with our fp32 op list excluded and fp32 I/O (unverified here: no ModelOpt)."""
    autocast = require("modelopt.onnx.autocast", "fp16 conversion with NVIDIA ModelOpt AutoCast")
    model = autocast.convert_to_mixed_precision(
        onnx_path=str(src),
        low_precision_type="fp16",
        nodes_to_exclude=[f"^{re.escape(n)}$" for n in sorted(keep_nodes)] or None,  # name patterns
        op_types_to_exclude=sorted(keep_ops),
        keep_io_types=True,
    )
    stats = Fp16Stats(converter="modelopt-autocast", fp32_op_types=sorted(keep_ops))
    for node in model.graph.node:
        if node.op_type == "Cast":
            stats.casts_added += 1
    return model, stats


def _copy_metadata(source: Any, converted: Any, stats: Fp16Stats) -> None:
    """Carry every metadata entry over and mark the contract fp16."""
    entries = {p.key: p.value for p in source.metadata_props}
    del converted.metadata_props[:]
    for key, value in entries.items():
        prop = converted.metadata_props.add()
        prop.key, prop.value = key, value
    converted.producer_name = source.producer_name or converted.producer_name
    converted.doc_string = source.doc_string
    if METADATA_KEY in entries:
        contract = ModelContract.from_onnx(source, "source model")
        extra = {**dict(contract.extra), "fp16_conversion": stats.as_dict()}
        contract.replace(precision="fp16", extra=extra).to_onnx(converted)


def _save_checked(onnx: Any, model: Any, dst: Path) -> None:
    """Save (external data when over the protobuf limit) and run the full ONNX checker on the file."""
    large = model.ByteSize() > _PROTO_LIMIT
    if large:
        onnx.save_model(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
    else:
        onnx.save_model(model, str(dst))
    try:
        onnx.checker.check_model(str(dst), full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"the fp16 model {dst} failed the ONNX checker: {exc}") from exc
