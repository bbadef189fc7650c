"""Frozen model configurations: ``base`` is the released MM-Det model, ``tiny`` the same code path, small."""

from __future__ import annotations

from dataclasses import dataclass

from mmdet_deploy.contract import CLIP_FEATURE_DIM, CONFIGS, FRAMES, IMAGE_SIZE, MM_TOKEN_DIM, MM_TOKENS
from mmdet_deploy.errors import UsageError


@dataclass(frozen=True)
class MMDetConfig:
    """Widths and depths of the hybrid CNN + IAFA transformer (model-spec sections 1-6).

    The CNN has output stride 16, so ``image_size // 16`` is the side of the patch grid (14 at 224).
    ``frames`` and ``image_size`` are fixed by the trained embeddings of the real model.
    """

    name: str
    frames: int = FRAMES
    image_size: int = IMAGE_SIZE
    # CNN branch (ResNetV2-style, non-pre-activation bottlenecks, weight-standardised convs)
    stem_width: int = 64
    stage_depths: tuple[int, int, int] = (3, 4, 9)
    stage_channels: tuple[int, int, int] = (256, 512, 1024)
    stage_widths: tuple[int, int, int] = (64, 128, 256)
    freq_depth: int = 3
    gn_groups: int = 32
    gn_eps: float = 1e-5
    ws_eps: float = 1e-8
    blur_kernels: tuple[tuple[int, float], ...] = ((3, 0.8), (5, 1.3), (7, 1.8))
    # transformer
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    # fusion head (section 6); the input feature sizes are part of the model contract
    fusion_heads: int = 8
    clip_dim: int = CLIP_FEATURE_DIM
    mm_dim: int = MM_TOKEN_DIM
    mm_tokens: int = MM_TOKENS
    num_classes: int = 2

    @property
    def grid(self) -> int:
        """Side of the patch grid (output stride 16)."""
        return self.image_size // 16

    @property
    def patches(self) -> int:
        """Patch tokens per frame (196 at 224)."""
        return self.grid * self.grid

    @property
    def tokens(self) -> int:
        """Tokens in the transformer sequence: one frame token per frame plus all patches (1970)."""
        return self.frames + self.frames * self.patches

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


BASE = MMDetConfig(name="base")

#: Same architecture and code path, small widths and depths; T = 10 and 224x224 are kept.
TINY = MMDetConfig(
    name="tiny",
    stem_width=16,
    stage_depths=(1, 1, 2),
    stage_channels=(32, 64, 128),
    stage_widths=(8, 16, 32),
    freq_depth=1,
    gn_groups=8,
    embed_dim=64,
    depth=2,
    num_heads=4,
    fusion_heads=4,
)

_CONFIGS = {"base": BASE, "tiny": TINY}
assert tuple(_CONFIGS) == CONFIGS


def get_config(config: str | MMDetConfig) -> MMDetConfig:
    """Resolve a configuration by name (``base`` or ``tiny``) or pass one through."""
    if isinstance(config, MMDetConfig):
        return config
    try:
        return _CONFIGS[config]
    except KeyError:
        raise UsageError(f"unknown model config {config!r}; choose one of {', '.join(_CONFIGS)}") from None
