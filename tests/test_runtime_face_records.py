"""The faces preset's per-frame face records (what faces.csv is written from), batching through the
Preprocessor, and bad input: slivers of images, frames without faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.runtime import faces, frame_sampling
from mmdet_deploy.runtime.faces import FaceFinder, FaceRecord
from mmdet_deploy.runtime.preprocess import Preprocessor
from runtime_fixtures import astronaut, face_frames, write_index_video, write_video

CONTRACT = ModelContract(config="tiny")


def test_a_video_gets_one_record_per_sampled_frame_from_one_batched_chain_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = write_video(tmp_path / "face.mp4", face_frames(20), fps=10)
    calls: list[list[int]] = []
    original = FaceFinder.records

    def spy(self: FaceFinder, frames: list[np.ndarray], indices: list[int]) -> list[FaceRecord]:
        calls.append(list(indices))
        return original(self, frames, indices)

    monkeypatch.setattr(FaceFinder, "records", spy)
    item = Preprocessor(CONTRACT, "faces")(video)  # the default chain
    expected = sorted(set(np.linspace(0, 19, 10, dtype=int).tolist()))
    assert calls == [expected]  # every sampled frame in one call
    assert [r.frame for r in item.faces] == expected
    assert all(r.detector == "blazeface-full" and r.box is not None for r in item.faces)
    assert item.detector == "blazeface-full" and item.frames_without_face == 0
    for record in item.faces:
        assert record.box is not None and 0 <= record.box.x0 < record.box.x1 <= 320 and 0 < (record.score or 0) <= 1


def test_records_hold_the_box_before_the_margin_and_crops_use_it(tmp_path: Path) -> None:
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(path)
    pre = Preprocessor(CONTRACT, "faces", chain="seed")
    item = pre(path)
    (record,) = item.faces
    assert record.frame == 0 and record.detector == "blazeface-short" and pre.faces is not None
    box, detector = pre.faces.find(astronaut())
    assert record.box == box and detector == "blazeface-short"
    crop = faces.expand_box(box, 512, 512)
    assert crop is not None
    expected = frame_sampling.resize_square(frame_sampling.crop(astronaut(), crop), 224)
    np.testing.assert_array_equal(item.originals[0, 0], expected)  # the crop is the record's box + 30 %


def test_frames_without_a_face_have_empty_records(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.mp4", 12, fps=10)
    item = Preprocessor(CONTRACT, "faces")(video)
    assert len(item.faces) == 10 and all(r.detector is None and r.box is None for r in item.faces)
    assert item.no_face and item.frames_without_face == 10


@pytest.mark.parametrize("size", [(1, 300), (300, 1), (1, 1)])
def test_one_pixel_images_are_scored_without_a_face(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "sliver.png"
    Image.fromarray(np.full((size[1], size[0], 3), 200, np.uint8)).save(path)
    item = Preprocessor(CONTRACT, "faces")(path)
    assert item.no_face and item.faces == [FaceRecord(0)]
    assert item.originals.shape == (1, 10, 224, 224, 3) and np.all(item.originals == 200)


def test_frames_preset_keeps_no_records(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.mp4", 12, fps=10)
    assert Preprocessor(CONTRACT, "frames")(video).faces == []


def test_real_faces_cut_by_the_border_or_larger_than_the_frame(tmp_path: Path) -> None:
    photo = astronaut()
    cut = np.ascontiguousarray(photo[:, 200:])  # the face's left half is outside the frame
    close = np.ascontiguousarray(photo[95:165, 185:265])  # eyes to mouth only: the face exceeds the frame
    Image.fromarray(cut).save(tmp_path / "cut.png")
    Image.fromarray(close).resize((320, 280)).save(tmp_path / "close.png")
    seed = Preprocessor(CONTRACT, "faces", chain="seed")
    (record,) = seed(tmp_path / "cut.png").faces
    assert record.detector == "blazeface-short" and record.box is not None
    assert record.box.x0 == 0.0 and 60 < record.box.x1 < 100  # clipped at the left border
    (record,) = seed(tmp_path / "close.png").faces
    assert record.box is not None and record.xywh() == (0.0, 0.0, 320.0, 280.0)  # larger than the frame: all of it
    pytest.importorskip("dlib")
    default = Preprocessor(CONTRACT, "faces")
    (record,) = default(tmp_path / "cut.png").faces  # BlazeFace full-range misses it, dlib does not
    assert record.detector == "dlib" and record.box is not None and record.box.x0 == 0.0
    item = default(tmp_path / "close.png")
    assert item.faces == [FaceRecord(0)] and item.no_face  # nothing recognisable: the whole frame is used
    assert item.originals.shape == (1, 10, 224, 224, 3)


def test_a_corrupt_yunet_model_is_an_error_at_start_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "yunet.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(faces.MissingDependencyError, match="yunet.onnx: OpenCV could not load this YuNet model"):
        FaceFinder(["yunet"], yunet_model=bad)
