"""BlazeFace on ONNX Runtime: MediaPipe's anchors, decoding, weighted NMS and letterbox, the packaged models on
real photos, batching, and broken model files. Parity with mediapipe itself: tests/test_runtime_blazeface_parity.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdet_deploy.errors import MissingDependencyError
from mmdet_deploy.runtime import blazeface
from mmdet_deploy.runtime.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace, decode, ssd_anchors, weighted_nms
from mmdet_deploy.runtime.faces import FaceFinder
from runtime_fixtures import astronaut


def test_anchors_follow_mediapipes_ssd_layout() -> None:
    short = ssd_anchors(SHORT_RANGE)
    assert short.shape == (896, 2)
    # stride 8: a 16x16 grid, 2 anchors per cell (interpolated scale), x fastest
    assert np.allclose(short[0], short[1]) and np.allclose(short[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16]) and np.allclose(short[32], [0.5 / 16, 1.5 / 16])
    # strides 16, 16, 16 share one 8x8 grid with 3 x 2 anchors per cell
    assert np.allclose(short[512:518], [0.5 / 8, 0.5 / 8]) and np.allclose(short[518], [1.5 / 8, 0.5 / 8])
    full = ssd_anchors(FULL_RANGE)
    assert full.shape == (2304, 2) and np.allclose(full[1], [1.5 / 48, 0.5 / 48]) and np.allclose(full[-1], 47.5 / 48)


def test_decode_offsets_from_the_anchor_and_applies_the_threshold() -> None:
    anchors = ssd_anchors(SHORT_RANGE)
    reg = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -10.0, np.float32)
    reg[100, :4] = [12.8, -6.4, 32.0, 64.0]  # +0.1 / -0.05 of the input, 0.25 x 0.5 of it
    logits[100] = 2.0
    logits[200] = 1000.0  # clipped to 100 before the sigmoid
    reg[200, 2:4] = [-5.0, 10.0]  # a negative width: MediaPipe drops the box
    logits[300] = -0.1  # sigmoid 0.475: under the short-range threshold 0.5
    boxes, scores = decode(reg, logits, anchors, SHORT_RANGE, SHORT_RANGE.min_score)
    cx, cy = anchors[100] + [0.1, -0.05]
    assert np.allclose(boxes, [[cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25]])
    assert np.allclose(scores, [1 / (1 + np.exp(-2.0))])


def test_weighted_nms_averages_each_cluster_by_score() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [5.0, 5.0, 6.0, 6.0], [0.6, 0.0, 1.6, 1.0]])
    scores = np.array([0.9, 0.6, 0.8, 0.7])
    out = weighted_nms(boxes, scores, 0.3)
    assert [round(s, 3) for _, s in out] == [0.9, 0.8, 0.7]  # best score of each cluster, best first
    assert np.allclose(out[0][0], [0.6 * 0.1 / 1.5, 0, 1 + 0.6 * 0.1 / 1.5, 1])  # 0.9 and 0.6 merged
    assert np.allclose(out[1][0], boxes[2]) and np.allclose(out[2][0], boxes[3])  # IoU 0.25 with box 0: apart
    assert weighted_nms(np.empty((0, 4)), np.empty((0,)), 0.3) == []


def test_letterbox_pads_the_short_side_with_black() -> None:
    white = np.full((100, 200, 3), 255, np.uint8)
    tensor, (side, x0, y0) = blazeface.to_tensor(white, 128)
    assert tensor.shape == (3, 128, 128) and tensor.dtype == np.float32
    assert (side, x0, y0) == (200.0, 0.0, -50.0)
    assert np.all(tensor[:, :30] == -1.0) and np.all(tensor[:, 34:94] == 1.0) and np.all(tensor[:, 98:] == -1.0)


@pytest.mark.parametrize("variant", ["short", "full"])
def test_packaged_models_find_the_astronaut_face_in_one_batched_call(variant: str) -> None:
    model = BlazeFace(variant)
    photo = astronaut()
    frames = [photo, np.ascontiguousarray(photo[:, ::-1]), np.full((240, 320, 3), 90, np.uint8)]
    batched = model.detect_batch(frames)
    assert len(batched) == 3 and batched[2].shape == (0, 5)  # a flat frame: no face
    for got, frame in zip(batched, frames, strict=True):
        assert np.allclose(got, model.detect(frame), atol=1e-3)  # batching changes nothing
    x0, y0, x1, y1, score = batched[0][0]
    assert abs((x0 + x1) / 2 - 224) < 15 and abs((y0 + y1) / 2 - 120) < 20 and 80 < x1 - x0 < 130
    assert score > 0.8 and abs((x0 + x1) / 2 - (512 - (batched[1][0][0] + batched[1][0][2]) / 2)) < 6  # mirrored


def test_a_missing_or_corrupt_model_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="nope.onnx: BlazeFace full-range model file not found"):
        BlazeFace("full", model_path=tmp_path / "nope.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a model")
    with pytest.raises(MissingDependencyError, match="broken.onnx: not a loadable BlazeFace ONNX model"):
        BlazeFace("short", model_path=broken)
    with pytest.raises(MissingDependencyError, match="blazeface_short_range.onnx: not the BlazeFace full-range"):
        BlazeFace("full", model_path=SHORT_RANGE.path)  # a real model, but the other one


def test_the_chain_refuses_to_start_without_its_packaged_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blazeface, "MODELS_DIR", tmp_path)
    with pytest.raises(MissingDependencyError, match="blazeface_full_range.onnx: BlazeFace model file not found"):
        FaceFinder()  # not silently skipped: a packaged file missing is a broken install
    (tmp_path / "blazeface_short_range.onnx").write_bytes(b"garbage")
    with pytest.raises(MissingDependencyError, match="blazeface_short_range.onnx: not a loadable"):
        FaceFinder(chain="seed")


def test_the_chain_passes_the_models_providers_to_blazeface_but_not_tensorrt() -> None:
    finder = FaceFinder(["blazeface-full", "haar"], providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
    detector = finder._detectors()[0]
    assert detector.name == "blazeface-full" and detector.model.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
