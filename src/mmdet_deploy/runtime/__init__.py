"""The lean runtime: media discovery, frame sampling, face crops, batched inference, results.

::

    from mmdet_deploy.runtime import run_folder, RunConfig

    summary = run_folder(RunConfig("videos/", model="model.onnx", out="runs/x"))

Importing this package never imports torch, tensorrt or onnx (a test proves it); the names below load
their module (OpenCV, PyAV, ONNX Runtime) on first use only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmdet_deploy.runtime.run import RunConfig, RunSummary, run_folder

__all__ = ["RunConfig", "RunSummary", "run_folder"]

#: Public name -> module that defines it (imported when the name is first read).
_LAZY = {"RunConfig": "mmdet_deploy.runtime.run", "RunSummary": "mmdet_deploy.runtime.run",
         "run_folder": "mmdet_deploy.runtime.run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
