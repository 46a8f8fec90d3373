"""The geometry the generative methods share: pasting a warped face back into its box."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.landmarks import paste_warped

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _image(value: int = 10) -> np.ndarray:
    return np.full((40, 50, 3), value, np.uint8)


def test_alpha_one_replaces_the_box_and_nothing_else():
    out = _image(10)
    source = np.full((40, 50, 3), 200.0, np.float32)
    paste_warped(out, source, IDENTITY, (5, 8, 20, 12), alpha=1.0)
    inside = np.zeros((40, 50), bool)
    inside[8:20, 5:25] = True
    assert (out[inside] == 200).all()
    assert (out[~inside] == 10).all()


def test_alpha_blends_linearly_and_rounds():
    out = _image(10)
    source = np.full((40, 50, 3), 200.0, np.float32)
    alpha = np.full((12, 20), 0.25, np.float32)
    alpha[:, 10:] = 0.5
    paste_warped(out, source, IDENTITY, (5, 8, 20, 12), alpha=alpha)
    # 0.25 * 200 + 0.75 * 10 = 57.5 (rounds half to even: 58), 0.5 * 200 + 0.5 * 10 = 105.
    assert (out[8:20, 5:15] == 58).all()
    assert (out[8:20, 15:25] == 105).all()


def test_the_matrix_maps_image_to_source_coordinates():
    # source is the image shifted by (+3, +2): image pixel (x, y) is source pixel (x+3, y+2).
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    source = np.zeros((40, 50, 3), np.float32)
    source[2:, 3:] = image[:-2, :-3]
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 2.0]])
    out = np.zeros_like(image)
    paste_warped(out, source, shift, (4, 4, 30, 20), alpha=1.0)
    assert np.array_equal(out[4:24, 4:34], image[4:24, 4:34])


def test_pixels_the_source_does_not_cover_keep_the_original():
    out = _image(10)
    source = np.full((10, 10, 3), 250.0, np.float32)  # covers image x, y in [0, 10)
    paste_warped(out, source, IDENTITY, (0, 0, 30, 30), alpha=1.0)
    assert (out[:9, :9] == 250).all()
    assert (out[12:30, 12:30] == 10).all()


@pytest.mark.parametrize("value", [-50.0, 400.0])
def test_source_values_are_clipped_to_the_uint8_range(value):
    out = _image(100)
    source = np.full((40, 50, 3), value, np.float32)
    paste_warped(out, source, IDENTITY, (0, 0, 50, 40), alpha=1.0)
    assert (out == np.clip(value, 0, 255)).all()
