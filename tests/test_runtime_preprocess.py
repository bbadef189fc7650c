"""The public preprocessing API: both presets, exact frames, short videos, images, reconstructions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.errors import ContractError, MediaError, UsageError
from mmdet_deploy.runtime import frame_sampling, preprocess, video_sampling
from mmdet_deploy.runtime.decode import DEFAULT_MAX_PIXELS, VideoReader
from mmdet_deploy.runtime.preprocess import PreparedFile, Preprocessor
from mmdet_deploy.runtime.recons import ReconstructionSource
from runtime_fixtures import astronaut, face_frames, read_index, write_index_video, write_video

CONTRACT = ModelContract(config="tiny")


def _painted(item: PreparedFile) -> list[list[int]]:
    """The frame index painted into each frame of each window (the decoder's claim, checked by pixels).

    Fixture videos are 160x120: the faces preset resizes them whole (no face), the frames preset pads them
    into the middle of the 224x224 crop, rows 52:172 and columns 32:192.
    """
    frames = item.originals if item.preset == "faces" else item.originals[:, :, 52:172, 32:192]
    return [[read_index(frame) for frame in window] for window in frames]


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_faces_preset_samples_exact_linspace_frames(tmp_path: Path, decoder: str) -> None:
    video = write_index_video(tmp_path / "v.mp4", 37, fps=10)
    item = Preprocessor(CONTRACT, "faces", decoder=decoder)(video)
    expected = list(np.linspace(0, 36, 10, dtype=int))
    assert item.frame_indices == [expected]
    assert _painted(item) == [expected]  # the pixels are those frames, not neighbours
    assert item.clips.shape == (1, 10, 3, 224, 224) and item.clips.dtype == np.float32
    assert item.frames_decoded == 37 and item.frames_used == 10 and item.decoder == decoder
    assert item.no_face and item.frames_without_face == 10 and item.detector is None
    assert set(item.timings) == {"decode", "face_detection", "preprocess"}
    assert all(v >= 0 for v in item.timings.values())


def test_faces_preset_samples_within_the_first_ten_seconds(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "long.mp4", 250, fps=10)  # 25 s
    item = Preprocessor(CONTRACT, "faces")(video)
    assert item.frame_indices == [list(np.linspace(0, 99, 10, dtype=int))]  # the seed: int(fps * 10) frames
    assert _painted(item) == item.frame_indices
    assert item.frames_decoded == 100  # decoding stops at the limit


@pytest.mark.parametrize("decode_all", [True, False])
@pytest.mark.parametrize("hint", [None, 12, 80])
def test_a_wrong_container_frame_count_is_corrected_by_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hint: int | None, decode_all: bool
) -> None:
    video = write_index_video(tmp_path / "v.mkv", 37, fps=10)
    opened: list[VideoReader] = []
    real_open = video_sampling.open_video  # the faces preset's sampling pass

    def lying_open(path: Path, decoder: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoReader:
        reader = real_open(path, decoder, max_pixels)
        reader.frame_count_hint = hint  # what a broken or estimating container may claim
        opened.append(reader)
        return reader

    monkeypatch.setattr(video_sampling, "open_video", lying_open)
    item = Preprocessor(CONTRACT, "faces", decode_all_frames=decode_all)(video)
    expected = list(np.linspace(0, 36, 10, dtype=int))
    assert item.frame_indices == [expected] and _painted(item) == [expected]
    # Decoding every frame: a second, exact pass once the true count is known. Otherwise the packets count the
    # frames before decoding (H.264 here), and the container's claim is not used.
    assert len(opened) == (2 if decode_all and hint != 37 else 1)


def test_correct_frame_count_needs_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = write_index_video(tmp_path / "v.mp4", 37, fps=10)
    calls: list[Path] = []
    real_open = video_sampling.open_video  # the faces preset's sampling pass
    monkeypatch.setattr(video_sampling, "open_video",
                        lambda p, d="auto", m=DEFAULT_MAX_PIXELS: calls.append(p) or real_open(p, d, m))
    Preprocessor(CONTRACT, "faces")(video)
    assert len(calls) == 1


def test_faces_preset_short_video_repeats_frames_like_the_seed(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "short.mp4", 5, fps=10)
    item = Preprocessor(CONTRACT, "faces")(video)
    assert item.frame_indices == [[0, 0, 0, 1, 1, 2, 2, 3, 3, 4]]
    assert _painted(item) == item.frame_indices
    assert item.frames_used == 5 and any("only 5 frames" in note for note in item.notes)


def test_faces_preset_crops_the_face_of_a_real_photo(tmp_path: Path) -> None:
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(path)
    item = Preprocessor(CONTRACT, "faces", ["haar"])(path)
    assert item.detector == "haar" and item.frames_without_face == 0 and not item.no_face
    assert item.frame_indices == [[0] * 10]
    frames = item.originals[0]
    assert all(np.array_equal(frames[0], f) for f in frames)  # one image, ten identical frames
    finder = preprocess.FaceFinder(["haar"])
    box, _ = finder.crop_box(astronaut())
    assert box is not None
    np.testing.assert_array_equal(frames[0], frame_sampling.resize_square(frame_sampling.crop(astronaut(), box), 224))


def test_faces_preset_video_with_a_face(tmp_path: Path) -> None:
    video = write_video(tmp_path / "face.mp4", face_frames(20), fps=10)
    item = Preprocessor(CONTRACT, "faces", ["haar"])(video)
    assert item.detector == "haar" and item.frames_without_face == 0 and item.frames_used == 10


def test_frames_preset_windows_and_max_windows(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.webm", 25, fps=10)
    item = Preprocessor(CONTRACT, "frames")(video)
    assert item.frame_indices == [list(range(10)), list(range(10, 20))]  # frames 20-24 dropped
    assert _painted(item) == item.frame_indices
    assert item.clips.shape == (2, 10, 3, 224, 224) and item.frames_decoded == 25
    capped = Preprocessor(CONTRACT, "frames", max_windows=1)(video)
    assert capped.frame_indices == [list(range(10))] and capped.frames_decoded == 10  # stopped decoding early


def test_frames_preset_centre_crop_of_a_small_frame_is_zero_padded(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.mp4", 10, fps=10)  # 160x120 < 224
    item = Preprocessor(CONTRACT, "frames")(video)
    frame = item.originals[0, 0]
    assert not frame[:52].any() and not frame[:, :32].any()  # (224 - 120) / 2 rows, (224 - 160) / 2 columns
    assert frame[52:172, 32:192].any()


def test_frames_preset_rejects_a_video_shorter_than_one_window(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "short.mp4", 7, fps=10)
    with pytest.raises(MediaError, match="only 7 decodable frames; the frames preset needs at least 10"):
        Preprocessor(CONTRACT, "frames")(video)


@pytest.mark.parametrize("preset", ["faces", "frames"])
def test_image_becomes_ten_identical_frames(tmp_path: Path, preset: str) -> None:
    path = tmp_path / "flat.bmp"
    Image.new("RGB", (300, 250), (200, 30, 30)).save(path)
    item = Preprocessor(CONTRACT, preset)(path)
    assert item.clips.shape == (1, 10, 3, 224, 224)
    assert np.all(item.originals == item.originals[0, 0])
    assert tuple(item.originals[0, 0, 100, 100]) == (200, 30, 30)
    np.testing.assert_array_equal(item.clips, frame_sampling.normalise(item.originals, CONTRACT.mean, CONTRACT.std))


def test_window_inputs_are_slices_of_the_clips(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.mp4", 30, fps=10)
    item = Preprocessor(CONTRACT, "frames")(video)
    original, recons = item.window_inputs(1, 3)
    np.testing.assert_array_equal(original, item.clips[1:3])
    assert recons is original and item.recons is item.clips  # identity reconstruction shares the array


class _Negative(ReconstructionSource):
    name = "negative"

    def reconstruct(self, frame: np.ndarray) -> np.ndarray:
        return 255 - frame


@pytest.mark.parametrize("preset", ["faces", "frames"])
def test_reconstruction_source_sees_full_frames_before_the_crop(tmp_path: Path, preset: str) -> None:
    video = write_video(tmp_path / "face.mp4", face_frames(12), fps=10)
    item = Preprocessor(CONTRACT, preset, reconstruction=_Negative())(video)
    assert item.reconstructions is not item.originals
    # Crops and area resizing commute with 255 - x up to rounding: the same box was applied to both.
    diff = np.abs(item.reconstructions.astype(int) - (255 - item.originals.astype(int)))
    assert diff.max() <= 1
    original, recons = item.window_inputs(0, 1)
    np.testing.assert_allclose(recons, item.recons[:1])
    assert not np.allclose(original, recons)


def test_invalid_settings() -> None:
    with pytest.raises(ContractError, match="fusion"):
        Preprocessor(ModelContract(head="fusion"))
    with pytest.raises(UsageError, match="unknown preset"):
        Preprocessor(CONTRACT, "crops")
    with pytest.raises(UsageError, match="max-windows"):
        Preprocessor(CONTRACT, "frames", max_windows=0)
    with pytest.raises(UsageError, match="only apply to the faces preset"):
        Preprocessor(CONTRACT, "frames", ["haar"])
    assert Preprocessor(CONTRACT).preset == "faces"  # the contract's
    assert Preprocessor(CONTRACT.replace(preset="frames")).preset == "frames"


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    pre = Preprocessor(CONTRACT, "frames")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    with pytest.raises(MediaError, match="unsupported file type"):
        pre(tmp_path / "doc.pdf")
    with pytest.raises(MediaError, match="deleted or moved"):
        pre(tmp_path / "gone.mp4")
    blank = tmp_path / "blank.mp4"
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 4, 3), np.uint8))
    blank.write_bytes((tmp_path / "x.png").read_bytes())  # an image with a video extension
    with pytest.raises(MediaError):
        pre(blank)


def test_frames_preset_safety_cap_without_max_windows(tmp_path: Path) -> None:
    pre = Preprocessor(CONTRACT, "frames")
    pre.safety_windows = 2  # stands in for the 1000-window default on a long video
    exact = pre(write_index_video(tmp_path / "twenty.mp4", 20, fps=10))
    assert exact.windows == 2 and exact.notes == []  # exactly at the cap: nothing was left out
    longer = pre(write_index_video(tmp_path / "longer.mp4", 31, fps=10))
    assert longer.windows == 2 and any("safety cap of 2 windows" in note for note in longer.notes)
    assert longer.frames_decoded == 21  # decoding stopped one frame past the cap
