"""Geometry of the crop-with-margin method: which input pixels a region of the VQ-VAE's output depends on.

Everything is per axis (rows and columns are independent) and in *frame* coordinates. The architecture is
written down once as :data:`LAYERS` (the spatial layers of ``VectorQuantizedVAE``; BatchNorm, ReLU, Tanh,
quantisation and the residual additions are pointwise), and every margin is derived from it:

* :func:`needed_intervals` runs a wanted output interval backwards through the layers;
* :func:`model_window` picks the input window (aligned to the stride-4 grid, so the window's convolutions
  sample the same positions as the full frame's) and *proves* with :func:`window_is_exact` that every value
  the wanted outputs depend on is computed from the same inputs, or is a zero pad in both networks;
* :func:`nearest_source` reproduces ``F.interpolate(mode='nearest')`` back to the frame size, exactly as
  PyTorch's CPU kernel computes its indices (float32 scale ``in / out``, ``floorf``);
* :func:`jpeg_region` aligns a region to the JPEG MCU grid (16x16 with 4:2:0 chroma), widened by the
  decoder's chroma-upsampling context, so that encoding only that region gives the same decoded pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Total stride of the encoder; windows start on multiples of it.
STRIDE = 4
#: JPEG minimum coded unit with 4:2:0 chroma subsampling (cv2 and PIL defaults), in pixels.
JPEG_MCU = 16
#: Decoded pixels depend on chroma samples one chroma pixel (2 frame pixels) away (libjpeg "fancy" upsampling).
JPEG_CONTEXT = 2


@dataclass(frozen=True)
class Layer:
    """One spatial layer: a convolution or a transposed convolution (kernel, stride, padding)."""

    kind: str  # "conv" or "convT"
    kernel: int
    stride: int
    padding: int

    def out_size(self, n: int) -> int:
        if self.kind == "conv":
            return (n + 2 * self.padding - self.kernel) // self.stride + 1
        return (n - 1) * self.stride - 2 * self.padding + self.kernel

    def inputs_of(self, lo: int, hi: int) -> tuple[int, int]:
        """Input positions that outputs ``lo..hi`` (inclusive) read, before clipping to the map."""
        k, s, p = self.kernel, self.stride, self.padding
        if self.kind == "conv":  # output o reads inputs o*s - p .. o*s - p + k - 1
            return lo * s - p, hi * s - p + k - 1
        # transposed: output o = i*s - p + t for taps t in [0, k)  =>  i in [ceil((o+p-k+1)/s), floor((o+p)/s)]
        return -((k - 1 - lo - p) // s), (hi + p) // s


_RES = (Layer("conv", 3, 1, 1), Layer("conv", 1, 1, 0))
#: encoder.0, encoder.3, 2 encoder ResBlocks, (quantisation), 2 decoder ResBlocks, decoder.3, decoder.6.
LAYERS: tuple[Layer, ...] = (
    Layer("conv", 4, 2, 1),
    Layer("conv", 4, 2, 1),
    *(_RES * 4),
    Layer("convT", 4, 2, 1),
    Layer("convT", 4, 2, 1),
)


def output_size(n: int) -> int:
    """Side of the model's output for an input side ``n`` (``4 * (n // 4)``; 0 when ``n < 4``)."""
    for layer in LAYERS:
        n = max(layer.out_size(n), 0)
    return n


