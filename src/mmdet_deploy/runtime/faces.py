"""Face detection for the ``faces`` preset: a chain of detectors, each used only when it is available.

For every frame the detectors are tried in chain order and the first one that finds a face wins; the largest
face it found (by box area) is kept. Detection runs on a copy of the frame downscaled so that its longer side
is at most ``detect_max_side`` pixels, and boxes are mapped back to full resolution, so the crop itself keeps
every source pixel.

Detectors (the seed's order, then YuNet):

* ``mediapipe``: BlazeFace. The legacy ``mp.solutions`` API (mediapipe <= 0.10.21, models bundled), or the
  Tasks API when ``mediapipe_model`` names a ``.tflite`` file (newer mediapipe ships no model).
* ``dlib``: the HOG frontal-face detector (no model file needed).
* ``haar``: OpenCV's frontal-face Haar cascade (bundled with opencv < 5).
* ``yunet``: ``cv2.FaceDetectorYN`` given its ONNX file (``yunet_model``); no package ships it.

Detector objects are not thread-safe (MediaPipe graphs, OpenCV cascades), so each worker thread gets its own.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.deps import available, install_hint, require
from mmdet_deploy.errors import MissingDependencyError, UsageError

logger = logging.getLogger(__name__)

DETECTORS = ("mediapipe", "dlib", "haar", "yunet")
#: How much the detected box is enlarged (1.3 = the seed's +30 %, FaceForensics++'s 1.3x).
BOX_SCALE = 1.3
#: Longer side, in pixels, of the downscaled copy that detectors see.
DETECT_MAX_SIDE = 640
HAAR_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the image it was found in (x1, y1 exclusive).

    ``score`` is the detector's confidence in [0, 1], None for detectors that give none (Haar, dlib HOG).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def scaled(self, factor: float) -> FaceBox:
        """The same box with every coordinate multiplied by ``factor``."""
        return FaceBox(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)


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


class FaceDetector(ABC):
    """One detector: ``detect`` returns the faces of an RGB uint8 image in that image's pixels."""

    name = ""

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[FaceBox]: ...


class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones frontal-face cascade (fast, frontal faces only, some false positives)."""

    name = "haar"

    def __init__(self) -> None:
        self._cascade = cv2.CascadeClassifier(haar_path())
        if self._cascade.empty():
            raise MissingDependencyError(f"OpenCV could not load the Haar cascade {haar_path()}")

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        return [FaceBox(float(x), float(y), float(x + w), float(y + h)) for (x, y, w, h) in found]


class DlibDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal-face detector (no upsampling: faces under ~80 px are missed)."""

    name = "dlib"

    def __init__(self) -> None:
        dlib = require("dlib", "the dlib face detector")
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        rects = self._detector(np.ascontiguousarray(rgb), 0)
        return [FaceBox(float(r.left()), float(r.top()), float(r.right()), float(r.bottom())) for r in rects]


class MediaPipeDetector(FaceDetector):
    """BlazeFace through MediaPipe: the Tasks API with a model file, else the legacy ``solutions`` API."""

    name = "mediapipe"

    def __init__(self, model_path: Path | None = None, min_confidence: float = 0.5, model_selection: int = 1) -> None:
        mp = require("mediapipe", "the MediaPipe face detector")
        self._mp = mp
        self._tasks: Any = None
        self._legacy: Any = None
        if model_path is not None:
            vision = require("mediapipe.tasks.python.vision", "the MediaPipe Tasks face detector")
            base = require("mediapipe.tasks.python", "the MediaPipe Tasks face detector").BaseOptions
            options = vision.FaceDetectorOptions(
                base_options=base(model_asset_path=str(model_path)), min_detection_confidence=min_confidence
            )
            self._tasks = vision.FaceDetector.create_from_options(options)
        else:
            solutions = getattr(mp, "solutions", None)
            if solutions is None or not hasattr(solutions, "face_detection"):
                raise MissingDependencyError(mediapipe_unavailable_reason())
            # model_selection=1: the full-range model, which also finds faces farther than 2 m from the camera.
            self._legacy = solutions.face_detection.FaceDetection(
                model_selection=model_selection, min_detection_confidence=min_confidence
            )

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        height, width = rgb.shape[:2]
        image = np.ascontiguousarray(rgb)
        boxes: list[FaceBox] = []
        if self._tasks is not None:
            result = self._tasks.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))
            for det in result.detections or []:
                bb = det.bounding_box  # pixels
                score = float(det.categories[0].score) if det.categories else 1.0
                boxes.append(FaceBox(bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height, score))
            return boxes
        result = self._legacy.process(image)
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box  # fractions of the image size
            x0, y0 = rel.xmin * width, rel.ymin * height
            score = float(det.score[0]) if det.score else 1.0
            boxes.append(FaceBox(x0, y0, x0 + rel.width * width, y0 + rel.height * height, score))
        return boxes


