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


# ----------------------------------------------------------------------------------------
# The GAN's blend mask.


def _face_points(box) -> np.ndarray:
    """68 points of a frontal face laid out in ``box`` (features in its central part)."""
    x, y, w, h = box
    rng = np.random.default_rng(0)
    points = np.empty((68, 2), np.float32)
    points[:17] = np.column_stack(
        [np.linspace(0.05, 0.95, 17), 0.9 - 0.3 * np.abs(np.linspace(-1, 1, 17))]
    )
    points[17:] = rng.uniform([0.3, 0.3], [0.7, 0.75], (51, 2))
    return points * np.array([w, h], np.float32) + np.array([x, y], np.float32)


def test_feature_mask_is_the_narrow_ramp_on_the_features_and_wider_elsewhere():
    from faceanon.landmarks import feather_mask, feature_blend_mask

    box = (10, 20, 100, 120)
    mask = feature_blend_mask(_face_points(box), box, feather=0.12, outer_feather=0.25)
    narrow = feather_mask(120, 100, border=0.12)
    wide = feather_mask(120, 100, border=0.25)
    assert mask.shape == (120, 100) and mask.dtype == np.float32
    # Never more of the generated face than the narrow ramp, never less than the wide one.
    assert (mask <= narrow + 1e-6).all() and (mask >= wide - 1e-6).all()
    # The features (box-relative 0.3-0.7 x 0.3-0.75) are replaced: the mask is 1 there.
    assert np.allclose(mask[40:85, 32:68], 1.0)
    # A corner far from the features keeps more of the photo than the narrow ramp would.
    assert mask[8, 8] == pytest.approx(wide[8, 8]) and mask[8, 8] < narrow[8, 8] - 0.3


def test_feature_mask_without_landmarks_is_the_narrow_ramp():
    from faceanon.landmarks import feather_mask, feature_blend_mask

    assert np.array_equal(
        feature_blend_mask(None, (0, 0, 50, 40), feather=0.12),
        feather_mask(40, 50, border=0.12),
    )
