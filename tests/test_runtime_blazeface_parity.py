"""The bundled BlazeFace against mediapipe's own ``mp.solutions.face_detection`` (model_selection 0 and 1):
the same boxes (IoU >= 0.95) and scores (within 0.02). Skips where mediapipe is not importable, which is
the project's environment and CI (mediapipe pulls opencv-contrib 5.x); scripts/blazeface_parity.py runs it
in its own virtualenv and records the figures in benchmarks/results/faces/parity.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.benchmarks.face_parity import compare, markdown, match
from mmdet_deploy.errors import UsageError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_matching_is_one_to_one_best_iou_first() -> None:
    reference = np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8]], float)
    ours = np.array([[21, 20, 31, 30, 0.79], [0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.7]], float)
    pairs, lost, spare = match(reference, ours)
    assert [round(i, 3) for i, _ in pairs] == [1.0, 0.818] and lost == 0 and spare == 1
    assert pairs[1][1] == pytest.approx(0.01)


def test_same_boxes_as_mediapipe() -> None:
    mp = pytest.importorskip("mediapipe")
    if not hasattr(mp, "solutions"):
        pytest.skip("this mediapipe has no legacy solutions API (removed in 0.10.30)")
    import cv2  # after the skip: the mediapipe environment has its own OpenCV

    def rgb(path: Path) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)

    images = {path.name: rgb(path) for path in sorted(SAMPLES.glob("*.jpg"))}  # a face, and no face
    images["astronaut at 720p"] = cv2.resize(images["astronaut.jpg"], (1280, 720))
    images["flat"] = np.full((240, 320, 3), 90, np.uint8)
    try:
        from mmdet_deploy.benchmarks.face_bench import find_real_media

        images |= {path.name: rgb(path) for path in sorted((find_real_media() / "faces").glob("*.jpg"))}
    except UsageError:
        pass  # no real-media folder here: the samples alone
    report = compare(images)
    assert report["passed"], markdown(report)
    assert all(m["matched"] > 0 for m in report["models"].values())
