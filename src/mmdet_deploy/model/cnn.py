"""One CNN branch (model-spec section 2) and the hybrid patch embedding that joins two of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmdet_deploy.model.config import MMDetConfig
from mmdet_deploy.model.layers import Bottleneck, ConvBNAct, GroupNormAct, HighPass, StdConv2d, out_size, same_pad


class Stem(nn.Module):
    """conv 7x7/s2 -> GroupNorm + ReLU -> max-pool 3x3/s2 (SAME; zero pad is exact after ReLU)."""

    def __init__(self, cfg: MMDetConfig) -> None:
        super().__init__()
        self.conv = StdConv2d(3, cfg.stem_width, 7, 2, input_size=cfg.image_size, eps=cfg.ws_eps)
        self.norm = GroupNormAct(cfg.stem_width, cfg.gn_groups, cfg.gn_eps)
        before, after = same_pad(out_size(cfg.image_size, 2), 3, 2)
        self.pool_pad = (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.max_pool2d(F.pad(x, self.pool_pad), 3, 2)


class Stage(nn.Module):
    """A sequence of bottlenecks; only the first may change stride or width (keys ``blocks.N``)."""

    def __init__(
        self, cfg: MMDetConfig, in_chs: int, out_chs: int, width: int, depth: int, stride: int, input_size: int
    ) -> None:
        super().__init__()
        blocks = []
        for i in range(depth):
            blocks.append(
                Bottleneck(
                    in_chs if i == 0 else out_chs,
                    out_chs,
                    width,
                    stride if i == 0 else 1,
                    input_size=input_size if i == 0 else out_size(input_size, stride),
                    groups=cfg.gn_groups,
                    gn_eps=cfg.gn_eps,
                    ws_eps=cfg.ws_eps,
                )
            )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class CNNBranch(nn.Module):
    """ResNetV2-style branch with a high-pass frequency path, output stride 16.

    stem -> stages.0 ----------------------------\\
    freq_stem -> high-pass (3 blurs) -> freq_stage -> concat -> 1x1 conv + BN + ReLU -> stages.1 -> stages.2
    """

    def __init__(self, cfg: MMDetConfig) -> None:
        super().__init__()
        c0, c1, c2 = cfg.stage_channels
        w0, w1, w2 = cfg.stage_widths
        d0, d1, d2 = cfg.stage_depths
        s4 = out_size(out_size(cfg.image_size, 2), 2)  # 56 at 224
        self.stem = Stem(cfg)
        self.freq_stem = Stem(cfg)
        self.high_pass = HighPass(cfg.stem_width, cfg.blur_kernels)
        self.stages = nn.ModuleList(
            [
                Stage(cfg, cfg.stem_width, c0, w0, d0, 1, s4),
                Stage(cfg, c0, c1, w1, d1, 2, s4),
                Stage(cfg, c1, c2, w2, d2, 2, out_size(s4, 2)),
            ]
        )
        self.freq_stage = Stage(cfg, cfg.stem_width * len(cfg.blur_kernels), c0, w0, cfg.freq_depth, 1, s4)
        self.stems_transition_conv_1x1 = ConvBNAct(2 * c0, c0, bias=False, act=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = self.stages[0](self.stem(x))
        freq = self.freq_stage(self.high_pass(self.freq_stem(x)))
        x = self.stems_transition_conv_1x1(torch.cat([rgb, freq], dim=1))
        return self.stages[2](self.stages[1](x))


class HybridEmbed(nn.Module):
    """Two branches (original, recons) -> concat -> 1x1 transition (+BN+ReLU) -> 1x1 proj -> tokens."""

    def __init__(self, cfg: MMDetConfig) -> None:
        super().__init__()
        c2 = cfg.stage_channels[2]
        self.rgb_backbone = CNNBranch(cfg)
        self.recons_backbone = CNNBranch(cfg)
        self.transition = ConvBNAct(2 * c2, c2, bias=True, act=True)
        self.proj = nn.Conv2d(c2, cfg.embed_dim, 1)

    def forward(self, original: torch.Tensor, recons: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) x 2 -> (N, patches, embed_dim), patches in row-major grid order."""
        x = torch.cat([self.rgb_backbone(original), self.recons_backbone(recons)], dim=1)
        x = self.proj(self.transition(x))
        return x.flatten(2).transpose(1, 2)
