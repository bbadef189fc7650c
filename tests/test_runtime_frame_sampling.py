"""Sampling, crops, resizing and normalisation follow the reference implementations exactly."""

from __future__ import annotations

import numpy as np
import pytest

from mmdet_deploy.contract import IMAGENET_MEAN, IMAGENET_STD
from mmdet_deploy.runtime import frame_sampling


def test_sample_indices_is_the_seed_linspace() -> None:
    assert frame_sampling.sample_indices(300, 10) == [0, 33, 66, 99, 132, 166, 199, 232, 265, 299]
    assert frame_sampling.sample_indices(5, 10) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert frame_sampling.sample_indices(1, 10) == [0] * 10
    for n in (7, 10, 11, 99, 250):
        assert frame_sampling.sample_indices(n, 10) == list(np.linspace(0, n - 1, 10, dtype=int))
    with pytest.raises(ValueError):
        frame_sampling.sample_indices(0, 10)


def test_windows_are_non_overlapping_and_drop_the_leftover() -> None:
    assert frame_sampling.window_indices(25, 10) == [list(range(10)), list(range(10, 20))]
    assert frame_sampling.window_indices(9, 10) == []
    assert frame_sampling.window_indices(100, 10, max_windows=3) == [list(range(w * 10, w * 10 + 10)) for w in range(3)]


def _numbered(height: int, width: int) -> np.ndarray:
    """A frame whose pixel (y, x) holds (y, x, 7) so crops can be located exactly."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.arange(height)[:, None] % 256
    frame[..., 1] = np.arange(width)[None, :] % 256
    frame[..., 2] = 7
    return frame


def test_center_crop_offsets_round_half_to_even_like_torchvision() -> None:
    out = frame_sampling.center_crop(_numbered(231, 241), 224)
    # torchvision: top = round((231 - 224) / 2) = round(3.5) = 4; left = round(8.5) = 8 (half to even).
    assert out.shape == (224, 224, 3)
    assert out[0, 0, 0] == 4 and out[0, 0, 1] == 8


def test_center_crop_zero_pads_a_small_frame_with_the_odd_pixel_at_the_end() -> None:
    out = frame_sampling.center_crop(_numbered(101, 150), 224)
    assert out.shape == (224, 224, 3)
    # Height 101 -> pad 123: 61 rows above, 62 below; width 150 -> pad 74: 37 columns each side.
    assert not out[:61].any() and not out[162:].any() and out[61, 37, 2] == 7 and out[161, 37, 2] == 7
    assert not out[:, :37].any() and not out[:, 187:].any() and out[100, 186, 2] == 7
    assert out[61, 37, 0] == 0 and out[61, 37, 1] == 0  # the frame's pixel (0, 0)


def test_center_crop_pads_one_side_and_crops_the_other() -> None:
    out = frame_sampling.center_crop(_numbered(100, 300), 224)
    assert out.shape == (224, 224, 3)
    assert out[62, 0, 1] == 38 and out[62, 0, 0] == 0  # left = round(76 / 2) = 38; 62 rows of padding on top


def test_resize_square_interpolation_by_direction() -> None:
    big = np.zeros((448, 448, 3), np.uint8)
    big[::2, ::2] = 255  # a checkerboard of single pixels: area averaging gives a flat 25 % grey
    shrunk = frame_sampling.resize_square(big, 224)
    assert shrunk.shape == (224, 224, 3) and np.all(np.abs(shrunk.astype(int) - 64) <= 1)
    small = np.zeros((2, 2, 3), np.uint8)
    small[0, 0] = 255
    grown = frame_sampling.resize_square(small, 224)
    assert grown.shape == (224, 224, 3)
    assert len(np.unique(grown[..., 0])) > 10  # bilinear, not nearest-neighbour blocks


def test_normalise_matches_to_tensor_then_normalize() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 8, 9, 3), dtype=np.uint8)
    out = frame_sampling.normalise(frames, IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (2, 3, 3, 8, 9) and out.dtype == np.float32
    expected = (frames.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out, np.moveaxis(expected, -1, -3), atol=2e-6)
