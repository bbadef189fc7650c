"""``mmdet-export demo-weights`` (and, later, ``onnx``): the model-side sub-commands."""

from __future__ import annotations

from pathlib import Path

import typer

from mmdet_deploy.cli.common import setup_logging, user_errors


def register(app: typer.Typer) -> None:
    app.command("demo-weights")(demo_weights)


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
