"""Score a folder from Python: what ``mmdet-run`` does, without the command line.

::

    from mmdet_deploy.runtime import run_folder, RunConfig

    summary = run_folder(RunConfig("videos/", model="model.onnx", out="runs/x", preset="faces"))
    summary.counts, summary.files_per_s, summary.results_path, summary.exit_code

:class:`RunConfig` holds every option of ``mmdet-run`` and validates them when it is built.
:func:`run_folder` discovers the files, records the settings (``run.json``), resumes, scores with the
threaded pipeline (``engine="local"``) or on Ray (``engine="ray"``, :mod:`mmdet_deploy.runtime.ray_engine`)
and writes ``results.csv``, ``predictions.csv`` and ``summary.json``. The pieces are public so that another
engine can reuse them: :func:`score_items` (everything around the scoring itself), :func:`open_backend`,
:func:`build_preprocessor`, :func:`run_settings`, :class:`~mmdet_deploy.runtime.sink.ResultsSink` and the
per-file stages of :mod:`mmdet_deploy.runtime.prepare`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy.contract import PRESETS, ModelContract
from mmdet_deploy.errors import EXIT_FAILURE, EXIT_OK, Interrupted, UsageError
from mmdet_deploy.runtime import recons_vqvae
from mmdet_deploy.runtime.backends.base import Backend, check_backend_name, create_backend
from mmdet_deploy.runtime.decode import DECODERS
from mmdet_deploy.runtime.discovery import MediaItem, check_out_not_input, discover
from mmdet_deploy.runtime.faces import CHAINS, DETECT_MAX_SIDE
from mmdet_deploy.runtime.names import escape_name
from mmdet_deploy.runtime.pipeline import DEFAULT_FILE_TIMEOUT, PipelineStats, run_inference
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.records import PREVIEW_SIDE, RunRecorder
from mmdet_deploy.runtime.results import ResultRow
from mmdet_deploy.runtime.sink import ResultsSink
from mmdet_deploy.runtime.summary import ProgressHook, RunSummary
from mmdet_deploy.runtime.summary import as_hook as _as_hook

logger = logging.getLogger(__name__)

#: Options that only some backends take: RunConfig field -> (flag, {backend: its constructor option}).
#: A flag given for another backend is refused, never ignored. A new backend adds its column here.
BACKEND_FLAGS: dict[str, tuple[str, dict[str, str]]] = {
    "providers": ("--providers", {"onnxruntime": "providers"}),
    "threads": ("--threads", {"onnxruntime": "intra_op_threads", "openvino": "threads"}),
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
              "--mediapipe-model": "mediapipe_model", "--face-chain": "face_chain"}
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
    for onnxruntime and openvino; ``precision`` (openvino: fp32 | bf16; torch: fp32 | fp16 | bf16),
    ``ov_cache`` (a folder of compiled models), ``ov_hint`` (latency | throughput) and ``ov_requests``
    (requests in flight) for openvino; ``model_config`` (``base``/``tiny``), ``head`` and ``cuda_graphs``
    for torch (None: base, simplified, fp32, no graphs). ``face_chain`` (``default`` when None, or
    ``seed``: see :data:`~mmdet_deploy.runtime.faces.CHAINS`), ``face_detectors`` (a list of its own
    instead of a chain), ``yunet_model`` and ``mediapipe_model`` to the faces preset only.
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
    trt_fp16: bool = False
    trt_cache: Path | None = None
    decoder: str = "auto"
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


def open_backend(config: RunConfig) -> Backend:
    """Create and open the configured backend; its contract is read and checked by ``open``."""
    backend = create_backend(config.backend, config.model, device=config.device or "cpu",
                             **config.backend_options())
    backend.open()
    return backend


def build_preprocessor(
    config: RunConfig, contract: ModelContract, face_providers: Sequence[str] | None = None,
    reconstruction: recons_vqvae.ReconstructionSource | None = None,
) -> Preprocessor:
    """The shared, thread-safe :class:`Preprocessor` of a run (preset from the config or the contract).

    ``face_providers``: ONNX Runtime execution providers of the BlazeFace detectors (None: CPU).
    ``reconstruction``: the ``recons`` source (None: the config's, its VQ-VAE loaded and checked now).
    """
    preset = config.preset or contract.preset
    config.check_preset(preset)
    detector_options: dict[str, Any] = {}
    if preset == "faces":
        detector_options = {"detect_max_side": config.detect_size, "yunet_model": config.yunet_model,
                            "mediapipe_model": config.mediapipe_model, "chain": config.face_chain or "default",
                            "providers": face_providers}
    return Preprocessor(contract, preset, config.face_detectors, config.max_windows, decoder=config.decoder,
                        preview_side=PREVIEW_SIDE if config.report else 0, **detector_options,
                        reconstruction=reconstruction or recons_vqvae.open_run_recons(config, contract))


def run_settings(config: RunConfig, contract: ModelContract, preprocessor: Preprocessor,
                 backend: Backend | Mapping[str, Any]) -> dict[str, object]:
    """The settings recorded in ``run.json`` (those that change predictions are checked on resume).

    ``backend`` is the open backend or its :meth:`~Backend.describe` facts (an engine whose backends run
    elsewhere). The engine is recorded but not checked: a run may be resumed by the other engine.
    """
    return {
        "checkpoint_sha256": contract.checkpoint_sha256, "head": contract.head, "config": contract.config,
        "precision": contract.precision, "preset": preprocessor.preset,
        "threshold": contract.threshold if config.threshold is None else config.threshold,
        "frames": contract.frames, "image_size": contract.image_size, "max_windows": config.max_windows,
        "face_detectors": list(preprocessor.faces.names) if preprocessor.faces else [],
        "face_chain": preprocessor.faces.chain if preprocessor.faces else None,
        "model": escape_name(str(config.model.resolve())), "input": escape_name(str(config.input_path.resolve())),
        "backend": dict(backend) if isinstance(backend, Mapping) else backend.describe(),
        "demo_weights": contract.demo_weights, "contract": contract.to_dict(),
        "save_crops": config.save_crops, "engine": config.engine,
        "recons": recons_vqvae.recons_settings(preprocessor.reconstruction),
        "recons_source": preprocessor.reconstruction.describe(),
    }


#: ``on_file(row, prepared, window_probs)``: the review outputs of one file, called just before its row is
#: written (``prepared`` None for error and skipped rows).
OnFile = Callable[[ResultRow, PreparedFile | None, list[float]], None]
#: An engine's scoring step: ``score(files to do, preprocessor, sink, on_row, on_file) -> stats``. For each
#: finished file it calls ``on_file``, writes the row with ``sink.write`` (or ``sink.writer``), then ``on_row``.
Scorer = Callable[[list[MediaItem], Preprocessor, ResultsSink, Callable[[ResultRow], None], OnFile], PipelineStats]


def run_folder(
    config: RunConfig, progress: ProgressHook | Callable[[ResultRow], None] | None = None
) -> RunSummary:
    """Score every file of ``config.input_path``; see the module docstring and :class:`RunSummary`.

    Raises :class:`~mmdet_deploy.errors.MMDetError` subclasses for a bad model, bad options, an output
    folder that holds another run (or is being written by one), or a backend failure (rows already written
    stay on disk and ``predictions.csv`` matches them); a bad input file never raises, it gets an ``error``
    row. Ctrl-C raises :class:`~mmdet_deploy.errors.Interrupted` (exit code 130) once the finished rows are
    written.
    """
    hook = _as_hook(progress)
    if config.engine == "ray":
        from mmdet_deploy.runtime.ray_engine.driver import run_ray

        return run_ray(config, hook)
    config.check_paths()
    # Model, contract and detectors first: a bad model is reported before anything is read or written.
    backend = open_backend(config)
    try:
        assert backend.contract is not None  # set by open()

        def score(todo: list[MediaItem], preprocessor: Preprocessor, sink: ResultsSink,
                  on_row: Callable[[ResultRow], None], on_file: OnFile) -> PipelineStats:
            # Streamed windows are kept only as long as the per-file outputs need them.
            keep = "all" if config.save_crops else "best" if config.report else "none"
            return run_inference(todo, preprocessor, backend, writer=sink.writer, batch_size=config.batch_size,
                                 workers=config.workers, threshold=config.threshold, on_row=on_row,
                                 on_file=on_file, file_timeout=config.file_timeout, keep_windows=keep,
                                 processes=config.decode_processes)

        # On a GPU the face detector runs on the model's own ONNX Runtime providers.
        gpu = config.device != "cpu" and backend.name == "onnxruntime"
        face_providers = getattr(backend, "providers", None) if gpu else None
        return score_items(config, backend.contract, backend.describe(), score, hook, face_providers=face_providers)
    finally:
        backend.close()


def score_items(
    config: RunConfig,
    contract: ModelContract,
    backend_facts: Mapping[str, Any],
    score: Scorer,
    progress: ProgressHook | Callable[[ResultRow], None] | None = None,
    items: list[MediaItem] | None = None,
    face_providers: Sequence[str] | None = None,
) -> RunSummary:
    """Everything of a run but the scoring: preprocessor, discovery (unless ``items`` are given), ``run.json``,
    resume, progress, ``predictions.csv`` (also after an abort) and ``summary.json``, around ``score``.
    ``face_providers``: ONNX Runtime providers of the BlazeFace detectors (None: CPU)."""
    hook = _as_hook(progress)
    preprocessor = build_preprocessor(config, contract, face_providers)
    if items is None:
        items = discover(config.input_path, exclude=[config.out])
    if not any(item.is_media for item in items):
        message = f"{escape_name(str(config.input_path))}: found no image or video files ({len(items)} other files)"
        logger.error("%s", message)
        return RunSummary(EXIT_FAILURE, config.out, PipelineStats(), backend=dict(backend_facts), message=message)
    settings = run_settings(config, contract, preprocessor, backend_facts)
    with ResultsSink(config.out, resume=config.resume, overwrite=config.overwrite,
                     error_label=config.error_label) as sink:
        sink.start(settings)
        todo = sink.pending(items)
        # faces.csv, windows.csv, crops/, thumbs/: written for each file just before its row.
        done = {row.filename for row in sink.rows} if config.resume else None
        recorder = RunRecorder(config.out, preprocessor.preset, done=done, save_crops=config.save_crops,
                               thumbnails=config.report)
        try:
            hook.start(len(todo))
            try:
                with recorder:
                    stats = score(todo, preprocessor, sink, hook.advance, recorder.record)
            finally:
                hook.stop()
        except KeyboardInterrupt:
            raise Interrupted(  # predictions.csv is written by the finally below
                f"interrupted: {len(sink.rows)} of {len(items)} files have their row in "
                f"{escape_name(str(sink.results_path))}; run the same command with --resume to do the rest"
            ) from None
        finally:
            # Also after Ctrl-C or a backend failure: predictions.csv always matches results.csv.
            sink.write_predictions()
        report = stats.to_dict() | {"engine": config.engine, "backend": dict(backend_facts),
                                    "previous_rows": len(sink.previous), "face_chain": settings["face_chain"],
                                    "face_detectors": settings["face_detectors"]}
        sink.write_summary(report)
        failed = sink.failed
    report_path = None
    if config.report:
        from mmdet_deploy.runtime.report import build_report

        report_path = build_report(config.out)
    return RunSummary(
        EXIT_FAILURE if failed else EXIT_OK, config.out, stats, previous_rows=len(sink.previous),
        failed=failed, results_path=sink.results_path, predictions_path=sink.predictions_path,
        manifest_path=sink.manifest_path, summary_path=sink.summary_path, report_path=report_path,
        backend=dict(backend_facts),
    )
