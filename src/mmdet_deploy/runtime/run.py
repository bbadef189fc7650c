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

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import EXIT_FAILURE, EXIT_OK, Interrupted
from mmdet_deploy.runtime import recons_vqvae
from mmdet_deploy.runtime.backends.base import Backend, create_backend
from mmdet_deploy.runtime.discovery import MediaItem, discover
from mmdet_deploy.runtime.names import escape_name
from mmdet_deploy.runtime.pipeline import PipelineStats, run_inference
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.records import PREVIEW_SIDE, RunRecorder
from mmdet_deploy.runtime.results import ResultRow
from mmdet_deploy.runtime.run_config import (  # noqa: F401 - re-exported: RunConfig's home was run.py
    BACKEND_FLAGS,
    ENGINES,
    FACES_ONLY,
    RAY_ONLY,
    RunConfig,
    default_workers,
)
from mmdet_deploy.runtime.sink import ResultsSink
from mmdet_deploy.runtime.summary import ProgressHook, RunSummary
from mmdet_deploy.runtime.summary import as_hook as _as_hook

logger = logging.getLogger(__name__)


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
                        decode_all_frames=config.decode_all_frames,
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
        "save_crops": config.save_crops, "engine": config.engine, "decode_all_frames": config.decode_all_frames,
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
