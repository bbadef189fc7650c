"""What every command shares: one-line user errors, exit codes, logging set-up."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mmdet_deploy.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARITY, EXIT_USAGE, MMDetError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_PARITY", "EXIT_USAGE", "setup_logging", "user_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn :class:`MMDetError` into one line on stderr and its exit code; bugs keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MMDetError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    # Library warnings (Pillow's "Corrupt EXIF data" on a phone photo, ...) go through logging, so --quiet
    # silences them like our own chatter; the file's row already says what went wrong with it.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR if quiet else logging.WARNING)
    # exporter internals log every rewrite at INFO; keep our own messages readable
    for noisy in ("onnxscript", "onnx_ir", "torch", "onnxslim"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    # "torchvision is not installed. Skipping torchvision::nms": true, expected, and irrelevant here
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
