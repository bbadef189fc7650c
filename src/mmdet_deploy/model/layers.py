"""Building blocks of the CNN branches, written to export cleanly.

* :class:`StdConv2d` - weight-standardised conv with constant TensorFlow-"SAME" padding;
* :class:`ConvBNAct` - conv + eval BatchNorm (+ ReLU) that folds into one conv on :meth:`prepare`;
* :class:`HighPass` - f - GaussianBlur_k(f) for k = 3, 5, 7 as constant depthwise convs;
* :class:`Bottleneck` - the non-pre-activation ResNetV2 bottleneck.

"Prepared" modules keep their state-dict keys: derived weights are non-persistent buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for a static input size."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def out_size(size: int, stride: int) -> int:
    """Output size of a SAME-padded layer."""
    return math.ceil(size / stride)


def standardize_weight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Per output channel: (w - mean) / sqrt(biased var + eps) over (in, kh, kw), computed in fp32."""
    w = weight.float()
    flat = w.reshape(w.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + eps)).reshape_as(w)


class StdConv2d(nn.Conv2d):
    """Weight-standardised conv without bias; SAME padding fixed from the static input size."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, *, input_size: int, eps: float = 1e-8
    ) -> None:
        super().__init__(in_chs, out_chs, kernel, stride=stride, padding=0, bias=False)
        self.eps = eps
        before, after = same_pad(input_size, kernel, stride)
        self.symmetric = before == after
        self.pad = (before, after, before, after)
        self.register_buffer("prepared_weight", None, persistent=False)

    def effective_weight(self) -> torch.Tensor:
        if self.prepared_weight is not None:
            return self.prepared_weight
        return standardize_weight(self.weight, self.eps)

    @torch.no_grad()
    def prepare(self) -> None:
        """Standardise the kernel once, in fp32 (eps 1e-8 underflows in fp16)."""
        self.prepared_weight = standardize_weight(self.weight, self.eps).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        if self.symmetric:
            return F.conv2d(x, w, None, self.stride, self.pad[0])
        return F.conv2d(F.pad(x, self.pad), w, None, self.stride)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm (affine) optionally followed by ReLU."""

    def __init__(self, channels: int, groups: int, eps: float, act: bool = True) -> None:
        super().__init__(groups, channels, eps=eps, affine=True)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.act else x


class ConvBNAct(nn.Sequential):
    """``Sequential(conv 1x1, BatchNorm2d[, ReLU])`` whose eval BatchNorm folds into the conv on prepare.

    Keys stay ``0.weight`` (``0.bias``), ``1.weight/bias/running_mean/running_var/num_batches_tracked``.
    """

    def __init__(self, in_chs: int, out_chs: int, bias: bool, act: bool) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, 1, bias=bias), nn.BatchNorm2d(out_chs)]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)
        self.act = act
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)

    @torch.no_grad()
    def prepare(self) -> None:
        conv, bn = self[0], self[1]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        self.folded_weight = (conv.weight.double() * scale[:, None, None, None]).to(conv.weight.dtype)
        self.folded_bias = ((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded_weight is None or self.training:
            x = self[1](self[0](x))
        else:
            x = F.conv2d(x, self.folded_weight, self.folded_bias)
        return F.relu(x) if self.act else x


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian over offsets -(size//2)..size//2 (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size // 2)
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


class HighPass(nn.Module):
    """Concatenate f - blur_k(f) for each (k, sigma): reflect pad k//2, depthwise constant Gaussian conv."""

    def __init__(self, channels: int, kernels: tuple[tuple[int, float], ...]) -> None:
        super().__init__()
        self.channels = channels
        self.sizes = tuple(k for k, _ in kernels)
        for k, sigma in kernels:
            g = gaussian_kernel1d(k, sigma)
            kernel2d = torch.outer(g, g).float()
            weight = kernel2d.expand(channels, 1, k, k).contiguous()
            # no state-dict keys: the blur has no parameters
            self.register_buffer(f"blur{k}", weight, persistent=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        outs = []
        for k in self.sizes:
            p = k // 2
            blurred = F.conv2d(F.pad(f, (p, p, p, p), mode="reflect"), getattr(self, f"blur{k}"), groups=self.channels)
            outs.append(f - blurred)
        return torch.cat(outs, dim=1)


class Bottleneck(nn.Module):
    """Non-pre-activation bottleneck: ReLU(norm3(conv3(...)) + shortcut), stride on the 3x3."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        width: int,
        stride: int,
        *,
        input_size: int,
        groups: int,
        gn_eps: float,
        ws_eps: float,
    ) -> None:
        super().__init__()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = DownsampleConv(in_chs, out_chs, stride, input_size, groups, gn_eps, ws_eps)
        self.conv1 = StdConv2d(in_chs, width, 1, input_size=input_size, eps=ws_eps)
        self.norm1 = GroupNormAct(width, groups, gn_eps)
        self.conv2 = StdConv2d(width, width, 3, stride, input_size=input_size, eps=ws_eps)
        self.norm2 = GroupNormAct(width, groups, gn_eps)
        self.conv3 = StdConv2d(width, out_chs, 1, input_size=out_size(input_size, stride), eps=ws_eps)
        self.norm3 = GroupNormAct(out_chs, groups, gn_eps, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class DownsampleConv(nn.Module):
    """1x1 weight-standardised conv (with the block's stride) + GroupNorm without activation."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, input_size: int, groups: int, gn_eps: float, ws_eps: float
    ) -> None:
        super().__init__()
        self.conv = StdConv2d(in_chs, out_chs, 1, stride, input_size=input_size, eps=ws_eps)
        self.norm = GroupNormAct(out_chs, groups, gn_eps, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))
