"""The JSON sidecar ``FILE.engine.json`` written next to every engine, and the load-time check.

TensorRT engines are tied to the exact TensorRT version and to the GPU model they were built on. The
engine file itself stays standard (``trtexec --loadEngine`` still reads it); what it was built for is
recorded beside it: TensorRT version, GPU name and compute capability, precision, the batch profile,
the ONNX's sha256, the build options and the model contract. :func:`check_compatible` refuses an
engine built for another TensorRT or GPU, with the command that rebuilds it.

Standard library only (plus the contract), so the runtime can read sidecars without TensorRT.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import ContractError, EngineMismatchError

SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".json"
REQUIRED_KEYS = (
    "tensorrt_version", "gpu_name", "compute_capability", "precision", "profile", "onnx_sha256", "engine_sha256",
    "contract",
)  # fmt: skip


@dataclass(frozen=True)
class EngineSidecar:
    """What an engine was built from, for, and how."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor"
    precision: str  # fp32 | fp16 | int8
    profile: Mapping[str, int]  # {"min": 1, "opt": 1, "max": 4} over the batch axis
    onnx_sha256: str
    engine_sha256: str
    contract: Mapping[str, Any]
    onnx_path: str = ""
    strongly_typed: bool = False
    build_options: Mapping[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    sidecar_version: int = SIDECAR_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profile"] = dict(self.profile)
        d["contract"] = dict(self.contract)
        d["build_options"] = dict(self.build_options)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> EngineSidecar:
        if not isinstance(data, Mapping):
            raise ContractError(f"{source}: the engine sidecar is not a JSON object")
        version = int(data.get("sidecar_version", 0))
        if not 1 <= version <= SIDECAR_VERSION:
            raise ContractError(f"{source}: sidecar version {version} is not supported; rebuild the engine")
        names = {f.name for f in fields(cls)}
        missing = [n for n in REQUIRED_KEYS if n not in data]
        if missing:
            raise ContractError(f"{source}: the engine sidecar lacks {', '.join(missing)}; rebuild the engine")
        return cls(**{k: v for k, v in data.items() if k in names})

    def model_contract(self, source: str = "engine sidecar") -> ModelContract:
        """The model contract recorded at build time."""
        return ModelContract.from_sidecar(self, source)


def sidecar_path(engine: str | Path) -> Path:
    """``FILE.engine`` -> ``FILE.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def write_sidecar(engine: str | Path, sidecar: EngineSidecar) -> Path:
    """Write the sidecar of ``engine``; returns its path."""
    path = sidecar_path(engine)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_sidecar(engine: str | Path) -> EngineSidecar:
    """Read the sidecar of ``engine``; a clear error when it is missing or invalid."""
    path = sidecar_path(engine)
    if not Path(engine).is_file():
        raise ContractError(f"engine file not found: {engine}")
    if not path.is_file():
        raise ContractError(
            f"{engine}: no sidecar {path.name} next to the engine, so it is unknown what it was built for; "
            "rebuild it with `mmdet-export build` (which writes both files)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ContractError(f"{path}: unreadable engine sidecar ({exc}); rebuild the engine") from exc
    return EngineSidecar.from_dict(data, str(path))


def rebuild_command(sidecar: EngineSidecar, engine: str | Path) -> str:
    """The ``mmdet-export build`` command line that rebuilds ``engine`` on this machine."""
    opts = sidecar.build_options
    args = ["mmdet-export", "build", "--onnx", sidecar.onnx_path or "MODEL.onnx"]
    if sidecar.precision in ("fp16", "int8"):
        args.append(f"--{sidecar.precision}")
    if opts.get("calib_dir"):
        args += ["--calib", str(opts["calib_dir"])]
    prof = sidecar.profile
    args += ["--opt-batch", str(prof.get("opt", 1)), "--max-batch", str(prof.get("max", 1))]
    if opts.get("strict_fp32"):
        args.append("--strict-fp32")
    args += ["--out", str(engine)]
    return " ".join(shlex.quote(a) for a in args)


def check_compatible(
    sidecar: EngineSidecar,
    engine: str | Path,
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    strict_device: bool = True,
) -> list[str]:
    """Raise :class:`EngineMismatchError` when the engine was built for another TensorRT or GPU.

    A different GPU name with the same compute capability is refused too unless ``strict_device`` is
    false, in which case it is returned as a warning. Returns the warnings (empty when all matches).
    """
    problems, warnings = [], []
    if sidecar.tensorrt_version != tensorrt_version:
        problems.append(f"TensorRT {sidecar.tensorrt_version} (installed: {tensorrt_version})")
    if sidecar.compute_capability != compute_capability:
        problems.append(
            f"GPU {sidecar.gpu_name} with compute capability {sidecar.compute_capability} "
            f"(this GPU: {gpu_name}, {compute_capability})"
        )
    elif sidecar.gpu_name != gpu_name:
        msg = f"GPU {sidecar.gpu_name} (this GPU: {gpu_name}, same compute capability {compute_capability})"
        (problems if strict_device else warnings).append(msg)
    if problems:
        raise EngineMismatchError(
            f"{engine} was built for {'; '.join(problems)}. TensorRT engines only run on the TensorRT version "
            f"and GPU model they were built for; rebuild it here with: {rebuild_command(sidecar, engine)}"
        )
    return warnings
