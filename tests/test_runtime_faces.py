"""Face detection chains: real photos, box growth, per-frame chain order, batching, bad input, adapters."""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from collections.abc import Sequence

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
    """A detector that returns fixed boxes and records what it was asked."""

    def __init__(self, name: str, boxes: list[FaceBox], thread_safe: bool = False) -> None:
        self.name = name
        self.boxes = boxes
        self.thread_safe = thread_safe
        self.calls = 0
        self.batches: list[int] = []

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        self.calls += 1
        return list(self.boxes)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        self.batches.append(len(frames))
        return [self.detect(frame) for frame in frames]


def _finder(monkeypatch: pytest.MonkeyPatch, fakes: dict[str, FaceDetector], **options: object) -> FaceFinder:
    """A FaceFinder over fake detectors (their names must be real detector names)."""
    monkeypatch.setattr(faces, "unavailable_reason", lambda name, *a: None)
    monkeypatch.setattr(faces, "create_detector", lambda name, **kw: fakes[name])
    return FaceFinder(list(fakes), **options)  # type: ignore[arg-type]


def test_chain_takes_the_first_detector_that_finds_a_face_and_its_largest_face(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes: dict[str, FaceDetector] = {
        "haar": _Fake("haar", []),
        "yunet": _Fake("yunet", [FaceBox(0, 0, 10, 10), FaceBox(20, 20, 60, 60), FaceBox(5, 5, 6, 6)]),
    }
    face, detector = _finder(monkeypatch, fakes).find(np.zeros((100, 100, 3), np.uint8))
    assert detector == "yunet" and face == FaceBox(20, 20, 60, 60)
    assert fakes["haar"].calls == 1 and fakes["yunet"].calls == 1  # type: ignore[attr-defined]


class _PerFrame(FaceDetector):
    """Finds a face only in frames whose top-left pixel is in ``bright`` (so frames can differ per detector)."""

    def __init__(self, name: str, bright: set[int], box: FaceBox) -> None:
        self.name, self.bright, self.box = name, bright, box
        self.seen: list[list[int]] = []

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        return [self.box] if int(rgb[0, 0, 0]) in self.bright else []

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        self.seen.append([int(f[0, 0, 0]) for f in frames])
        return [self.detect(frame) for frame in frames]


def test_chain_is_per_frame_and_each_detector_runs_once_on_the_frames_left(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _PerFrame("blazeface-full", {1, 3}, FaceBox(10, 10, 50, 50, 0.9))
    second = _PerFrame("dlib", {2, 3}, FaceBox(20, 20, 40, 40))
    finder = _finder(monkeypatch, {"blazeface-full": first, "dlib": second})
    frames = [np.full((100, 100, 3), value, np.uint8) for value in (1, 2, 3, 4)]
    records = finder.records(frames, [0, 7, 14, 21])
    assert first.seen == [[1, 2, 3, 4]] and second.seen == [[2, 4]]  # one batch each; dlib only where needed
    assert [(r.frame, r.detector) for r in records] == [(0, "blazeface-full"), (7, "dlib"), (14, "blazeface-full"),
                                                         (21, None)]  # fmt: skip
    assert records[0].box == FaceBox(10, 10, 50, 50, 0.9) and records[0].score == 0.9
    assert records[1].xywh() == (20, 20, 20, 20) and records[3].box is None and records[3].xywh() is None


def test_detectors_that_disagree_are_settled_by_chain_order(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _Fake("blazeface-full", [FaceBox(0, 0, 30, 30, 0.7)])
    b = _Fake("haar", [FaceBox(50, 50, 90, 90)])
    frame = np.zeros((100, 100, 3), np.uint8)
    assert _finder(monkeypatch, {"blazeface-full": a, "haar": b}).find(frame) == (FaceBox(0, 0, 30, 30, 0.7),
                                                                                  "blazeface-full")  # fmt: skip
    assert _finder(monkeypatch, {"haar": b, "blazeface-full": a}).find(frame) == (FaceBox(50, 50, 90, 90), "haar")


def test_a_face_past_the_border_or_larger_than_the_frame_is_clipped(monkeypatch: pytest.MonkeyPatch) -> None:
    finder = _finder(monkeypatch, {"haar": _Fake("haar", [FaceBox(-40, 60, 30, 140)])})
    (record,) = finder.records([np.zeros((100, 200, 3), np.uint8)], [5])
    assert record.box == FaceBox(0, 60, 30, 100)  # clipped to the 200x100 frame
    assert finder.crop_for(record, 200, 100) == (0, 54, 41, 100)  # 1.3 x 40 around (15, 80), clamped
    huge = _finder(monkeypatch, {"haar": _Fake("haar", [FaceBox(-500, -500, 900, 900)])})
    (record,) = huge.records([np.zeros((100, 200, 3), np.uint8)], [0])
    assert record.box == FaceBox(0, 0, 200, 100) and huge.crop_for(record, 200, 100) == (0, 0, 200, 100)
    outside = _finder(monkeypatch, {"haar": _Fake("haar", [FaceBox(300, 300, 400, 400)])})
    assert outside.find(np.zeros((100, 200, 3), np.uint8)) == (None, None)  # nothing of it in the frame


@pytest.mark.parametrize("shape", [(1, 500, 3), (500, 1, 3), (1, 1, 3), (8, 900, 3)])
def test_slivers_of_images_get_no_face_and_no_detector_call(monkeypatch: pytest.MonkeyPatch, shape: tuple) -> None:
    fake = _Fake("haar", [FaceBox(0, 0, 1, 1)])
    finder = _finder(monkeypatch, {"haar": fake})
    assert finder.find(np.zeros(shape, np.uint8)) == (None, None) and fake.calls == 0


def test_a_real_sliver_image_runs_through_the_real_chain() -> None:
    finder = FaceFinder(chain="seed")
    for shape in [(1, 640, 3), (640, 1, 3), (1, 1, 3)]:
        assert finder.find(np.full(shape, 128, np.uint8)) == (None, None)


def test_detectors_are_per_thread_unless_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []

    def create(name: str, **kw: object) -> FaceDetector:
        created.append(name)
        return _Fake(name, [], thread_safe=name.startswith("blazeface"))

    monkeypatch.setattr(faces, "create_detector", create)
    finder = FaceFinder(["blazeface-full", "haar"])  # creates the constructing thread's set: errors at start
    assert created == ["blazeface-full", "haar"]
    frame = np.zeros((50, 50, 3), np.uint8)
    finder.find(frame)
    finder.find(frame)
    worker = threading.Thread(target=finder.find, args=(frame,))
    worker.start()
    worker.join(timeout=30)
    assert created == ["blazeface-full", "haar", "haar"]  # Haar once per thread; the BlazeFace session shared


def test_named_chains() -> None:
    assert faces.CHAINS["seed"] == ("blazeface-short", "dlib", "haar")
    assert faces.CHAINS["default"][0] == "blazeface-full"
    seed = FaceFinder(chain="seed")
    assert seed.chain == "seed" and seed.names[0] == "blazeface-short"
    assert FaceFinder(["haar"], chain="seed").chain == faces.CUSTOM_CHAIN  # --face-detectors overrides
    with pytest.raises(UsageError, match="unknown face chain 'fast'"):
        FaceFinder(chain="fast")


def test_blazeface_chain_finds_the_astronaut_face() -> None:
    for chain in ("default", "seed"):
        face, detector = FaceFinder(chain=chain).find(astronaut())
        assert face is not None and detector == faces.CHAINS[chain][0]
        cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
        assert abs(cx - FACE_CENTRE[0]) < 15 and abs(cy - FACE_CENTRE[1]) < 20 and 0.5 < (face.score or 0) <= 1


def test_dlib_runs_the_seed_way_on_a_320_px_copy() -> None:
    pytest.importorskip("dlib")
    detector = faces.DlibDetector()
    assert detector._detector is None  # built on first use (~0.5 s per worker), not when the chain is set up
    big = cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_LINEAR)
    face = max(detector.detect(big), key=lambda f: f.area)  # (upsampled once, HOG also fires on a patch)
    cx, cy = (face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2
    assert abs(cx - 2 * FACE_CENTRE[0]) < 30 and abs(cy - 2 * FACE_CENTRE[1]) < 40  # boxes scaled back
    assert face.score is None  # an SVM margin is no confidence: left out


def test_default_chain_skips_unavailable_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    finder = FaceFinder()
    assert finder.names[0] == "blazeface-full" and "haar" in finder.names and finder.chain == "default"
    for name in finder.names:
        assert faces.unavailable_reason(name) is None
    real = faces.unavailable_reason
    monkeypatch.setattr(faces, "unavailable_reason", lambda name, *a: "missing here" if name == "dlib" else real(name))
    assert FaceFinder(chain="seed").names == ("blazeface-short", "haar")  # dlib not installed: skipped


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
    with pytest.raises(MissingDependencyError, match="face detector 'blazeface-full': missing here"):
        FaceFinder()  # the bundled BlazeFace is never skipped silently
    monkeypatch.setitem(faces.CHAINS, "default", ("dlib", "haar"))
    with pytest.raises(MissingDependencyError, match="no face detector is available.*--preset frames"):
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
