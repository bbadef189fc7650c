"""``mmdet-run INPUT --model FILE.onnx --out DIR``: score every image and video of INPUT.

Exit status: 0 when every media file was scored (``ok`` or ``no_face``), 1 when some could not be (their
rows say why; everything else is still written) or INPUT holds no media at all, 2 for a wrong command line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer

from mmdet_deploy.cli.common import EXIT_FAILURE, EXIT_OK, setup_logging, user_errors
from mmdet_deploy.errors import UsageError

logger = logging.getLogger("mmdet_deploy.run")

app = typer.Typer(
    name="mmdet-run",
    help="Score images and videos with an exported MM-Det model (ONNX Runtime or TensorRT), no PyTorch needed.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


HELP = {
    "input": "A folder (searched recursively), one image or video, or a .txt file listing paths.",
    "model": "Exported model: .onnx carrying its contract (a TensorRT engine with --backend tensorrt).",
    "out": "Output folder: results.csv, predictions.csv, run.json, summary.json.",
    "preset": "faces (seed: face crops) or frames (official: centre crops). Default: the model's contract.",
    "workers": "Threads that decode and crop ahead of inference.",
    "max_windows": "frames preset: score at most N windows (of 10 frames) per video.",
    "face_detectors": "faces preset: detectors in order, e.g. mediapipe,dlib,haar,yunet. "
    "Default: every available one, in that order.",
    "detect_size": "faces preset: longer side, in pixels, of the frame copy that detectors see.",
    "error_label": "Label written to predictions.csv for files that failed (default: they are left out).",
    "threshold": "Label 1 when prob_fake >= this. Default: the model's contract.",
    "providers": "onnxruntime execution providers in priority order, e.g. tensorrt,cuda,cpu.",
}


@app.command()
@user_errors
def run(
    input_path: Path = typer.Argument(..., metavar="INPUT", help=HELP["input"]),
    model: Path = typer.Option(..., "--model", help=HELP["model"]),
    out: Path = typer.Option(..., "--out", help=HELP["out"]),
    preset: str | None = typer.Option(None, help=HELP["preset"]),
    backend: str = typer.Option("onnxruntime", help="onnxruntime or tensorrt."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N. Default: cpu (cuda for tensorrt)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Clips per inference call, mixed across files."),
    workers: int = typer.Option(min(4, os.cpu_count() or 1), min=1, help=HELP["workers"]),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out, skipping files already done."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results of an earlier run in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary; warnings and errors only."),
    max_windows: int | None = typer.Option(None, "--max-windows", min=1, help=HELP["max_windows"]),
    face_detectors: str | None = typer.Option(None, "--face-detectors", help=HELP["face_detectors"]),
    yunet_model: Path | None = typer.Option(None, "--yunet-model", help="YuNet .onnx for cv2.FaceDetectorYN."),
    mediapipe_model: Path | None = typer.Option(None, "--mediapipe-model", help="BlazeFace .tflite (Tasks API)."),
    detect_size: int = typer.Option(640, "--detect-size", min=32, help=HELP["detect_size"]),
    error_label: int | None = typer.Option(None, "--error-label", min=0, max=1, help=HELP["error_label"]),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0, help=HELP["threshold"]),
    providers: str | None = typer.Option(None, "--providers", help=HELP["providers"]),
    threads: int = typer.Option(0, "--threads", min=0, help="onnxruntime intra-op threads (0: one per core)."),
    trt_fp16: bool = typer.Option(False, "--trt-fp16", help="onnxruntime TensorRT provider: allow FP16."),
    trt_cache: Path | None = typer.Option(None, "--trt-cache", help="onnxruntime TensorRT provider: engine cache."),
    decoder: str = typer.Option("auto", help="Video decoder: auto (PyAV when installed), pyav or opencv."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs."),
) -> None:
    """Score every image and video of INPUT; write results.csv and predictions.csv into --out."""
    setup_logging(quiet=quiet, verbose=verbose)
    from mmdet_deploy.runtime.results import ResultsWriter

    if not model.is_file():
        raise UsageError(f"{model}: --model file not found")
    ResultsWriter.check_out_dir(out, resume=resume, overwrite=overwrite)  # before the model loads: fail fast
    options = _backend_options(backend, providers, threads, trt_fp16, trt_cache)
    device = device or ("cuda" if backend == "tensorrt" else "cpu")
    code = _execute(
        input_path, model, out, backend=backend, device=device, backend_options=options, preset=preset,
        batch_size=batch_size, workers=workers, resume=resume, overwrite=overwrite, quiet=quiet,
        max_windows=max_windows, face_detectors=_csv_list(face_detectors), yunet_model=yunet_model,
        mediapipe_model=mediapipe_model, detect_size=detect_size, error_label=error_label, threshold=threshold,
        decoder=decoder,
    )
    raise typer.Exit(code)


def _backend_options(
    backend: str, providers: str | None, threads: int, trt_fp16: bool, trt_cache: Path | None
) -> dict[str, Any]:
    """Backend constructor options; onnxruntime-only flags are refused for other backends, never ignored."""
    ort_flags = {"--providers": providers, "--threads": threads or None, "--trt-fp16": trt_fp16 or None,
                 "--trt-cache": trt_cache}
    if backend != "onnxruntime":
        given = [flag for flag, value in ort_flags.items() if value]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --backend onnxruntime")
        return {}
    return {"providers": _csv_list(providers), "intra_op_threads": threads, "trt_fp16": trt_fp16,
            "trt_engine_cache": trt_cache}


def _execute(input_path: Path, model: Path, out: Path, *, backend: str, device: str,
             backend_options: dict[str, Any], preset: str | None, batch_size: int, workers: int, resume: bool,
             overwrite: bool, quiet: bool, max_windows: int | None, face_detectors: list[str] | None,
             yunet_model: Path | None, mediapipe_model: Path | None, detect_size: int, error_label: int | None,
             threshold: float | None, decoder: str) -> int:
    from mmdet_deploy.runtime.backends.base import create_backend
    from mmdet_deploy.runtime.media import discover
    from mmdet_deploy.runtime.pipeline import run_inference
    from mmdet_deploy.runtime.preprocess import Preprocessor
    from mmdet_deploy.runtime.progress import RunProgress, print_summary
    from mmdet_deploy.runtime.results import ERROR, ResultsWriter, atomic_write_text, check_manifest, write_predictions

    # Model, contract and detectors first: a bad model is reported before anything is read or written.
    engine = create_backend(backend, model, device=device, **backend_options)
    engine.open()
    try:
        contract = engine.contract
        assert contract is not None  # set by open()
        detector_options: dict[str, Any] = {}
        chosen_preset = preset or contract.preset
        if chosen_preset == "faces":
            detector_options = {"detect_max_side": detect_size, "yunet_model": yunet_model,
                                "mediapipe_model": mediapipe_model}
        elif yunet_model or mediapipe_model or face_detectors:
            raise UsageError("--face-detectors, --yunet-model and --mediapipe-model only apply to --preset faces")
        pre = Preprocessor(contract, chosen_preset, face_detectors, max_windows, decoder=decoder, **detector_options)
        items = discover(input_path, exclude=[out])
        if not any(item.is_media for item in items):
            logger.error("%s: found no image or video files (%d other files)", input_path, len(items))
            return EXIT_FAILURE
        settings = {
            "checkpoint_sha256": contract.checkpoint_sha256, "head": contract.head, "config": contract.config,
            "precision": contract.precision, "preset": pre.preset,
            "threshold": contract.threshold if threshold is None else threshold, "frames": contract.frames,
            "image_size": contract.image_size, "max_windows": max_windows,
            "face_detectors": list(pre.faces.names) if pre.faces else [], "model": str(model.resolve()),
            "input": str(input_path.resolve()), "backend": engine.describe(),
        }
        with ResultsWriter(out, resume=resume, overwrite=overwrite) as writer:
            check_manifest(out, settings, resume)
            done = writer.done()
            todo = [item for item in items if item.name not in done]
            if done:
                logger.info("resuming: %d files already in results.csv, %d to go", len(items) - len(todo), len(todo))
            try:
                with RunProgress(len(todo), enabled=not quiet) as progress:
                    summary = run_inference(todo, pre, engine, writer=writer, batch_size=batch_size,
                                            workers=workers, threshold=threshold, on_row=progress.advance)
            finally:
                # Also after Ctrl-C or a backend failure: predictions.csv always matches results.csv.
                write_predictions(out, writer.rows, error_label)
            report = summary.to_dict() | {"backend": engine.describe(), "previous_rows": len(writer.previous)}
            atomic_write_text(out / "summary.json", json.dumps(report, indent=2) + "\n")
            failed = sum(1 for row in writer.rows if row.status == ERROR)
        if not quiet:
            print_summary(summary, out, failed, len(writer.previous))
        return EXIT_FAILURE if failed else EXIT_OK
    finally:
        engine.close()


def main() -> None:
    app()
