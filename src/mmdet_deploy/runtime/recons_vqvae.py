"""The official ``recons`` input: VQ-VAE reconstructions with the reference's two JPEG round trips.

The reference (``prepare_reconstructed_dataset.py`` and its test dataset) stores each frame with
``cv2.imwrite`` (JPEG quality 95), reads it back with PIL (``.convert('RGB')``), reconstructs that, stores the
reconstruction with PIL (JPEG, default quality 75), and the test reads both JPEGs with PIL and centre-crops
224. :class:`VQVAEReconstruction` reproduces that (``jpeg=True``, the default, because it is what the
checkpoint saw) or skips both round trips (``jpeg=False``).

Only the crop is computed, by the margin method: the q75 round trip is exact on the crop when it encodes the
MCU-aligned region around it; the VQ-VAE is exact on that region when it runs on its receptive-field
window; the q95 round trip is exact on that window when it encodes the MCU-aligned region around the window
(:func:`~mmdet_deploy.runtime.vqvae_geometry.jpeg_region`). Encoding a region whose edges fall on the
frame's 16x16 MCU grid gives the same blocks as encoding the frame, so each step reproduces the full-frame
pixels it is asked for; a test compares against the full-frame computation on real frames.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.deps import require
from mmdet_deploy.errors import MMDetError, UsageError
from mmdet_deploy.runtime.recons import IdentityReconstruction, ReconstructionSource
from mmdet_deploy.runtime.vqvae import VQVAEReconstructor
from mmdet_deploy.runtime.vqvae_contract import RECONS_MODES
from mmdet_deploy.runtime.vqvae_geometry import jpeg_region

logger = logging.getLogger(__name__)

#: cv2.imwrite quality of the stored original (the reference's), and PIL's default quality of the reconstruction.
ORIGINAL_QUALITY = 95
RECONS_QUALITY = 75


def _pil_rgb(data: bytes) -> np.ndarray:
    image_module = require("PIL.Image", "JPEG round trips")
    with image_module.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def jpeg_cv2_pil(rgb: np.ndarray, quality: int = ORIGINAL_QUALITY) -> np.ndarray:
    """``cv2.imwrite(path, bgr, [IMWRITE_JPEG_QUALITY, quality])`` then ``PIL.Image.open(path).convert('RGB')``."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MMDetError(f"OpenCV could not JPEG-encode a {rgb.shape[1]}x{rgb.shape[0]} frame")
    return _pil_rgb(encoded.tobytes())


def jpeg_pil(rgb: np.ndarray, quality: int = RECONS_QUALITY) -> np.ndarray:
    """``PIL.Image.fromarray(rgb).save(path)`` as JPEG (quality 75 is PIL's default), read back with PIL."""
    image_module = require("PIL.Image", "JPEG round trips")
    buffer = io.BytesIO()
    image_module.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="JPEG", quality=int(quality))
    return _pil_rgb(buffer.getvalue())


