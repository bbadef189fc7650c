"""``mmdet-export demo-weights`` (and, later, ``onnx``): the model-side sub-commands."""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    app.command("demo-weights")(demo_weights)
    app.command("onnx")(onnx)


@user_errors
def demo_weights(
    out: Path = typer.Argument(..., help="Where to write the checkpoint (.pth or .safetensors)."),
    config: str = typer.Option("base", help="Model configuration: base (the real model) or tiny (tests)."),
    seed: int = typer.Option(0, help="Seed of the random weights (the file is deterministic per seed)."),
) -> None:
    """Write a deterministic random checkpoint in the real full format. Its predictions mean nothing."""
    setup_logging()
    from mmdet_deploy.model import write_demo_checkpoint

    path = write_demo_checkpoint(out, config=config, seed=seed)
    typer.echo(f"wrote demo weights ({config}, seed {seed}) to {path}: random, for testing the toolchain only")


@user_errors
def onnx(
    weights: Path = typer.Option(..., "--weights", help="MM-Det checkpoint (.pth/.pt/.safetensors)."),
    out: Path = typer.Option(..., "--out", help="Output .onnx file (written atomically)."),
    head: str = typer.Option("simplified", help="Head mode: simplified | fc | fusion."),
    config: str = typer.Option("base", help="Model configuration: base | tiny."),
    opset: int = typer.Option(18, help="ONNX opset (>= 17; the dynamo exporter emits 18 at least)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxslim on the graph."),
    check: bool = typer.Option(True, "--check/--no-check", help="Prove parity vs PyTorch on CPU backends."),
    check_backend: str = typer.Option("onnxruntime", "--check-backend", help="Backends the parity check runs "
                                      "on, comma-separated: onnxruntime, openvino (f32), openvino-bf16."),
    precision: str = typer.Option("fp32", help="fp32, or fp16 (mixed precision, the input TensorRT 11 needs)."),
    preset: str = typer.Option("faces", help="Preprocessing the checkpoint was trained with: faces | frames."),
    samples: Path | None = typer.Option(None, help="Folder of real images/videos added to the parity inputs."),
    with_features: bool = typer.Option(False, help="Add a 'features' output (pooled feature, for INT8 gates)."),
    exporter: str = typer.Option("auto", help="auto (dynamo, falling back to TorchScript) | dynamo | torchscript."),
    parity_clips: int = typer.Option(2, min=1, help="Random clips in the parity check."),
    recons: str = typer.Option("original", help="recons the checkpoint was trained with: original | vqvae."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Export a checkpoint to ONNX with its contract, a TensorRT report and a parity report."""
    setup_logging(verbose=verbose)
    from mmdet_deploy.export import export_onnx, format_report
    from mmdet_deploy.export.parity_check import parse_check_backends

    backends = parse_check_backends(check_backend) if check else ["onnxruntime"]
    result = export_onnx(
        weights, out, head=head, config=config, opset=opset, simplify=simplify, check=check, precision=precision,
        preset=preset, samples=samples, with_features=with_features, exporter=exporter, parity_clips=parity_clips,
        recons=recons,
        check_backends=backends,
    )
    typer.echo(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.node_count} nodes, exporter "
        f"{result.exporter}, opset {result.opset}, {result.export_seconds:.1f} s)"
    )
    for note in result.notes:
        typer.echo(f"  note: {note}")
    typer.echo(format_report(result.trt_report) + f"\n  report: {result.trt_report_path}")
    if result.parity is not None:
        for name, check_result in result.parity["backends"].items():
            o = check_result["overall"]
            typer.echo(
                f"parity on {name} vs PyTorch fp32 over {o['n']} clips: max |d logit| {o['max_abs']:.3g} "
                f"(tolerance {check_result['tolerance']['max_abs_logit']:.3g}), cosine {o['cosine']:.8f}, "
                f"agreement {o['agreement']:.3f}: {'PASSED' if check_result['passed'] else 'FAILED'}"
            )
        typer.echo(f"  report: {result.parity_path}")
    if result.contract.demo_weights:
        typer.echo("WARNING: demo weights: this model's predictions are meaningless", err=True)
