"""Score a folder from Python: what ``mmdet-run`` does, without the command line.

::

    from mmdet_deploy.runtime import run_folder, RunConfig

    summary = run_folder(RunConfig("videos/", model="model.onnx", out="runs/x", preset="faces"))
    summary.counts, summary.files_per_s, summary.results_path, summary.exit_code

:class:`RunConfig` holds every option of ``mmdet-run`` and validates them when it is built.
:func:`run_folder` discovers the files, records the settings (``run.json``), resumes, scores with the
threaded pipeline and writes ``results.csv``, ``predictions.csv`` and ``summary.json``. The pieces are
public so that another engine can reuse them: :func:`open_backend`, :func:`build_preprocessor`,
:func:`run_settings`, :class:`~mmdet_deploy.runtime.sink.ResultsSink` and the per-file stages of
:mod:`mmdet_deploy.runtime.prepare`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mmdet_deploy.contract import PRESETS, ModelContract
from mmdet_deploy.errors import EXIT_FAILURE, EXIT_OK, UsageError
from mmdet_deploy.runtime.backends.base import Backend, check_backend_name, create_backend
from mmdet_deploy.runtime.decode import DECODERS
from mmdet_deploy.runtime.discovery import discover
from mmdet_deploy.runtime.faces import DETECT_MAX_SIDE
from mmdet_deploy.runtime.pipeline import PipelineStats, run_inference
from mmdet_deploy.runtime.preprocess import Preprocessor
from mmdet_deploy.runtime.records import PREVIEW_SIDE, RunRecorder
from mmdet_deploy.runtime.results import ResultRow
from mmdet_deploy.runtime.sink import ResultsSink

logger = logging.getLogger(__name__)

#: Options that only some backends take: RunConfig field -> (flag, {backend: its constructor option}).
#: A flag given for another backend is refused, never ignored. A new backend adds its column here.
BACKEND_FLAGS: dict[str, tuple[str, dict[str, str]]] = {
    "providers": ("--providers", {"onnxruntime": "providers"}),
    "threads": ("--threads", {"onnxruntime": "intra_op_threads", "openvino": "threads"}),
    "trt_fp16": ("--trt-fp16", {"onnxruntime": "trt_fp16"}),
    "trt_cache": ("--trt-cache", {"onnxruntime": "trt_engine_cache"}),
    "precision": ("--precision", {"openvino": "precision"}),
    "ov_cache": ("--ov-cache", {"openvino": "cache_dir"}),
    "ov_hint": ("--ov-hint", {"openvino": "hint"}),
    "ov_requests": ("--ov-requests", {"openvino": "requests"}),
}
#: Options of the faces preset alone.
FACES_ONLY = {"--face-detectors": "face_detectors", "--yunet-model": "yunet_model",
              "--mediapipe-model": "mediapipe_model"}


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
    for onnxruntime and openvino; ``precision`` (fp32 | bf16), ``ov_cache`` (a folder of compiled models),
    ``ov_hint`` (latency | throughput) and ``ov_requests`` (requests in flight) for openvino. ``face_detectors``,
    ``yunet_model`` and ``mediapipe_model`` to the faces preset only. Names lists accept
    ``"a,b"`` or ``("a", "b")``. Display flags (``--quiet``, ``--verbose``) are the caller's business.
    ``save_crops`` also writes the model inputs to ``crops/``; ``report`` keeps JPEG thumbnails in ``thumbs/``
    and writes ``report.html`` at the end (:mod:`mmdet_deploy.runtime.records`, :mod:`~.report`).
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
    precision: str | None = None
    ov_cache: Path | None = None
    ov_hint: str | None = None
    ov_requests: int | None = None

    def __post_init__(self) -> None:
        # Normalise (frozen: through object.__setattr__) so that equal settings compare equal.
        for name in ("input_path", "model", "out", "yunet_model", "mediapipe_model", "trt_cache", "ov_cache"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "face_detectors", _names(self.face_detectors))
        object.__setattr__(self, "providers", _names(self.providers))
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
        if self.max_windows is not None and self.max_windows < 1:
            raise UsageError(f"--max-windows must be at least 1, got {self.max_windows}")
        if self.error_label not in (None, 0, 1):
            raise UsageError(f"--error-label must be 0 or 1, got {self.error_label}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold must lie in [0, 1], got {self.threshold}")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other; choose one")
        wrong = [f"{flag} only apply to --backend {' or '.join(owners)}"
                 for name, (flag, owners) in BACKEND_FLAGS.items()
                 if getattr(self, name) not in (None, False, 0) and self.backend not in owners]
        if wrong:
            raise UsageError("; ".join(wrong))
        if self.preset is not None:
            self.check_preset(self.preset)

    def check_preset(self, preset: str) -> None:
        """Refuse faces-only options with another preset (also called once the contract's preset is known)."""
        given = [flag for flag, name in FACES_ONLY.items() if getattr(self, name)]
        if preset != "faces" and given:
            raise UsageError(f"{', '.join(given)} only apply to --preset faces")

    def check_paths(self) -> None:
        """Checks that read the file system but write nothing: run before the model is loaded (fail fast)."""
        if not self.model.is_file():
            raise UsageError(f"{self.model}: --model file not found")
        ResultsSink.check(self.out, resume=self.resume, overwrite=self.overwrite)

    def backend_options(self) -> dict[str, Any]:
        """Keyword options of the backend's constructor (unset openvino options keep the backend's defaults)."""
        options: dict[str, Any] = {}
        for name, (_, owners) in BACKEND_FLAGS.items():
            value = getattr(self, name)
            if self.backend in owners and (value is not None or self.backend == "onnxruntime"):
                options[owners[self.backend]] = list(value) if isinstance(value, tuple) else value
        return options


@runtime_checkable
class ProgressHook(Protocol):
    """What :func:`run_folder` reports progress to: ``start(total files)``, ``advance(row)`` per finished
    file, ``stop()`` at the end (also after an error). A plain ``callable(row)`` is accepted too."""

    def start(self, total: int) -> None: ...

    def advance(self, row: ResultRow) -> None: ...

    def stop(self) -> None: ...


class _CallbackHook:
    def __init__(self, callback: Callable[[ResultRow], None] | None) -> None:
        self.callback = callback

    def start(self, total: int) -> None:
        pass

    def advance(self, row: ResultRow) -> None:
        if self.callback is not None:
            self.callback(row)

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class RunSummary:
    """What :func:`run_folder` did.

    ``stats`` covers this run's files (counts by status, stage seconds, wall time); ``previous_rows`` the
    rows a resumed run already had; ``failed`` the ``error`` rows in ``results.csv`` (both runs).
    ``exit_code`` is what ``mmdet-run`` exits with: 0 when every media file was scored, 1 when some could
    not be or INPUT held no media (then ``message`` says so and no output paths are set).
    """

    exit_code: int
    out_dir: Path
    stats: PipelineStats
    previous_rows: int = 0
    failed: int = 0
    results_path: Path | None = None
    predictions_path: Path | None = None
    manifest_path: Path | None = None
    summary_path: Path | None = None
    report_path: Path | None = None
    backend: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def counts(self) -> dict[str, int]:
        """This run's files by status (``ok``, ``no_face``, ``error``, ``skipped``)."""
        return dict(self.stats.counts)

    @property
    def files_per_s(self) -> float:
        """Media files finished per second of wall time."""
        return self.stats.files_per_s

    @property
    def wall_s(self) -> float:
        return self.stats.wall_s


def open_backend(config: RunConfig) -> Backend:
    """Create and open the configured backend; its contract is read and checked by ``open``."""
    backend = create_backend(config.backend, config.model, device=config.device or "cpu",
                             **config.backend_options())
    backend.open()
    return backend


def build_preprocessor(config: RunConfig, contract: ModelContract) -> Preprocessor:
    """The shared, thread-safe :class:`Preprocessor` of a run (preset from the config or the contract)."""
    preset = config.preset or contract.preset
    config.check_preset(preset)
    detector_options: dict[str, Any] = {}
    if preset == "faces":
        detector_options = {"detect_max_side": config.detect_size, "yunet_model": config.yunet_model,
                            "mediapipe_model": config.mediapipe_model}
    return Preprocessor(contract, preset, config.face_detectors, config.max_windows, decoder=config.decoder,
                        preview_side=PREVIEW_SIDE if config.report else 0, **detector_options)


def run_settings(config: RunConfig, contract: ModelContract, preprocessor: Preprocessor,
                 backend: Backend) -> dict[str, object]:
    """The settings recorded in ``run.json`` (those that change predictions are checked on resume)."""
    return {
        "checkpoint_sha256": contract.checkpoint_sha256, "head": contract.head, "config": contract.config,
        "precision": contract.precision, "preset": preprocessor.preset,
        "threshold": contract.threshold if config.threshold is None else config.threshold,
        "frames": contract.frames, "image_size": contract.image_size, "max_windows": config.max_windows,
        "face_detectors": list(preprocessor.faces.names) if preprocessor.faces else [],
        "model": str(config.model.resolve()), "input": str(config.input_path.resolve()),
        "backend": backend.describe(), "demo_weights": contract.demo_weights, "contract": contract.to_dict(),
        "save_crops": config.save_crops,
    }


def run_folder(
    config: RunConfig, progress: ProgressHook | Callable[[ResultRow], None] | None = None
) -> RunSummary:
    """Score every file of ``config.input_path``; see the module docstring and :class:`RunSummary`.

    Raises :class:`~mmdet_deploy.errors.MMDetError` subclasses for a bad model, bad options, an output
    folder that holds another run, or a backend failure (rows already written stay on disk and
    ``predictions.csv`` matches them); a bad input file never raises, it gets an ``error`` row.
    """
    config.check_paths()
    hook = progress if isinstance(progress, ProgressHook) else _CallbackHook(progress)
    # Model, contract and detectors first: a bad model is reported before anything is read or written.
    backend = open_backend(config)
    try:
        assert backend.contract is not None  # set by open()
        contract = backend.contract
        preprocessor = build_preprocessor(config, contract)
        items = discover(config.input_path, exclude=[config.out])
        if not any(item.is_media for item in items):
            message = f"{config.input_path}: found no image or video files ({len(items)} other files)"
            logger.error("%s", message)
            return RunSummary(EXIT_FAILURE, config.out, PipelineStats(), backend=backend.describe(),
                              message=message)
        settings = run_settings(config, contract, preprocessor, backend)
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
                        stats = run_inference(todo, preprocessor, backend, writer=sink.writer,
                                              batch_size=config.batch_size, workers=config.workers,
                                              threshold=config.threshold, on_row=hook.advance,
                                              on_file=recorder.record)
                finally:
                    hook.stop()
            finally:
                # Also after Ctrl-C or a backend failure: predictions.csv always matches results.csv.
                sink.write_predictions()
            sink.write_summary(stats.to_dict() | {"backend": backend.describe(), "previous_rows": len(sink.previous)})
            failed = sink.failed
        report_path = None
        if config.report:
            from mmdet_deploy.runtime.report import build_report

            report_path = build_report(config.out)
        return RunSummary(
            EXIT_FAILURE if failed else EXIT_OK, config.out, stats, previous_rows=len(sink.previous),
            failed=failed, results_path=sink.results_path, predictions_path=sink.predictions_path,
            manifest_path=sink.manifest_path, summary_path=sink.summary_path, report_path=report_path,
            backend=backend.describe(),
        )
    finally:
        backend.close()
