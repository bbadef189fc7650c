"""ViT-B parts and the IAFA (In-and-Across Frame Attention) block (model-spec section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with fused SDPA: qkv split as (3, heads, head_dim), scale head_dim^-0.5."""

    def __init__(self, dim: int, num_heads: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim if out_dim is None else out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(-1, n, c))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def group_by_stride(seq: torch.Tensor, frames: int, patches: int) -> torch.Tensor:
    """(B, T*P, C) frame-major -> (B*T, P, C) where group w holds the flat positions p with p mod T == w."""
    c = seq.shape[-1]
    return seq.reshape(-1, patches, frames, c).transpose(1, 2).reshape(-1, patches, c)


def ungroup_by_stride(groups: torch.Tensor, frames: int, patches: int) -> torch.Tensor:
    """Exact inverse of :func:`group_by_stride`: (B*T, P, C) -> (B, T*P, C)."""
    c = groups.shape[-1]
    return groups.reshape(-1, frames, patches, c).transpose(1, 2).reshape(-1, patches * frames, c)


class IAFABlock(nn.Module):
    """Across-frame attention over all patch tokens, then within-group attention with the frame tokens.

    Input and output: (B, T + T*P, C) = [fc_0..fc_{T-1}, frame 0 patches, ..., frame T-1 patches].
    The within-group step regroups the frame-major patch sequence so that group w holds the flat positions
    p with p mod T == w (a strided sample over all frames, not one frame): this is what the trained weights
    expect, so it is reproduced exactly.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, frames: int, patches: int, eps: float) -> None:
        super().__init__()
        self.frames = frames
        self.patches = patches
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.temporal_norm1 = nn.LayerNorm(dim, eps=eps)
        self.temporal_attn = Attention(dim, num_heads)
        self.temporal_norm2 = nn.LayerNorm(dim, eps=eps)
        self.temporal_mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, p, c = self.frames, self.patches, x.shape[-1]
        fc, seq = x[:, :t], x[:, t:]
        # 1) across frames: all T*P patch tokens attend jointly; frame tokens do not take part
        seq = seq + self.attn(self.norm1(seq))
        seq = seq + self.mlp(self.norm2(seq))
        # 2) regroup: flat position p = i*T + w -> group w, and prepend frame token w
        groups = torch.cat([fc.reshape(-1, 1, c), group_by_stride(seq, t, p)], dim=1)  # (B*T, 1+P, C)
        groups = groups + self.temporal_attn(self.temporal_norm1(groups))
        groups = groups + self.temporal_mlp(self.temporal_norm2(groups))
        # 3) undo the regrouping exactly
        fc = groups[:, 0].reshape(-1, t, c)
        seq = ungroup_by_stride(groups[:, 1:], t, p)
        return torch.cat([fc, seq], dim=1)
