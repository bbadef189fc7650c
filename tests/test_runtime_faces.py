"""Face detection chain: a real face photo, box growth, chain order, availability rules, adapters."""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types

import cv2
import numpy as np
import pytest

from mmdet_deploy.deps import available
from mmdet_deploy.errors import MissingDependencyError, UsageError
from mmdet_deploy.runtime import faces
from mmdet_deploy.runtime.faces import FaceBox, FaceDetector, FaceFinder, MediaPipeDetector, expand_box
from runtime_fixtures import astronaut

#: Where the astronaut's face is in skimage's 512x512 photo (checked by eye; Haar finds ~ (177,66)-(272,161)).
FACE_CENTRE = (224.0, 113.0)


def test_haar_finds_the_astronaut_face() -> None:
    face, detector = FaceFinder(["haar"]).find(astronaut())
    assert detector == "haar" and face is not None
    cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
    assert abs(cx - FACE_CENTRE[0]) < 15 and abs(cy - FACE_CENTRE[1]) < 15
    assert 70 < face.x1 - face.x0 < 140  # a face, not the whole picture or a button


def test_detection_on_a_downscaled_copy_maps_back_to_full_resolution() -> None:
    big = cv2.resize(astronaut(), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    finder = FaceFinder(["haar"], detect_max_side=512)  # detectors see a 512 px copy
    face, _ = finder.find(big)
    assert face is not None
    cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
    assert abs(cx - 4 * FACE_CENTRE[0]) < 60 and abs(cy - 4 * FACE_CENTRE[1]) < 60


def test_no_face_in_a_flat_frame() -> None:
    finder = FaceFinder(["haar"])
    assert finder.find(np.full((240, 320, 3), 90, np.uint8)) == (None, None)
    assert finder.crop_box(np.full((240, 320, 3), 90, np.uint8)) == (None, None)


def test_expand_box_grows_30_percent_into_a_square_and_clamps() -> None:
    assert expand_box(FaceBox(40, 40, 60, 80), 200, 200) == (24, 34, 76, 86)  # side 1.3 * 40 = 52 around (50, 60)
    assert expand_box(FaceBox(10, 10, 30, 50), 100, 100) == (0, 4, 46, 56)  # clamped at the left border
    assert expand_box(FaceBox(90, 90, 99, 99), 100, 100) == (88, 88, 100, 100)  # 94.5 -+ 5.85, clamped at 100
    assert expand_box(FaceBox(200, 200, 210, 210), 100, 100) is None  # entirely outside


class _Fake(FaceDetector):
    def __init__(self, name: str, boxes: list[FaceBox]) -> None:
        self.name = name
        self.boxes = boxes
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        self.calls += 1
        return list(self.boxes)


def test_chain_takes_the_first_detector_that_finds_a_face_and_its_largest_face(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {
        "haar": _Fake("haar", []),
        "yunet": _Fake("yunet", [FaceBox(0, 0, 10, 10), FaceBox(20, 20, 60, 60), FaceBox(5, 5, 6, 6)]),
    }
    monkeypatch.setattr(faces, "unavailable_reason", lambda name, *a: None)
    finder = FaceFinder(["haar", "yunet"])
    monkeypatch.setattr(finder, "_create", lambda name: fakes[name])
    face, detector = finder.find(np.zeros((100, 100, 3), np.uint8))
    assert detector == "yunet" and face == FaceBox(20, 20, 60, 60)
    assert fakes["haar"].calls == 1 and fakes["yunet"].calls == 1


def test_detectors_are_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    finder = FaceFinder(["haar"])
    created: list[object] = []
    original = finder._create

    def track(name: str) -> FaceDetector:
        created.append(original(name))
        return created[-1]  # type: ignore[return-value]

    monkeypatch.setattr(finder, "_create", track)
    frame = np.zeros((50, 50, 3), np.uint8)
    finder.find(frame)
    finder.find(frame)
    worker = threading.Thread(target=finder.find, args=(frame,))
    worker.start()
    worker.join()
    assert len(created) == 2 and created[0] is not created[1]  # one per thread, reused within a thread


def test_default_chain_skips_unavailable_detectors() -> None:
    finder = FaceFinder()
    assert "haar" in finder.names and "yunet" not in finder.names  # no YuNet model given
    for name in finder.names:
        assert faces.unavailable_reason(name) is None


def test_explicit_unavailable_detectors_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown face detector 'retina'"):
        FaceFinder(["haar", "retina"])
    with pytest.raises(MissingDependencyError, match="--yunet-model"):
        FaceFinder(["yunet"])
    with pytest.raises(MissingDependencyError, match="not found"):
        FaceFinder(["yunet"], yunet_model="/nonexistent/yunet.onnx")
    if not available("dlib"):
        with pytest.raises(MissingDependencyError, match="mmdet-deploy\\[faces\\]"):
            FaceFinder(["haar", "dlib"])


def test_no_detector_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces, "unavailable_reason", lambda name, *a: "missing here")
    with pytest.raises(MissingDependencyError, match="--preset frames"):
        FaceFinder()


def _fake_mediapipe(detections: list[tuple[float, float, float, float, float]]) -> types.ModuleType:
    """A stand-in for mediapipe's legacy API, shaped like mp.solutions.face_detection results."""
    seen: dict[str, object] = {}

    class FaceDetection:
        def __init__(self, model_selection: int, min_detection_confidence: float) -> None:
            seen.update(model_selection=model_selection, confidence=min_detection_confidence)

        def process(self, image: np.ndarray) -> types.SimpleNamespace:
            seen["shape"] = image.shape
            dets = [
                types.SimpleNamespace(
                    score=[s],
                    location_data=types.SimpleNamespace(
                        relative_bounding_box=types.SimpleNamespace(xmin=x, ymin=y, width=w, height=h)
                    ),
                )
                for (x, y, w, h, s) in detections
            ]
            return types.SimpleNamespace(detections=dets or None)

    module = types.ModuleType("mediapipe")
    module.__spec__ = importlib.machinery.ModuleSpec("mediapipe", None)
    module.solutions = types.SimpleNamespace(face_detection=types.SimpleNamespace(FaceDetection=FaceDetection))
    module.seen = seen  # type: ignore[attr-defined]
    return module


def test_mediapipe_legacy_adapter_maps_relative_boxes_to_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_mediapipe([(0.25, 0.5, 0.1, 0.2, 0.9), (0.0, 0.0, 0.5, 0.5, 0.6)])
    monkeypatch.setitem(sys.modules, "mediapipe", fake)
    boxes = MediaPipeDetector().detect(np.zeros((200, 400, 3), np.uint8))
    assert boxes[0] == FaceBox(100.0, 100.0, 140.0, 140.0, 0.9)
    assert boxes[1] == FaceBox(0.0, 0.0, 200.0, 100.0, 0.6)
    assert fake.seen["model_selection"] == 1 and fake.seen["shape"] == (200, 400, 3)  # type: ignore[attr-defined]
    finder = FaceFinder(["mediapipe"], detect_max_side=200)  # frame 400 wide -> detected at half size
    face, detector = finder.find(np.zeros((200, 400, 3), np.uint8))
    assert detector == "mediapipe" and face == FaceBox(0.0, 0.0, 200.0, 100.0, 0.6)  # largest, full-res pixels


def test_mediapipe_without_legacy_api_needs_a_model_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("mediapipe")
    fake.__spec__ = importlib.machinery.ModuleSpec("mediapipe", None)
    monkeypatch.setitem(sys.modules, "mediapipe", fake)
    with pytest.raises(MissingDependencyError, match="--mediapipe-model"):
        MediaPipeDetector()
