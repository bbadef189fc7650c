"""Analytic cost of the VQ-VAE: FLOPs of a frame or of a crop window, and the windows the margin method runs.

Same convention as :mod:`mmdet_deploy.benchmarks.flops`: one multiply-accumulate = 2 FLOPs; convolutions,
transposed convolutions and the code-distance product are counted (``torch.utils.flop_counter`` counts the
same operations of the reference model, which a test checks); BatchNorm, ReLU, Tanh, argmin and additions
are not. At width 256 and 512 codes a 1280x720 frame costs about 570 GFLOP, almost all of it in the
256-channel layers at quarter resolution.
"""

from __future__ import annotations

from typing import Any

from mmdet_deploy.runtime import vqvae_geometry as geo
from mmdet_deploy.runtime.vqvae import VQVAEReconstructor

#: The reference architecture: VectorQuantizedVAE(3, 256, K=512).
BASE_WIDTH, BASE_CODES = 256, 512
CROP = 224
FRAMES_PER_WINDOW = 10


def vqvae_flops(height: int, width: int, dim: int = BASE_WIDTH, codes: int = BASE_CODES) -> int:
    """FLOPs of one forward pass on a ``height`` x ``width`` input (side under 4: padded to 4, as the runtime)."""
    height, width = max(height, geo.STRIDE), max(width, geo.STRIDE)
    h1, w1 = height // 2, width // 2
    h2, w2 = h1 // 2, w1 // 2
    latent = h2 * w2
    macs = h1 * w1 * dim * 3 * 16  # encoder.0, 4x4 conv 3 -> dim
    macs += latent * dim * dim * 16  # encoder.3, 4x4 conv
    macs += 4 * latent * dim * dim * (9 + 1)  # four ResBlocks: 3x3 and 1x1 convs
    macs += latent * dim * codes  # distances z . c to every code
    macs += latent * dim * dim * 16  # decoder.3, transposed 4x4: every input feeds 16 outputs
    macs += (2 * h2) * (2 * w2) * dim * 3 * 16  # decoder.6, transposed 4x4 dim -> 3
    return 2 * macs


def crop_windows(height: int, width: int, size: int = CROP) -> dict[str, tuple[int, int]]:
    """(rows, cols) of the model window for the ``size`` centre crop of a frame: ``crop`` (the reconstruction
    alone) and ``crop_jpeg`` (the reference's JPEG steps: the crop's q75 region, then its window)."""
    rows, cols = geo.center_span(height, size), geo.center_span(width, size)
    plan = VQVAEReconstructor.axis_plan
    (ra, rb), _ = plan(height, rows.start, rows.stop)
    (ca, cb), _ = plan(width, cols.start, cols.stop)
    ja, jb = geo.jpeg_region(rows.start, rows.stop - 1, height)
    ka, kb = geo.jpeg_region(cols.start, cols.stop - 1, width)
    (sa, sb), _ = plan(height, ja, jb)
    (ta, tb), _ = plan(width, ka, kb)
    return {"full": (height, width), "crop": (rb - ra, cb - ca), "crop_jpeg": (sb - sa, tb - ta)}


def cost_table(
    sizes: list[tuple[int, int]], dim: int = BASE_WIDTH, codes: int = BASE_CODES, detector_gflop: float | None = None
) -> list[dict[str, Any]]:
    """Per frame size (width, height): GFLOP per frame and per 10-frame window, full frame vs the margin windows."""
    rows = []
    for width, height in sizes:
        windows = crop_windows(height, width)
        gflop = {name: vqvae_flops(h, w, dim, codes) / 1e9 for name, (h, w) in windows.items()}
        entry: dict[str, Any] = {
            "frame": f"{width}x{height}",
            "windows": {name: f"{w}x{h}" for name, (h, w) in windows.items()},
            "gflop_per_frame": gflop,
            "gflop_per_window": {k: v * FRAMES_PER_WINDOW for k, v in gflop.items()},
            "saving_crop": gflop["full"] / gflop["crop"],
            "saving_crop_jpeg": gflop["full"] / gflop["crop_jpeg"],
        }
        if detector_gflop:
            entry["vs_detector_clip"] = {k: v * FRAMES_PER_WINDOW / detector_gflop for k, v in gflop.items()}
        rows.append(entry)
    return rows
