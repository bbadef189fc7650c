"""The capability table: which backend x precision x device combinations exist, and what each needs.

The table is data (house style, point 7): the benchmark matrix, the CLI's ``--rows`` validation and the
tests all read :data:`CAPABILITIES`. :func:`availability` decides, for one row and one probed
:class:`Environment`, whether the row can run here, and if not, why (``unavailable: tensorrt not
installed``). A row that cannot run still appears in the report with that status (Ultralytics-style).

Requirements are short strings:

- ``module:NAME``: the Python module ``NAME`` is importable;
- ``cuda``: a CUDA device is visible;
- ``ort-provider:NAME``: ONNX Runtime offers the execution provider ``NAME``;
- ``cxx``: a C++ compiler is on ``PATH`` (TorchInductor on CPU);
- ``flag:NAME``: the user enabled the optional row family ``NAME`` (``--compile``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mmdet_deploy.benchmarks.status import RowStatus, Status
from mmdet_deploy.deps import available
from mmdet_deploy.errors import UsageError

#: Artefact kinds a row runs from.
ARTEFACT_KINDS = (
    "checkpoint", "onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-nncf", "engine-fp32", "engine-fp16",
    "engine-int8",
)

#: What building each artefact kind needs (beyond the checkpoint), and which artefact it is built from.
ARTEFACT_NEEDS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("module:torch",),
    "onnx-fp32": ("module:torch", "module:onnx", "module:onnxscript"),
    "onnx-fp16": ("module:onnx",),
    "onnx-int8": ("module:onnx", "module:onnxruntime"),
    "onnx-int8-nncf": ("module:onnx", "module:onnxruntime", "module:nncf"),
    "engine-fp32": ("module:tensorrt", "cuda"),
    "engine-fp16": ("module:tensorrt", "cuda"),
    "engine-int8": ("module:tensorrt", "cuda"),
}
ARTEFACT_SOURCE: dict[str, str | None] = {
    "checkpoint": None,
    "onnx-fp32": "checkpoint",
    "onnx-fp16": "onnx-fp32",
    "onnx-int8": "onnx-fp32",
    "onnx-int8-nncf": "onnx-fp32",
    "engine-fp32": "onnx-fp32",
    "engine-fp16": "onnx-fp16",
    "engine-int8": "onnx-int8",
}


@dataclass(frozen=True)
class Capability:
    """One row of the model matrix.

    ``name`` with ``device`` is the row's unique key; ``backend`` is a registry name of
    :func:`mmdet_deploy.runtime.backends.create_backend`; ``options`` are passed to it.
    """

    name: str
    label: str
    backend: str
    precision: str
    device: str
    artefact: str
    needs: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique row key, ``name@device`` (e.g. ``ort-fp32@cpu``)."""
        return f"{self.name}@{self.device}"

    def all_needs(self) -> tuple[str, ...]:
        """The row's own needs plus those of its artefact and of every artefact it is built from."""
        needs: list[str] = list(self.needs)
        kind: str | None = self.artefact
        while kind is not None:
            needs.extend(ARTEFACT_NEEDS[kind])
            kind = ARTEFACT_SOURCE[kind]
        return tuple(dict.fromkeys(needs))


_CPU = ("CPUExecutionProvider",)
_CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")
_TRT_EP = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

#: Every combination the benchmark knows, in report order. PyTorch always uses fused attention (SDPA).
CAPABILITIES: tuple[Capability, ...] = (
    Capability("torch-eager-fp32", "PyTorch eager fp32", "torch", "fp32", "cpu", "checkpoint"),
    Capability("torch-compile-fp32", "PyTorch torch.compile fp32", "torch", "fp32", "cpu", "checkpoint",
               needs=("flag:compile", "cxx"), options={"compile": True}),
    Capability("ort-fp32", "ONNX Runtime CPU fp32", "onnxruntime", "fp32", "cpu", "onnx-fp32",
               needs=("module:onnxruntime",), options={"providers": _CPU}),
    Capability("ort-int8", "ONNX Runtime CPU INT8 (QDQ MatMul/Conv)", "onnxruntime", "int8", "cpu", "onnx-int8",
               needs=("module:onnxruntime",), options={"providers": _CPU}),
    # OpenVINO reads the same ONNX files; the INT8 rows run their float parts in bf16 (the fastest INT8 path).
    Capability("ov-fp32", "OpenVINO CPU fp32 (f32 pinned)", "openvino", "fp32", "cpu", "onnx-fp32",
               needs=("module:openvino",), options={"precision": "fp32"}),
    Capability("ov-bf16", "OpenVINO CPU bf16", "openvino", "bf16", "cpu", "onnx-fp32",
               needs=("module:openvino",), options={"precision": "bf16"}),
    Capability("ov-int8", "OpenVINO CPU INT8 (ORT Q/DQ file, bf16 elsewhere)", "openvino", "int8", "cpu",
               "onnx-int8", needs=("module:openvino",), options={"precision": "bf16"}),
    Capability("ov-int8-nncf", "OpenVINO CPU INT8 (NNCF Q/DQ file, bf16 elsewhere)", "openvino", "int8", "cpu",
               "onnx-int8-nncf", needs=("module:openvino",), options={"precision": "bf16"}),
    Capability("torch-eager-fp32", "PyTorch eager fp32", "torch", "fp32", "cuda", "checkpoint",
               needs=("cuda",)),
    Capability("torch-fp16-graphs", "PyTorch fp16 + SDPA + CUDA graphs", "torch", "fp16", "cuda", "checkpoint",
               needs=("cuda",), options={"cuda_graphs": True}),
    Capability("torch-bf16-graphs", "PyTorch bf16 + SDPA + CUDA graphs", "torch", "bf16", "cuda", "checkpoint",
               needs=("cuda",), options={"cuda_graphs": True}),
    Capability("torch-compile-fp16", "PyTorch torch.compile fp16", "torch", "fp16", "cuda", "checkpoint",
               needs=("cuda", "flag:compile", "module:triton"), options={"compile": True}),
    Capability("ort-cuda-fp32", "ONNX Runtime CUDA EP fp32", "onnxruntime", "fp32", "cuda", "onnx-fp32",
               needs=("cuda", "ort-provider:CUDAExecutionProvider"), options={"providers": _CUDA}),
    Capability("ort-cuda-fp16", "ONNX Runtime CUDA EP fp16", "onnxruntime", "fp16", "cuda", "onnx-fp16",
               needs=("cuda", "ort-provider:CUDAExecutionProvider"), options={"providers": _CUDA}),
    Capability("ort-trt-fp16", "ONNX Runtime TensorRT EP fp16", "onnxruntime", "fp16", "cuda", "onnx-fp16",
               needs=("cuda", "module:tensorrt", "ort-provider:TensorrtExecutionProvider"),
               options={"providers": _TRT_EP, "trt_fp16": True}),
    Capability("trt-fp32", "TensorRT engine fp32", "tensorrt", "fp32", "cuda", "engine-fp32"),
    Capability("trt-fp16", "TensorRT engine fp16", "tensorrt", "fp16", "cuda", "engine-fp16"),
    Capability("trt-int8", "TensorRT engine INT8", "tensorrt", "int8", "cuda", "engine-int8"),
)

