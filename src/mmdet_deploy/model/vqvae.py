"""The VQ-VAE that makes MM-Det's ``recons`` input (model-spec section 9), in plain PyTorch.

``VectorQuantizedVAE(3, 256, K=512)`` of the reference, with its state-dict keys (``encoder.0`` ...
``decoder.6``, ``codebook.embedding.weight``). Two behaviours of the reference are reproduced on purpose:

* its ResBlock starts with ``nn.ReLU(True)``, which overwrites the block's input in place before the
  residual addition reads it: ``x + block(x)`` therefore computes ``relu(x) + block(x)``;
* quantisation is ``torch.addmm(|c|^2 + |z|^2, z, c^T, alpha=-2)`` then ``torch.min`` (ties to the lowest
  index), and the decoder reads the codebook rows at those indices.

:func:`reference_reconstruct` is the reference's per-frame procedure (steps 2-4 of issue 16) in torch;
:class:`ExportableVQVAE` is the graph that ``mmdet-export vqvae`` writes (BatchNorm folded, distances as a
1x1 convolution, ``ArgMin`` with ``select_last_index=0``). Loading and demo weights: ``model/vqvae_io.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmdet_deploy.errors import UsageError


@dataclass(frozen=True)
class VQVAEConfig:
    """Hidden width (channels of every 256-channel layer in the reference) and codebook size."""

    name: str
    width: int
    codes: int


VQVAE_BASE = VQVAEConfig("base", 256, 512)
#: Same code path, small width: for tests (about 0.3 GFLOP per 640x360 frame instead of 135).
VQVAE_TINY = VQVAEConfig("tiny", 16, 64)
VQVAE_CONFIGS = {c.name: c for c in (VQVAE_BASE, VQVAE_TINY)}


def get_vqvae_config(config: str | VQVAEConfig) -> VQVAEConfig:
    if isinstance(config, VQVAEConfig):
        return config
    if config not in VQVAE_CONFIGS:
        raise UsageError(f"unknown VQ-VAE config {config!r}; choose one of {', '.join(VQVAE_CONFIGS)}")
    return VQVAE_CONFIGS[config]


class ResBlock(nn.Module):
    """``block`` = ReLU, Conv 3x3 (pad 1), BN, ReLU, Conv 1x1, BN; output ``relu(x) + block(x)`` (see module doc)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, 1, 1),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 1),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference's in-place ReLU replaced x by relu(x) before `x + ...` read it: keep that, out of place.
        h = self.block[0](x)
        y = h
        for layer in list(self.block)[1:]:
            y = layer(y)
        return h + y


class VQEmbedding(nn.Module):
    """The codebook: ``embedding.weight`` (K, width)."""

    def __init__(self, codes: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codes, width)


class VectorQuantizedVAE(nn.Module):
    """The reference architecture; ``forward(x)`` maps normalised RGB (N, 3, H, W) to (N, 3, 4*(H//4), 4*(W//4))."""

    def __init__(self, config: str | VQVAEConfig = "base") -> None:
        super().__init__()
        self.cfg = get_vqvae_config(config)
        dim, in_dim = self.cfg.width, 3
        self.encoder = nn.Sequential(
            nn.Conv2d(in_dim, dim, 4, 2, 1),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 4, 2, 1),
            ResBlock(dim),
            ResBlock(dim),
        )
        self.codebook = VQEmbedding(self.cfg.codes, dim)
        self.decoder = nn.Sequential(
            ResBlock(dim),
            ResBlock(dim),
            nn.ReLU(),
            nn.ConvTranspose2d(dim, dim, 4, 2, 1),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.ConvTranspose2d(dim, in_dim, 4, 2, 1),
            nn.Tanh(),
        )

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Codebook indices (N, h, w) of latents (N, width, h, w), computed as the reference computes them."""
        codebook = self.codebook.embedding.weight
        flat = z.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
        codebook_sqr = torch.sum(codebook**2, dim=1)
        inputs_sqr = torch.sum(flat**2, dim=1, keepdim=True)
        distances = torch.addmm(codebook_sqr + inputs_sqr, flat, codebook.t(), alpha=-2.0, beta=1.0)
        _, indices = torch.min(distances, dim=1)
        return indices.view(z.shape[0], z.shape[2], z.shape[3])

    def forward_with_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.quantize(self.encoder(x))
        z_q = self.codebook.embedding(indices).permute(0, 3, 1, 2).contiguous()
        return self.decoder(z_q), indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_codes(x)[0]


# ---------------------------------------------------------------------------------------------------
# the reference's per-frame procedure
# ---------------------------------------------------------------------------------------------------


def to_model_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> float32 (N, 3, H, W): torchvision ``ToTensor`` then ``Normalize(0.5, 0.5)``."""
    x = torch.from_numpy(np.array(frames, copy=True)).permute(0, 3, 1, 2).contiguous()
    return (x.to(torch.float32).div(255) - 0.5) / 0.5


