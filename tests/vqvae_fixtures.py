"""Helpers of the VQ-VAE tests: real frames, the reference's JPEG pipeline in torch, centre crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdet_deploy.runtime.vqvae_geometry import center_span, pad_crop

CLIP = Path("shared", "data", "real-media", "videos", "short_hamilton_clip.mp4")


def real_clip() -> Path | None:
    """The real 640x360 clip of the project's shared data folder (``shared/`` in or beside the checkout,
    or above a worktree folder); None when this machine has none."""
    repo = Path(__file__).resolve().parents[1]
    for base in (repo, repo.parent, repo.parent.parent):
        if (base / CLIP).is_file():
            return base / CLIP
    return None


def real_frames(indices: tuple[int, ...] = (0, 137, 274)) -> np.ndarray:
    """Decoded RGB frames of the real clip at ``indices`` (N, 360, 640, 3)."""
    from mmdet_deploy.runtime.decode import open_video, resolve_decoder

    path = real_clip()
    assert path is not None
    got: dict[int, np.ndarray] = {}
    with open_video(path, resolve_decoder("auto")) as reader:
        reader.scan(lambda i: i in indices, got.__setitem__, max(indices) + 1)
    return np.stack([got[i] for i in indices])


def odd_frame() -> np.ndarray:
    """A real frame resized to 333x251 (neither side a multiple of 4, so the nearest resize back runs); the
    seeded smooth synthetic frame of the export's parity check where the real clip is absent."""
    import cv2

    if real_clip() is not None:
        frame = real_frames((60,))[0]
    else:
        from mmdet_deploy.export.vqvae_parity import synthetic_frames

        frame = synthetic_frames()["smooth_640x360"][0]
    return cv2.resize(frame, (333, 251), interpolation=cv2.INTER_AREA)[None]


def crop224(frames: np.ndarray, size: int = 224) -> np.ndarray:
    """torchvision ``CenterCrop(size)`` of (N, H, W, 3) frames."""
    rows, cols = center_span(frames.shape[1], size), center_span(frames.shape[2], size)
    return pad_crop(frames[:, rows.start : rows.stop, cols.start : cols.stop], rows, cols)


def reference_official(model, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's official pipeline for one frame, in torch: cv2 JPEG q95 -> PIL read -> VQ-VAE ->
    PIL JPEG q75 -> PIL read; returns both 224 centre crops (original, reconstruction)."""
    from mmdet_deploy.model.vqvae import reference_reconstruct
    from mmdet_deploy.runtime.recons_vqvae import jpeg_cv2_pil, jpeg_pil

    stored = jpeg_cv2_pil(frame)
    recon = jpeg_pil(reference_reconstruct(model, stored[None])[0])
    return crop224(stored[None])[0], crop224(recon[None])[0]
