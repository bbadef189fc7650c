"""The pure-PyTorch MM-Det reference model (needs the ``export`` extra: torch).

Public API::

    from mmdet_deploy.model import load_model
    model = load_model("current_model.pth", head="simplified", config="base")
    logits = model(original, recons)          # (B, 2), index 1 = fake

The configurations (:mod:`mmdet_deploy.model.config`: ``MMDetConfig``, ``BASE``, ``TINY``, ``get_config``)
are plain dataclasses and import without torch, so FLOP counts and reports work on a torch-free install.
Every other name here needs torch: reading it raises
:class:`~mmdet_deploy.errors.MissingDependencyError` naming the extra when torch is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmdet_deploy.deps import require
from mmdet_deploy.model.config import BASE, TINY, MMDetConfig, get_config

if TYPE_CHECKING:
    from mmdet_deploy.model.checkpoint import (
        CheckpointInfo,
        check_state_dict,
        load_model,
        read_checkpoint,
        sha256_file,
        write_demo_checkpoint,
    )
    from mmdet_deploy.model.mmdet import MMDet, probabilities

#: Names that need torch -> the module that defines them (imported on first use).
_TORCH_NAMES = {
    "CheckpointInfo": "mmdet_deploy.model.checkpoint",
    "check_state_dict": "mmdet_deploy.model.checkpoint",
    "load_model": "mmdet_deploy.model.checkpoint",
    "read_checkpoint": "mmdet_deploy.model.checkpoint",
    "sha256_file": "mmdet_deploy.model.checkpoint",
    "write_demo_checkpoint": "mmdet_deploy.model.checkpoint",
    "MMDet": "mmdet_deploy.model.mmdet",
    "probabilities": "mmdet_deploy.model.mmdet",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        require("torch", "the PyTorch reference model")
        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(config: str | MMDetConfig = "base", head: str = "simplified", seed: int | None = None) -> MMDet:
    """An MM-Det in eval mode, with seeded demo weights when ``seed`` is given (unprepared)."""
    require("torch", "the PyTorch reference model")
    from mmdet_deploy.model.checkpoint import init_demo_weights
    from mmdet_deploy.model.mmdet import MMDet

    model = MMDet(config, head)
    if seed is not None:
        init_demo_weights(model, seed)
    return model.eval()


__all__ = [
    "BASE",
    "TINY",
    "CheckpointInfo",
    "MMDet",
    "MMDetConfig",
    "build_model",
    "check_state_dict",
    "get_config",
    "load_model",
    "probabilities",
    "read_checkpoint",
    "sha256_file",
    "write_demo_checkpoint",
]
