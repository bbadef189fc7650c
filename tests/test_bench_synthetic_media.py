"""Synthetic benchmark media and the seed-style baseline on them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("av")

from mmdet_deploy.benchmarks.synthetic_media import MediaSpec, generate_media, media_summary, sample_clips

HAAR = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / "haarcascade_frontalface_default.xml"
SPEC = MediaSpec(videos=1, images=2, seconds=1.0, fps=10, seed=3)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_media(tmp_path_factory.mktemp("m") / "media", SPEC)


def test_media_folder_is_deterministic_720p(media: list[Path], tmp_path: Path) -> None:
    again = generate_media(tmp_path / "media", SPEC)
    assert [p.name for p in media] == [p.name for p in again] == ["video_00.mp4", "image_00.jpg", "image_01.png"]
    for a, b in zip(media, again, strict=True):
        assert a.read_bytes() == b.read_bytes()
    visible = [p for p in media[0].parent.iterdir() if not p.name.startswith(".")]
    assert sorted(visible) == sorted(media)  # nothing but media (and a hidden manifest) in the folder
    cap = cv2.VideoCapture(str(media[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (1280, 720)
    cap.release()
    assert media_summary(media) == {**media_summary(again), "files": 3, "videos": 1, "images": 2}


@pytest.mark.skipif(not HAAR.is_file(), reason="this OpenCV ships no Haar cascades")
def test_faces_are_detectable(media: list[Path]) -> None:
    cascade = cv2.CascadeClassifier(str(HAAR))
    for path in media[1:]:
        gray = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
        assert len(cascade.detectMultiScale(gray, 1.1, 5)) >= 1, path


def test_sample_clips() -> None:
    clips = sample_clips(2, seed=5)
    assert clips.shape == (2, 10, 3, 224, 224) and clips.dtype == np.float32
    assert np.array_equal(clips, sample_clips(2, seed=5))
    assert not np.array_equal(clips, sample_clips(2, seed=6))
    assert -2.2 < clips.min() < clips.max() < 2.7  # ImageNet-normalised [0, 1] pixels


@pytest.mark.skipif(not HAAR.is_file(), reason="this OpenCV ships no Haar cascades")
def test_seed_pipeline_on_the_tiny_model(media: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from PIL import Image

    from mmdet_deploy.benchmarks.seed_pipeline import BOX_SCALE, SeedFaceCascade, SeedPipeline
    from mmdet_deploy.model import build_model

    image = Image.open(media[1]).convert("RGB")
    cascade = SeedFaceCascade()
    assert cascade.names[-1] == "haar" and cascade.crop(image)[1] == cascade.names[0]  # dlib first when installed
    cascade.detectors = [d for d in cascade.detectors if d[0] == "haar"]  # the crop rule, checked on Haar's box
    crop, name = cascade.crop(image)
    assert name == "haar"
    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    x, y, w, h = max(cv2.CascadeClassifier(str(HAAR)).detectMultiScale(gray, 1.1, 5, minSize=(30, 30)),
                     key=lambda b: b[2] * b[3])  # fmt: skip
    assert crop.size[0] == pytest.approx(w * BOX_SCALE, abs=2)

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    seed = SeedPipeline(build_model("tiny", seed=0).prepare())
    result = seed.run([*media, broken])
    assert set(result["labels"]) == {p.name for p in media} and set(result["labels"].values()) <= {0, 1}
    assert list(result["errors"]) == ["broken.mp4"]  # an error, never silently "real"
    assert sum(result["face_detections"].values()) == 10 + 2 and set(result["face_detections"]) <= {*seed.faces.names,
                                                                                                    "none"}
    assert set(result["stages_s"]) == {"decode", "face_detection", "preprocess", "inference"}
    assert result["files_per_s"] == pytest.approx(4 / result["wall_s"])
