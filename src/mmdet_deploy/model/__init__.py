"""The pure-PyTorch MM-Det reference model (needs the ``export`` extra: torch).

Public API::

    from mmdet_deploy.model import load_model
    model = load_model("current_model.pth", head="simplified", config="base")
    logits = model(original, recons)          # (B, 2), index 1 = fake
"""

from __future__ import annotations

from mmdet_deploy.deps import require

require("torch", "the PyTorch reference model")

from mmdet_deploy.model.checkpoint import (  # noqa: E402
    CheckpointInfo,
    check_state_dict,
    read_checkpoint,
    sha256_file,
    write_demo_checkpoint,
)
from mmdet_deploy.model.checkpoint import load_model as load_model  # noqa: E402
from mmdet_deploy.model.config import BASE, TINY, MMDetConfig, get_config  # noqa: E402
from mmdet_deploy.model.mmdet import MMDet, probabilities  # noqa: E402


def build_model(config: str | MMDetConfig = "base", head: str = "simplified", seed: int | None = None) -> MMDet:
    """An MM-Det in eval mode, with seeded demo weights when ``seed`` is given (unprepared)."""
    from mmdet_deploy.model.checkpoint import init_demo_weights

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
