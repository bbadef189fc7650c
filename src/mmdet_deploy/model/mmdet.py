"""The MM-Det spatio-temporal model: hybrid embedding, 12 IAFA blocks, three heads (model-spec 1-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmdet_deploy.contract import CLIP_FEATURE_DIM, HEADS, MM_TOKEN_DIM, MM_TOKENS
from mmdet_deploy.errors import UsageError
from mmdet_deploy.model.cnn import HybridEmbed
from mmdet_deploy.model.config import MMDetConfig, get_config
from mmdet_deploy.model.transformer import Attention, IAFABlock


class Backbone(nn.Module):
    """``backbone.*``: tokens, embeddings, IAFA blocks and the final LayerNorm."""

    def __init__(self, cfg: MMDetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, t = cfg.embed_dim, cfg.frames
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))  # unused; kept for the checkpoint
        self.fc_token = nn.Parameter(torch.zeros(1, t, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.patches + 1, d))  # unused; kept for the checkpoint
        self.window_pos_embed = nn.Parameter(torch.zeros(1, cfg.patches + 1, d))
        self.temporal_pos_embed = nn.Parameter(torch.zeros(1, t, d))
        self.time_embed = nn.Parameter(torch.zeros(1, t, d))
        self.patch_embed = HybridEmbed(cfg)
        self.blocks = nn.ModuleList(
            IAFABlock(d, cfg.num_heads, cfg.mlp_hidden, t, cfg.patches, cfg.ln_eps) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.ln_eps)
        # constants derived from the weights once they are loaded (see prepare())
        self.register_buffer("prepared_frame_tokens", None, persistent=False)
        self.register_buffer("prepared_patch_add", None, persistent=False)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T, C) frame tokens with their embeddings, and the (1, T*P, C) additive term of the patches.

        Frame token l: fc_token[l] + temporal_pos_embed[l] + time_embed[l].
        Patch m of frame l (flat index l*P + m): window_pos_embed[1 + m] + time_embed[l].
        """
        if self.prepared_frame_tokens is not None and self.prepared_patch_add is not None:
            return self.prepared_frame_tokens, self.prepared_patch_add
        t, p, d = self.cfg.frames, self.cfg.patches, self.cfg.embed_dim
        frame_tokens = self.fc_token + self.temporal_pos_embed + self.time_embed
        patch_add = self.window_pos_embed[:, 1:].unsqueeze(1) + self.time_embed.unsqueeze(2)  # (1, T, P, C)
        return frame_tokens, patch_add.reshape(1, t * p, d)

    @torch.no_grad()
    def prepare(self) -> None:
        self.prepared_frame_tokens = None
        self.prepared_patch_add = None
        frame_tokens, patch_add = self.embeddings()
        self.prepared_frame_tokens, self.prepared_patch_add = frame_tokens.clone(), patch_add.clone()

    def forward(self, original: torch.Tensor, recons: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) x 2 -> normalised tokens (B, T + T*P, C), frame tokens first."""
        cfg = self.cfg
        shape = (-1, 3, cfg.image_size, cfg.image_size)
        patches = self.patch_embed(original.reshape(shape), recons.reshape(shape))  # (B*T, P, C)
        patches = patches.reshape(-1, cfg.frames * cfg.patches, cfg.embed_dim)  # frame-major
        frame_tokens, patch_add = self.embeddings()
        x = torch.cat([frame_tokens.expand(patches.shape[0], -1, -1), patches + patch_add], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class FinalFusion(nn.Module):
    """``final_fusion``: per-token scalar weights from an attention whose projection is Linear(C, 1)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.channel_attn = Attention(dim, num_heads, out_dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.channel_attn(tokens)  # (B, N, 1), unbounded, no sigmoid
        return (tokens * weights).mean(dim=1)


class MMDet(nn.Module):
    """MM-Det with one of three heads: ``simplified``, ``fc`` or ``fusion``.

    ``forward(original, recons[, clip_feature, mm_tokens]) -> logits (B, 2)``, index 1 = fake.
    Inputs are float32 (B, T, 3, H, W), ImageNet-normalised RGB.
    """

    def __init__(self, config: str | MMDetConfig = "base", head: str = "simplified") -> None:
        super().__init__()
        if head not in HEADS:
            raise UsageError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        cfg = get_config(config)
        self.cfg = cfg
        self.head_mode = head
        self.backbone = Backbone(cfg)
        if head == "fusion":
            self.clip_proj = nn.Linear(cfg.clip_dim, cfg.embed_dim)
            self.mm_proj = nn.Linear(cfg.mm_dim, cfg.embed_dim)
            self.final_fusion = FinalFusion(cfg.embed_dim, cfg.fusion_heads)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.prepared = False

    def features(
        self,
        original: torch.Tensor,
        recons: torch.Tensor,
        clip_feature: torch.Tensor | None = None,
        mm_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled (B, C) feature that ``head`` classifies."""
        tokens = self.backbone(original, recons)
        t = self.cfg.frames
        if self.head_mode == "simplified":
            return tokens.mean(dim=1)
        if self.head_mode == "fc":
            return tokens[:, :t].mean(dim=1)
        if clip_feature is None or mm_tokens is None:
            raise UsageError(f"head 'fusion' needs clip_feature (B, {CLIP_FEATURE_DIM}) and mm_tokens "
                             f"(B, {MM_TOKENS}, {MM_TOKEN_DIM})")
        fused = torch.cat([tokens[:, :t], self.clip_proj(clip_feature).unsqueeze(1), self.mm_proj(mm_tokens)], dim=1)
        return self.final_fusion(fused)

    def forward(
        self,
        original: torch.Tensor,
        recons: torch.Tensor,
        clip_feature: torch.Tensor | None = None,
        mm_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(self.features(original, recons, clip_feature, mm_tokens))

    @torch.no_grad()
    def prepare(self) -> MMDet:
        """Inference preparation: standardise conv weights in fp32, fold eval BatchNorm, precompute embeddings.

        State-dict keys are unchanged (derived tensors are non-persistent buffers); call again after
        loading new weights. Puts the model in eval mode.
        """
        self.eval()
        for module in self.modules():
            if module is not self and hasattr(module, "prepare"):
                module.prepare()
        self.prepared = True
        return self


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Probability of fake = softmax(logits)[:, 1]."""
    return F.softmax(logits, dim=1)[:, 1]