#: Key of the fidelity reference row on each device (PyTorch eager fp32).
REFERENCE = {"cpu": "torch-eager-fp32@cpu", "cuda": "torch-eager-fp32@cuda"}

#: Why a requirement fails, by requirement prefix or exact string.
_REASONS = {
    "cuda": "no CUDA device",
    "cxx": "no C++ compiler on PATH (torch.compile on CPU needs one)",
}


@dataclass(frozen=True)
class Environment:
    """What this machine offers, probed once (or built by hand in tests)."""

    modules: frozenset[str] = frozenset()
    cuda_devices: int = 0
    ort_providers: tuple[str, ...] = ()
    cxx: bool = False
    flags: frozenset[str] = frozenset()

    def check(self, need: str) -> str | None:
        """None when ``need`` is met, else the reason it is not (without the status prefix)."""
        kind, _, arg = need.partition(":")
        if kind == "module":
            return None if arg in self.modules else f"{arg} not installed"
        if kind == "ort-provider":
            if arg in self.ort_providers:
                return None
            return f"onnxruntime has no {arg} (it needs the onnxruntime-gpu build)"
        if kind == "flag":
            return None if arg in self.flags else f"off by default; enable with --{arg}"
        if need == "cuda":
            return None if self.cuda_devices > 0 else _REASONS["cuda"]
        if need == "cxx":
            return None if self.cxx else _REASONS["cxx"]
        raise ValueError(f"unknown requirement {need!r}")  # a bug in the table, not user input


#: Modules whose presence the probe records.
PROBED_MODULES = ("torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "triton", "psutil", "matplotlib",
                  "openvino", "nncf")


def probe_environment(flags: Iterable[str] = ()) -> Environment:
    """Probe this machine: importable modules, CUDA devices, ONNX Runtime providers, a C++ compiler."""
    modules = frozenset(m for m in PROBED_MODULES if available(m))
    cuda = 0
    if "torch" in modules:
        import torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    providers: tuple[str, ...] = ()
    if "onnxruntime" in modules:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    cxx = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    return Environment(modules, cuda, providers, cxx, frozenset(flags))


@dataclass(frozen=True)
class Availability:
    """Whether a row runs here: ``state`` is ``AVAILABLE``, ``UNAVAILABLE`` or ``SKIPPED`` with the reason."""

    runnable: bool
    state: RowStatus

    @property
    def status(self) -> str:
        """The report's text: ``available``, ``unavailable: ...`` or ``skipped: ...``."""
        return self.state.text


def availability(row: Capability, env: Environment, device: str) -> Availability:
    """Decide whether ``row`` runs in this environment when the user benchmarks ``device``.

    An unmet hardware or software requirement makes the row ``unavailable`` with the first reason found
    (reported even for the other device, so a CPU run still says why the GPU rows cannot run here);
    a runnable row of another device, or one behind a flag the user did not give, is ``skipped``.
    """
    needs = row.all_needs()
    for need in needs:
        reason = None if need.startswith("flag:") else env.check(need)
        if reason:
            return Availability(False, RowStatus(Status.UNAVAILABLE, reason))
    if row.device != device:
        return Availability(False, RowStatus(Status.SKIPPED, f"--device {device}"))
    for need in needs:
        reason = env.check(need) if need.startswith("flag:") else None
        if reason:
            return Availability(False, RowStatus(Status.SKIPPED, reason))
    return Availability(True, RowStatus(Status.AVAILABLE))


def select_rows(names: Iterable[str] | None, table: tuple[Capability, ...] = CAPABILITIES) -> tuple[Capability, ...]:
    """Rows whose ``name`` or ``key`` is in ``names`` (all rows for None), in table order.

    Raises :class:`UsageError` naming the unknown entries.
    """
    if names is None:
        return table
    wanted = [n.strip() for n in names if n.strip()]
    known = {r.name for r in table} | {r.key for r in table}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UsageError(f"unknown benchmark rows {unknown}; choose from {', '.join(sorted({r.name for r in table}))}")
    return tuple(r for r in table if r.name in wanted or r.key in wanted)
