"""Decoding: still images to RGB uint8, and videos frame by frame with exact indices.

Images go through Pillow: EXIF orientation applied, grayscale / 16-bit / float / alpha / palette / CMYK
converted to 8-bit RGB, and a pixel-count guard against decompression bombs checked *before* the pixels are
decoded. Alpha is dropped (Pillow's ``convert("RGB")``, which is what the seed pipeline does).

Videos are decoded **sequentially** from the first frame, and a frame's index is its position in decoding
order: no seeking (``CAP_PROP_POS_FRAMES`` is not exact on some codecs) and the container's frame count is
only a hint (it is an estimate for some containers). Two decoders share one interface: PyAV (the ``video``
extra; precise errors, tells an audio-only file from a broken one) and OpenCV (always installed).
A decoding error part-way through ends the stream and is reported, so a truncated file still yields the
frames before the damage. Both apply the container's display rotation (a phone's portrait video is stored
sideways with a 90-degree display matrix, as players show it) and refuse frames over the image pixel limit
from the stream's dimensions, before decoding (a tiny H.264 file can declare 12000 x 12000 frames).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdet_deploy.deps import available, require
from mmdet_deploy.errors import MediaError, UsageError, one_line
from mmdet_deploy.runtime.names import escape_name
from mmdet_deploy.runtime.sparse_decode import PacketIndex, index_packets, scan_skipping

logger = logging.getLogger(__name__)

#: Largest image accepted, in pixels (Pillow's own default bomb limit, about 89.5 megapixels).
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
DECODERS = ("auto", "pyav", "opencv")
#: Frame rate assumed for the sampling span when a container does not declare one.
FALLBACK_FPS = 30.0


def check_readable(path: Path) -> None:
    """Raise :class:`MediaError` with the precise reason when ``path`` cannot be read as a file.

    Distinguishes a broken symbolic link, a symlink loop, a file that vanished (deleted during the run),
    anything that is not a regular file, an empty file and a permission problem, which the decoders would
    all report as the same vague "cannot open". A FIFO, socket or device is refused from its ``stat``
    without being opened (opening a FIFO for reading blocks until a writer appears, reading a device may
    never end); the one-byte probe opens with ``O_NONBLOCK`` and re-checks the type on the open file, so a
    file swapped for a FIFO after the ``stat`` cannot block either.
    """
    name = escape_name(str(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise MediaError(name, "broken symbolic link (its target does not exist)") from None
        raise MediaError(name, "file not found (deleted or moved during the run?)") from None
    except PermissionError:
        raise MediaError(name, "permission denied (a folder on its path is not accessible)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(name, "symlink loop (the link resolves back to itself)") from None
        raise MediaError(name, f"cannot read the file ({exc.strerror or exc})") from None
    _check_regular(name, info.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MediaError(name, "file not found (deleted or moved during the run?)") from None
    except PermissionError:
        raise MediaError(name, "permission denied (the file is not readable)") from None
    except OSError as exc:
        raise MediaError(name, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        _check_regular(name, os.fstat(fd).st_mode)
        head = os.read(fd, 1)
    except OSError as exc:
        raise MediaError(name, f"cannot read the file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if not head:
        raise MediaError(name, "empty file (0 bytes)")


#: File types that are not regular files, in the words of the error row.
_FILE_TYPES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular(name: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise MediaError(name, "is a directory, not a file")
    what = next((words for test, words in _FILE_TYPES if test(mode)), "not a regular file")
    raise MediaError(name, f"{what}, not a regular file: not opened (reading it could block the run)")


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------
def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a still image to an (H, W, 3) uint8 RGB array, upright per its EXIF orientation.

    Animated formats give their first frame. Raises :class:`MediaError` for anything unreadable.
    """
    check_readable(path)
    name = escape_name(str(path))
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
    ``skipped``: frames of those left undecoded because nothing needed them (``scan(..., skip_unwanted=True)``).
    """

    decoded: int
    complete: bool
    error: str | None = None
    skipped: int = 0


class VideoReader(ABC):
    """A video opened for sequential decoding. ``fps`` and ``frame_count_hint`` are None when unknown.

    ``rotation`` is the display rotation applied to the frames, in degrees counter-clockwise (0, 90, 180 or
    270; known once a frame has been decoded). ``max_pixels`` bounds ``width * height`` of the coded frames.
    """

    decoder = ""

    def __init__(self, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.path = path
        self.name = escape_name(str(path))
        self.max_pixels = max_pixels
        self.fps: float | None = None
        self.frame_count_hint: int | None = None
        self.rotation = 0

    def _check_size(self, width: int, height: int) -> None:
        """The decompression-bomb guard of images, for video frames: checked before any frame is decoded."""
        if width * height > self.max_pixels:
            raise MediaError(self.name, f"video frames of {width}x{height} pixels exceed the limit of "
                                        f"{self.max_pixels} pixels (the same as for images); not decoded")

    @abstractmethod
    def scan(self, want: FrameFilter, visit: FrameVisitor, limit: int | None = None,
             skip_unwanted: bool = False) -> ScanResult:
        """Decode from the current position (the first frame on a fresh reader) up to ``limit`` frames.

        ``skip_unwanted``: after :meth:`count_frames` gave a count, the reader may leave frames undecoded that
        neither ``want`` nor any other frame needs, and stop after the last wanted one; ``decoded`` is then the
        span's count. The frames visited are the same either way.
        """

    def count_frames(self, limit: int) -> int | None:
        """The exact number of frames in the first ``limit``, known without decoding; None when unknown."""
        return None

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

    def __init__(self, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(path, max_pixels)
        self._av = require("av", "decoding videos with PyAV")
        self._error_types: tuple[type[BaseException], ...] = (self._av.FFmpegError, OSError, ValueError)
        self._packets: PacketIndex | None = None  # from count_frames
        self._fresh = True  # nothing decoded yet
        self._container: Any = None
        self._open()
        try:
            self._check_size(int(self._stream.codec_context.width), int(self._stream.codec_context.height))
        except MediaError:
            self._container.close()
            raise
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = _clean_rate(float(rate) if rate else None)
        self.frame_count_hint = int(self._stream.frames) or None

    def _open(self) -> None:
        """(Re)open the container at its first frame; the stream is its first video stream."""
        if self._container is not None:
            self._container.close()
        try:
            # PyAV encodes a str path with the file system encoding: non-UTF-8 names open fine.
            self._container = self._av.open(str(self.path), mode="r")
        except self._error_types as exc:
            raise MediaError(self.name, f"not a readable video container ({one_line(exc, 200)})") from None
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            self._container.close()
            raise MediaError(self.name, f"no video stream (streams found: {', '.join(kinds)}; audio-only file?)")
        # FFmpeg's default (slice) threading: frame threading ("AUTO") costs a thread start-up per file that
        # is not repaid on short clips, and the runtime already decodes several files in parallel.
        self._stream = self._container.streams.video[0]

    def count_frames(self, limit: int) -> int | None:
        """From the packets, for H.264 and HEVC streams that allow skipping (see :mod:`.sparse_decode`)."""
        self._packets = index_packets(self._av, self.path, limit) if limit > 0 else None
        return self._packets.count if self._packets else None

    def scan(self, want: FrameFilter, visit: FrameVisitor, limit: int | None = None,
             skip_unwanted: bool = False) -> ScanResult:
        if skip_unwanted and self._packets is not None and self._fresh:
            self._fresh = False
            sparse = scan_skipping(self._av, self._container, self._stream, self._packets, want, self._upright)
            if sparse is not None:
                frames, skipped = sparse
                for index, pixels in sorted(frames.items()):
                    visit(index, pixels)
                return ScanResult(self._packets.count, True, skipped=skipped)
            self._open()  # a doubt about skipping: decode every frame of a fresh container instead
        self._fresh = False
        index = 0
        if limit is not None and limit <= 0:
            return ScanResult(0, True)
        try:
            for frame in self._container.decode(self._stream):
                if want(index):
                    visit(index, self._upright(frame))
                index += 1
                if limit is not None and index >= limit:
                    break
        except self._error_types as exc:
            return ScanResult(index, False, f"decoding stopped after {index} frames ({one_line(exc, 200)})")
        return ScanResult(index, True)

    def _upright(self, frame: Any) -> np.ndarray:
        """RGB pixels as displayed: PyAV reports the display matrix (``frame.rotation``, degrees
        counter-clockwise, PyAV >= 15) but, unlike players and OpenCV, does not apply it."""
        pixels = frame.to_ndarray(format="rgb24")
        turns = round(float(getattr(frame, "rotation", 0) or 0) / 90.0) % 4
        self.rotation = 90 * turns
        return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels

    def close(self) -> None:
        self._container.close()


class OpenCVReader(VideoReader):
    """Sequential decoding with OpenCV: ``grab`` every frame, ``retrieve`` (convert) only the wanted ones."""

    decoder = "opencv"

    def __init__(self, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(path, max_pixels)
        self._fd: int | None = None
        self._cap = cv2.VideoCapture(self._opencv_path(path))
        if not self._cap.isOpened():
            self.close()
            raise MediaError(self.name, "OpenCV cannot open it as a video (corrupt, unsupported or no video stream)")
        try:
            width, height = self._cap.get(cv2.CAP_PROP_FRAME_WIDTH), self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
            self._check_size(int(width), int(height))
        except MediaError:
            self.close()
            raise
        # OpenCV rotates frames by the display matrix itself (CAP_PROP_ORIENTATION_AUTO, on by default: made
        # explicit); ORIENTATION_META is that angle clockwise.
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        meta = self._cap.get(cv2.CAP_PROP_ORIENTATION_META)
        self.rotation = 90 * (round(-meta / 90.0) % 4) if math.isfinite(meta) else 0
        self.fps = _clean_rate(self._cap.get(cv2.CAP_PROP_FPS))
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count_hint = int(count) if math.isfinite(count) and count > 0 else None

    def scan(self, want: FrameFilter, visit: FrameVisitor, limit: int | None = None,
             skip_unwanted: bool = False) -> ScanResult:  # OpenCV decodes every frame it grabs
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

    def _opencv_path(self, path: Path) -> str:
        """A path OpenCV can take: OpenCV crashes the process (SIGSEGV) on a str that is not valid UTF-8,
        so such a file is opened here and handed over as ``/proc/self/fd/N`` (Linux)."""
        text = str(path)
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            if not os.path.isdir("/proc/self/fd"):
                raise MediaError(self.name, "OpenCV cannot open a file name that is not UTF-8 here; "
                                            "use --decoder pyav") from None
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return f"/proc/self/fd/{self._fd}"

    def close(self) -> None:
        self._cap.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def resolve_decoder(decoder: str = "auto") -> str:
    """``pyav`` or ``opencv``; ``auto`` prefers PyAV when it is installed."""
    if decoder not in DECODERS:
        raise UsageError(f"unknown video decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if decoder == "auto":
        return "pyav" if available("av") else "opencv"
    if decoder == "pyav":
        require("av", "--decoder pyav")
    return decoder


def open_video(path: Path, decoder: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoReader:
    """Open ``path`` for sequential decoding with the named decoder (``auto``, ``pyav`` or ``opencv``);
    frames over ``max_pixels`` (width x height) are refused before decoding."""
    check_readable(path)
    chosen = resolve_decoder(decoder)
    return PyAVReader(path, max_pixels) if chosen == "pyav" else OpenCVReader(path, max_pixels)
