"""mmdet-deploy: export, verify and run the MM-Det video forgery detector.

The import package is deliberately light: nothing heavy (torch, onnx, tensorrt) is imported here.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
