"""A deterministic synthetic media folder (720p videos and images with faces) and model-level input clips.

Every frame is a smooth random background with a real face pasted on it: the head of scikit-image's
``astronaut`` test image (public domain, NASA), scaled and moved over time, so that the face
detectors of both pipelines fire on it as they would on real footage. The same seed gives the same
files (the encoder is run single-threaded). Videos are H.264 through PyAV; where PyAV is not installed
(the GPU machine's image), OpenCV writes MPEG-4 Part 2 (``mp4v``) instead, which decodes faster than H.264:
:func:`video_codec` says which, and reports carry it.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.contract import FRAMES, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from mmdet_deploy.deps import available, require
from mmdet_deploy.errors import MissingDependencyError

#: Frame size of generated media (width, height): 720p.
SIZE_720P = (1280, 720)
#: Region of ``skimage.data.astronaut()`` holding the head (y0, y1, x0, x1); Haar finds the face inside.
_HEAD = (20, 210, 140, 320)


def astronaut_head() -> np.ndarray:
    """The head crop of scikit-image's astronaut picture, RGB uint8 (190 x 180)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise MissingDependencyError(
            "synthetic benchmark media need scikit-image for their face picture; "
            "install it with: pip install 'mmdet-deploy[dev]' (or: pip install scikit-image)"
        ) from exc
    y0, y1, x0, x1 = _HEAD
    return np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth colour field: low-resolution noise upsampled bilinearly (RGB uint8)."""
    low = rng.integers(30, 225, size=(9, 16, 3), dtype=np.uint8)
    return cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR)


def render_frame(
    rng: np.random.Generator, head: np.ndarray, width: int, height: int, t: float, background: np.ndarray | None = None
) -> np.ndarray:
    """One RGB uint8 frame with the head pasted at a position and scale that vary smoothly with ``t`` in [0, 1]."""
    frame = (background if background is not None else _background(rng, width, height)).copy()
    face_h = int(height * (0.42 + 0.08 * np.sin(2 * np.pi * t)))
    face_w = int(face_h * head.shape[1] / head.shape[0])
    face = cv2.resize(head, (face_w, face_h), interpolation=cv2.INTER_AREA)
    cx = int((width - face_w) * (0.3 + 0.4 * t))
    cy = int((height - face_h) * (0.5 + 0.2 * np.sin(np.pi * t)))
    frame[cy : cy + face_h, cx : cx + face_w] = face
    noise = rng.integers(-6, 7, size=frame.shape, dtype=np.int16)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def video_codec() -> str:
    """The codec :func:`write_video` uses here: ``h264`` (PyAV) or ``mpeg4`` (OpenCV's ``mp4v``)."""
    return "h264" if available("av") else "mpeg4"


def write_video(path: Path, seed: int, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = SIZE_720P,
                codec: str | None = None) -> Path:
    """Write an MP4 of ``seconds`` at ``fps`` with a moving face: ``codec`` ``h264`` (yuv420p, PyAV) or
    ``mpeg4`` (OpenCV ``mp4v``); None takes :func:`video_codec`."""
    rng = np.random.default_rng(seed)
    head = astronaut_head()
    width, height = size
    background = _background(rng, width, height)
    n = max(1, int(round(seconds * fps)))
    if (codec or video_codec()) == "mpeg4":
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {path} (no mp4v encoder; install PyAV: pip install av)")
        try:
            for i in range(n):
                rgb = render_frame(rng, head, width, height, i / max(1, n - 1), background)
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        return path
    av = require("av", "writing benchmark videos")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "threads": "1"}
        for i in range(n):
            rgb = render_frame(rng, head, width, height, i / max(1, n - 1), background)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, seed: int, size: tuple[int, int] = SIZE_720P) -> Path:
    """Write one still (JPEG quality 95 or PNG, by suffix) with a face; returns ``path``."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = render_frame(rng, astronaut_head(), width, height, 0.5)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")
    return path


@dataclass(frozen=True)
class MediaSpec:
    """How many files of each kind to generate, and how long each video is (seconds)."""

    videos: int = 4
    images: int = 2
    seconds: float = 4.0
    fps: int = 25
    seed: int = 0


def _write_one(path: Path, seed: int, spec: MediaSpec, codec: str) -> Path:
    if path.suffix == ".mp4":
        return write_video(path, seed, spec.seconds, spec.fps, codec=codec)
    return write_image(path, seed)


def generate_media(folder: Path, spec: MediaSpec = MediaSpec(), workers: int = 1) -> list[Path]:
    """Generate (or reuse, when a manifest says the same spec was written) the media folder; returns the files.

    The manifest is the hidden file ``FOLDER/.mmdet-bench-media``; callers use the returned list, not a listing.
    ``workers`` > 1 writes files in that many processes (the same files: each has its own seed).
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / ".mmdet-bench-media"
    names = [f"video_{i:02d}.mp4" for i in range(spec.videos)]
    names += [f"image_{i:02d}.{'jpg' if i % 2 == 0 else 'png'}" for i in range(spec.images)]
    files = [folder / n for n in names]
    if manifest.is_file() and manifest.read_text() == repr(spec) + f" codec={video_codec()}" and all(
        f.is_file() for f in files
    ):
        return files
    seeds = [spec.seed * 1000 + i for i in range(len(files))]
    codec = video_codec()  # decided once here: worker processes must not each decide
    if workers > 1 and len(files) > 1:
        with ProcessPoolExecutor(min(workers, len(files)), mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_one, files, seeds, [spec] * len(files), [codec] * len(files)))
    else:
        for path, seed in zip(files, seeds, strict=True):
            _write_one(path, seed, spec, codec)
    manifest.write_text(repr(spec) + f" codec={codec}")
    return files


def media_summary(files: list[Path]) -> dict[str, Any]:
    """Counts and sizes of a generated folder, for the report."""
    videos = [f for f in files if f.suffix == ".mp4"]
    return {
        "files": len(files),
        "videos": len(videos),
        "images": len(files) - len(videos),
        "bytes": sum(f.stat().st_size for f in files),
        "resolution": f"{SIZE_720P[0]}x{SIZE_720P[1]}",
        "video_codec": video_codec(),
    }


def sample_clips(n: int, seed: int = 0, frames: int = FRAMES, size: int = IMAGE_SIZE) -> np.ndarray:
    """``n`` model-level input clips (n, frames, 3, size, size) float32, ImageNet-normalised RGB.

    Each clip is ``frames`` synthetic face-centred frames (the same renderer as the media folder,
    rendered directly at ``size``), so activations have the value range of real preprocessed faces.
    """
    rng = np.random.default_rng(seed)
    head = astronaut_head()
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    out = np.empty((n, frames, 3, size, size), np.float32)
    for i in range(n):
        background = _background(rng, size, size)
        for t in range(frames):
            rgb = render_frame(rng, head, size, size, t / max(1, frames - 1), background)
            out[i, t] = (rgb.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
    return out
