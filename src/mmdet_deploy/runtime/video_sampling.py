"""The seed's frame sampling of one video, decoded exactly: what the faces preset and the decode benchmark use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmdet_deploy.errors import MediaError
from mmdet_deploy.runtime.decode import DEFAULT_MAX_PIXELS, FALLBACK_FPS, open_video
from mmdet_deploy.runtime.frame_sampling import sample_indices


@dataclass
class SampledFrames:
    """The exact frames of the seed's sampling, from :func:`read_sampled_frames`.

    ``frames`` maps a decoding-order index to its RGB uint8 frame (every index of ``indices``, possibly
    more); ``indices`` is ``np.linspace`` over the ``decoded`` frames of the span; ``limit`` is the span in
    frames (``int(fps * max_seconds)``); ``fps`` the container's rate (None when unknown); ``error`` why
    decoding stopped early, if it did.
    """

    frames: dict[int, np.ndarray]
    indices: list[int]
    decoded: int
    limit: int
    fps: float | None
    error: str | None = None
    rotation: int = 0  # display rotation applied, degrees (see VideoReader.rotation)
    skipped: int = 0  # frames of ``decoded`` left undecoded: nothing needed them (see runtime.sparse_decode)


def read_sampled_frames(
    path: Path, count: int, max_seconds: float, decoder: str = "auto", fallback_fps: float = FALLBACK_FPS,
    max_pixels: int = DEFAULT_MAX_PIXELS, skip_unneeded: bool = True,
) -> SampledFrames:
    """Decode the first ``max_seconds`` of a video sequentially and keep ``count`` evenly spaced frames.

    The seed's sampling, exactly: the span is ``int(fps * max_seconds)`` frames, the kept indices are
    ``np.linspace`` over the frames really decoded in it. When the reader can count the span's frames from
    the container's packets (PyAV, H.264 and HEVC: :mod:`~mmdet_deploy.runtime.sparse_decode`), the indices
    are known at once and frames that neither they nor any other frame need are not decoded. Otherwise
    every frame is decoded and only those guessed from the container's frame count are converted to RGB;
    when that guess was wrong (an estimate, or decoding stopped early), the video is decoded a second time
    for the exact frames. ``skip_unneeded=False`` decodes every frame of the span. Raises :class:`MediaError`
    when no frame decodes.
    """
    frames: dict[int, np.ndarray] = {}
    with open_video(path, decoder, max_pixels) as reader:
        fps = reader.fps
        limit = max(1, int((fps or fallback_fps) * max_seconds))  # the seed's int(fps * 10)
        exact = reader.count_frames(limit) if skip_unneeded else None
        guess = exact or (min(reader.frame_count_hint, limit) if reader.frame_count_hint else limit)
        wanted = set(sample_indices(guess, count))
        scan = reader.scan(wanted.__contains__, frames.__setitem__, limit, skip_unwanted=exact is not None)
        rotation = reader.rotation  # known once frames are decoded (PyAV reports it per frame)
    decoded = scan.decoded
    if decoded == 0:
        raise MediaError(str(path), "no decodable video frame" + (f": {scan.error}" if scan.error else ""))
    indices = sample_indices(decoded, count)
    if not set(indices) <= frames.keys():
        # The container's frame count was wrong (or decoding stopped early): now that the true count is
        # known, decode again and keep the exact frames of the seed's sampling over that count.
        frames.clear()
        wanted = set(indices)
        with open_video(path, decoder, max_pixels) as reader:
            rescan = reader.scan(wanted.__contains__, frames.__setitem__, decoded)
        if not set(indices) <= frames.keys():
            raise MediaError(str(path), f"frames changed between two decoding passes ({rescan.error or 'fewer'})")
    return SampledFrames(frames, indices, decoded, limit, fps, scan.error, rotation, scan.skipped)
