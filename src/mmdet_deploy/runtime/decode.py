"""Decoding: still images to RGB uint8, and videos frame by frame with exact indices.

Images go through Pillow: EXIF orientation applied, grayscale / 16-bit / float / alpha / palette / CMYK
converted to 8-bit RGB, and a pixel-count guard against decompression bombs checked *before* the pixels are
decoded. Alpha is dropped (Pillow's ``convert("RGB")``, which is what the seed pipeline does).

Videos are decoded **sequentially** from the first frame, and a frame's index is its position in decoding
order: no seeking (``CAP_PROP_POS_FRAMES`` is not exact on some codecs) and the container's frame count is
only a hint (it is an estimate for some containers). Two decoders share one interface: PyAV (the ``video``
extra; precise errors, tells an audio-only file from a broken one) and OpenCV (always installed).
A decoding error part-way through ends the stream and is reported, so a truncated file still yields the
frames before the damage.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdet_deploy.deps import available, require
from mmdet_deploy.errors import MediaError, UsageError, one_line
from mmdet_deploy.runtime.frame_sampling import sample_indices

logger = logging.getLogger(__name__)

#: Largest image accepted, in pixels (Pillow's own default bomb limit, about 89.5 megapixels).
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
DECODERS = ("auto", "pyav", "opencv")
#: Frame rate assumed for the sampling span when a container does not declare one.
FALLBACK_FPS = 30.0


def check_readable(path: Path) -> None:
    """Raise :class:`MediaError` with the precise reason when ``path`` cannot be read as a file.

    Distinguishes a broken symbolic link, a file that vanished (deleted during the run), something that is
    not a regular file, an empty file and a permission problem, which the decoders would all report as the
    same vague "cannot open".
    """
    name = str(path)
    if path.is_symlink() and not path.exists():
        raise MediaError(name, "broken symbolic link (its target does not exist)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(1)
    except FileNotFoundError:
        raise MediaError(name, "file not found (deleted or moved during the run?)") from None
    except PermissionError:
        raise MediaError(name, "permission denied (the file is not readable)") from None
    except IsADirectoryError:
        raise MediaError(name, "is a directory, not a file") from None
    except OSError as exc:
        raise MediaError(name, f"cannot read the file ({exc.strerror or exc})") from None
    if not head:
        raise MediaError(name, "empty file (0 bytes)")


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------
def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a still image to an (H, W, 3) uint8 RGB array, upright per its EXIF orientation.

    Animated formats give their first frame. Raises :class:`MediaError` for anything unreadable.
    """
    check_readable(path)
    name = str(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            # Checked on the header, before decoding, so a bomb never allocates its pixels.
            if width * height > max_pixels:
                raise MediaError(name, f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
            upright = ImageOps.exif_transpose(img)
            return _to_rgb8(upright)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(name, f"refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise MediaError(name, "not an image Pillow can identify (wrong extension, text or corrupt data)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        # Pillow raises OSError for truncated data and SyntaxError / ValueError for some broken headers.
        raise MediaError(name, f"corrupt or truncated image ({exc})") from None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to (H, W, 3) uint8 RGB, keeping the full range of high-bit-depth grayscale."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: Pillow's convert("L") clips at 255 and would whiten the image.
        values = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        # Covers L, LA, P/PA (palette, with or without transparency), RGBA (alpha dropped), CMYK, YCbCr, 1.
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8, copy=True)


# --------------------------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------------------------
#: Called with (frame index, RGB uint8 frame) for each wanted frame, in order.
FrameVisitor = Callable[[int, np.ndarray], None]
#: Called with a frame index; True when that frame must be converted to RGB and visited.
FrameFilter = Callable[[int], bool]


@dataclass
class ScanResult:
    """What a sequential pass over a video found.

    ``decoded``: frames decoded (the index of the last one + 1). ``complete``: the pass stopped at the end of
    the stream or at ``limit`` rather than on an error. ``error``: why decoding stopped early, if it did.
    """

    decoded: int
    complete: bool
    error: str | None = None


class VideoReader(ABC):
    """A video opened for sequential decoding. ``fps`` and ``frame_count_hint`` are None when unknown."""

    decoder = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fps: float | None = None
        self.frame_count_hint: int | None = None

    @abstractmethod
    def scan(self, want: FrameFilter, visit: FrameVisitor, limit: int | None = None) -> ScanResult:
        """Decode from the current position (the first frame on a fresh reader) up to ``limit`` frames."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean_rate(value: float | None) -> float | None:
    """A usable frame rate or None: containers report 0, NaN or absurd values for unknown rates."""
    if value is None or not math.isfinite(value) or value <= 0 or value > 1000:
        return None
    return float(value)


class PyAVReader(VideoReader):
    """Sequential decoding with PyAV (FFmpeg): exact decoding-order indices, precise error messages."""

    decoder = "pyav"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        av = require("av", "decoding videos with PyAV")
        self._error_types: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError)
        try:
            self._container = av.open(str(path), mode="r")
        except self._error_types as exc:
            raise MediaError(str(path), f"not a readable video container ({one_line(exc, 200)})") from None
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            self._container.close()
            raise MediaError(str(path), f"no video stream (streams found: {', '.join(kinds)}; audio-only file?)")
        # FFmpeg's default (slice) threading: frame threading ("AUTO") costs a thread start-up per file that
        # is not repaid on short clips, and the runtime already decodes several files in parallel.
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = _clean_rate(float(rate) if rate else None)
        self.frame_count_hint = int(self._stream.frames) or None

    def scan(self, want: FrameFilter, visit: FrameVisitor, limit: int | None = None) -> ScanResult:
        index = 0
        if limit is not None and limit <= 0:
            return ScanResult(0, True)
        try:
            for frame in self._container.decode(self._stream):
                if want(index):
                    visit(index, frame.to_ndarray(format="rgb24"))
                index += 1
                if limit is not None and index >= limit:
                    break
        except self._error_types as exc:
            return ScanResult(index, False, f"decoding stopped after {index} frames ({one_line(exc, 200)})")
        return ScanResult(index, True)

    def close(self) -> None:
        self._container.close()


class OpenCVReader(VideoReader):
    """Sequential decoding with OpenCV: ``grab`` every frame, ``retrieve`` (convert) only the wanted ones."""

    decoder = "opencv"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise MediaError(str(path), "OpenCV cannot open it as a video (corrupt, unsupported or no video stream)")
        self.fps = _clean_rate(self._cap.get(cv2.CAP_PROP_FPS))
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count_hint = int(count) if math.isfinite(count) and count > 0 else None

    def scan(self, want: FrameFilter, visit: FrameVisitor, limit: int | None = None) -> ScanResult:
        index = 0
        while limit is None or index < limit:
            # OpenCV does not tell the end of the stream from a decoding error: both end the pass.
            if not self._cap.grab():
                break
            if want(index):
                ok, bgr = self._cap.retrieve()
                if not ok or bgr is None:
                    return ScanResult(index, False, f"OpenCV could not convert frame {index}")
                visit(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
        return ScanResult(index, True)

    def close(self) -> None:
        self._cap.release()


def resolve_decoder(decoder: str = "auto") -> str:
    """``pyav`` or ``opencv``; ``auto`` prefers PyAV when it is installed."""
    if decoder not in DECODERS:
        raise UsageError(f"unknown video decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if decoder == "auto":
        return "pyav" if available("av") else "opencv"
    if decoder == "pyav":
        require("av", "--decoder pyav")
    return decoder


def open_video(path: Path, decoder: str = "auto") -> VideoReader:
    """Open ``path`` for sequential decoding with the named decoder (``auto``, ``pyav`` or ``opencv``)."""
    check_readable(path)
    chosen = resolve_decoder(decoder)
    return PyAVReader(path) if chosen == "pyav" else OpenCVReader(path)


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


def read_sampled_frames(
    path: Path, count: int, max_seconds: float, decoder: str = "auto", fallback_fps: float = FALLBACK_FPS
) -> SampledFrames:
    """Decode the first ``max_seconds`` of a video sequentially and keep ``count`` evenly spaced frames.

    The seed's sampling, exactly: the span is ``int(fps * max_seconds)`` frames, the kept indices are
    ``np.linspace`` over the frames really decoded in it. Only the frames guessed from the container's
    frame count are converted to RGB; when that guess was wrong (an estimate, or decoding stopped early),
    the video is decoded a second time for the exact frames. Raises :class:`MediaError` when no frame decodes.
    """
    frames: dict[int, np.ndarray] = {}
    with open_video(path, decoder) as reader:
        fps = reader.fps
        limit = max(1, int((fps or fallback_fps) * max_seconds))  # the seed's int(fps * 10)
        guess = min(reader.frame_count_hint, limit) if reader.frame_count_hint else limit
        wanted = set(sample_indices(guess, count))
        scan = reader.scan(wanted.__contains__, frames.__setitem__, limit)
    decoded = scan.decoded
    if decoded == 0:
        raise MediaError(str(path), "no decodable video frame" + (f": {scan.error}" if scan.error else ""))
    indices = sample_indices(decoded, count)
    if not set(indices) <= frames.keys():
        # The container's frame count was wrong (or decoding stopped early): now that the true count is
        # known, decode again and keep the exact frames of the seed's sampling over that count.
        frames.clear()
        wanted = set(indices)
        with open_video(path, decoder) as reader:
            rescan = reader.scan(wanted.__contains__, frames.__setitem__, decoded)
        if not set(indices) <= frames.keys():
            raise MediaError(str(path), f"frames changed between two decoding passes ({rescan.error or 'fewer'})")
    return SampledFrames(frames, indices, decoded, limit, fps, scan.error)
