"""Checkpoint -> ONNX with the embedded contract, a TensorRT compatibility report and proven parity.

:func:`export_onnx` reads as its steps, each a small function: :class:`ExportOptions` (checked once) ->
:func:`load_for_export` (the prepared model and its contract) -> :func:`trace` (dynamo exporter, fallback
TorchScript: :mod:`mmdet_deploy.export.tracing`) -> :func:`clean` (unused initializers, optional onnxslim,
exact fusion-friendly rewrites from ``graph_passes``) -> :func:`stamp_contract` (contract,
``onnx.checker``, optional fp16) -> :func:`save_atomic` -> :func:`describe_export` (TensorRT operator
report) -> :func:`verify` (parity vs PyTorch on ONNX Runtime CPU).
"""

from __future__ import annotations

import errno
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy import __version__
from mmdet_deploy.contract import HEADS, LOGITS, PRESETS, RECONS_MODES, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ExportError, UsageError
from mmdet_deploy.export.graph_passes import gelu_for_fusion
from mmdet_deploy.export.tracing import FEATURES, example_inputs, model_wrapper, trace_to_onnx
from mmdet_deploy.export.trt_op_report import format_report, trt_compatibility, write_report

log = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization as one node
EXPORT_PRECISIONS = ("fp32", "fp16")
EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    contract: ModelContract
    exporter: str
    opset: int
    export_seconds: float
    size_bytes: int
    node_count: int
    trt_report: dict[str, Any]
    trt_report_path: Path
    parity: dict[str, Any] | None = None
    parity_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def artefact_paths(out: Path) -> tuple[Path, Path]:
    """Paths of the TensorRT report and the parity report written beside ``out``."""
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return out.with_name(stem + ".trt_report.json"), out.with_name(stem + ".parity.json")


