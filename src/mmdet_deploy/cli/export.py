"""``mmdet-export``: checkpoint -> ONNX -> TensorRT, calibration and thresholds.

Each group of sub-commands lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="mmdet-export",
    help="Export MM-Det checkpoints to ONNX / TensorRT and prove parity with the PyTorch reference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules that add sub-commands to ``mmdet-export`` (each defines ``register(app)``).
COMMAND_MODULES = (
    "mmdet_deploy.cli.model_cmds",
    "mmdet_deploy.cli.build_cmds",
    "mmdet_deploy.cli.int8_cmds",
    "mmdet_deploy.cli.vqvae_cmds",
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