def to_uint8(recons: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Model output (N, 3, h, w) -> uint8 (N, H, W, 3): nearest resize to the input size when it differs,
    ``x * 0.5 + 0.5`` per channel, then ``np.uint8(x * 255.)`` (truncation), as the reference does."""
    if tuple(recons.shape[-2:]) != (height, width):
        recons = F.interpolate(recons, (height, width), mode="nearest")
    denorm = torch.empty_like(recons)
    for c in range(recons.shape[1]):
        denorm[:, c] = recons[:, c].clone() * 0.5 + 0.5
    return np.uint8(denorm.permute(0, 2, 3, 1).cpu().numpy() * 255.0)


@torch.inference_mode()
def reference_reconstruct(model: VectorQuantizedVAE, frames: np.ndarray, batch: int = 8) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> the reference's uint8 reconstructions (N, H, W, 3), without the JPEG steps."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UsageError(f"expected uint8 RGB frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    out = [to_uint8(model(to_model_input(frames[i : i + batch])), height, width) for i in range(0, len(frames), batch)]
    return np.concatenate(out) if out else np.empty_like(frames)


# ---------------------------------------------------------------------------------------------------
# export form
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def _fold(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval BatchNorm into the convolution before it (output channels: dim 0, or dim 1 if transposed)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
    conv.weight.copy_(conv.weight * scale.reshape(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(model: VectorQuantizedVAE) -> VectorQuantizedVAE:
    """A copy of ``model`` with every BatchNorm folded into its convolution and replaced by Identity."""
    folded = copy.deepcopy(model).eval()
    pairs = [(folded.encoder, 0, 1), (folded.decoder, 3, 4)]
    for block in (folded.encoder[4], folded.encoder[5], folded.decoder[0], folded.decoder[1]):
        pairs += [(block.block, 1, 2), (block.block, 4, 5)]
    for seq, conv_at, bn_at in pairs:
        _fold(seq[conv_at], seq[bn_at])
        seq[bn_at] = nn.Identity()
    return folded


class ExportableVQVAE(nn.Module):
    """Graph form: ``image`` (N, 3, H, W) -> (``recons`` (N, 3, 4*(H//4), 4*(W//4)), ``codes`` (N, H//4, W//4)).

    Distances |c|^2 + |z|^2 - 2 z.c are a 1x1 convolution over the latent map, so no reshape depends on the
    image size; ``argmin`` exports as ONNX ``ArgMin(select_last_index=0)``: ties go to the lowest index, as
    with ``torch.min`` in the reference.
    """

    def __init__(self, model: VectorQuantizedVAE) -> None:
        super().__init__()
        folded = fold_batchnorm(model)
        self.encoder, self.decoder = folded.encoder, folded.decoder
        codebook = folded.codebook.embedding.weight.detach().clone()
        self.register_buffer("codebook", codebook)
        self.register_buffer("kernel", codebook[:, :, None, None].clone())
        self.register_buffer("codebook_sqr", torch.sum(codebook**2, dim=1)[None, :, None, None])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(image)
        z_sqr = torch.sum(z * z, dim=1, keepdim=True)
        distances = (self.codebook_sqr + z_sqr) - 2.0 * F.conv2d(z, self.kernel)
        codes = torch.argmin(distances, dim=1)
        z_q = F.embedding(codes, self.codebook).permute(0, 3, 1, 2)
        return self.decoder(z_q), codes
