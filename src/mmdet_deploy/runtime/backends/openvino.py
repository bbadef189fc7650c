"""OpenVINO backend (CPU): our ONNX read directly, fp32 pinned, bf16 opt-in, Q/DQ ONNX run as INT8.

Created as ``create_backend("openvino", "model.onnx", precision="fp32", threads=2)``. Options:

* ``precision``: ``fp32`` (default) or ``bf16``: the precision of the float parts. On CPUs with AVX512_BF16 or
  AMX, OpenVINO silently runs bf16 unless told otherwise, so fp32 is pinned with
  ``INFERENCE_PRECISION_HINT=f32`` and checked on the compiled model. A Q/DQ ONNX (``mmdet-export quantize``,
  either engine) runs its quantised layers in int8 whatever this option says.
* ``threads``: ``INFERENCE_NUM_THREADS`` (0: OpenVINO's default, every core).
* ``hint``: ``latency`` (default) or ``throughput`` (``PERFORMANCE_HINT``).
* ``requests``: infer requests kept in flight by one :meth:`infer` call (started together, then waited on); a
  batch is split into that many chunks. 1 (default) runs the batch as one request; 0 takes the compiled model's
  ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``. Only useful with ``hint="throughput"`` (several streams).
* ``cache_dir``: a folder for compiled models (``--ov-cache``). An entry records the OpenVINO version, the
  artefact's sha256, the compile configuration and the blob's own sha256; any difference rebuilds it.
* ``profile``: compile with ``PERF_COUNT`` (per-layer counters, :meth:`OpenVinoBackend.profile`).

``openvino`` is imported only when a backend opens (``pip install 'mmdet-deploy[openvino]'``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import METADATA_KEY, ModelContract
from mmdet_deploy.deps import require
from mmdet_deploy.errors import BackendError, ContractError, UsageError
from mmdet_deploy.fileio import sha256_file
from mmdet_deploy.runtime.backends.base import Backend, check_signature

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
HINTS = ("latency", "throughput")
#: Our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
DEFAULT_OPTIONS: dict[str, Any] = {
    "precision": "fp32",
    "threads": 0,
    "hint": "latency",
    "requests": 1,
    "cache_dir": None,
    "profile": False,
}
#: Bumped when the layout of a cache entry changes (older entries are then rebuilt).
CACHE_FORMAT = 1


def openvino_version() -> str:
    """The installed OpenVINO runtime's full version string (build included)."""
    return str(require("openvino", "the openvino backend").get_version())


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(core: Any) -> bool:
    """True when the CPU computes bf16 in hardware (AVX512_BF16 or AMX-BF16).

    On Linux the kernel's flags decide; elsewhere OpenVINO's ``OPTIMIZATION_CAPABILITIES`` (``BF16``).
    """
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def ov_reason(exc: BaseException, limit: int = 300) -> str:
    """OpenVINO's message without its C++ source locations, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith("Exception from ") and not ln.startswith("Check '")]
    text = re.sub(r"\s+", " ", " ".join(keep or lines)).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_contract(model: Any, source: str) -> ModelContract:
    """The contract of an ``ov.Model`` read from ONNX (OpenVINO keeps ``metadata_props`` in rt_info)."""
    key = ["framework", METADATA_KEY]
    metadata = {METADATA_KEY: model.get_rt_info(key).astype(str)} if model.has_rt_info(key) else {}
    return ModelContract.from_metadata(metadata, source)


class OpenVinoBackend(Backend):
    """An OpenVINO compiled model over an exported MM-Det ONNX file carrying its contract."""

    name = "openvino"
    default_options = DEFAULT_OPTIONS

    def __init__(self, model_path: str | Path, device: str = "cpu", **options: Any) -> None:
        super().__init__(model_path, device=device, **options)
        opts = self.options
        if str(device).lower() != "cpu":
            raise UsageError(f"the openvino backend runs on --device cpu here (got {device!r})")
        if opts["precision"] not in PRECISIONS:
            raise UsageError(f"openvino precision must be one of {', '.join(PRECISIONS)} (got {opts['precision']!r})")
        if str(opts["hint"]).lower() not in HINTS:
            raise UsageError(f"openvino hint must be one of {', '.join(HINTS)} (got {opts['hint']!r})")
        for key in ("threads", "requests"):
            if int(opts[key]) < 0:
                raise UsageError(f"openvino {key} must be >= 0 (got {opts[key]})")
        self.compiled: Any = None
        self.cache_status = "off"
        self._ov: Any = None
        self._request: Any = None
        self._requests: list[Any] = []
        self._outputs: list[tuple[Any, str]] = []
        self._max_batch: int | None = None
        self._inference_precision = ""
        self._load_s = 0.0
        self._sha256: str | None = None

    # -- configuration -----------------------------------------------------------------------------------------
    def compile_config(self) -> dict[str, str]:
        """The properties passed to ``compile_model`` (and to ``import_model``: they must be the same)."""
        opts = self.options
        config = {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[opts["precision"]],
            "PERFORMANCE_HINT": str(opts["hint"]).upper(),
        }
        if int(opts["threads"]):
            config["INFERENCE_NUM_THREADS"] = str(int(opts["threads"]))
        if opts["profile"]:
            config["PERF_COUNT"] = "YES"
        return config

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        ov = self._ov = require("openvino", "the openvino backend")
        path = self.model_path
        if not path.is_file():
            raise BackendError(f"{path}: model file not found")
        core = ov.Core()
        if self.options["precision"] == "bf16" and not native_bf16(core):
            logger.warning(
                "%s: --precision bf16 on a CPU without native bf16 (no AVX512_BF16 or AMX-BF16): OpenVINO emulates "
                "it, which is slow and no more accurate than fp32; use --precision fp32", path,
            )
        started = time.perf_counter()
        config = self.compile_config()
        cache = Path(self.options["cache_dir"]) if self.options["cache_dir"] else None
        compiled = self._from_cache(core, cache, config) if cache is not None else None
        if compiled is None:
            model = self._read(core)
            self.contract = read_contract(model, str(path))
            compiled = self._compile(core, model, config)
            if cache is not None:
                self._store(cache, compiled, config)
        self._check_signature(compiled, self.contract)
        self._check_precision(compiled)
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._load_s = time.perf_counter() - started

    def _read(self, core: Any) -> Any:
        try:
            return core.read_model(str(self.model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError with C++ locations for every reader failure
            raise ContractError(f"{self.model_path}: OpenVINO cannot read this model ({ov_reason(exc)})") from None

    def _compile(self, core: Any, model: Any, config: dict[str, str]) -> Any:
        try:
            return core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BackendError(f"{self.model_path}: OpenVINO could not compile the model ({ov_reason(exc)})") from None

    def _check_signature(self, compiled: Any, contract: ModelContract | None) -> None:
        """The compiled model must have exactly the contract's inputs and shapes and produce ``logits``."""
        assert contract is not None  # read before compiling, or from a verified cache entry
        inputs = {p.get_any_name(): [d.get_length() if d.is_static else "?" for d in p.get_partial_shape()]
                  for p in compiled.inputs}
        outputs = [(p, p.get_any_name()) for p in compiled.outputs]
        self._max_batch = check_signature(self.model_path, inputs, [n for _, n in outputs], contract)
        self._outputs = outputs

    def _check_precision(self, compiled: Any) -> None:
        """fp32 is a promise: fail rather than run bf16 behind the user's back."""
        got = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._inference_precision = got
        wanted = _OV_PRECISION[self.options["precision"]]
        if got != wanted:
            raise BackendError(f"{self.model_path}: asked OpenVINO for {wanted} inference but it compiled {got}")

    # -- the compiled-model cache ------------------------------------------------------------------------------
    def _entry(self, cache: Path, config: dict[str, str]) -> tuple[Path, Path]:
        """Blob and manifest paths of this artefact path under this configuration."""
        key = json.dumps({"path": str(self.model_path.resolve()), "config": config, "format": CACHE_FORMAT},
                         sort_keys=True)
        tag = hashlib.sha256(key.encode()).hexdigest()[:16]
        blob = cache / f"{self.model_path.stem}-{tag}.ovblob"
        return blob, blob.with_suffix(".json")

    def _expected_entry(self, config: dict[str, str]) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "openvino": openvino_version(), "artefact": str(self.model_path.resolve()),
                "artefact_sha256": self._artefact_sha256(), "config": config}

    def _artefact_sha256(self) -> str:
        if self._sha256 is None:  # hashed once per open: a base model is 800 MB
            self._sha256 = sha256_file(self.model_path)
        return self._sha256

    def _from_cache(self, core: Any, cache: Path, config: dict[str, str]) -> Any | None:
        """The compiled model from a verified cache entry, or None (``cache_status`` says why)."""
        blob, manifest = self._entry(cache, config)
        if not manifest.is_file() or not blob.is_file():
            self.cache_status = "built (no entry)"
            return None
        try:
            entry = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            self.cache_status = f"rebuilt: unreadable manifest ({exc})"
            return None
        expected = self._expected_entry(config)
        changed = [k for k, v in expected.items() if entry.get(k) != v]
        if changed:
            what = {"openvino": f"built by OpenVINO {entry.get('openvino')}", "artefact_sha256": "artefact changed"}
            self.cache_status = "rebuilt: " + ", ".join(what.get(k, f"{k} changed") for k in changed)
            return None
        data = blob.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.get("blob_sha256"):
            self.cache_status = "rebuilt: blob does not match its manifest"
            return None
        try:
            self.contract = ModelContract.from_json(entry["contract"], str(self.model_path))
            # import_model needs the configuration the blob was compiled with: OpenVINO 2026.4.1 imported with
            # another precision hint crashed (segfault) on the first inference here.
            compiled = core.import_model(data, "CPU", config)
        except Exception as exc:  # a blob OpenVINO refuses: rebuild it, never fail the run for a cache
            self.cache_status = f"rebuilt: import failed ({ov_reason(exc)})"
            self.contract = None
            return None
        self.cache_status = "hit"
        return compiled

    def _store(self, cache: Path, compiled: Any, config: dict[str, str]) -> None:
        """Write blob and manifest, each under a temporary name and renamed (never a half-written entry)."""
        blob, manifest = self._entry(cache, config)
        assert self.contract is not None
        try:
            cache.mkdir(parents=True, exist_ok=True)
            data = compiled.export_model().getvalue()
            entry = {**self._expected_entry(config), "blob_sha256": hashlib.sha256(data).hexdigest(),
                     "contract": self.contract.to_json(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            for path, payload in ((blob, data), (manifest, (json.dumps(entry, indent=1) + "\n").encode())):
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(payload)
                os.replace(tmp, path)
        except OSError as exc:  # a cache that cannot be written costs speed next time, not this run
            logger.warning("%s: could not write the OpenVINO cache entry (%s)", cache, exc)

    # -- inference ---------------------------------------------------------------------------------------------
    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(inputs.values())).shape[0]
        jobs = int(self.options["requests"]) or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        try:
            if jobs <= 1 or batch <= 1:
                result = self._request.infer(inputs, share_inputs=True)
                return {name: np.array(result[port]) for port, name in self._outputs}
            return self._infer_async(inputs, batch, jobs)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise BackendError(f"{self.model_path}: inference failed ({ov_reason(exc)})") from exc

    def _infer_async(self, inputs: dict[str, np.ndarray], batch: int, jobs: int) -> dict[str, np.ndarray]:
        """Split the batch over ``jobs`` requests in flight (one per stream) and join the outputs in order.

        Plain infer requests, started and then waited on from this thread: no Python callback ever runs on one
        of OpenVINO's threads. An ``AsyncInferQueue`` callback does, and a garbage collection triggered there
        can destroy a queue on its own worker thread, which aborts the process ("Fatal Python error: Aborted",
        seen in the full test suite with OpenVINO 2026.4.1).
        """
        while len(self._requests) < jobs:
            self._requests.append(self.compiled.create_infer_request())
        bounds = np.linspace(0, batch, min(jobs, batch) + 1).astype(int)
        chunks = [{n: a[lo:hi] for n, a in inputs.items()} for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        started = []
        try:
            for request, chunk in zip(self._requests, chunks, strict=False):
                request.start_async(chunk, share_inputs=True)
                started.append(request)
        finally:
            for request in started:  # every started request is waited on, even when a later start failed
                request.wait()
        results = [{name: np.array(request.get_tensor(port).data) for port, name in self._outputs}
                   for request in started]
        return {name: np.concatenate([r[name] for r in results]) for _, name in self._outputs}

    def profile(self, inputs: dict[str, np.ndarray], runs: int = 2) -> list[dict[str, Any]]:
        """Per-layer counters summed over ``runs`` calls after one warm-up (needs ``profile=True``).

        One dict per executed node: ``node``, ``type`` (OpenVINO layer type), ``exec_type`` (kernel, e.g.
        ``brgemm_avx512_amx_I8``), ``original`` (the ONNX nodes fused into it, comma-separated, from the
        runtime model) and ``real_ms`` (wall milliseconds per run).
        """
        if not self.options["profile"]:
            raise UsageError("profiling needs the backend created with profile=True (PERF_COUNT)")
        self.infer(inputs)
        totals: dict[tuple[str, str, str], float] = {}
        for _ in range(runs):
            self.infer(inputs)
            for info in self._request.profiling_info:
                if str(info.status).endswith("EXECUTED"):
                    key = (info.node_name, info.node_type, info.exec_type)
                    totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e3
        fused = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "originalLayersNames" in rt:
                fused[op.get_friendly_name()] = rt["originalLayersNames"].astype(str)
        return [{"node": k[0], "type": k[1], "exec_type": k[2], "original": fused.get(k[0], ""), "real_ms": v / runs}
                for k, v in totals.items()]

    def _close(self) -> None:
        self._requests = []
        self._request = None
        self.compiled = None

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    @property
    def output_names(self) -> list[str]:
        """Names of the model's outputs (``logits``, ``prob_fake``, and ``features`` when exported with it)."""
        return [name for _, name in self._outputs]

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts.update({k: self.options[k] for k in ("precision", "threads", "hint", "requests")})
        facts.update(openvino=openvino_version(), inference_precision=self._inference_precision,
                     cache=self.cache_status, load_s=self._load_s, max_batch=self._max_batch)
        if self.compiled is not None:
            facts.update(streams=int(self.compiled.get_property("NUM_STREAMS")),
                         optimal_requests=int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        if self.contract is not None:
            facts.update(head=self.contract.head, artefact_precision=self.contract.precision,
                         int8=self.contract.precision == "int8", config=self.contract.config)
        return facts