def check_output_path(out: Path) -> None:
    """Fail early, with the reason, when ``out`` cannot be written."""
    if out.exists() and out.is_dir():
        raise ExportError(f"{out}: output path is a directory")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create the output folder {parent} ({exc.strerror or exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{out}: output folder {parent} is not writable")


def remove_unused_initializers(model: Any) -> int:
    """Drop initializers no node consumes (raw weights replaced by prepared ones); returns how many."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    removed = len(model.graph.initializer) - len(keep)
    if removed:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return removed


def save_atomic(model: Any, out: Path) -> None:
    """Write to a temporary name in the same folder and rename, so ``out`` is never half-written."""
    onnx = require("onnx")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise ExportError(f"{out}: disk full while writing the model; nothing was left under that name") from exc
        raise ExportError(f"{out}: could not write the model ({exc.strerror or exc})") from exc


def versions() -> dict[str, str]:
    out = {"mmdet_deploy": __version__}
    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "onnxslim"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # not installed or no __version__: record nothing
            continue
    return out


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`export_onnx` builds, checked once when the options are made (:class:`UsageError`).

    ``opset`` >= :data:`MIN_OPSET`; ``precision`` fp32 or fp16 (INT8 comes from ``quantize``); ``exporter``
    auto (dynamo, falling back to TorchScript), dynamo or torchscript; ``samples`` a folder of real media
    added to the parity inputs; ``parity_clips`` random clips compared; ``atol`` the logit tolerance
    (default: the precision's, see :mod:`mmdet_deploy.export.parity_check`); ``recons`` what the checkpoint
    was trained with as its ``recons`` input (``original`` frames or ``vqvae`` reconstructions), stamped into
    the contract so that ``mmdet-run`` warns when a run feeds the other; ``check_backends`` the CPU
    backends the parity check runs on (``onnxruntime``, ``openvino``, ``openvino-bf16``).
    """

    head: str = "simplified"
    config: str = "base"
    opset: int = 18
    simplify: bool = True
    check: bool = True
    precision: str = "fp32"
    preset: str = "faces"
    samples: Path | None = None
    with_features: bool = False
    exporter: str = "auto"
    parity_clips: int = 2
    atol: float | None = None
    recons: str = "original"
    check_backends: tuple[str, ...] = ("onnxruntime",)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise UsageError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.recons not in RECONS_MODES:
            raise UsageError(f"unknown recons {self.recons!r}; choose one of {', '.join(RECONS_MODES)}")
        if self.opset < MIN_OPSET:
            raise UsageError(f"opset {self.opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
        if self.precision not in EXPORT_PRECISIONS:
            raise UsageError(
                f"precision {self.precision!r}: export writes fp32 or fp16 ONNX; INT8 comes from `quantize`"
            )
        if self.exporter not in EXPORTERS:
            raise UsageError(f"unknown exporter {self.exporter!r}; choose auto, dynamo or torchscript")
        if self.samples is not None:
            object.__setattr__(self, "samples", Path(self.samples))
        from mmdet_deploy.export.parity_check import parse_check_backends

        object.__setattr__(self, "check_backends", tuple(parse_check_backends(self.check_backends)))


def export_onnx(
    weights: str | Path,
    out: str | Path,
    head: str = "simplified",
    config: str = "base",
    opset: int = 18,
    simplify: bool = True,
    check: bool = True,
    *,
    precision: str = "fp32",
    preset: str = "faces",
    samples: str | Path | None = None,
    with_features: bool = False,
    exporter: str = "auto",
    parity_clips: int = 2,
    atol: float | None = None,
    recons: str = "original",
    check_backends: Sequence[str] = ("onnxruntime",),
) -> ExportResult:
    """Export ``weights`` to ``out`` (ONNX): load, trace, clean, stamp the contract, save, verify.

    The keyword arguments are the fields of :class:`ExportOptions`. Raises
    :class:`~mmdet_deploy.errors.ParityError` after writing the model and its reports when the logits of
    ONNX Runtime (or of any of ``check_backends``: ``onnxruntime``, ``openvino``, ``openvino-bf16``) differ
    from PyTorch's by more than the tolerance (1e-4 for fp32).
    """
    options = ExportOptions(
        head=head, config=config, opset=opset, simplify=simplify, check=check, precision=precision, preset=preset,
        samples=Path(samples) if samples is not None else None, with_features=with_features, exporter=exporter,
        parity_clips=parity_clips, atol=atol, recons=recons,
        check_backends=tuple(check_backends),
    )
    require("onnx", "ONNX export")
    out = Path(out)
    check_output_path(out)
    start = time.perf_counter()
    model, contract = load_for_export(weights, options)
    proto, contract, notes = trace(model, contract, out, options)
    proto = clean(proto, options, notes)
    proto, contract = stamp_contract(proto, contract, out, options, notes)
    save_atomic(proto, out)
    result = describe_export(out, proto, contract, time.perf_counter() - start, notes)
    if options.check:
        verify(model, result, options)
    return result


def load_for_export(weights: str | Path, options: ExportOptions) -> tuple[Any, ModelContract]:
    """The prepared PyTorch model and the contract it will carry (before tracing fills in the exporter)."""
    from mmdet_deploy.model import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo-weights warning is re-issued below, once
        model = load_model(weights, head=options.head, config=options.config)
    info = model.checkpoint_info
    if info.demo:
        log.warning("%s: demo weights; the exported model's predictions are meaningless", weights)
    contract = ModelContract(
        head=options.head, preset=options.preset, recons=options.recons, config=model.cfg.name, frames=model.cfg.frames,
        image_size=model.cfg.image_size, precision="fp32", checkpoint_sha256=info.sha256, demo_weights=info.demo,
        opset=options.opset, versions=versions(),
        extra={"checkpoint": Path(weights).name, "with_features": options.with_features},
    )  # fmt: skip
    return model, contract


def trace(
    model: Any, contract: ModelContract, out: Path, options: ExportOptions
) -> tuple[Any, ModelContract, list[str]]:
    """Trace to an ``onnx.ModelProto``; the contract records the exporter used, the real opset and why a
    fallback happened. Returns the model, the contract and the notes for the user."""
    onnx = require("onnx")
    wrapper = model_wrapper(model, options.with_features)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.trace.onnx")
    notes: list[str] = []
    try:
        used, reason = trace_to_onnx(wrapper, contract, tmp, options.opset, options.exporter, options.with_features)
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    if reason:
        notes.append(f"dynamo exporter failed ({reason}); the TorchScript exporter produced the file")
    real_opset = next((imp.version for imp in proto.opset_import if imp.domain in ("", "ai.onnx")), options.opset)
    contract = contract.replace(
        exporter=used, opset=real_opset, extra={**contract.extra, "exporter_fallback_reason": reason}
    )
    return proto, contract, notes


def clean(proto: Any, options: ExportOptions, notes: list[str]) -> Any:
    """Drop unused initializers, run onnxslim (unless ``simplify`` is off) and the exact fusion rewrites."""
    removed = remove_unused_initializers(proto)
    if removed:
        log.info("dropped %d unused initializers", removed)
    if options.simplify:
        proto = _simplify(proto, notes)
    fused = gelu_for_fusion(proto)
    if fused:
        notes.append(f"gelu: {fused} erf-GELU subgraphs put in the operand order ONNX Runtime fuses")
    return proto


def stamp_contract(
    proto: Any, contract: ModelContract, out: Path, options: ExportOptions, notes: list[str]
) -> tuple[Any, ModelContract]:
    """Embed the contract, run ``onnx.checker``, and convert to mixed fp16 when asked."""
    onnx = require("onnx")
    contract.to_onnx(proto)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out}: onnx.checker rejected the exported graph: {exc}") from exc
    if options.precision == "fp16":
        proto, contract = _to_fp16(proto, contract, out, notes)
    return proto, contract


def describe_export(out: Path, proto: Any, contract: ModelContract, seconds: float, notes: list[str]) -> ExportResult:
    """The TensorRT operator report beside ``out``, and the :class:`ExportResult`."""
    trt_path, _ = artefact_paths(out)
    report = trt_compatibility(proto)
    write_report(report, trt_path)
    log.info("%s", format_report(report))
    return ExportResult(
        path=out, contract=contract, exporter=contract.exporter, opset=contract.opset, export_seconds=seconds,
        size_bytes=out.stat().st_size, node_count=len(proto.graph.node), trt_report=report, trt_report_path=trt_path,
        notes=notes,
    )  # fmt: skip


def verify(model: Any, result: ExportResult, options: ExportOptions) -> None:
    """Parity of the written file on each of ``options.check_backends`` against PyTorch; :class:`ParityError`
    beyond tolerance."""
    from mmdet_deploy.export.parity_check import check_parity

    _, parity_path = artefact_paths(result.path)
    result.parity = check_parity(model, result.path, result.contract, parity_path, clips=options.parity_clips,
                                 samples=options.samples, atol=options.atol, backends=options.check_backends)
    result.parity_path = parity_path


def _simplify(proto: Any, notes: list[str]) -> Any:
    """Optional onnxslim pass; keeps the unslimmed graph (and says so) when onnxslim is missing or fails."""
    try:
        onnxslim = require("onnxslim", "--simplify")
    except Exception as exc:
        notes.append(f"onnxslim skipped: {exc}")
        return proto
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(proto)
        notes.append(f"onnxslim: {len(proto.graph.node)} -> {len(slim.graph.node)} nodes")
        return slim
    except Exception as exc:  # onnxslim bugs must not lose the export
        notes.append(f"onnxslim failed ({type(exc).__name__}: {exc}); kept the unslimmed graph")
        return proto


def _to_fp16(proto: Any, contract: ModelContract, out: Path, notes: list[str]) -> tuple[Any, ModelContract]:
    """Precision-ready fp16 ONNX (norms, softmax and reductions kept fp32) via export.precision."""
    onnx = require("onnx")
    from mmdet_deploy.export.precision import convert_fp16

    src = out.with_name(f".{out.name}.{os.getpid()}.fp32.onnx")
    dst = out.with_name(f".{out.name}.{os.getpid()}.fp16.onnx")
    try:
        onnx.save(proto, str(src))
        convert_fp16(src, dst)
        converted = onnx.load(str(dst))
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    contract = contract.replace(precision="fp16")
    contract.to_onnx(converted)
    notes.append("converted to mixed fp16 (fp32 inputs/outputs; norms, softmax and reductions in fp32)")
    return converted, contract


__all__ = ["FEATURES", "LOGITS", "ExportOptions", "ExportResult", "artefact_paths", "example_inputs", "export_onnx"]
