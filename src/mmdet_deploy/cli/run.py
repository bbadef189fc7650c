"""``mmdet-run INPUT --model FILE.onnx --out DIR``: score every image and video of INPUT.

A thin Typer layer over :func:`mmdet_deploy.runtime.run_folder`: the flags build a
:class:`~mmdet_deploy.runtime.RunConfig` (which validates them), the progress bar and summary stay here.

Exit status: 0 when every media file was scored (``ok`` or ``no_face``), 1 when some could not be (their
rows say why; everything else is still written) or INPUT holds no media at all, 2 for a wrong command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors
from mmdet_deploy.runtime.run import default_workers

app = typer.Typer(
    name="mmdet-run",
    help="Score images and videos with an exported MM-Det model (ONNX Runtime, OpenVINO or TensorRT), no PyTorch "
    "needed.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    "save_crops": "Also write the 224x224 model inputs as crops/<filename>/<frame>.png.",
    "report": "Also write report.html, a self-contained review page (keeps small JPEG thumbnails in thumbs/).",
    "precision": "openvino: fp32 (default, pinned) or bf16 (float parts; a Q/DQ INT8 model stays INT8).",
    "ov_cache": "openvino: folder of compiled models, rebuilt when the model or OpenVINO changes.",
    "ov_requests": "openvino: infer requests in flight per batch (0: OpenVINO's optimum for the hint).",
}


@app.command()
@user_errors
def run(
    input_path: Path = typer.Argument(..., metavar="INPUT", help=HELP["input"]),
    model: Path = typer.Option(..., "--model", help=HELP["model"]),
    out: Path = typer.Option(..., "--out", help=HELP["out"]),
    preset: str | None = typer.Option(None, help=HELP["preset"]),
    backend: str = typer.Option("onnxruntime", help="onnxruntime, openvino (CPU) or tensorrt."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N. Default: cpu (cuda for tensorrt)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Clips per inference call, mixed across files."),
    workers: int = typer.Option(default_workers(), min=1, help=HELP["workers"]),
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
    threads: int = typer.Option(0, "--threads", min=0, help="onnxruntime / openvino threads (0: one per core)."),
    trt_fp16: bool = typer.Option(False, "--trt-fp16", help="onnxruntime TensorRT provider: allow FP16."),
    trt_cache: Path | None = typer.Option(None, "--trt-cache", help="onnxruntime TensorRT provider: engine cache."),
    decoder: str = typer.Option("auto", help="Video decoder: auto (PyAV when installed), pyav or opencv."),
    save_crops: bool = typer.Option(False, "--save-crops", help=HELP["save_crops"]),
    report: bool = typer.Option(False, "--report", help=HELP["report"]),
    precision: str | None = typer.Option(None, "--precision", help=HELP["precision"]),
    ov_cache: Path | None = typer.Option(None, "--ov-cache", help=HELP["ov_cache"]),
    ov_hint: str | None = typer.Option(None, "--ov-hint", help="openvino: latency (default) or throughput."),
    ov_requests: int | None = typer.Option(None, "--ov-requests", min=0, help=HELP["ov_requests"]),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs."),
) -> None:
    """Score every image and video of INPUT; write results.csv and predictions.csv into --out."""
    setup_logging(quiet=quiet, verbose=verbose)
    from mmdet_deploy.cli.progress import RunProgress, print_summary
    from mmdet_deploy.runtime.run import RunConfig, run_folder

    config = RunConfig(
        input_path, model, out, preset=preset, backend=backend, device=device, batch_size=batch_size,
        workers=workers, resume=resume, overwrite=overwrite, max_windows=max_windows, face_detectors=face_detectors,
        yunet_model=yunet_model, mediapipe_model=mediapipe_model, detect_size=detect_size, error_label=error_label,
        threshold=threshold, providers=providers, threads=threads, trt_fp16=trt_fp16, trt_cache=trt_cache,
        decoder=decoder, save_crops=save_crops, report=report, precision=precision, ov_cache=ov_cache,
        ov_hint=ov_hint, ov_requests=ov_requests,
    )
    summary = run_folder(config, progress=RunProgress(enabled=not quiet))
    if not quiet and summary.results_path is not None:
        print_summary(summary)
    if not quiet and summary.report_path is not None:
        typer.echo(f"wrote {summary.report_path}", err=True)
    raise typer.Exit(summary.exit_code)


def main() -> None:
    app()
