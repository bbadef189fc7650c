"""``mmdet-export vqvae`` and ``mmdet-export vqvae-demo-weights``: the VQ-VAE that makes the ``recons`` input."""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    app.command("vqvae")(vqvae)
    app.command("vqvae-demo-weights")(vqvae_demo_weights)


@user_errors
def vqvae_demo_weights(
    out: Path = typer.Argument(..., help="Where to write the checkpoint (.pt, .pth or .safetensors)."),
    config: str = typer.Option("base", help="base (the reference's width 256, 512 codes) or tiny (width 16, tests)."),
    seed: int = typer.Option(0, help="Seed of the random weights (the file is deterministic per seed)."),
) -> None:
    """Write deterministic random VQ-VAE weights with the reference's keys. Their reconstructions mean nothing."""
    setup_logging()
    from mmdet_deploy.model.vqvae_io import write_vqvae_demo

    path = write_vqvae_demo(out, config=config, seed=seed)
    typer.echo(f"wrote VQ-VAE demo weights ({config}, seed {seed}) to {path}: random, for testing the toolchain only")


@user_errors
def vqvae(
    weights: Path = typer.Option(..., "--weights", help="VQ-VAE checkpoint (the reference's vqvae/model.pt)."),
    out: Path = typer.Option(..., "--out", help="Output .onnx file (written atomically)."),
    config: str | None = typer.Option(None, help="base | tiny. Default: the demo marker's, else base."),
    opset: int = typer.Option(18, help="ONNX opset (>= 13)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxslim on the graph."),
    check: bool = typer.Option(True, "--check/--no-check", help="Prove parity vs PyTorch on ONNX Runtime CPU."),
    samples: Path | None = typer.Option(None, help="Folder of real images/videos added to the parity inputs."),
    exporter: str = typer.Option("auto", help="auto (dynamo, falling back to TorchScript) | dynamo | torchscript."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Export the VQ-VAE to ONNX (batch, height and width dynamic; BatchNorm folded) with a parity report."""
    setup_logging(verbose=verbose)
    from mmdet_deploy.export.vqvae_export import export_vqvae

    result = export_vqvae(
        weights, out, config=config, opset=opset, simplify=simplify, check=check, samples=samples, exporter=exporter
    )
    c = result.contract
    typer.echo(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.node_count} nodes, width {c.width}, "
        f"{c.codes} codes, exporter {result.exporter}, opset {result.opset}, {result.export_seconds:.1f} s)"
    )
    for note in result.notes:
        typer.echo(f"  note: {note}")
    if result.parity is not None:
        p = result.parity
        agreement = min(g["code_agreement"] for g in p["groups"].values())
        max_abs = max(g["output_max_abs"] for g in p["groups"].values())
        limit = p["tolerance"]["max_share_over_1_grey_level"]
        typer.echo(
            f"parity vs PyTorch over {len(p['groups'])} groups: pixels off by > 1 grey level "
            f"{p['worst_share_over_1']:.3%} (tolerance {limit:.3%}), max |d output| {max_abs:.3g}, "
            f"code agreement >= {agreement:.5f}, crop-with-margin == full crop: {p['crop_equals_full']}: "
            f"{'PASSED' if p['passed'] else 'FAILED'}\n  report: {result.parity_path}"
        )
    if c.demo_weights:
        typer.echo("WARNING: demo weights: this VQ-VAE's reconstructions are meaningless", err=True)
