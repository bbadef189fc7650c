"""ONNX -> TensorRT engine and its sidecar, in small steps (Polygraphy-style ``XFromY`` functions).

``build_engine(onnx, out, BuildOptions(...))`` checks the inputs, plans the precision for the installed
TensorRT major (:mod:`.compat`), parses the ONNX (listing every parser error), adds one optimisation
profile over the batch axis for every input (shapes from the model contract), applies the precision
plan, reads and writes the timing cache, builds, and writes ``FILE.engine`` plus ``FILE.engine.json``.

Unverified on hardware in this repository: written against the documented TensorRT 10.x/11.x Python
API and tested against a recording fake of the ``tensorrt`` module (``tests/fake_tensorrt.py``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import ContractError, ExportError, UsageError
from mmdet_deploy.fileio import sha256_file
from mmdet_deploy.tensorrt import compat
from mmdet_deploy.tensorrt.gpu import GpuInfo, select_device
from mmdet_deploy.tensorrt.sidecar import EngineSidecar, write_sidecar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    """Engine build options. Batch sizes bound the one optimisation profile (``min <= opt <= max``)."""

    precision: str = "fp32"  # fp32 | fp16 | int8
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 4
    workspace_gb: float = 4.0  # builder scratch memory limit, GiB
    opt_level: int = 3  # builder_optimization_level, 0-5 (TensorRT's default 3)
    timing_cache: Path | None = None  # read when present, always written back
    calib_dir: Path | None = None  # INT8 calibration frames (TensorRT 10, implicit quantisation)
    calib_cache: Path | None = None  # default: OUT.calib.cache
    strict_fp32: bool = False  # clear TF32 (exact fp32 parity checks)
    device: int = 0  # CUDA device index

    def validate(self) -> None:
        """Raise :class:`UsageError` for inconsistent options (before anything heavy runs)."""
        if self.precision not in compat.BUILD_PRECISIONS:
            raise UsageError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(compat.BUILD_PRECISIONS)}"
            )
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UsageError(
                "batch sizes must satisfy 1 <= min <= opt <= max "
                f"(got {self.min_batch}/{self.opt_batch}/{self.max_batch})"
            )
        if not 0 <= self.opt_level <= 5:
            raise UsageError(f"--opt-level must be 0..5 (got {self.opt_level})")
        if not self.workspace_gb > 0:
            raise UsageError(f"--workspace must be > 0 GiB (got {self.workspace_gb})")
        if self.calib_dir is not None and self.precision != "int8":
            raise UsageError("--calib is only used with --int8")
        if self.calib_dir is not None and not Path(self.calib_dir).is_dir():
            raise UsageError(f"calibration directory not found: {self.calib_dir}")

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_engine` wrote."""

    engine: Path
    sidecar: Path
    info: EngineSidecar
    pinned_layers: tuple[str, ...]
    seconds: float


def read_onnx_facts(onnx_path: Path) -> tuple[ModelContract, str]:
    """The embedded contract and the precision kind (fp32 / fp16 / int8) of an ONNX file."""
    onnx = require("onnx", "reading the ONNX model to build")
    from mmdet_deploy.export.precision import onnx_precision

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ExportError(f"{onnx_path}: not a readable ONNX model ({exc})") from exc
    contract = ModelContract.from_onnx(model, str(onnx_path))
    return contract, onnx_precision(model)


def network_from_onnx(trt: ModuleType, builder: Any, logger: Any, onnx_path: Path, flags: int) -> tuple[Any, Any]:
    """Parse ``onnx_path`` into a new network; every parser error is listed in the exception."""
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        listing = "\n  ".join(errors) or "(the parser reported no details)"
        raise ExportError(f"TensorRT could not parse {onnx_path} ({len(errors)} error(s)):\n  {listing}")
    return network, parser


def _parser_error(err: Any) -> str:
    parts = [str(err.desc())]
    node_name = getattr(err, "node_name", None)
    where = node_name() if callable(node_name) else ""
    op = getattr(err, "node_operator", None)
    op_text = op() if callable(op) else ""
    if where or op_text:
        parts.append(f"[node {err.node()} {where} {op_text}]".replace("  ", " "))
    else:
        parts.append(f"[node {err.node()}]")
    return f"{err.code()}: {' '.join(parts)}"


def profile_from_contract(builder: Any, network: Any, contract: ModelContract, options: BuildOptions) -> Any:
    """One optimisation profile over the batch axis for every network input, checked against the contract."""
    specs = {s.name: s for s in contract.inputs}
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(specs):
        raise ContractError(f"the ONNX inputs {names} do not match its contract's inputs {list(specs)}")
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        spec = specs[tensor.name]
        declared = tuple(int(d) for d in tensor.shape)
        expected = spec.concrete(1)
        fixed_ok = len(declared) == len(expected) and all(
            d in (-1, e) for d, e in zip(declared[1:], expected[1:], strict=True)
        )
        if not fixed_ok:
            raise ContractError(
                f"input {tensor.name} has shape {declared} in the ONNX but {spec.shape} in its contract"
            )
        profile.set_shape(
            tensor.name,
            spec.concrete(options.min_batch),
            spec.concrete(options.opt_batch),
            spec.concrete(options.max_batch),
        )
    return profile


