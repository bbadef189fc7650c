"""Small images for people: saved model inputs (``--save-crops``) and the review report's JPEG thumbnails.

Everything here takes and returns RGB uint8 arrays; OpenCV (already a base dependency) encodes them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

#: Side, in pixels, of one crop in a report's crop strip (224 / 4: OpenCV's area resize is fastest at whole factors).
CROP_THUMB_SIDE = 56
#: Longer side, in pixels, of the frame thumbnail a report shows with the face box drawn on it.
FRAME_THUMB_SIDE = 160
#: JPEG quality of report thumbnails: small enough that 500 rows stay a few MB, sharp enough to judge a face.
JPEG_QUALITY = 75


def shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` scaled so that its longer side is at most ``side`` pixels (never enlarged; a copy)."""
    height, width = rgb.shape[:2]
    factor = side / max(height, width)
    if factor >= 1.0:
        return np.ascontiguousarray(rgb).copy()
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def crop_strip(crops: Sequence[np.ndarray], side: int = CROP_THUMB_SIDE) -> np.ndarray:
    """The crops, each resized to ``side`` x ``side``, side by side in one RGB image (len(crops) * side wide)."""
    if not crops:
        raise ValueError("crop_strip needs at least one crop")
    tiles = [cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops]
    return np.ascontiguousarray(np.concatenate(tiles, axis=1))


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as JPEG")
    return data.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB image (what ``--save-crops`` writes: the exact model input)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as PNG")
    return data.tobytes()


def decode_image(data: bytes) -> np.ndarray | None:
    """RGB array of encoded image bytes (PNG/JPEG), None when they do not decode."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name, then rename: a reader never sees half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