class YuNetDetector(FaceDetector):
    """OpenCV's YuNet CNN (``cv2.FaceDetectorYN``) from a user-supplied ONNX model file."""

    name = "yunet"

    def __init__(self, model_path: Path, score_threshold: float = 0.9) -> None:
        self._detector = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 5000)

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        height, width = rgb.shape[:2]
        self._detector.setInputSize((width, height))
        _, faces = self._detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # YuNet was trained on BGR
        if faces is None:
            return []
        return [FaceBox(float(f[0]), float(f[1]), float(f[0] + f[2]), float(f[1] + f[3]), float(f[-1])) for f in faces]


def haar_path() -> str:
    """Path of OpenCV's bundled frontal-face cascade ('' when this OpenCV ships none, as opencv 5 does)."""
    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", "") if data is not None else ""
    return str(Path(folder) / HAAR_FILE) if folder else ""


def mediapipe_unavailable_reason() -> str:
    return (
        "this mediapipe has no legacy 'solutions' face detector (removed in 0.10.30); pass --mediapipe-model "
        "with a BlazeFace .tflite file for the Tasks API, or install 'mediapipe<=0.10.21'"
    )


def unavailable_reason(name: str, yunet_model: Path | None = None, mediapipe_model: Path | None = None) -> str | None:
    """Why detector ``name`` cannot be used here, or None when it can. Imports nothing heavy."""
    if name not in DETECTORS:
        return f"unknown face detector {name!r}; choose from {', '.join(DETECTORS)}"
    if name == "haar":
        if not hasattr(cv2, "CascadeClassifier") or not haar_path() or not Path(haar_path()).is_file():
            return "this OpenCV ships no Haar cascades (opencv >= 5); install 'opencv-python-headless<5'"
    elif name == "yunet":
        if not hasattr(cv2, "FaceDetectorYN"):
            return "this OpenCV has no cv2.FaceDetectorYN (needs OpenCV >= 4.8)"
        if yunet_model is None:
            return "YuNet needs its ONNX model file: pass --yunet-model face_detection_yunet_2023mar.onnx"
        if not Path(yunet_model).is_file():
            return f"{yunet_model}: YuNet model file not found"
    elif name in ("mediapipe", "dlib"):
        if not available(name):
            return f"the '{name}' package is not installed ({install_hint(name)})"
        if name == "mediapipe" and mediapipe_model is not None and not Path(mediapipe_model).is_file():
            return f"{mediapipe_model}: MediaPipe model file not found"
    return None


class FaceFinder:
    """The detector chain, with one set of detector objects per thread.

    ``names=None`` means the default order with every unavailable detector skipped; an explicit list must be
    fully available (asking for a detector and silently not getting it would change results unnoticed).
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        *,
        detect_max_side: int = DETECT_MAX_SIDE,
        box_scale: float = BOX_SCALE,
        yunet_model: str | Path | None = None,
        mediapipe_model: str | Path | None = None,
    ) -> None:
        if detect_max_side < 32:
            raise UsageError(f"detect_max_side={detect_max_side} is too small (at least 32 pixels)")
        self.detect_max_side = detect_max_side
        self.box_scale = box_scale
        self._yunet = Path(yunet_model) if yunet_model else None
        self._mediapipe = Path(mediapipe_model) if mediapipe_model else None
        self.names = self._resolve(names)
        self._local = threading.local()

    def _resolve(self, names: Sequence[str] | None) -> tuple[str, ...]:
        explicit = names is not None
        chosen: list[str] = []
        skipped: list[str] = []
        for name in (DETECTORS if names is None else names):
            reason = unavailable_reason(name, self._yunet, self._mediapipe)
            if reason is None:
                if name not in chosen:
                    chosen.append(name)
            elif explicit:
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

    def _detectors(self) -> list[FaceDetector]:
        detectors = getattr(self._local, "detectors", None)
        if detectors is None:
            detectors = [self._create(name) for name in self.names]
            self._local.detectors = detectors
        return detectors

    def _create(self, name: str) -> FaceDetector:
        if name == "haar":
            return HaarDetector()
        if name == "dlib":
            return DlibDetector()
        if name == "mediapipe":
            return MediaPipeDetector(self._mediapipe)
        assert self._yunet is not None  # guaranteed by _resolve
        return YuNetDetector(self._yunet)

    def find(self, rgb: np.ndarray) -> tuple[FaceBox | None, str | None]:
        """The largest face of an RGB frame in full-resolution pixels, and the detector that found it."""
        height, width = rgb.shape[:2]
        factor = min(1.0, self.detect_max_side / max(height, width))
        small = rgb
        if factor < 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        for detector in self._detectors():
            faces = [f for f in detector.detect(small) if f.area > 0]
            if faces:
                return max(faces, key=lambda f: f.area).scaled(1.0 / factor), detector.name
        return None, None

    def crop_box(self, rgb: np.ndarray) -> tuple[tuple[int, int, int, int] | None, str | None]:
        """The enlarged, clamped crop of the largest face (None when no face), and the detector used."""
        face, detector = self.find(rgb)
        if face is None:
            return None, None
        box = expand_box(face, rgb.shape[1], rgb.shape[0], self.box_scale)
        return (box, detector) if box is not None else (None, None)
