"""NNCF post-training quantisation of our ONNX into a Q/DQ ONNX (``mmdet-export quantize --engine nncf``).

``nncf.quantize`` on the ONNX model itself (its ONNX backend collects statistics with ONNX Runtime), with
``model_type=TRANSFORMER`` and the ``MIXED`` preset (symmetric weights, asymmetric activations: the
recipe NNCF gives for models with GELU). The ops that are sensitive in this model stay float through the
ignored scope: LayerNormalization, GroupNorm (exported as InstanceNormalization), Softmax, every node of the
erf-GELU, and the residual Adds (an Add of two activations). ``--ops`` is honoured as for the ONNX Runtime
engine: ``attention`` (q.k^T, attn.v) is quantised only when asked, grouped convolutions (the fixed
high-pass blurs) never. The written graph is checked: no dequantised value may reach a sensitive op, even
through data-movement ops (NNCF moves Q/DQ across Reshape, Pad, Concat...).

The file is a standard Q/DQ ONNX: ONNX Runtime, OpenVINO and TensorRT (explicit quantisation) read it.
NNCF and OpenVINO telemetry are kept off (no network): see :func:`import_nncf`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from mmdet_deploy.calibration.dataset import CALIBRATION, CalibrationSet
from mmdet_deploy.calibration.qdq import _activation_pairs, _maps, constant_tensors
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ExportError

logger = logging.getLogger(__name__)

#: Op types that always compute in float (the exported GroupNorm is InstanceNormalization).
SENSITIVE_TYPES = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "Erf", "Gelu")
#: Ops that only move or select data: a Q/DQ may pass through them without anything computing in int8.
DATA_MOVEMENT = frozenset({
    "Reshape", "Transpose", "Pad", "Concat", "Slice", "Gather", "Squeeze", "Unsqueeze", "Flatten", "Split",
    "Identity", "MaxPool", "Expand", "Tile",
})


@contextlib.contextmanager
def _no_telemetry() -> Iterator[None]:
    """Hide ``openvino_telemetry`` while NNCF imports, so that NNCF installs its no-op telemetry stub.

    NNCF creates its telemetry object when it is imported and, with ``openvino_telemetry`` installed and no
    consent file, would write a client id and send events. ``NNCF_CI`` alone is not enough: the object is
    created before NNCF reads it. A ``None`` entry in ``sys.modules`` makes the import fail as if absent.
    """
    os.environ.setdefault("NNCF_CI", "1")
    hidden = "openvino_telemetry" not in sys.modules
    if hidden:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hidden and sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]


@contextlib.contextmanager
def _memory_bounded_sessions() -> Iterator[None]:
    """Give NNCF's ONNX Runtime sessions priority-based execution order, for the duration of the block.

    NNCF's ONNX backend collects statistics by adding every calibrated tensor to the graph's outputs and
    running it in ONNX Runtime; in the default topological order that schedule keeps large tensors alive
    (the same effect as ORT's own calibrator, see :func:`mmdet_deploy.calibration.quantize.
    memory_bounded_calibration`): on the base model NNCF passed 10.9 GB RSS, with 0.63 GB of calibrated
    tensors per clip. NNCF offers no session option, so the ``onnxruntime`` module its engine sees is
    replaced by a proxy whose ``SessionOptions`` set the order; everything else is ONNX Runtime's own.
    """
    import onnxruntime as ort
    from nncf.onnx import engine

    class _PriorityBasedOrt:
        def __getattr__(self, name: str) -> Any:
            return getattr(ort, name)

        @staticmethod
        def SessionOptions() -> Any:  # the name NNCF calls
            options = ort.SessionOptions()
            options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
            return options

    original = engine.rt
    engine.rt = _PriorityBasedOrt()
    try:
        yield
    finally:
        engine.rt = original


def import_nncf() -> ModuleType:
    """``nncf`` with its telemetry stubbed out (the extra is ``openvino``)."""
    if "nncf" in sys.modules:
        return sys.modules["nncf"]
    with _no_telemetry():
        return require("nncf", "NNCF quantisation (--engine nncf)")


def telemetry_disabled() -> bool:
    """True when NNCF's telemetry object is its stub (nothing can be sent)."""
    import_nncf()
    from nncf.telemetry import wrapper

    return not isinstance(wrapper.telemetry, wrapper.NNCFTelemetry)


def _gelu_nodes(model: Any) -> set[str]:
    """Every node of each erf-GELU: the scaling into Erf, Erf, and the Add/Mul chain after it (3 deep)."""
    producers, consumers = _maps(model)
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Erf":
            continue
        names.add(node.name)
        before = producers.get(node.input[0])
        if before is not None and before.op_type in ("Div", "Mul"):
            names.add(before.name)
        frontier = [node]
        for _ in range(3):
            frontier = [c for n in frontier for c in consumers.get(n.output[0], []) if c.op_type in ("Add", "Mul")]
            names.update(c.name for c in frontier)
    return names


def _two_activation_nodes(model: Any, op_type: str) -> list[str]:
    """Nodes of ``op_type`` whose two inputs are both activations (residual Add; attention MatMul)."""
    const = constant_tensors(model)
    return [n.name for n in model.graph.node
            if n.op_type == op_type and len(n.input) == 2 and not any(x in const for x in n.input)]


def ignored_names(model: Any, tokens: Iterable[str]) -> list[str]:
    """Names of the nodes NNCF must leave in float under ``--ops`` tokens (empty for ``all``)."""
    tokens = frozenset(tokens)
    if "all" in tokens:
        return []
    names = {n.name for n in model.graph.node if n.op_type in SENSITIVE_TYPES}
    names |= _gelu_nodes(model) | set(_two_activation_nodes(model, "Add"))
    const = constant_tensors(model)
    for node in model.graph.node:
        grouped = any(a.name == "group" and a.i > 1 for a in node.attribute)
        if node.op_type == "Conv" and ("conv" not in tokens or grouped):
            names.add(node.name)
        elif node.op_type == "Gemm" and "matmul" not in tokens:
            names.add(node.name)
        elif node.op_type == "MatMul":
            weight = any(x in const for x in node.input)
            if (weight and "matmul" not in tokens) or (not weight and "attention" not in tokens):
                names.add(node.name)
    return sorted(names)


def sensitive_violations(model: Any) -> list[str]:
    """Every sensitive op (and residual Add) that reads a dequantised value, directly or through data movement."""
    _, consumers = _maps(model)
    residual = set(_two_activation_nodes(model, "Add"))
    problems = []
    for _, dq in _activation_pairs(model):
        frontier, seen = [dq.output[0]], set()
        while frontier:
            tensor = frontier.pop()
            for c in consumers.get(tensor, []):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.op_type in SENSITIVE_TYPES or c.name in residual:
                    problems.append(f"{c.op_type} {c.name!r} reads dequantised {dq.input[0]!r}")
                elif c.op_type in DATA_MOVEMENT:
                    frontier.extend(o for o in c.output if o)
    return problems


def quantize_nncf(src: Path, dst: Path, calib: CalibrationSet, tokens: Iterable[str]) -> dict[str, Any]:
    """Quantise the ONNX file ``src`` with NNCF on the calibration split of ``calib``; write ``dst``.

    Returns what the report records: the NNCF version, preset, model type, and how many nodes were ignored.
    """
    onnx = require("onnx", "NNCF quantisation")
    nncf = import_nncf()
    with tempfile.TemporaryDirectory(prefix="mmdet-nncf-") as tmp:
        model = _with_external_weights(onnx, src, Path(tmp))
        info = _quantize(nncf, onnx, model, src, dst, calib, tokens, Path(tmp))
    return info


def _with_external_weights(onnx: Any, src: Path, folder: Path) -> Any:
    """``src`` re-saved with its weights in one external file of ``folder``, loaded without them.

    NNCF copies the model proto for every step (statistics model, transformed model); with the weights
    inline each copy is the size of the weights (760 MB for base) and the run passed 10 GB RSS. With external
    data the copies are small and ONNX Runtime reads the weights from ``folder`` (NNCF's EXTERNAL_DATA_DIR).
    """
    full = onnx.load(str(src))
    onnx.save_model(full, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024)
    del full
    return onnx.load(str(folder / "model.onnx"), load_external_data=False)


def _quantize(nncf: Any, onnx: Any, model: Any, src: Path, dst: Path, calib: CalibrationSet,
              tokens: Iterable[str], weights_dir: Path) -> dict[str, Any]:
    """``nncf.quantize`` of ``model`` (weights in ``weights_dir``) on the calibration split; saves ``dst``."""
    from nncf.onnx.quantization.backend_parameters import BackendParameters
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    entries = calib.split(CALIBRATION)
    names = tuple(calib.manifest["input_names"])

    def transform(entry: Any) -> dict[str, Any]:
        clip = calib.load(entry)
        return {n: clip[n][None] for n in names}

    ignored = ignored_names(model, tokens)
    logger.info("NNCF: %d calibration clips, %d nodes kept in float", len(entries), len(ignored))
    nncf_log = logging.getLogger("nncf")  # NNCF logs to stdout at INFO (every ignored node, one per line)
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        with _memory_bounded_sessions():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(entries, transform),
                preset=nncf.QuantizationPreset.MIXED,
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(entries),
                ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
                advanced_parameters=AdvancedQuantizationParameters(
                    backend_params={BackendParameters.EXTERNAL_DATA_DIR: str(weights_dir.resolve())}),
            )
    except Exception as exc:  # NNCF's own errors (nncf.errors.*) are about the model or data: one line
        if not type(exc).__module__.startswith("nncf"):
            raise
        text = " ".join(str(exc).split())[:300]
        raise ExportError(f"{src.name}: NNCF quantisation failed ({type(exc).__name__}: {text})") from exc
    finally:
        nncf_log.setLevel(level)
    onnx.save(quantized, str(dst))
    return {"nncf": str(nncf.__version__), "preset": "mixed", "model_type": "transformer",
            "ignored_nodes": len(ignored)}
