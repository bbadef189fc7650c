"""Shared fixtures and the automatic skips for hardware-bound tests."""

from __future__ import annotations

import importlib.util

import pytest


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_trt = pytest.mark.skip(reason="needs TensorRT (pip install 'mmdet-deploy[gpu]' on a GPU machine)")
    has_gpu = has_trt = None
    for item in items:
        if "gpu" in item.keywords:
            has_gpu = _has_cuda() if has_gpu is None else has_gpu
            if not has_gpu:
                item.add_marker(skip_gpu)
        if "trt" in item.keywords:
            has_trt = _has_tensorrt() if has_trt is None else has_trt
            if not has_trt:
                item.add_marker(skip_trt)
