"""Decoding: colour and format handling of images, exact frames of videos, and a precise reason per bad file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdet_deploy.errors import MediaError, UsageError
from mmdet_deploy.runtime import decode
from mmdet_deploy.runtime.decode import check_readable, load_image, open_video, resolve_decoder
from runtime_fixtures import index_frame, read_index, write_audio_only, write_index_video, write_video

DECODERS = ["pyav", "opencv"]


# -- images ------------------------------------------------------------------------------------------------------
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    rgb = load_image(path)
    assert rgb.shape == (40, 20, 3)  # upright: portrait
    assert rgb[5, 10, 0] > 200 and rgb[5, 10, 2] < 60  # the red half is now on top
    assert rgb[35, 10, 2] > 200 and rgb[35, 10, 0] < 60


def test_grayscale_and_alpha_and_palette_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (8, 6), 77).save(tmp_path / "gray.png")
    Image.new("LA", (8, 6), (90, 0)).save(tmp_path / "gray_alpha.png")
    Image.new("RGBA", (8, 6), (10, 200, 30, 0)).save(tmp_path / "alpha.png")
    palette = Image.new("P", (8, 6), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=1)  # palette entry 1: colour and transparent
    Image.new("RGBA", (8, 6), (1, 2, 3, 128)).save(tmp_path / "alpha.webp", lossless=True)
    expectations = {"gray.png": (77, 77, 77), "gray_alpha.png": (90, 90, 90), "alpha.png": (10, 200, 30),
                    "palette.png": (200, 100, 50), "alpha.webp": (1, 2, 3)}
    for name, colour in expectations.items():
        rgb = load_image(tmp_path / name)
        assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8, name
        assert tuple(int(v) for v in rgb[3, 4]) == colour, name  # alpha dropped, colour kept


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path: Path) -> None:
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_image(path)
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 4] and (rgb[..., 0] == rgb[..., 2]).all()


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    rgb = load_image(path)
    assert rgb.shape == (16, 16, 3)
    red, green, blue = (int(v) for v in rgb[8, 8])
    assert red > 200 and green < 60 and blue < 60


def test_decompression_bomb_guard_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200)).save(path)
    with pytest.raises(MediaError, match="300x200 pixels exceeds the limit of 50000"):
        load_image(path, max_pixels=50_000)
    assert load_image(path, max_pixels=60_000).shape == (200, 300, 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"just some text\n", "not an image Pillow can identify")],
)
def test_bad_image_content(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=message):
        load_image(path)


def test_truncated_image(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(MediaError, match="corrupt or truncated"):
        load_image(path)


# -- file-level problems --------------------------------------------------------------------------------------------
def test_broken_symlink_and_deleted_file_and_directory(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.mp4", tmp_path / "link.mp4")
    with pytest.raises(MediaError, match="broken symbolic link"):
        check_readable(tmp_path / "link.mp4")
    with pytest.raises(MediaError, match="deleted or moved during the run"):
        check_readable(tmp_path / "never.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(MediaError, match="is a directory"):
        check_readable(tmp_path / "dir.png")


def test_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may run as root, where chmod cannot deny reading; the OS error is simulated instead."""
    path = tmp_path / "secret.png"
    path.write_bytes(b"data")

    real_open = os.open

    def deny(file: object, *args: object, **kwargs: object) -> int:
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decode.os, "open", deny)
    with pytest.raises(MediaError, match="permission denied"):
        check_readable(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(MediaError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


# -- videos ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov", ".webm"])
def test_sequential_decoding_returns_exact_frames(tmp_path: Path, decoder: str, suffix: str) -> None:
    path = write_index_video(tmp_path / f"count{suffix}", 23, fps=10)
    seen: dict[int, int] = {}
    wanted = {0, 5, 13, 22}
    with open_video(path, decoder) as reader:
        assert reader.fps == pytest.approx(10.0)
        result = reader.scan(wanted.__contains__, lambda i, frame: seen.__setitem__(i, read_index(frame)))
    assert result.decoded == 23 and result.complete and result.error is None
    assert seen == {i: i for i in wanted}  # index in decoding order == the frame painted with that index


@pytest.mark.parametrize("decoder", DECODERS)
def test_scan_limit_and_rgb_order(tmp_path: Path, decoder: str) -> None:
    frames = [index_frame(i, colour=(220, 30, 30)) for i in range(12)]
    path = write_video(tmp_path / "red.mp4", frames, fps=10)
    got: list[np.ndarray] = []
    with open_video(path, decoder) as reader:
        result = reader.scan(lambda i: True, lambda i, frame: got.append(frame), limit=5)
    assert result.decoded == 5 and len(got) == 5
    red, green, blue = got[0][100, 80]
    assert red > 180 and green < 70 and blue < 70  # RGB, not OpenCV's BGR


def test_audio_only_file_is_named_as_such(tmp_path: Path) -> None:
    path = write_audio_only(tmp_path / "sound.mp4")
    with pytest.raises(MediaError, match="no video stream .*audio"):
        open_video(path, "pyav")
    with pytest.raises(MediaError):
        with open_video(path, "opencv") as reader:
            if reader.scan(lambda i: True, lambda i, f: None).decoded == 0:
                raise MediaError(str(path), "no frame")


@pytest.mark.parametrize("decoder", DECODERS)
def test_random_bytes_are_not_a_video(tmp_path: Path, decoder: str) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError) as info:
        open_video(path, decoder)
    assert str(path) in str(info.value) and str(path) not in info.value.reason  # the path once, not twice


@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_matroska_yields_its_first_frames(tmp_path: Path, decoder: str) -> None:
    full = write_index_video(tmp_path / "full.mkv", 40)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    got: list[int] = []
    with open_video(cut, decoder) as reader:
        result = reader.scan(lambda i: True, lambda i, frame: got.append(read_index(frame)))
    assert 0 < result.decoded < 40
    assert got[:-1] == list(range(len(got) - 1))  # the last frame may be concealment of damaged data


def test_decoder_choice() -> None:
    assert resolve_decoder("auto") == "pyav"  # PyAV is installed in the test environment
    assert resolve_decoder("opencv") == "opencv"
    with pytest.raises(UsageError, match="unknown video decoder"):
        resolve_decoder("gstreamer")
