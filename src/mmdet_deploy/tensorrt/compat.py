"""Every TensorRT version difference, in one place, keyed on the installed major version.

TensorRT 10.x (JetPack 6 ships 10.3) still has weakly typed networks: ``BuilderFlag.FP16/INT8``,
``OBEY_PRECISION_CONSTRAINTS``, per-layer precision, ``platform_has_fast_fp16/int8`` and the INT8
calibrators (deprecated since 10.12 and 10.1). TensorRT 11 removed all of them: networks are always
strongly typed and reduced precision must be written into the ONNX (fp16 from
:func:`mmdet_deploy.export.precision.convert_fp16`, INT8 as explicit Q/DQ from ``mmdet-export
quantize``). The precision-ready path (strongly typed network from an fp16 or Q/DQ ONNX) is used on
both majors whenever the ONNX already carries its precision.

The policy, as a pure function (:func:`plan_precision`), so that it is testable without TensorRT:

=============  ================  =====================================================================
requested      ONNX              TensorRT 10.x                          TensorRT >= 11
=============  ================  =====================================================================
fp32           fp32              weakly typed, no precision flag        strongly typed
fp16           fp32              FP16 flag, norms/softmax/reductions    error: export with
                                 pinned fp32 (OBEY_PRECISION_...)       ``--precision fp16``
fp16           fp16 (mixed)      strongly typed                         strongly typed
int8           fp32 + --calib    INT8+FP16 flags, entropy calibrator,   error: needs a Q/DQ ONNX
                                 norms pinned fp32
int8           Q/DQ              INT8+FP16 flags (explicit quant.),     strongly typed
                                 norms pinned fp32
fp32           fp16 or Q/DQ      error (the ONNX decides the precision)
=============  ================  =====================================================================

``strict_fp32`` clears ``BuilderFlag.TF32`` (on by default) for exact fp32 parity checks.
Unverified on hardware here: no TensorRT can be installed on the development machines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mmdet_deploy.deps import install_hint, require
from mmdet_deploy.errors import ExportError, MissingDependencyError, UsageError

log = logging.getLogger(__name__)

MIN_MAJOR = 10
#: Newest major this code was written against; newer ones are treated like it, with a warning.
NEWEST_KNOWN_MAJOR = 11
BUILD_PRECISIONS = ("fp32", "fp16", "int8")
#: Minimum compute capability for fast fp16 / int8 (used where ``platform_has_fast_*`` no longer exists).
MIN_CC = {"fp16": (5, 3), "int8": (6, 1)}


def load_tensorrt() -> ModuleType:
    """Import ``tensorrt`` (>= 10) or raise an error that names the extra to install."""
    trt = require("tensorrt", "building or running TensorRT engines")
    major = tensorrt_major(trt)
    if major < MIN_MAJOR:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} is too old: mmdet-deploy needs TensorRT >= {MIN_MAJOR}; "
            f"upgrade with: {install_hint('tensorrt')}"
        )
    if major > NEWEST_KNOWN_MAJOR:
        newest = NEWEST_KNOWN_MAJOR
        log.warning("TensorRT %s is newer than %d.x; treating it like %d.x", trt.__version__, newest, newest)
    return trt


def tensorrt_major(trt: ModuleType) -> int:
    """Major version of an imported ``tensorrt`` module."""
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError) as exc:
        raise MissingDependencyError(f"cannot read the TensorRT version ({exc}); reinstall TensorRT") from exc


def make_logger(trt: ModuleType, name: str = "mmdet_deploy.tensorrt") -> Any:
    """A ``trt.ILogger`` that forwards to Python logging and keeps every error message in ``.errors``."""
    pylog = logging.getLogger(name)
    sev = trt.ILogger.Severity
    levels = {
        sev.INTERNAL_ERROR: logging.ERROR,
        sev.ERROR: logging.ERROR,
        sev.WARNING: logging.WARNING,
        sev.INFO: logging.DEBUG,
        sev.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(str(msg))
            pylog.log(level, "%s", msg)

    return _Logger()


@dataclass(frozen=True)
class PrecisionPlan:
    """How one engine is built: network typing, flags to set/clear, layer pinning, calibration."""

    major: int
    precision: str
    strongly_typed: bool
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    pin_fp32_layers: bool = False
    calibrator: bool = False


def plan_precision(
    major: int, requested: str, onnx_kind: str, *, strict_fp32: bool = False, calib: bool = False
) -> PrecisionPlan:
    """The build plan for ``requested`` precision from an ONNX of ``onnx_kind`` on TensorRT ``major``.

    ``onnx_kind`` is what :func:`mmdet_deploy.export.precision.onnx_precision` reports: ``fp32``,
    ``fp16`` (mixed, precision-ready) or ``int8`` (Q/DQ). Raises :class:`UsageError` for combinations
    that cannot be built, with the command that fixes them.
    """
    if requested not in BUILD_PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}; choose one of {', '.join(BUILD_PRECISIONS)}")
    if onnx_kind not in BUILD_PRECISIONS:
        raise UsageError(f"unknown ONNX precision {onnx_kind!r}")
    if major < MIN_MAJOR:
        raise UsageError(f"TensorRT {major}.x is not supported; install TensorRT >= {MIN_MAJOR}")
    clear = ("TF32",) if strict_fp32 else ()
    if calib and requested != "int8":
        raise UsageError("--calib is only used with --int8")
    if requested == "fp32" and onnx_kind != "fp32":
        raise UsageError(
            f"this ONNX is already {onnx_kind}: its precision is in the graph, so it cannot build an fp32 engine; "
            f"build with --{onnx_kind}, or use the fp32 export for an fp32 engine"
        )
    if requested == "fp16" and onnx_kind == "int8":
        raise UsageError("this ONNX is INT8 (Q/DQ): build it with --int8, or use the fp32/fp16 export for --fp16")
    if requested == "int8" and onnx_kind == "int8" and calib:
        raise UsageError("this ONNX already carries its INT8 scales (Q/DQ); drop --calib")

    if major >= 11:
        if requested == "fp16" and onnx_kind == "fp32":
            raise UsageError(
                f"TensorRT {major}.x builds strongly typed networks only, so fp16 must be written into the ONNX: "
                "export it with `mmdet-export onnx --precision fp16` (or convert this file with "
                "mmdet_deploy.export.precision.convert_fp16) and build that file"
            )
        if requested == "int8" and onnx_kind != "int8":
            raise UsageError(
                f"TensorRT {major}.x has no INT8 calibrators: INT8 needs an explicitly quantised (Q/DQ) ONNX; "
                "make one with `mmdet-export quantize` and build that file"
            )
        return PrecisionPlan(major, requested, strongly_typed=True, clear_flags=clear)

    # TensorRT 10.x
    if requested == "fp32":
        return PrecisionPlan(major, "fp32", strongly_typed=False, clear_flags=clear)
    if requested == "fp16":
        if onnx_kind == "fp16":
            return PrecisionPlan(major, "fp16", strongly_typed=True, clear_flags=clear)
        return PrecisionPlan(
            major, "fp16", strongly_typed=False, set_flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"),
            clear_flags=clear, pin_fp32_layers=True,
        )  # fmt: skip
    if onnx_kind != "int8" and not calib:
        raise UsageError(
            "--int8 from a float ONNX needs calibration frames on TensorRT 10: pass --calib DIR "
            "(or build a Q/DQ ONNX from `mmdet-export quantize`)"
        )
    return PrecisionPlan(
        major, "int8", strongly_typed=False, set_flags=("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"),
        clear_flags=clear, pin_fp32_layers=True, calibrator=onnx_kind != "int8",
    )  # fmt: skip


def check_gpu_precision(trt: ModuleType, builder: Any, plan: PrecisionPlan, gpu_name: str, cc: tuple[int, int]) -> None:
    """Refuse early when the GPU has no fast path for the planned reduced precision."""
    if plan.precision not in MIN_CC:
        return
    if plan.major < 11:  # the builder can still tell us
        attr = "platform_has_fast_fp16" if plan.precision == "fp16" else "platform_has_fast_int8"
        fast = bool(getattr(builder, attr, True))
    else:  # TensorRT 11 removed platform_has_fast_*: judge by compute capability
        fast = tuple(cc) >= MIN_CC[plan.precision]
    if not fast:
        raise ExportError(
            f"the GPU {gpu_name} (compute capability {cc[0]}.{cc[1]}) has no fast {plan.precision}; "
            "build an fp32 engine instead (drop --fp16/--int8)"
        )


def network_flags(trt: ModuleType, plan: PrecisionPlan) -> int:
    """``create_network`` flags: STRONGLY_TYPED when planned (accepted, and implied, on TensorRT 11)."""
    if not plan.strongly_typed:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        if plan.major >= 11:
            return 0  # every network is strongly typed
        raise ExportError(f"TensorRT {trt.__version__} has no strongly typed networks; upgrade to TensorRT >= 10")
    return 1 << int(flag)


#: TensorRT layer types pinned to fp32 on weakly typed builds (norms, softmax, reductions).
PINNED_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
#: Unary / elementwise operations pinned too (range explosions: a decomposed LayerNorm's Pow).
PINNED_UNARY_OPS = ("EXP", "LOG", "SQRT", "RECIP")
PINNED_ELEMENTWISE_OPS = ("POW",)


def apply_plan(trt: ModuleType, network: Any, config: Any, plan: PrecisionPlan) -> list[str]:
    """Set/clear builder flags and pin risky layers to fp32; returns the names of the pinned layers."""
    for name in plan.set_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise ExportError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; cannot build {plan.precision}")
        config.set_flag(flag)
    for name in plan.clear_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is not None:
            config.clear_flag(flag)
    if not plan.pin_fp32_layers:
        return []
    return _pin_layers(trt, network)


def _pin_layers(trt: ModuleType, network: Any) -> list[str]:
    pinned_types = {getattr(trt.LayerType, t) for t in PINNED_LAYER_TYPES if hasattr(trt.LayerType, t)}
    unary = {getattr(trt.UnaryOperation, o) for o in PINNED_UNARY_OPS if hasattr(trt.UnaryOperation, o)}
    elementwise = {getattr(trt.ElementWiseOperation, o) for o in PINNED_ELEMENTWISE_OPS}
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        risky = layer.type in pinned_types
        if layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer  # downcast to read .op (the pattern Polygraphy uses)
            risky = layer.op in unary
        elif layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer
            risky = layer.op in elementwise
        if not risky:
            continue
        float_outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype == trt.float32]
        if not float_outputs:
            continue
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def set_calibrator(trt: ModuleType, config: Any, calibrator: Any, profile: Any, plan: PrecisionPlan) -> None:
    """Attach an INT8 calibrator (TensorRT 10 only; TensorRT 11 removed calibrators)."""
    if plan.major >= 11:
        raise UsageError(
            f"TensorRT {plan.major}.x has no INT8 calibrators; build a Q/DQ ONNX with `mmdet-export quantize`"
        )
    config.int8_calibrator = calibrator
    config.set_calibration_profile(profile)
