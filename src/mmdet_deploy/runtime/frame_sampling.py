"""Pure array operations of the two presets: frame sampling, crops, resizing and normalisation.

Everything here works on RGB uint8 frames of shape (H, W, 3) and is deterministic; the functions follow
the reference implementations they replace (``np.linspace`` sampling of the seed, torchvision's
``CenterCrop`` padding and rounding, ``ToTensor`` + ``Normalize``) so results match them.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def sample_indices(frame_count: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices in ``[0, frame_count)``: the seed's ``np.linspace(..., dtype=int)``.

    With fewer than ``count`` frames some indices repeat (e.g. 5 frames -> 0,0,0,1,1,2,2,3,3,4), which is how
    the seed fills a clip from a short video.
    """
    if frame_count < 1:
        raise ValueError(f"frame_count must be positive, got {frame_count}")
    return [int(i) for i in np.linspace(0, frame_count - 1, count, dtype=int)]


def window_indices(frame_count: int, length: int, max_windows: int | None = None) -> list[list[int]]:
    """Non-overlapping windows of ``length`` consecutive frames from frame 0; an incomplete last one is dropped."""
    windows = frame_count // length
    if max_windows is not None:
        windows = min(windows, max_windows)
    return [list(range(w * length, (w + 1) * length)) for w in range(windows)]


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``CenterCrop(size)``: zero-pad a side shorter than ``size``, then crop the centre.

    Padding puts the extra pixel of an odd difference on the right / bottom, and the crop offset is
    ``round((dim - size) / 2)`` with Python's round-half-to-even, both exactly as torchvision does.
    """
    height, width = frame.shape[:2]
    if height < size or width < size:
        pad_h, pad_w = max(0, size - height), max(0, size - width)
        frame = np.pad(frame, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = frame.shape[:2]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return np.ascontiguousarray(frame[top : top + size, left : left + size])


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (aspect ratio not kept, as the seed's ``Resize((224, 224))``).

    ``INTER_AREA`` when shrinking (it averages like torchvision's antialiased bilinear and avoids aliasing),
    ``INTER_LINEAR`` (bilinear) when enlarging, where ``INTER_AREA`` degenerates to nearest-neighbour blocks.
    """
    height, width = frame.shape[:2]
    if height == size and width == size:
        return np.ascontiguousarray(frame)
    shrinking = height * width >= size * size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interpolation)


def crop(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` region of a frame (a view, no copy)."""
    x0, y0, x1, y1 = box
    return frame[y0:y1, x0:x1]


def stack_window(crops: list[np.ndarray], recons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``T`` crops and their reconstructions as one ``(T, S, S, 3)`` window each; one array (returned twice)
    when every reconstruction is its crop (the identity reconstruction), so nothing is stacked twice."""
    window = np.stack(crops)
    same = all(a is b for a, b in zip(crops, recons, strict=True))
    return window, window if same else np.stack(recons)


def normalise(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 RGB ``(..., H, W, 3)`` to float32 ``(..., 3, H, W)``: ``(x / 255 - mean) / std`` per channel.

    Equal to torchvision's ``ToTensor`` then ``Normalize`` up to float32 rounding (~1e-7 relative).
    Written channel by channel into one preallocated array, so the only copy is the output itself.
    """
    if frames.shape[-1] != 3:
        raise ValueError(f"expected RGB frames (..., H, W, 3), got shape {frames.shape}")
    lead, (height, width) = frames.shape[:-3], frames.shape[-3:-1]
    out = np.empty((*lead, 3, height, width), dtype=np.float32)
    for c in range(3):
        scale = np.float32(1.0 / (255.0 * std[c]))
        offset = np.float32(mean[c] / std[c])
        channel = out[..., c, :, :]
        np.multiply(frames[..., c], scale, out=channel, dtype=np.float32)
        channel -= offset
    return out
