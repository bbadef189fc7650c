"""`RunConfig`: every option of ``mmdet-run``, checked once when it is built (see :mod:`.run`)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy.contract import PRESETS
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime import recons_vqvae
from mmdet_deploy.runtime.backends.base import check_backend_name
from mmdet_deploy.runtime.decode import DECODERS
from mmdet_deploy.runtime.discovery import check_out_not_input
from mmdet_deploy.runtime.faces import CHAINS, DETECT_MAX_SIDE
from mmdet_deploy.runtime.names import escape_name
from mmdet_deploy.runtime.pipeline import DEFAULT_FILE_TIMEOUT
from mmdet_deploy.runtime.sink import ResultsSink

#: Options that only some backends take: RunConfig field -> (flag, {backend: its constructor option}).
#: A flag given for another backend is refused, never ignored. A new backend adds its column here.
BACKEND_FLAGS: dict[str, tuple[str, dict[str, str]]] = {
    "providers": ("--providers", {"onnxruntime": "providers"}),
    "threads": ("--threads", {"onnxruntime": "intra_op_threads", "openvino": "threads"}),
    "spin_wait": ("--spin-wait", {"onnxruntime": "allow_spinning"}),
    "trt_fp16": ("--trt-fp16", {"onnxruntime": "trt_fp16"}),
    "trt_cache": ("--trt-cache", {"onnxruntime": "trt_engine_cache"}),
    "precision": ("--precision", {"openvino": "precision", "torch": "precision"}),
    "ov_cache": ("--ov-cache", {"openvino": "cache_dir"}),
    "ov_hint": ("--ov-hint", {"openvino": "hint"}),
    "ov_requests": ("--ov-requests", {"openvino": "requests"}),
    # The torch backend runs a checkpoint, which carries no contract: these say what to build.
    "model_config": ("--config", {"torch": "config"}),
    "head": ("--head", {"torch": "head"}),
    "cuda_graphs": ("--cuda-graphs", {"torch": "cuda_graphs"}),
}
#: Options of the faces preset alone.
FACES_ONLY = {"--face-detectors": "face_detectors", "--yunet-model": "yunet_model",
              "--mediapipe-model": "mediapipe_model", "--face-chain": "face_chain",
              "--decode-all-frames": "decode_all_frames"}
#: Scoring engines: the threaded pipeline of this process, or Ray Data over a (local or remote) Ray cluster.
ENGINES = ("local", "ray")
#: Options of the ray engine alone (flag name -> RunConfig field), refused with ``engine="local"``.
RAY_ONLY = {"--ray-address": "ray_address", "--ray-actors": "ray_actors",
            "--ray-gpus-per-actor": "ray_gpus_per_actor", "--ray-cpus-per-actor": "ray_cpus_per_actor",
            "--ray-cpus-per-task": "ray_cpus_per_task", "--ray-max-in-flight": "ray_max_in_flight",
            "--ray-retries": "ray_retries", "--ray-connect-timeout": "ray_connect_timeout"}


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def default_workers() -> int:
    """Preprocessing threads by default: one per core, at most 4 (decoding rarely needs more)."""
    return min(4, os.cpu_count() or 1)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A comma-separated string or a sequence of names as a tuple; None or empty -> None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(v.strip() for v in items if v.strip())
    return names or None


@dataclass(frozen=True)
class RunConfig:
    """Every option of ``mmdet-run``, checked once when the config is built (:class:`UsageError`).

    ``input_path``: a folder (recursive), one file, or a ``.txt`` list of paths. ``model``: an ``.onnx``
    carrying its contract (a TensorRT engine with ``backend="tensorrt"``). ``out``: the output folder.
    ``preset`` and ``threshold`` None take the model's contract; ``device`` None is ``cpu`` (``cuda`` for
    tensorrt). ``batch_size`` is clips per inference call, ``workers`` preprocessing threads,
    ``detect_size`` the longer side in pixels of the frame copy face detectors see. Backend options
    (:data:`BACKEND_FLAGS`): ``providers``, ``trt_fp16`` and ``trt_cache`` for onnxruntime; ``threads``
    for onnxruntime and openvino; ``spin_wait`` for onnxruntime (its intra-op threads spin between operators,
    ORT's own default: off here, where decoding and face detection share the cores); ``precision``
    (openvino: fp32 | bf16; torch: fp32 | fp16 | bf16),
    ``ov_cache`` (a folder of compiled models), ``ov_hint`` (latency | throughput) and ``ov_requests``
    (requests in flight) for openvino; ``model_config`` (``base``/``tiny``), ``head`` and ``cuda_graphs``
    for torch (None: base, simplified, fp32, no graphs). ``face_chain`` (``default`` when None, or
    ``seed``: see :data:`~mmdet_deploy.runtime.faces.CHAINS`), ``face_detectors`` (a list of its own
    instead of a chain), ``yunet_model``, ``mediapipe_model`` and ``decode_all_frames`` (decode even the frames
    that neither the sampling nor any other frame needs: see ``runtime.sparse_decode``) to the faces preset only.
    ``decode_processes``: the ``workers`` are processes instead of threads (decoding and face detection then
    scale past the GIL; see ``runtime.prepare_pool``). ``file_timeout`` (local engine): seconds one file's
    preparation may go without progress before it gets an ``error`` row (0: no limit). Names lists accept
    ``"a,b"`` or ``("a", "b")``. Display flags (``--quiet``, ``--verbose``) are the caller's business.
    ``recons``: ``original`` or ``vqvae`` (reconstructions by ``vqvae_model`` from ``mmdet-export vqvae``;
    ``recons_jpeg`` None: the reference's JPEG steps on; ``vqvae_providers``: its ONNX Runtime providers,
    default from ``device``).
    ``save_crops`` also writes the model inputs to ``crops/``; ``report`` keeps JPEG thumbnails in ``thumbs/``
    and writes ``report.html`` at the end (:mod:`mmdet_deploy.runtime.records`, :mod:`~.report`).

    ``engine="ray"`` scores on Ray (the ``ray_*`` fields apply to it only): ``ray_address`` None starts a
    private local Ray on loopback, else the cluster to connect to (``host:port``, ``ray://host:port`` or
    ``auto``); ``ray_actors`` inference actors, each reserving ``ray_gpus_per_actor`` GPUs and
    ``ray_cpus_per_actor`` CPUs; ``ray_cpus_per_task`` CPUs per file decoding task; ``ray_max_in_flight``
    files being decoded at once (None: ``2 * ray_actors * batch_size``); ``ray_retries`` retries of a file
    whose worker process died; ``ray_connect_timeout`` seconds to wait for the cluster to answer.
    """

    input_path: Path
    model: Path
    out: Path
    preset: str | None = None
    backend: str = "onnxruntime"
    device: str | None = None
    batch_size: int = 4
    workers: int = field(default_factory=default_workers)
    resume: bool = False
    overwrite: bool = False
    max_windows: int | None = None
    face_detectors: tuple[str, ...] | None = None
    face_chain: str | None = None
    yunet_model: Path | None = None
    mediapipe_model: Path | None = None
    detect_size: int = DETECT_MAX_SIDE
    error_label: int | None = None
    threshold: float | None = None
    providers: tuple[str, ...] | None = None
    threads: int = 0
    spin_wait: bool = False
    trt_fp16: bool = False
    trt_cache: Path | None = None
    decoder: str = "auto"
    decode_all_frames: bool = False
    save_crops: bool = False
    report: bool = False
    file_timeout: float = DEFAULT_FILE_TIMEOUT
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int = 1
    ray_gpus_per_actor: float = 0.0
    ray_cpus_per_actor: float = 1.0
    ray_cpus_per_task: float = 1.0
    ray_max_in_flight: int | None = None
    ray_retries: int = 2
    ray_connect_timeout: float = 60.0
    decode_processes: bool = False
    model_config: str | None = None
    head: str | None = None
    precision: str | None = None
    ov_cache: Path | None = None
    ov_hint: str | None = None
    ov_requests: int | None = None
    cuda_graphs: bool = False
    recons: str = "original"
    vqvae_model: Path | None = None
    recons_jpeg: bool | None = None
    vqvae_providers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise (frozen: through object.__setattr__) so that equal settings compare equal.
        for name in ("input_path", "model", "out", "yunet_model", "mediapipe_model", "trt_cache", "vqvae_model",
                     "ov_cache"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "face_detectors", _names(self.face_detectors))
        object.__setattr__(self, "providers", _names(self.providers))
        object.__setattr__(self, "vqvae_providers", _names(self.vqvae_providers))
        if self.device is None:
            object.__setattr__(self, "device", "cuda" if self.backend == "tensorrt" else "cpu")
        self._validate()

    def _validate(self) -> None:
        check_backend_name(self.backend)
        if self.preset is not None and self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.decoder not in DECODERS:
            raise UsageError(f"unknown video decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        for flag, value, least in (("--batch-size", self.batch_size, 1), ("--workers", self.workers, 1),
                                   ("--detect-size", self.detect_size, 32), ("--threads", self.threads, 0)):
            if value < least:
                raise UsageError(f"{flag} must be at least {least}, got {value}")
        if not (self.file_timeout >= 0 and math.isfinite(self.file_timeout)):
            raise UsageError(f"--file-timeout must be a number of seconds >= 0 (0: no limit), got {self.file_timeout}")
        if self.engine == "ray" and self.file_timeout != DEFAULT_FILE_TIMEOUT:
            raise UsageError("--file-timeout applies to --engine local (the ray engine runs each file in a task)")
        if self.max_windows is not None and self.max_windows < 1:
            raise UsageError(f"--max-windows must be at least 1, got {self.max_windows}")
        if self.error_label not in (None, 0, 1):
            raise UsageError(f"--error-label must be 0 or 1, got {self.error_label}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold must lie in [0, 1], got {self.threshold}")
        if self.face_chain is not None and self.face_chain not in CHAINS:
            raise UsageError(f"unknown --face-chain {self.face_chain!r}; choose one of {', '.join(CHAINS)}")
        if self.face_chain is not None and self.face_detectors:
            raise UsageError("--face-chain and --face-detectors contradict each other: the detectors are a chain of "
                             "their own; pass one of them")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other; choose one")
        wrong = [f"{flag} only apply to --backend {' or '.join(owners)}"
                 for name, (flag, owners) in BACKEND_FLAGS.items()
                 if getattr(self, name) not in (None, False, 0) and self.backend not in owners]
        if wrong:
            raise UsageError("; ".join(wrong))
        if self.preset is not None:
            self.check_preset(self.preset)
        recons_vqvae.check_recons_options(self.recons, self.vqvae_model, self.recons_jpeg, self.vqvae_providers)
        self._validate_engine()

    def _validate_engine(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.engine != "ray":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            given = [flag for flag, name in RAY_ONLY.items() if getattr(self, name) != defaults[name]]
            if given:
                raise UsageError(f"{', '.join(given)} only apply to --engine ray")
            return
        from mmdet_deploy.runtime.ray_engine.cluster import check_options  # imports no ray

        check_options(self)

    def check_preset(self, preset: str) -> None:
        """Refuse faces-only options with another preset (also called once the contract's preset is known)."""
        given = [flag for flag, name in FACES_ONLY.items() if getattr(self, name)]
        if preset != "faces" and given:
            raise UsageError(f"{', '.join(given)} only apply to --preset faces")

    def check_paths(self) -> None:
        """Checks that read the file system but write nothing: run before the model is loaded (fail fast)."""
        for flag, path in (("--model", self.model), ("--yunet-model", self.yunet_model),
                           ("--mediapipe-model", self.mediapipe_model)):
            if path is not None and not _utf8(path):
                # ONNX Runtime and OpenCV cannot take such a path (OpenCV crashes the process on one).
                raise UsageError(f"{escape_name(str(path))}: the {flag} path is not valid UTF-8; rename it")
        if not self.model.is_file():
            raise UsageError(f"{escape_name(str(self.model))}: --model file not found")
        check_out_not_input(self.input_path, self.out)
        ResultsSink.check(self.out, resume=self.resume, overwrite=self.overwrite)

    def backend_options(self) -> dict[str, Any]:
        """Keyword options of the backend's constructor (unset openvino options keep the backend's defaults)."""
        options: dict[str, Any] = {}
        for name, (_, owners) in BACKEND_FLAGS.items():
            value = getattr(self, name)
            if self.backend in owners and (value is not None or self.backend == "onnxruntime"):
                options[owners[self.backend]] = list(value) if isinstance(value, tuple) else value
        if self.backend == "torch" and self.threshold is not None:
            options["threshold"] = self.threshold
        return options