def load_timing_cache(config: Any, path: Path | None) -> Any:
    """Attach a timing cache to ``config``: the file's content when it exists (and matches), else empty."""
    data = b""
    if path is not None and Path(path).is_file():
        data = Path(path).read_bytes()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        log.warning("timing cache %s is from another TensorRT version or GPU; starting a fresh one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def save_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(memoryview(cache.serialize())))


def _calibrator(trt: ModuleType, contract: ModelContract, options: BuildOptions, out: Path) -> Any:
    """The TensorRT 10 entropy calibrator over ``--calib`` (from :mod:`mmdet_deploy.calibration.trt_calibrator`)."""
    try:
        from mmdet_deploy.calibration.trt_calibrator import make_entropy_calibrator
    except ImportError as exc:
        raise ExportError(f"INT8 calibration is not available in this installation ({exc})") from exc
    if options.calib_dir is None:
        raise UsageError("--int8 from a float ONNX needs --calib DIR")
    cache = options.calib_cache or out.with_name(out.name + ".calib.cache")
    return make_entropy_calibrator(
        trt, Path(options.calib_dir), Path(cache), contract.input_names, options.opt_batch, contract=contract
    )


def _release(calibrator: Any) -> None:
    """Free the calibrator's device buffers (its ``core.close()``), if it has any."""
    close = getattr(getattr(calibrator, "core", None), "close", None)
    if callable(close):
        close()


def _check_paths(onnx_path: Path, out: Path) -> None:
    if not onnx_path.is_file():
        raise UsageError(f"ONNX file not found: {onnx_path}")
    if out.is_dir():
        raise UsageError(f"--out must be a file path, not a directory: {out}")
    if out.resolve() == onnx_path.resolve():
        raise UsageError("--out would overwrite the ONNX model")


def build_engine(onnx_path: str | Path, out: str | Path, options: BuildOptions | None = None) -> BuildResult:
    """Build ``out`` (a TensorRT engine) and ``out.json`` (its sidecar) from ``onnx_path``."""
    options = options or BuildOptions()
    onnx_path, out = Path(onnx_path), Path(out)
    options.validate()
    _check_paths(onnx_path, out)
    contract, onnx_kind = read_onnx_facts(onnx_path)
    trt = compat.load_tensorrt()
    major = compat.tensorrt_major(trt)
    plan = compat.plan_precision(
        major, options.precision, onnx_kind, strict_fp32=options.strict_fp32, calib=options.calib_dir is not None
    )
    gpu: GpuInfo = select_device(options.device)
    start = time.perf_counter()
    logger = compat.make_logger(trt)
    builder = trt.Builder(logger)
    compat.check_gpu_precision(trt, builder, plan, gpu.name, gpu.compute_capability)
    network, _parser = network_from_onnx(trt, builder, logger, onnx_path, compat.network_flags(trt, plan))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    config.builder_optimization_level = options.opt_level
    profile = profile_from_contract(builder, network, contract, options)
    config.add_optimization_profile(profile)
    pinned = compat.apply_plan(trt, network, config, plan)
    calibrator = _calibrator(trt, contract, options, out) if plan.calibrator else None
    if calibrator is not None:
        compat.set_calibrator(trt, config, calibrator, profile, plan)
    load_timing_cache(config, options.timing_cache)

    log.info("building %s engine from %s on %s (TensorRT %s)", plan.precision, onnx_path, gpu.name, trt.__version__)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        _release(calibrator)
    if serialized is None:
        details = "; ".join(logger.errors[-5:]) or "see the TensorRT log above"
        raise ExportError(f"TensorRT failed to build the engine from {onnx_path}: {details}")
    save_timing_cache(config, options.timing_cache)

    data = memoryview(serialized)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    tmp.replace(out)
    versions = dict(contract.versions)
    versions["tensorrt"] = str(trt.__version__)
    info = EngineSidecar(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.capability,
        precision=plan.precision,
        profile={"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
        onnx_sha256=sha256_file(onnx_path),
        engine_sha256=hashlib.sha256(data).hexdigest(),
        contract=contract.replace(precision=plan.precision, versions=versions).to_dict(),
        onnx_path=str(onnx_path),
        strongly_typed=plan.strongly_typed,
        build_options={**options.as_dict(), "onnx_precision": onnx_kind, "pinned_fp32_layers": len(pinned)},
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    side = write_sidecar(out, info)
    seconds = time.perf_counter() - start
    log.info("wrote %s (%d bytes) and %s in %.1f s", out, len(data), side.name, seconds)
    return BuildResult(engine=out, sidecar=side, info=info, pinned_layers=tuple(pinned), seconds=seconds)
