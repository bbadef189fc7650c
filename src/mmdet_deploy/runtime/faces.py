"""Face crops for the ``faces`` preset: a chain of detectors, batched over the sampled frames of a file.

For every frame the detectors are tried in chain order and the first one that finds a face wins; the largest
face it found (by box area) is kept, clipped to the frame, and grown by :data:`BOX_SCALE` into the crop.
Detection runs on a copy of the frame downscaled so that its longer side is at most ``detect_max_side``
pixels, and boxes are mapped back to full resolution, so the crop itself keeps every source pixel.

Chains (``--face-chain``; ``--face-detectors`` names its own list and overrides both):

* ``default``: ``blazeface-full``, ``dlib``, ``haar``, the most accurate order measured on real photos
  (``benchmarks/results/faces/``): BlazeFace full-range finds the small faces of group photos that the
  short-range model misses; dlib and Haar only see frames on which it found nothing.
* ``seed``: ``blazeface-short``, ``dlib``, ``haar``, the notebook's order (MediaPipe short-range, dlib,
  Haar), with the bundled BlazeFace short-range model standing in for MediaPipe (the same boxes, measured
  in ``scripts/blazeface_parity.py``).

In a chain, a detector that is not installed (dlib without the ``faces`` extra) is skipped and the log says
so; detectors named with ``--face-detectors`` must all be available. Every frame gets a :class:`FaceRecord`:
the detector that found the chosen face, and the box before the margin, in original-frame pixels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mmdet_deploy.errors import MissingDependencyError, UsageError
from mmdet_deploy.runtime.face_detectors import (  # noqa: F401  (re-exported: the public face API lives here)
    DETECTORS,
    BlazeFaceDetector,
    DlibDetector,
    FaceBox,
    FaceDetector,
    HaarDetector,
    MediaPipeDetector,
    YuNetDetector,
    create_detector,
    haar_path,
    mediapipe_unavailable_reason,
    unavailable_reason,
)

logger = logging.getLogger(__name__)

#: How much the detected box is enlarged (1.3 = the seed's +30 %, FaceForensics++'s 1.3x).
BOX_SCALE = 1.3
#: Longer side, in pixels, of the downscaled copy that detectors see.
DETECT_MAX_SIDE = 640
#: Frames whose shorter side is below this (pixels) hold no detectable face; no detector runs on them.
MIN_DETECT_SIDE = 16
#: Named detector chains, in the order their detectors are tried.
CHAINS: dict[str, tuple[str, ...]] = {
    "default": ("blazeface-full", "dlib", "haar"),
    "seed": ("blazeface-short", "dlib", "haar"),
}
#: The chain name reported when ``--face-detectors`` gives the list.
CUSTOM_CHAIN = "custom"


@dataclass(frozen=True)
class FaceRecord:
    """The face decision for one sampled frame (one row of ``faces.csv``).

    ``frame`` is the frame's index in the video (0 for an image); ``detector`` the detector that found the
    chosen face and ``box`` that face in original-frame pixels, clipped to the frame, before the margin is
    added (both None when no detector found a face).
    """

    frame: int
    detector: str | None = None
    box: FaceBox | None = None

    @property
    def score(self) -> float | None:
        return self.box.score if self.box is not None else None

    def xywh(self) -> tuple[float, float, float, float] | None:
        """``(x, y, w, h)`` of the box in pixels, or None when the frame had no face."""
        if self.box is None:
            return None
        return self.box.x0, self.box.y0, self.box.x1 - self.box.x0, self.box.y1 - self.box.y0


def expand_box(box: FaceBox, width: int, height: int, scale: float = BOX_SCALE) -> tuple[int, int, int, int] | None:
    """The crop for a face: a square of side ``scale`` x the box's longer side, same centre, clamped.

    Returns integer ``(x0, y0, x1, y1)`` inside a ``width`` x ``height`` frame, or None when nothing of it
    lies inside the frame. Near a border the clamped crop is no longer square (it is then resized to the
    model's square input, as the seed does).
    """
    cx, cy = (box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0
    half = max(box.x1 - box.x0, box.y1 - box.y0) * scale / 2.0
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


class FaceFinder:
    """The detector chain. Thread-safe: shared detectors (BlazeFace) serve every thread, the others are
    created once per thread.

    ``names`` (``--face-detectors``) overrides ``chain``; an explicit list must be fully available (asking for
    a detector and silently not getting it would change results unnoticed). ``providers`` are the ONNX
    Runtime execution providers of the BlazeFace sessions (the model's own on a GPU; TensorRT is left out:
    an engine build would cost more than BlazeFace's whole run). All detectors are created here, so a
    missing or corrupt model file is an error at start that names the file.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        *,
        chain: str = "default",
        detect_max_side: int = DETECT_MAX_SIDE,
        box_scale: float = BOX_SCALE,
        yunet_model: str | Path | None = None,
        mediapipe_model: str | Path | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        if detect_max_side < 32:
            raise UsageError(f"detect_max_side={detect_max_side} is too small (at least 32 pixels)")
        if names is None and chain not in CHAINS:
            raise UsageError(f"unknown face chain {chain!r}; choose from {', '.join(CHAINS)}")
        self.detect_max_side = detect_max_side
        self.box_scale = box_scale
        self.chain = CUSTOM_CHAIN if names is not None else chain
        self._yunet = Path(yunet_model) if yunet_model else None
        self._mediapipe = Path(mediapipe_model) if mediapipe_model else None
        self._providers = [p for p in providers or () if not p.startswith("Tensorrt")] or None
        self.names = self._resolve(names, CHAINS.get(chain, ()))
        self._local = threading.local()
        self._shared: dict[str, FaceDetector] = {}
        self._detectors()  # fail now, naming the file, rather than on the first frame of a worker

    def _resolve(self, names: Sequence[str] | None, chain: Sequence[str]) -> tuple[str, ...]:
        explicit = names is not None
        chosen: list[str] = []
        skipped: list[str] = []
        for name in (chain if names is None else names):
            reason = unavailable_reason(name, self._yunet, self._mediapipe)
            if reason is None:
                if name not in chosen:
                    chosen.append(name)
            elif explicit or name.startswith("blazeface-"):  # a packaged model missing is a broken install
                cls = UsageError if name not in DETECTORS else MissingDependencyError
                raise cls(f"face detector '{name}': {reason}")
            else:
                skipped.append(f"{name} ({reason})")
        if skipped and chosen:
            names = ", ".join(entry.split(" ", 1)[0] for entry in skipped)
            logger.info("face detectors in use: %s; not available: %s (-v says why)", ", ".join(chosen), names)
            logger.debug("face detectors not available: %s", "; ".join(skipped))
        if not chosen:
            raise MissingDependencyError(
                "no face detector is available for the faces preset: " + "; ".join(skipped)
                + "; install one or run with --preset frames"
            )
        return tuple(chosen)

    def _create(self, name: str) -> FaceDetector:
        return create_detector(name, yunet_model=self._yunet, mediapipe_model=self._mediapipe,
                               providers=self._providers)  # fmt: skip

    def _detectors(self) -> list[FaceDetector]:
        detectors = getattr(self._local, "detectors", None)
        if detectors is None:
            detectors = []
            for name in self.names:
                if name not in self._shared:
                    detector = self._create(name)
                    if not detector.thread_safe:
                        detectors.append(detector)
                        continue
                    self._shared[name] = detector
                detectors.append(self._shared[name])
            self._local.detectors = detectors
        return detectors

    def find_batch(self, frames: Sequence[np.ndarray]) -> list[tuple[FaceBox | None, str | None]]:
        """For each RGB frame, its chosen face (full-resolution pixels, clipped) and the detector that found it.

        Each detector runs once over all the frames still without a face (BlazeFace in one batched call).
        """
        results: list[tuple[FaceBox | None, str | None]] = [(None, None)] * len(frames)
        smalls: list[np.ndarray] = []
        factors: list[float] = []
        pending: list[int] = []
        for i, rgb in enumerate(frames):
            height, width = rgb.shape[:2]
            factor = min(1.0, self.detect_max_side / max(height, width))
            small = rgb
            if factor < 1.0:
                size = (max(1, round(width * factor)), max(1, round(height * factor)))
                small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            smalls.append(small)
            factors.append(factor)
            if min(small.shape[:2]) >= MIN_DETECT_SIDE:
                pending.append(i)
        for detector in self._detectors():
            if not pending:
                break
            found = detector.detect_batch([smalls[i] for i in pending])
            still: list[int] = []
            for i, faces in zip(pending, found, strict=True):
                height, width = frames[i].shape[:2]
                faces = [f.scaled(1.0 / factors[i]).clipped(width, height) for f in faces]
                faces = [f for f in faces if min(f.x1 - f.x0, f.y1 - f.y0) >= 1.0]  # a pixel at least: croppable
                if faces:
                    results[i] = (max(faces, key=lambda f: f.area), detector.name)
                else:
                    still.append(i)
            pending = still
        return results

    def find(self, rgb: np.ndarray) -> tuple[FaceBox | None, str | None]:
        """The largest face of an RGB frame in full-resolution pixels, and the detector that found it."""
        return self.find_batch([rgb])[0]

    def records(self, frames: Sequence[np.ndarray], indices: Sequence[int]) -> list[FaceRecord]:
        """One :class:`FaceRecord` per frame; ``indices`` are the frames' indices in their video."""
        found = self.find_batch(frames)
        return [FaceRecord(int(index), name, box) for index, (box, name) in zip(indices, found, strict=True)]

    def crop_for(self, record: FaceRecord, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The enlarged, clamped crop of a record's face in a ``width`` x ``height`` frame (None: no face)."""
        return expand_box(record.box, width, height, self.box_scale) if record.box is not None else None

    def crop_box(self, rgb: np.ndarray) -> tuple[tuple[int, int, int, int] | None, str | None]:
        """The enlarged, clamped crop of the largest face (None when no face), and the detector used."""
        face, detector = self.find(rgb)
        if face is None:
            return None, None
        box = expand_box(face, rgb.shape[1], rgb.shape[0], self.box_scale)
        return (box, detector) if box is not None else (None, None)
