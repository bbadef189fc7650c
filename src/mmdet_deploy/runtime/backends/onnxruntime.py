"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, the contract read from the model.

The GPU build of ONNX Runtime silently falls back to the CPU provider when CUDA or TensorRT libraries are
missing; this backend checks the providers the session actually uses and raises :class:`BackendError` when
the requested one is not among them, so a "GPU" benchmark can never be a CPU run in disguise.

Options (keyword arguments of the constructor, all optional):

* ``providers``: execution providers in priority order, short names (``tensorrt``, ``cuda``, ``cpu``) or
  ORT names; default from ``device``: ``cpu`` -> CPU; ``cuda[:N]`` -> CUDA then CPU.
* ``device_id``: GPU index (also accepted as ``device="cuda:N"``).
* ``intra_op_threads`` / ``inter_op_threads``: ORT thread pools (0 = ORT's default, one per core).
* ``allow_spinning``: the intra-op threads spin-wait for work between operators (ORT's default, True). False
  frees the cores for other threads of the process: ``mmdet-run`` turns it off (``--spin-wait`` turns it back
  on), since decoding and face detection run beside inference.
* ``graph_optimization``: ``disable``, ``basic``, ``extended`` or ``all`` (default).
* ``trt_fp16``, ``trt_engine_cache`` (a folder), ``trt_workspace_gb``: TensorRT provider options.
* ``provider_options``: a mapping provider name -> dict of extra ORT options, merged last.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import LOGITS, PROB_FAKE, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, ContractError, UsageError, one_line
from mmdet_deploy.runtime.backends.base import Backend, check_signature

logger = logging.getLogger(__name__)

#: Short provider names accepted on the command line.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
GRAPH_LEVELS = ("disable", "basic", "extended", "all")
#: Distributions that all install the same ``onnxruntime`` module and overwrite each other.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def installed_ort_distributions() -> list[str]:
    """The ONNX Runtime distributions installed in this environment (more than one is a broken setup)."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def parse_device(device: str) -> tuple[str, int]:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> (kind, index)."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    return kind, int(index or 0)


def resolve_providers(names: Sequence[str] | None, device: str) -> list[str]:
    """Full ORT provider names in priority order; CPU is always appended last as the fallback for
    operators the GPU providers do not implement (the *primary* provider is what gets checked)."""
    kind, _ = parse_device(device)
    if not names:
        names = ["cuda"] if kind == "cuda" else ["cpu"]
    resolved: list[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if not full.endswith("ExecutionProvider"):
            raise UsageError(f"unknown execution provider {name!r}; use tensorrt, cuda, cpu or an ORT provider name")
        if full not in resolved:
            resolved.append(full)
    if kind == "cpu" and resolved[0] != "CPUExecutionProvider":
        raise UsageError(f"--device cpu contradicts the execution provider {resolved[0]}; pass --device cuda")
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


class OnnxRuntimeBackend(Backend):
    """An ``onnxruntime.InferenceSession`` over an exported MM-Det model carrying its contract."""

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, device: str = "cpu", **options: Any) -> None:
        super().__init__(model_path, device=device, **options)
        self.session: Any = None
        self.providers: list[str] = []
        self._input_names: tuple[str, ...] = ()
        self._output_names: list[str] = []
        self._max_batch: int | None = None

    # -- options -----------------------------------------------------------------------------------------------
    def _session_options(self, ort: Any) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(self.options.get("intra_op_threads", 0) or 0)
        so.inter_op_num_threads = int(self.options.get("inter_op_threads", 0) or 0)
        spin = "1" if self.options.get("allow_spinning", True) else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        level = str(self.options.get("graph_optimization", "all"))
        if level not in GRAPH_LEVELS:
            raise UsageError(f"unknown graph optimisation level {level!r}; choose one of {', '.join(GRAPH_LEVELS)}")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        return so

    def _provider_options(self, providers: list[str]) -> list[dict[str, Any]]:
        _, index = parse_device(self.device)
        device_id = str(self.options.get("device_id", index))
        extra: Mapping[str, Mapping[str, Any]] = self.options.get("provider_options") or {}
        result = []
        for provider in providers:
            opts: dict[str, Any] = {}
            if provider == "CUDAExecutionProvider":
                opts["device_id"] = device_id
            elif provider == "TensorrtExecutionProvider":
                opts["device_id"] = device_id
                opts["trt_fp16_enable"] = bool(self.options.get("trt_fp16", False))
                cache = self.options.get("trt_engine_cache")
                if cache:
                    Path(cache).mkdir(parents=True, exist_ok=True)
                    opts["trt_engine_cache_enable"] = True
                    opts["trt_engine_cache_path"] = str(cache)
                    opts["trt_timing_cache_enable"] = True
                workspace = self.options.get("trt_workspace_gb")
                if workspace:
                    opts["trt_max_workspace_size"] = int(float(workspace) * (1 << 30))
            opts.update(extra.get(provider, {}))
            result.append(opts)
        return result

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        ort = require("onnxruntime", "the onnxruntime backend")
        distributions = installed_ort_distributions()
        if len(distributions) > 1:
            logger.warning(
                "several ONNX Runtime packages are installed (%s); they overwrite each other's files, so which "
                "providers work is unpredictable: uninstall all of them and install exactly one",
                ", ".join(distributions),
            )
        path = self.model_path
        if not path.is_file():
            raise BackendError(f"{path}: model file not found")
        providers = resolve_providers(self.options.get("providers"), self.device)
        built = ort.get_available_providers()
        missing = [p for p in providers if p not in built]
        if missing:
            raise BackendError(
                f"{path}: execution provider(s) {', '.join(missing)} are not in this ONNX Runtime build "
                f"(available: {', '.join(built)}); for GPUs install onnxruntime-gpu instead of onnxruntime"
            )
        session_options = self._session_options(ort)
        provider_options = self._provider_options(providers)
        try:
            session = ort.InferenceSession(
                str(path), session_options, providers=providers, provider_options=provider_options
            )
        except Exception as exc:  # ORT raises its own pybind exception types for every failure
            raise self._load_error(path, exc) from None
        active = session.get_providers()
        if providers[0] not in active:
            raise BackendError(
                f"{path}: requested {providers[0]} but ONNX Runtime is running on {', '.join(active)} (it falls "
                "back silently when the CUDA / TensorRT libraries cannot be loaded); check the GPU setup"
            )
        self.contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
        self._check_signature(session, self.contract)
        self.session = session
        self.providers = active

    @staticmethod
    def _load_error(path: Path, exc: Exception) -> Exception:
        text = one_line(exc)
        kind = type(exc).__name__
        if kind in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile") or "protobuf" in text.lower():
            return ContractError(f"{path}: not a valid ONNX model ({text})")
        return BackendError(f"{path}: ONNX Runtime could not load the model ({kind}: {text})")

    def _check_signature(self, session: Any, contract: ModelContract) -> None:
        """The graph must have exactly the contract's inputs and shapes and produce its outputs."""
        inputs = {i.name: i.shape for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        self._max_batch = check_signature(self.model_path, inputs, outputs, contract)
        self._input_names = tuple(spec.name for spec in contract.inputs)
        self._output_names = [n for n in (LOGITS, PROB_FAKE) if n in outputs]

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self._output_names, {name: inputs[name] for name in self._input_names})
        except Exception as exc:  # out of memory, a provider failure...: one clear line, not a pybind trace
            text = one_line(exc)
            raise BackendError(f"{self.model_path}: inference failed ({type(exc).__name__}: {text})") from exc
        return dict(zip(self._output_names, values, strict=True))

    def _close(self) -> None:
        self.session = None

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        ort = require("onnxruntime", "the onnxruntime backend")
        facts.update(
            onnxruntime=ort.__version__,
            providers=list(self.providers),
            intra_op_threads=int(self.options.get("intra_op_threads", 0) or 0),
            allow_spinning=bool(self.options.get("allow_spinning", True)),
            max_batch=self._max_batch,
        )
        if self.contract is not None:
            facts.update(head=self.contract.head, precision=self.contract.precision, config=self.contract.config)
        return facts