def needed_intervals(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """Positions (inclusive, clipped to each map) needed at the input of every layer for outputs ``lo..hi``.

    Entry ``i`` is the input of ``LAYERS[i]``; the last entry is the wanted output interval itself. A position
    outside a map is a zero pad in the full network, and stays one in any window (see :func:`window_is_exact`).
    """
    sizes = [n]
    for layer in LAYERS:
        sizes.append(layer.out_size(sizes[-1]))
    out: list[tuple[int, int]] = [(lo, hi)]
    for layer, size in zip(reversed(LAYERS), reversed(sizes[:-1]), strict=True):
        a, b = layer.inputs_of(*out[-1])
        a, b = max(a, 0), min(b, size - 1)
        out.append((a, b))
    return out[::-1]


def window_is_exact(start: int, stop: int, n: int, lo: int, hi: int) -> bool:
    """True when outputs ``lo..hi`` of the model run on input rows ``start:stop`` equal the full frame's.

    Conditions checked layer by layer: the window's maps sample the same positions as the full maps (its
    offset at each layer is an integer in that layer's coordinates), and every position the wanted outputs
    depend on lies inside the window's map at that layer (positions outside the frame are zero in both).
    """
    if not 0 <= start < stop <= n or start % STRIDE:
        return False
    needed = needed_intervals(lo, hi, n)
    offset, length = start, stop - start
    for layer, (a, b) in zip(LAYERS, needed[:-1], strict=True):
        if a <= b and (a < offset or b >= offset + length):
            return False
        if layer.kind == "conv":
            if offset % layer.stride:
                return False
            offset //= layer.stride
        else:
            offset *= layer.stride
        length = layer.out_size(length)
        if length < 1:
            return False
    a, b = needed[-1]
    return offset <= a and b < offset + length


def model_window(lo: int, hi: int, n: int) -> tuple[int, int]:
    """The smallest stride-aligned input window ``[start, stop)`` whose outputs ``lo..hi`` are exact.

    Starts from the backward receptive field (:func:`needed_intervals`), aligns it to the stride grid and
    widens by one stride step until :func:`window_is_exact` holds; the whole axis always qualifies.
    """
    if not 0 <= lo <= hi < output_size(n):
        raise ValueError(f"output rows {lo}..{hi} outside the model output of an input of {n}")
    a, b = needed_intervals(lo, hi, n)[0]
    start = (a // STRIDE) * STRIDE
    stop = min(n, -(-(b + 1) // STRIDE) * STRIDE)
    while not window_is_exact(start, stop, n, lo, hi):
        if start == 0 and stop == n:  # pragma: no cover - the whole frame is exact by definition
            raise AssertionError(f"no exact window for outputs {lo}..{hi} of {n}")
        start, stop = max(0, start - STRIDE), min(n, stop + STRIDE)
    return start, stop


def receptive_margin(n: int = 4096) -> tuple[int, int]:
    """Pixels the exact window needs before and after an aligned output span (24 and 24 for this network)."""
    lo, hi = n // 2, n // 2 + 2 * STRIDE * 8 - 1
    start, stop = model_window(lo, hi, n)
    return lo - start, stop - (hi + 1)


def nearest_source(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` positions when PyTorch's ``F.interpolate(mode='nearest')`` resizes
    ``n_in`` to ``n_out`` (CPU kernel: identity for equal sizes, ``i >> 1`` for doubling, else
    ``min(floorf(i * (float)n_in / n_out), n_in - 1)`` in float32)."""
    index = np.arange(n_out, dtype=np.int64)
    if n_out == n_in:
        return index
    if n_out == 2 * n_in:
        return index >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(index.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def jpeg_region(lo: int, hi: int, n: int) -> tuple[int, int]:
    """MCU-aligned region ``[start, stop)`` of a side ``n`` whose JPEG round trip gives, on pixels ``lo..hi``,
    the same decoded values as the round trip of the whole side.

    The encoder works per 16x16 MCU (colour conversion, 2x2 chroma averaging and DCT are local to it; the
    image's right/bottom edge MCUs are padded by replication, which a region reaching that edge repeats).
    The decoder's chroma upsampling reads one neighbouring chroma sample on each side. So the region covers
    every MCU within :data:`JPEG_CONTEXT` + 1 pixels of ``lo..hi``, starts on the MCU grid and ends on it
    or at the frame edge.
    """
    a = max(0, lo - JPEG_CONTEXT - 1)
    b = min(n, hi + JPEG_CONTEXT + 2)
    start = (a // JPEG_MCU) * JPEG_MCU
    stop = min(n, -(-b // JPEG_MCU) * JPEG_MCU)
    return start, stop


@dataclass(frozen=True)
class Span:
    """torchvision ``CenterCrop`` along one axis: frame pixels ``start:stop`` land at ``pad_before`` of the crop,
    the rest of the crop is zero padding (only when the side is shorter than the crop)."""

    start: int
    stop: int
    pad_before: int
    pad_after: int


def center_span(n: int, size: int) -> Span:
    """Centre crop of ``size`` from a side ``n``: pad a short side (extra pixel after), else offset
    ``round((n - size) / 2)`` with Python's round-half-to-even, as torchvision does."""
    if n < size:
        pad = size - n
        return Span(0, n, pad // 2, (pad + 1) // 2)
    top = int(round((n - size) / 2.0))
    return Span(top, top + size, 0, 0)


def pad_crop(region: np.ndarray, rows: Span, cols: Span) -> np.ndarray:
    """Place a ``(N, h, w, 3)`` region into its zero-padded centre crop (no copy when nothing is padded)."""
    if not (rows.pad_before or rows.pad_after or cols.pad_before or cols.pad_after):
        return np.ascontiguousarray(region)
    widths = ((0, 0), (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after), (0, 0))
    return np.pad(region, widths)