class VQVAEReconstruction(ReconstructionSource):
    """``recons`` = the VQ-VAE reconstruction of each frame, with (default) or without the JPEG round trips."""

    name = "vqvae"
    mode = "vqvae"

    def __init__(self, reconstructor: VQVAEReconstructor, jpeg: bool = True) -> None:
        self.reconstructor = reconstructor
        self.jpeg = bool(jpeg)

    def full_pair(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        original = jpeg_cv2_pil(frame) if self.jpeg else frame
        recon = self.reconstructor(original[None])[0]
        return original, jpeg_pil(recon) if self.jpeg else recon

    def reconstruct(self, frame: np.ndarray) -> np.ndarray:
        return self.full_pair(frame)[1]

    def region_pair(
        self, frame: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        (r0, r1), (c0, c1) = rows, cols
        rec = self.reconstructor
        if not self.jpeg:
            return frame[r0:r1, c0:c1], rec.region(frame[None], shape, rows, cols)[0]
        # 1. the reconstruction's q75 round trip is exact on the crop when it encodes this region of it
        a_rows, a_cols = jpeg_region(r0, r1 - 1, shape[0]), jpeg_region(c0, c1 - 1, shape[1])
        # 2. the VQ-VAE is exact on that region when it runs on this window of the (q95) original
        w_rows, w_cols = rec.window_for(shape, a_rows, a_cols)
        # 3. the q95 round trip is exact on the window (and on the crop) when it encodes this region
        b_rows = jpeg_region(min(w_rows[0], r0), max(w_rows[1], r1) - 1, shape[0])
        b_cols = jpeg_region(min(w_cols[0], c0), max(w_cols[1], c1) - 1, shape[1])
        stored = jpeg_cv2_pil(frame[b_rows[0] : b_rows[1], b_cols[0] : b_cols[1]])
        original = stored[r0 - b_rows[0] : r1 - b_rows[0], c0 - b_cols[0] : c1 - b_cols[0]]
        region = rec.region(stored[None], shape, a_rows, a_cols, origin=(b_rows[0], b_cols[0]))[0]
        recon = jpeg_pil(region)[r0 - a_rows[0] : r1 - a_rows[0], c0 - a_cols[0] : c1 - a_cols[0]]
        return np.ascontiguousarray(original), np.ascontiguousarray(recon)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "source": self.name,
            "jpeg": self.jpeg,
            "jpeg_quality": {"original": ORIGINAL_QUALITY, "recons": RECONS_QUALITY} if self.jpeg else None,
            "vqvae": self.reconstructor.describe(),
        }


def check_recons_options(
    mode: str, vqvae_model: Any = None, jpeg: bool | None = None, providers: Sequence[str] | None = None
) -> None:
    """:class:`UsageError` for contradictory ``--recons`` options (the VQ-VAE ones apply to ``vqvae`` only)."""
    if mode not in RECONS_MODES:
        raise UsageError(f"unknown --recons {mode!r}; choose one of {', '.join(RECONS_MODES)}")
    flags = {"--vqvae-model": vqvae_model, "--recons-jpeg/--no-recons-jpeg": jpeg, "--vqvae-providers": providers}
    given = [flag for flag, value in flags.items() if value is not None]
    if mode != "vqvae" and given:
        raise UsageError(f"{', '.join(given)} only apply to --recons vqvae")
    if mode == "vqvae" and vqvae_model is None:
        raise UsageError("--recons vqvae needs --vqvae-model FILE (an ONNX file from `mmdet-export vqvae`)")


def open_run_recons(config: Any, contract: Any) -> ReconstructionSource:
    """The ``recons`` source of a :class:`~mmdet_deploy.runtime.run.RunConfig` for a model's contract (the VQ-VAE
    shares the config's ``device`` and ``threads``; its providers are ``vqvae_providers``)."""
    return open_reconstruction(
        config.recons, contract.recons, vqvae_model=config.vqvae_model, jpeg=config.recons_jpeg,
        providers=config.vqvae_providers, device=config.device or "cpu", threads=config.threads,
    )  # fmt: skip


def open_reconstruction(
    mode: str,
    expected: str,
    *,
    vqvae_model: str | Path | None = None,
    jpeg: bool | None = None,
    providers: Sequence[str] | None = None,
    device: str = "cpu",
    threads: int = 0,
) -> ReconstructionSource:
    """The ``recons`` source of a run: ``mode`` "original" (the frames again) or "vqvae" (``vqvae_model``,
    loaded and checked now, so a missing or corrupt file fails before any work). ``expected`` is the
    detector contract's ``recons``; a mismatch is warned about once, here. ``jpeg`` None means on for vqvae.
    """
    check_recons_options(mode, vqvae_model, jpeg, providers)
    if mode == "original":
        if expected == "vqvae":
            logger.warning(
                "the model's contract says it was trained with VQ-VAE reconstructions as 'recons', but this run "
                "feeds the original frames (--recons original); pass --recons vqvae --vqvae-model FILE to feed "
                "what it saw in training"
            )
        return IdentityReconstruction()
    path = Path(vqvae_model)
    if not path.is_file():
        raise UsageError(f"{path}: --vqvae-model file not found")
    reconstructor = VQVAEReconstructor(path, providers=providers, device=device, threads=threads)
    if expected != "vqvae":
        logger.warning(
            "feeding VQ-VAE reconstructions as 'recons' to a model whose contract says it expects the original "
            "frames (recons = %s); its scores are only meaningful if it was trained that way (re-export it with "
            "`mmdet-export onnx --recons vqvae` if it was)",
            expected,
        )
    if reconstructor.contract.demo_weights:
        logger.warning("%s: demo VQ-VAE weights; the reconstructions (and so the scores) are meaningless", path)
    return VQVAEReconstruction(reconstructor, jpeg=True if jpeg is None else jpeg)


def recons_settings(source: ReconstructionSource) -> dict[str, Any]:
    """The ``recons`` entry of ``run.json`` that a resumed run must match (mode, JPEG steps, VQ-VAE file)."""
    if isinstance(source, VQVAEReconstruction):
        vqvae = source.reconstructor
        return {"mode": source.mode, "jpeg": source.jpeg, "vqvae_sha256": vqvae.describe()["sha256"]}
    return {"mode": source.mode}
