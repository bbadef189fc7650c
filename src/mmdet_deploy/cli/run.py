"""``mmdet-run INPUT --model FILE.onnx --out DIR``: score every image and video of INPUT.

A thin Typer layer over :func:`mmdet_deploy.runtime.run_folder`: the flags build a
:class:`~mmdet_deploy.runtime.RunConfig` (which validates them), the progress bar and summary stay here.

Exit status: 0 when every media file was scored (``ok`` or ``no_face``), 1 when some could not be (their
rows say why; everything else is still written) or INPUT holds no media at all, 2 for a wrong command line
(or an ``--out`` another run is writing to), 130 when stopped with Ctrl-C (finished rows are kept).
"""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors
from mmdet_deploy.errors import EXIT_INTERRUPTED
from mmdet_deploy.runtime.pipeline import DEFAULT_FILE_TIMEOUT
from mmdet_deploy.runtime.run import default_workers

app = typer.Typer(
    name="mmdet-run",
    help="Score images and videos with an exported MM-Det model (ONNX Runtime, OpenVINO or TensorRT, no PyTorch "
    "needed) or a checkpoint (--backend torch).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


HELP = {
    "input": "A folder (searched recursively), one image or video, or a .txt file listing paths.",
    "model": "Exported model: .onnx carrying its contract (a TensorRT engine with --backend tensorrt, a "
    "checkpoint .pth/.safetensors with --backend torch).",
    "out": "Output folder: results.csv, predictions.csv, run.json, summary.json.",
    "preset": "faces (seed: face crops) or frames (official: centre crops). Default: the model's contract.",
    "workers": "Workers (threads, or processes with --decode-processes) that decode and crop ahead of inference.",
    "decode_processes": "Run the --workers as processes, not threads: decoding and face detection scale across "
    "cores past the GIL. For many-core hosts (about 8 cores and up); each process takes 0.5-2 s to start.",
    "max_windows": "frames preset: score at most N windows (of 10 frames) per video.",
    "face_chain": "faces preset: default (BlazeFace full-range, dlib, Haar) or seed (the notebook's: BlazeFace "
    "short-range, dlib, Haar). Detectors not installed are skipped.",
    "face_detectors": "faces preset: detectors in order instead of a chain, e.g. blazeface-full,dlib,haar; also "
    "blazeface-short, mediapipe, yunet. All must be available.",
    "detect_size": "faces preset: longer side, in pixels, of the frame copy that detectors see.",
    "error_label": "Label written to predictions.csv for files that failed (default: they are left out).",
    "threshold": "Label 1 when prob_fake >= this. Default: the model's contract.",
    "providers": "onnxruntime execution providers in priority order, e.g. tensorrt,cuda,cpu.",
    "save_crops": "Also write the 224x224 model inputs as crops/<filename>/<frame>.png.",
    "report": "Also write report.html, a self-contained review page (keeps small JPEG thumbnails in thumbs/).",
    "engine": "local (threads in this process) or ray (Ray Data: decode tasks and an inference actor pool).",
    "ray_address": "ray engine: the cluster to use (host:port, ray://host:port or auto). "
    "Default: start a private Ray on this machine, on loopback only.",
    "ray_max_in_flight": "ray engine: files being decoded at once (memory bound). Default: 2 x actors x batch size.",
    "ray_retries": "ray engine: retries of a file whose worker process died before it gets an error row.",
    "file_timeout": "Seconds a file may be prepared without progress before it gets an error row (0: no limit).",
    "recons": "The model's recons input: original (the frames again, the seed) or vqvae (VQ-VAE reconstructions, "
    "the official pipeline; needs --vqvae-model).",
    "vqvae_model": "--recons vqvae: the VQ-VAE ONNX written by `mmdet-export vqvae`.",
    "recons_jpeg": "--recons vqvae: store the original as JPEG q95 and the reconstruction as JPEG q75 before "
    "reading them, as the reference does (default: on, it is what the checkpoint saw).",
    "vqvae_providers": "--recons vqvae: onnxruntime providers of the VQ-VAE, e.g. cuda,cpu. Default: from --device.",
    "precision": "openvino: fp32 (default, pinned) or bf16 (float parts; a Q/DQ INT8 model stays INT8); "
    "torch: fp32 (default), fp16 (CUDA) or bf16.",
    "ov_cache": "openvino: folder of compiled models, rebuilt when the model or OpenVINO changes.",
    "ov_requests": "openvino: infer requests in flight per batch (0: OpenVINO's optimum for the hint).",
    "spin_wait": "onnxruntime: let its threads spin-wait between operators (ORT's default; lower latency when "
    "the model has the CPU alone). Off by default: decoding and face detection share the cores.",
    "decode_all_frames": "faces preset: decode every frame of the first 10 s. By default H.264/HEVC frames that "
    "neither the 10 sampled frames nor any other frame reference are skipped; the sampled frames are the same.",
}


@app.command()
@user_errors
def run(
    input_path: Path = typer.Argument(..., metavar="INPUT", help=HELP["input"]),
    model: Path = typer.Option(..., "--model", help=HELP["model"]),
    out: Path = typer.Option(..., "--out", help=HELP["out"]),
    preset: str | None = typer.Option(None, help=HELP["preset"]),
    backend: str = typer.Option("onnxruntime", help="onnxruntime, openvino (CPU), tensorrt or torch (a checkpoint; "
                                "needs torch)."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N. Default: cpu (cuda for tensorrt)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Clips per inference call, mixed across files."),
    workers: int = typer.Option(default_workers(), min=1, help=HELP["workers"]),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out, skipping files already done."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results of an earlier run in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary; warnings and errors only."),
    max_windows: int | None = typer.Option(None, "--max-windows", min=1, help=HELP["max_windows"]),
    face_chain: str | None = typer.Option(None, "--face-chain", help=HELP["face_chain"]),
    face_detectors: str | None = typer.Option(None, "--face-detectors", help=HELP["face_detectors"]),
    yunet_model: Path | None = typer.Option(None, "--yunet-model", help="YuNet .onnx for cv2.FaceDetectorYN."),
    mediapipe_model: Path | None = typer.Option(None, "--mediapipe-model", help="BlazeFace .tflite (Tasks API)."),
    detect_size: int = typer.Option(640, "--detect-size", min=32, help=HELP["detect_size"]),
    error_label: int | None = typer.Option(None, "--error-label", min=0, max=1, help=HELP["error_label"]),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0, help=HELP["threshold"]),
    providers: str | None = typer.Option(None, "--providers", help=HELP["providers"]),
    threads: int = typer.Option(0, "--threads", min=0, help="onnxruntime / openvino threads (0: one per core)."),
    spin_wait: bool = typer.Option(False, "--spin-wait", help=HELP["spin_wait"]),
    trt_fp16: bool = typer.Option(False, "--trt-fp16", help="onnxruntime TensorRT provider: allow FP16."),
    trt_cache: Path | None = typer.Option(None, "--trt-cache", help="onnxruntime TensorRT provider: engine cache."),
    decoder: str = typer.Option("auto", help="Video decoder: auto (PyAV when installed), pyav or opencv."),
    decode_all_frames: bool = typer.Option(False, "--decode-all-frames", help=HELP["decode_all_frames"]),
    save_crops: bool = typer.Option(False, "--save-crops", help=HELP["save_crops"]),
    report: bool = typer.Option(False, "--report", help=HELP["report"]),
    decode_processes: bool = typer.Option(False, "--decode-processes/--decode-threads", help=HELP["decode_processes"]),
    model_config: str | None = typer.Option(None, "--config", help="torch backend: base (default) or tiny."),
    head: str | None = typer.Option(None, "--head", help="torch backend: simplified (default) or fc."),
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="torch backend on CUDA: replay CUDA graphs."),
    file_timeout: float = typer.Option(DEFAULT_FILE_TIMEOUT, "--file-timeout", min=0.0, help=HELP["file_timeout"]),
    recons: str = typer.Option("original", help=HELP["recons"]),
    vqvae_model: Path | None = typer.Option(None, "--vqvae-model", help=HELP["vqvae_model"]),
    recons_jpeg: bool | None = typer.Option(None, "--recons-jpeg/--no-recons-jpeg", help=HELP["recons_jpeg"]),
    vqvae_providers: str | None = typer.Option(None, "--vqvae-providers", help=HELP["vqvae_providers"]),
    precision: str | None = typer.Option(None, "--precision", help=HELP["precision"]),
    ov_cache: Path | None = typer.Option(None, "--ov-cache", help=HELP["ov_cache"]),
    ov_hint: str | None = typer.Option(None, "--ov-hint", help="openvino: latency (default) or throughput."),
    ov_requests: int | None = typer.Option(None, "--ov-requests", min=0, help=HELP["ov_requests"]),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs."),
    engine: str = typer.Option("local", "--engine", help=HELP["engine"]),
    ray_address: str | None = typer.Option(None, "--ray-address", help=HELP["ray_address"]),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="ray engine: inference actors."),
    ray_gpus_per_actor: float = typer.Option(0.0, "--ray-gpus-per-actor", min=0.0,
                                             help="ray engine: GPUs reserved per actor (fractions share a GPU)."),
    ray_cpus_per_actor: float = typer.Option(1.0, "--ray-cpus-per-actor", min=0.0,
                                             help="ray engine: CPUs reserved per actor."),
    ray_cpus_per_task: float = typer.Option(1.0, "--ray-cpus-per-task", min=0.01,
                                            help="ray engine: CPUs reserved per file decoding task."),
    ray_max_in_flight: int | None = typer.Option(None, "--ray-max-in-flight", min=1, help=HELP["ray_max_in_flight"]),
    ray_retries: int = typer.Option(2, "--ray-retries", min=0, help=HELP["ray_retries"]),
    ray_connect_timeout: float = typer.Option(60.0, "--ray-connect-timeout", min=1.0,
                                              help="ray engine: seconds to wait for --ray-address to answer."),
) -> None:
    """Score every image and video of INPUT; write results.csv and predictions.csv into --out."""
    setup_logging(quiet=quiet, verbose=verbose)
    from mmdet_deploy.cli.progress import RunProgress, print_summary
    from mmdet_deploy.runtime.run import RunConfig, run_folder

    config = RunConfig(
        input_path, model, out, preset=preset, backend=backend, device=device, batch_size=batch_size,
        workers=workers, resume=resume, overwrite=overwrite, max_windows=max_windows, face_detectors=face_detectors,
        face_chain=face_chain,
        yunet_model=yunet_model, mediapipe_model=mediapipe_model, detect_size=detect_size, error_label=error_label,
        threshold=threshold, providers=providers, threads=threads, spin_wait=spin_wait, trt_fp16=trt_fp16,
        trt_cache=trt_cache, decoder=decoder, decode_all_frames=decode_all_frames, save_crops=save_crops,
        report=report, engine=engine, ray_address=ray_address,
        ray_actors=ray_actors,
        ray_gpus_per_actor=ray_gpus_per_actor, ray_cpus_per_actor=ray_cpus_per_actor,
        ray_cpus_per_task=ray_cpus_per_task, ray_max_in_flight=ray_max_in_flight, ray_retries=ray_retries,
        ray_connect_timeout=ray_connect_timeout, file_timeout=file_timeout,
        decode_processes=decode_processes, model_config=model_config, head=head, precision=precision,
        cuda_graphs=cuda_graphs,
        recons=recons, vqvae_model=vqvae_model, recons_jpeg=recons_jpeg, vqvae_providers=vqvae_providers,
        ov_cache=ov_cache, ov_hint=ov_hint, ov_requests=ov_requests,
    )
    try:
        summary = run_folder(config, progress=RunProgress(enabled=not quiet))
    except KeyboardInterrupt:  # before the run loop started (loading the model): nothing was written
        typer.echo("interrupted before any file was scored", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not quiet and summary.results_path is not None:
        print_summary(summary)
    if not quiet and summary.report_path is not None:
        typer.echo(f"wrote {summary.report_path}", err=True)
    raise typer.Exit(summary.exit_code)


def main() -> None:
    app()
