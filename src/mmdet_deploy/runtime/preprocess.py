"""From one media file to model-ready clips: the public preprocessing API (calibration and benchmarks use it).

::

    pre = Preprocessor(contract)              # preset, frames, size, mean/std from the model's contract
    item = pre("clip.mp4")                    # MediaError for a bad file
    item.clips                                # float32 (W, T, 3, S, S), ImageNet-normalised RGB
    item.recons                               # same shape: the recons input
    item.frame_indices, item.detector, item.frames_without_face, item.timings
    item.faces                                # faces preset: per sampled frame, the detector and box

Presets (model-spec section 8):

* ``faces`` (the seed): ``T`` frames at ``np.linspace`` indices over the frames of the first ``max_seconds``
  (10 s), decoded exactly; the face chain runs once over all distinct sampled frames (batched); per frame
  the largest face, its box grown 30 % into a square, cropped and resized to ``S`` x ``S`` (INTER_AREA
  when shrinking, INTER_LINEAR when enlarging); a frame without a face is resized whole. A video with fewer
  than ``T`` frames repeats frames (the seed's linspace does that). One window. An image is one frame
  repeated ``T`` times.
* ``frames`` (the official MM-Det test): every frame, ``CenterCrop(S)`` of the full frame (zero-padded when
  smaller, never resized), split into non-overlapping windows of ``T`` frames from frame 0, an incomplete
  last window dropped, at most ``max_windows`` windows (without it, a safety cap of
  :data:`SAFETY_WINDOWS` windows, noted in the file's reason when reached). A video with fewer than ``T``
  frames has no window and is an error. An image is one crop repeated ``T`` times.

:meth:`Preprocessor.stream` hands each window to a callback once cropped (the run loop holds a few per
file); ``Preprocessor(...)(path)`` collects them into one array (memory grows with the video).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mmdet_deploy.contract import PRESETS, ModelContract
from mmdet_deploy.errors import ContractError, MediaError, UsageError
from mmdet_deploy.runtime import frame_sampling
from mmdet_deploy.runtime.decode import (
    DEFAULT_MAX_PIXELS,
    FALLBACK_FPS,
    load_image,
    open_video,
    resolve_decoder,
)
from mmdet_deploy.runtime.discovery import IMAGE, VIDEO, media_kind
from mmdet_deploy.runtime.faces import FaceFinder, FaceRecord
from mmdet_deploy.runtime.recons import IdentityReconstruction, ReconstructionSource
from mmdet_deploy.runtime.thumbnails import shrink
from mmdet_deploy.runtime.video_sampling import read_sampled_frames

#: The seed samples within the first 10 seconds of a video.
MAX_SECONDS = 10.0
#: frames preset without --max-windows: windows scored at most per video (a time bound: windows are streamed).
SAFETY_WINDOWS = 1000

#: Gets one window's ``(T, S, S, 3)`` uint8 crops and reconstruction (the same object for the identity).
WindowSink = Callable[[np.ndarray, np.ndarray], None]
#: faces preset: the chain's record of one sampled frame (``frame``, ``detector``, ``box`` before margin, ``score``).
FrameFace = FaceRecord


@dataclass
class PreparedFile:
    """One file turned into model input, plus what a user needs to trust the result.

    ``originals`` / ``reconstructions`` are uint8 RGB ``(W, T, S, S, 3)`` (the same array when the
    reconstruction is the identity); :attr:`clips` / :attr:`recons` are their normalised float32
    ``(W, T, 3, S, S)`` views, built on first access (empty from :meth:`Preprocessor.stream`). ``timings``:
    seconds per stage (``decode``, ``face_detection``, ``preprocess``, and ``reconstruction`` when the
    ``recons`` source is not the identity). ``rotation``: degrees
    counter-clockwise applied from the container's display matrix.
    """

    path: Path
    kind: str
    preset: str
    originals: np.ndarray
    reconstructions: np.ndarray
    frame_indices: list[list[int]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    detector: str | None = None
    frames_without_face: int = 0
    #: Distinct source frames used (1 for an image).
    frames_used: int = 0
    #: Frames decoded from the video (None for an image): the frames the sampling ran over.
    frames_decoded: int | None = None
    #: Of ``frames_decoded``, those left undecoded because nothing needed them (see ``runtime.sparse_decode``).
    frames_skipped: int = 0
    fps: float | None = None
    decoder: str | None = None
    rotation: int = 0
    #: Non-fatal remarks (short video, decoding stopped early...), reported in the ``reason`` column.
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: faces preset: one record per distinct sampled frame, in frame order.
    faces: list[FrameFace] = field(default_factory=list)
    #: A small RGB copy of one sampled frame (the first with a face, else the first) when the preprocessor's
    #: ``preview_side`` is set; ``preview_frame`` is its index and ``frame_size`` the source (width, height).
    preview: np.ndarray | None = None
    preview_frame: int | None = None
    preview_has_face: bool = False
    frame_size: tuple[int, int] | None = None
    #: Streamed file: windows the run loop kept for per-file outputs (window index -> (T, S, S, 3) crops).
    kept: dict[int, np.ndarray] = field(default_factory=dict)

    def window(self, index: int) -> np.ndarray:
        """Window ``index``'s (T, S, S, 3) crops, collected or :attr:`kept` (KeyError if not kept)."""
        return self.originals[index] if index < self.originals.shape[0] else self.kept[index]

    @property
    def windows(self) -> int:
        """Windows (clips) of this file: one list of frame indices per window, streamed or collected."""
        return len(self.frame_indices)

    @property
    def no_face(self) -> bool:
        """True when the faces preset found no face in any frame (every frame was resized whole)."""
        return self.preset == "faces" and self.frames_used > 0 and self.frames_without_face >= self.frames_used

    @cached_property
    def clips(self) -> np.ndarray:
        return frame_sampling.normalise(self.originals, self.mean, self.std)

    @cached_property
    def recons(self) -> np.ndarray:
        if self.reconstructions is self.originals:
            return self.clips
        return frame_sampling.normalise(self.reconstructions, self.mean, self.std)

    def window_inputs(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``(original, recons)`` of windows ``start:stop`` only (keeps memory to one batch)."""
        original = frame_sampling.normalise(self.originals[start:stop], self.mean, self.std)
        if self.reconstructions is self.originals:
            return original, original
        return original, frame_sampling.normalise(self.reconstructions[start:stop], self.mean, self.std)


class Preprocessor:
    """Turns a path into a :class:`PreparedFile` under a model contract. Thread-safe: workers share one.

    ``preset`` None takes the contract's. ``face_detectors`` None uses every available detector in the
    default order; ``max_windows`` caps the windows of the ``frames`` preset. Keyword options:
    ``decoder`` (auto|pyav|opencv), ``max_pixels`` (image bomb guard), ``max_seconds`` (faces preset
    sampling span), ``reconstruction`` (a :class:`ReconstructionSource`), ``preview_side`` (keep a
    :attr:`PreparedFile.preview` frame this many pixels long; 0: none), and the face detector options of
    :class:`~mmdet_deploy.runtime.faces.FaceFinder` (``chain``, ``detect_max_side``, ``box_scale``,
    ``yunet_model``, ``mediapipe_model``, ``providers``).
    """

    def __init__(
        self,
        contract: ModelContract,
        preset: str | None = None,
        face_detectors: Sequence[str] | None = None,
        max_windows: int | None = None,
        *,
        decoder: str = "auto",
        decode_all_frames: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_seconds: float = MAX_SECONDS,
        reconstruction: ReconstructionSource | None = None,
        preview_side: int = 0,
        **detector_options: Any,
    ) -> None:
        # What a worker process needs to build its own copy (face detectors are not picklable): see __reduce__.
        self._init_args: tuple[Any, ...] = (contract, preset, face_detectors, max_windows)
        self._init_kwargs: dict[str, Any] = {"decoder": decoder, "decode_all_frames": decode_all_frames,
                                             "max_pixels": max_pixels,
                                             "max_seconds": max_seconds, "reconstruction": reconstruction,
                                             "preview_side": preview_side, **detector_options}
        if contract.head == "fusion":
            raise ContractError(
                "the model has the 'fusion' head, which also needs multimodal features (clip_feature, "
                "mm_tokens) that this runtime does not compute; export the 'simplified' or 'fc' head"
            )
        self.contract = contract
        self.preset = preset or contract.preset
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if max_windows is not None and max_windows < 1:
            raise UsageError(f"--max-windows must be at least 1, got {max_windows}")
        if max_seconds <= 0:
            raise UsageError(f"max_seconds must be positive, got {max_seconds}")
        self.max_windows = max_windows
        #: Windows scored at most when ``max_windows`` is None (an hour-long file must not take hours).
        self.safety_windows = SAFETY_WINDOWS
        self.decoder = resolve_decoder(decoder)
        #: faces preset: decode every frame of the sampling span, even those nothing needs (slower; every
        #: frame is then checked by the decoder). False: :mod:`~mmdet_deploy.runtime.sparse_decode` skips them.
        self.decode_all_frames = bool(decode_all_frames)
        self.max_pixels = max_pixels
        self.max_seconds = max_seconds
        self.reconstruction = reconstruction or IdentityReconstruction()
        self.frames = contract.frames
        self.size = contract.image_size
        #: Longer side, in pixels, of :attr:`PreparedFile.preview` (0: no preview is kept).
        self.preview_side = preview_side
        self.faces: FaceFinder | None = None
        if self.preset == "faces":
            self.faces = FaceFinder(face_detectors, **detector_options)
        elif detector_options or face_detectors:
            unused = sorted(detector_options) + (["face_detectors"] if face_detectors else [])
            raise UsageError(f"face detector options {unused} only apply to the faces preset, not to '{self.preset}'")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the constructor's arguments: a worker process rebuilds its own detectors and decoder."""
        return (_rebuild, (type(self), self._init_args, self._init_kwargs))

    def __call__(self, path: str | Path, kind: str | None = None) -> PreparedFile:
        """Every window of the file in ``originals`` / ``reconstructions`` (see :meth:`stream` to bound memory)."""
        windows: list[tuple[np.ndarray, np.ndarray]] = []
        item = self.stream(path, kind, lambda original, recon: windows.append((original, recon)))
        t0 = time.perf_counter()
        if windows:
            item.originals = np.stack([original for original, _ in windows])
            same = all(original is recon for original, recon in windows)
            item.reconstructions = item.originals if same else np.stack([recon for _, recon in windows])
        item.timings["preprocess"] += time.perf_counter() - t0
        return item

    def stream(self, path: str | Path, kind: str | None, emit: WindowSink) -> PreparedFile:
        """Prepare one file, handing each window to ``emit`` (it may block) once complete; returns the file
        without pixels. A :class:`MediaError` may follow emitted windows (discard them)."""
        path = Path(path)
        kind = kind or media_kind(path)
        if kind == IMAGE:
            return self._image(path, emit)
        if kind == VIDEO:
            return self._video(path, emit)
        raise MediaError(str(path), f"unsupported file type '{path.suffix or '(no extension)'}'")

    # -- shared ----------------------------------------------------------------------------------------------
    def _new(self, path: Path, kind: str) -> PreparedFile:
        empty = np.empty((0, self.frames, self.size, self.size, 3), np.uint8)
        item = PreparedFile(path, kind, self.preset, empty, empty, [], self.contract.mean, self.contract.std)
        item.timings = {"decode": 0.0, "face_detection": 0.0, "preprocess": 0.0}
        if not self.reconstruction.is_identity:
            item.timings["reconstruction"] = 0.0
        return item

    def _find_faces(self, frames: list[np.ndarray], indices: list[int], item: PreparedFile) -> list[FaceRecord]:
        """Run the face chain once over ``frames`` (video indices ``indices``); updates face bookkeeping."""
        assert self.faces is not None
        t0 = time.perf_counter()
        records = self.faces.records(frames, indices)
        item.timings["face_detection"] += time.perf_counter() - t0
        item.faces.extend(records)
        for record in records:
            if record.detector is None:
                item.frames_without_face += 1
            elif item.detector is None:
                item.detector = record.detector
            elif record.detector not in item.detector.split("+"):
                item.detector += f"+{record.detector}"
        return records

    def _spatial(
        self, frame: np.ndarray, item: PreparedFile, index: int = 0, face: FaceRecord | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crop / resize frame ``index`` and its reconstruction to (S, S, 3); faces preset: around ``face``
        (the chain runs on this frame alone when it is None). The ``recons`` source returns the (original,
        reconstruction) pair of the crop region only: a VQ-VAE computes just that region, and may change the
        original (the reference's JPEG storage); the identity returns the same array twice."""
        source = self.reconstruction
        stage = "preprocess" if source.is_identity else "reconstruction"
        if self.faces is None:
            t0 = time.perf_counter()
            out, out_r = source.center_pair(frame, self.size)
            self._keep_preview(item, frame, index, False)
            item.timings[stage] += time.perf_counter() - t0
            return out, out_r
        if face is None:
            (face,) = self._find_faces([frame], [index], item)
        t1 = time.perf_counter()
        box = self.faces.crop_for(face, frame.shape[1], frame.shape[0])
        self._keep_preview(item, frame, index, box is not None)
        original, recon = source.full_pair(frame) if box is None else source.box_pair(frame, box)
        t2 = time.perf_counter()
        out = frame_sampling.resize_square(original, self.size)
        out_r = out if recon is original else frame_sampling.resize_square(recon, self.size)
        item.timings[stage] += t2 - t1
        item.timings["preprocess"] += time.perf_counter() - t2
        return out, out_r

    def _keep_preview(self, item: PreparedFile, frame: np.ndarray, index: int, has_face: bool) -> None:
        """Keep a small copy of the first frame, replaced once by the first frame with a face (for reports)."""
        if not self.preview_side or (item.preview is not None and (not has_face or item.preview_has_face)):
            return
        height, width = frame.shape[:2]
        item.preview = shrink(frame, self.preview_side)
        item.preview_frame, item.frame_size, item.preview_has_face = index, (width, height), has_face

    # -- images -----------------------------------------------------------------------------------------------
    def _image(self, path: Path, emit: WindowSink) -> PreparedFile:
        item = self._new(path, IMAGE)
        t0 = time.perf_counter()
        frame = load_image(path, self.max_pixels)
        item.timings["decode"] = time.perf_counter() - t0
        out, out_r = self._spatial(frame, item)
        t1 = time.perf_counter()
        window = frame_sampling.stack_window([out] * self.frames, [out_r] * self.frames)
        item.timings["preprocess"] += time.perf_counter() - t1
        item.frame_indices = [[0] * self.frames]
        item.frames_used = 1
        emit(*window)
        return item

    # -- videos -----------------------------------------------------------------------------------------------
    def _video(self, path: Path, emit: WindowSink) -> PreparedFile:
        item = self._new(path, VIDEO)
        item.decoder = self.decoder
        if self.preset == "faces":
            self._video_faces(path, item, emit)
        else:
            self._video_frames(path, item, emit)
        if item.rotation:
            item.notes.append(f"display rotation {item.rotation} degrees (container display matrix) applied")
        return item

    def _video_faces(self, path: Path, item: PreparedFile, emit: WindowSink) -> None:
        t0 = time.perf_counter()
        sampled = read_sampled_frames(path, self.frames, self.max_seconds, self.decoder, max_pixels=self.max_pixels,
                                      skip_unneeded=not self.decode_all_frames)
        frames, indices, count, limit = sampled.frames, sampled.indices, sampled.decoded, sampled.limit
        item.fps, item.rotation = sampled.fps, sampled.rotation
        item.timings["decode"] = time.perf_counter() - t0
        item.frames_decoded, item.frames_skipped = count, sampled.skipped
        if sampled.error:
            item.notes.append(sampled.error)
        if count < self.frames:
            item.notes.append(f"only {count} frames: sampled frames repeat to fill {self.frames}")
        if item.fps is None:
            item.notes.append(
                f"frame rate unknown: first {limit} frames sampled ({FALLBACK_FPS:g} fps assumed)"
            )
        distinct = sorted(set(indices))
        faces = self._find_faces([frames[i] for i in distinct], distinct, item)  # one batched chain run
        processed = {i: self._spatial(frames[i], item, i, face) for i, face in zip(distinct, faces, strict=True)}
        frames.clear()  # the full-size frames are no longer needed
        t1 = time.perf_counter()
        window = frame_sampling.stack_window([processed[i][0] for i in indices], [processed[i][1] for i in indices])
        item.timings["preprocess"] += time.perf_counter() - t1
        item.frame_indices = [indices]
        item.frames_used = len(processed)
        emit(*window)

    def _video_frames(self, path: Path, item: PreparedFile, emit: WindowSink) -> None:
        """Windows of ``T`` consecutive frames, each emitted once its last frame is cropped (bounded memory)."""
        crops: list[np.ndarray] = []
        recons: list[np.ndarray] = []
        cap = self.max_windows if self.max_windows is not None else self.safety_windows
        blocked = 0.0  # seconds inside emit (the consumer's back-pressure): neither decoding nor cropping

        def keep(index: int, frame: np.ndarray) -> None:
            nonlocal blocked
            if len(item.frame_indices) >= cap:
                return  # the frame past the cap only tells "longer than the cap" from "exactly at it"
            out, out_r = self._spatial(frame, item, index)
            crops.append(out)
            recons.append(out_r)
            if len(crops) == self.frames:
                t0 = time.perf_counter()
                window = frame_sampling.stack_window(crops, recons)
                item.timings["preprocess"] += time.perf_counter() - t0
                start = len(item.frame_indices) * self.frames
                item.frame_indices.append(list(range(start, start + self.frames)))
                del crops[:], recons[:]
                t1 = time.perf_counter()
                emit(*window)
                blocked += time.perf_counter() - t1

        # Without an explicit cap, one frame beyond the safety cap tells "exactly at the cap" from "longer".
        limit = cap * self.frames + (0 if self.max_windows is not None else 1)
        t0 = time.perf_counter()
        with open_video(path, self.decoder, self.max_pixels) as reader:
            item.fps = reader.fps
            scan = reader.scan(lambda index: True, keep, limit)
            item.rotation = reader.rotation
        # Time in the visitor (reconstruction, crops) is not decoding; the remainder of the pass, less emit, is.
        busy = item.timings["preprocess"] + item.timings.get("reconstruction", 0.0) + blocked
        item.timings["decode"] = time.perf_counter() - t0 - busy
        count = scan.decoded
        item.frames_decoded = count
        if count == 0:
            raise MediaError(str(path), "no decodable video frame" + (f": {scan.error}" if scan.error else ""))
        if self.max_windows is None and count > cap * self.frames:
            item.notes.append(
                f"longer than the safety cap of {cap} windows ({cap * self.frames} frames): "
                "only those were scored; pass --max-windows to choose the number"
            )
        if not item.frame_indices:
            raise MediaError(
                str(path), f"only {count} decodable frames; the frames preset needs at least {self.frames} (one window)"
            )
        if scan.error:
            item.notes.append(scan.error)
        item.frames_used = len(item.frame_indices) * self.frames


def _rebuild(cls: type[Preprocessor], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Preprocessor:
    return cls(*args, **kwargs)
