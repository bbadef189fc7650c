"""``mmdet-export build``: ONNX -> TensorRT engine (+ ``FILE.engine.json`` sidecar); a thin layer over
:func:`mmdet_deploy.export.tensorrt.build_engine`."""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors
from mmdet_deploy.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("build")(build)


@user_errors
def build(
    onnx: Path = typer.Option(..., "--onnx", help="ONNX model from `mmdet-export onnx` (fp32, fp16 or Q/DQ)."),
    out: Path = typer.Option(..., "--out", help="Engine file to write (FILE.engine; FILE.engine.json beside it)."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 engine (TensorRT 11: needs an fp16 ONNX)."),
    int8: bool = typer.Option(False, "--int8", help="INT8 engine (Q/DQ ONNX, or --calib frames on TensorRT 10)."),
    calib: Path | None = typer.Option(None, "--calib", help="INT8 calibration frames (TensorRT 10 only)."),
    calib_cache: Path | None = typer.Option(None, "--calib-cache", help="Calibration cache (default OUT.calib.cache)."),
    min_batch: int = typer.Option(1, "--min-batch", min=1, help="Smallest batch of the optimisation profile."),
    opt_batch: int = typer.Option(1, "--opt-batch", min=1, help="Batch TensorRT tunes for."),
    max_batch: int = typer.Option(4, "--max-batch", min=1, help="Largest batch the engine accepts."),
    workspace: float = typer.Option(4.0, "--workspace", help="Builder workspace limit in GiB."),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="Timing cache file: read when present, written after the build."
    ),
    opt_level: int = typer.Option(3, "--opt-level", help="Builder optimisation level 0-5 (higher: slower build)."),
    strict_fp32: bool = typer.Option(
        False, "--strict-fp32/--tf32", help="Clear TF32 for exact fp32 parity (default: TF32 allowed)."
    ),
    device: int = typer.Option(0, "--device", min=0, help="CUDA device index to build on."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show TensorRT's log."),
) -> None:
    """Build a TensorRT engine for this GPU and this TensorRT (engines do not move between them)."""
    setup_logging(verbose=verbose)
    if fp16 and int8:
        raise UsageError("choose one of --fp16 and --int8")
    from mmdet_deploy.export.tensorrt import BuildOptions, build_engine

    options = BuildOptions(
        precision="fp16" if fp16 else "int8" if int8 else "fp32",
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_gb=workspace,
        opt_level=opt_level,
        timing_cache=timing_cache,
        calib_dir=calib,
        calib_cache=calib_cache,
        strict_fp32=strict_fp32,
        device=device,
    )
    result = build_engine(onnx, out, options)
    info = result.info
    typer.echo(
        f"wrote {result.engine} ({result.engine.stat().st_size / 1e6:.1f} MB, {info.precision}, "
        f"{'strongly' if info.strongly_typed else 'weakly'} typed, batch {info.profile['min']}-{info.profile['max']} "
        f"opt {info.profile['opt']}) for {info.gpu_name} (sm {info.compute_capability}), TensorRT "
        f"{info.tensorrt_version}, in {result.seconds:.1f} s"
    )
    if result.pinned_layers:
        typer.echo(f"  {len(result.pinned_layers)} norm/softmax/reduction layers pinned to fp32")
    typer.echo(f"  sidecar: {result.sidecar}")
    if info.model_contract().demo_weights:
        typer.echo("WARNING: demo weights: this engine's predictions are meaningless", err=True)
