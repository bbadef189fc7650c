"""Checkpoint -> ONNX with the embedded contract, a TensorRT compatibility report and proven parity.

Steps (each a small function): load and prepare the model -> trace with the dynamo exporter (fallback:
TorchScript exporter) -> clean (drop unused initializers, optional onnxslim, exact fusion-friendly
rewrites from ``graph_passes``) -> embed the contract ->
``onnx.checker`` -> write atomically -> TensorRT report -> parity vs PyTorch on ONNX Runtime (CPU).
"""

from __future__ import annotations

import errno
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy import __version__
from mmdet_deploy.contract import HEADS, LOGITS, OUTPUT_NAMES, PRESETS, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ExportError, UsageError, one_line
from mmdet_deploy.export.graph_passes import gelu_for_fusion
from mmdet_deploy.export.trt_op_report import format_report, trt_compatibility, write_report

log = logging.getLogger(__name__)

#: Extra output with the pooled (B, C) feature that the head classifies (for INT8 gates).
FEATURES = "features"
MIN_OPSET = 17  # LayerNormalization as one node


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


def _wrapper(model: Any, with_features: bool) -> Any:
    """A module whose forward takes the contract's inputs positionally and returns the contract's outputs."""
    torch = require("torch")

    class ClipWrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def outputs(self, feats: Any) -> tuple[Any, ...]:
            logits = self.model.head(feats)
            prob = torch.softmax(logits, dim=1)[:, 1]
            return (logits, prob, feats) if with_features else (logits, prob)

        def forward(self, original: Any, recons: Any) -> tuple[Any, ...]:
            return self.outputs(self.model.features(original, recons))

    class FusionWrapper(ClipWrapper):
        def forward(self, original: Any, recons: Any, clip_feature: Any, mm_tokens: Any) -> tuple[Any, ...]:  # type: ignore[override]
            return self.outputs(self.model.features(original, recons, clip_feature, mm_tokens))

    return (FusionWrapper if model.head_mode == "fusion" else ClipWrapper)().eval()


def example_inputs(contract: ModelContract, batch: int, seed: int = 0) -> dict[str, Any]:
    """Seeded standard-normal float32 inputs for every contract input (numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.concrete(batch), dtype=np.float32) for s in contract.inputs}


def trace_to_onnx(
    wrapper: Any, contract: ModelContract, tmp: Path, opset: int, exporter: str, with_features: bool = False
) -> tuple[str, str]:
    """Export ``wrapper`` to ``tmp``; returns (exporter used, fallback reason or "")."""
    torch = require("torch")
    names = list(contract.input_names)
    outputs = list(OUTPUT_NAMES) + ([FEATURES] if with_features else [])
    args = tuple(_torch_inputs(contract, 2))
    reason = ""
    if exporter in ("auto", "dynamo"):
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    wrapper,
                    args,
                    dynamo=True,
                    input_names=names,
                    output_names=outputs,
                    opset_version=opset,
                    dynamic_shapes={n: {0: batch} for n in names},
                    optimize=True,
                    verbose=False,
                )
                program.save(str(tmp))
            return "dynamo", ""
        except Exception as exc:  # the dynamo exporter raises many types; fall back and say why
            if exporter == "dynamo":
                raise ExportError(f"the dynamo exporter failed: {type(exc).__name__}: {exc}") from exc
            reason = f"{type(exc).__name__}: {one_line(exc)}"
            log.warning("dynamo exporter failed (%s); falling back to the TorchScript exporter", reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(tmp),
            dynamo=False,
            input_names=names,
            output_names=outputs,
            opset_version=opset,
            dynamic_axes={n: {0: "batch"} for n in names + outputs},
            do_constant_folding=True,
        )
    return "torchscript", reason


def _torch_inputs(contract: ModelContract, batch: int) -> list[Any]:
    torch = require("torch")
    return [torch.from_numpy(a) for a in example_inputs(contract, batch, seed=1234).values()]


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
) -> ExportResult:
    """Export ``weights`` to ``out`` (ONNX); see the module docstring for the steps.

    Raises :class:`~mmdet_deploy.errors.ParityError` after writing the model and its reports when the
    ONNX Runtime logits differ from PyTorch's by more than the precision's tolerance (1e-4 for fp32).
    """
    from mmdet_deploy.model import load_model

    onnx = require("onnx", "ONNX export")
    out = Path(out)
    if head not in HEADS:
        raise UsageError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if opset < MIN_OPSET:
        raise UsageError(f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    if precision not in ("fp32", "fp16"):
        raise UsageError(f"precision {precision!r}: export writes fp32 or fp16 ONNX; INT8 comes from `quantize`")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UsageError(f"unknown exporter {exporter!r}; choose auto, dynamo or torchscript")
    check_output_path(out)

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo-weights warning is re-issued below, once
        model = load_model(weights, head=head, config=config)
    info = model.checkpoint_info
    if info.demo:
        log.warning("%s: demo weights; the exported model's predictions are meaningless", weights)
    contract = ModelContract(
        head=head,
        preset=preset,
        config=model.cfg.name,
        frames=model.cfg.frames,
        image_size=model.cfg.image_size,
        precision="fp32",
        checkpoint_sha256=info.sha256,
        demo_weights=info.demo,
        opset=opset,
        versions=versions(),
        extra={"checkpoint": Path(weights).name, "with_features": with_features},
    )
    wrapper = _wrapper(model, with_features)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.trace.onnx")
    notes: list[str] = []
    try:
        used, reason = trace_to_onnx(wrapper, contract, tmp, opset, exporter, with_features)
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    if reason:
        notes.append(f"dynamo exporter failed ({reason}); the TorchScript exporter produced the file")
    real_opset = next((imp.version for imp in proto.opset_import if imp.domain in ("", "ai.onnx")), opset)
    removed = remove_unused_initializers(proto)
    if removed:
        log.info("dropped %d unused initializers", removed)
    if simplify:
        proto = _simplify(proto, notes)
    fused = gelu_for_fusion(proto)
    if fused:
        notes.append(f"gelu: {fused} erf-GELU subgraphs put in the operand order ONNX Runtime fuses")
    contract = contract.replace(
        exporter=used, opset=real_opset, extra={**contract.extra, "exporter_fallback_reason": reason}
    )
    contract.to_onnx(proto)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out}: onnx.checker rejected the exported graph: {exc}") from exc
    if precision == "fp16":
        proto, contract = _to_fp16(proto, contract, out, notes)
    save_atomic(proto, out)
    seconds = time.perf_counter() - start

    trt_path, parity_path = artefact_paths(out)
    report = trt_compatibility(proto)
    write_report(report, trt_path)
    log.info("%s", format_report(report))
    result = ExportResult(
        path=out,
        contract=contract,
        exporter=used,
        opset=real_opset,
        export_seconds=seconds,
        size_bytes=out.stat().st_size,
        node_count=len(proto.graph.node),
        trt_report=report,
        trt_report_path=trt_path,
        notes=notes,
    )
    if check:
        from mmdet_deploy.export.parity_check import check_parity

        result.parity = check_parity(model, out, contract, parity_path, clips=parity_clips, samples=samples, atol=atol)
        result.parity_path = parity_path
    return result


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


__all__ = ["FEATURES", "LOGITS", "ExportResult", "artefact_paths", "example_inputs", "export_onnx"]
