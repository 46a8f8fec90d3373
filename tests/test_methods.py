"""The ad-hoc methods: property tests on random images and boxes, and real LFW faces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from faceanon.detect import clip_box, find_regions
from faceanon.imageio import read_image, to_rgb
from faceanon.methods import (
    BUILTIN_METHODS,
    Method,
    MethodError,
    available_methods,
    get_method,
    needs_whole_set,
)

AD_HOC = ("blur", "pixelate", "noise", "blackout", "mask")
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---------------------------------------------------------------------------------------
# Strategies


@st.composite
def images(draw, *, max_side: int = 40):
    """Random uint8 images: grey (H, W) or (H, W, 1), RGB or RGBA, 1x1 included."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    shape = (height, width) if channels is None else (height, width, channels)
    return draw(arrays(np.uint8, shape))


@st.composite
def textured_images(draw, *, max_side: int = 40):
    """RGB images with independent uniform pixels, drawn from a seed (see the k tests)."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@st.composite
def boxes_for(draw, image: np.ndarray, *, max_boxes: int = 4):
    """0 to max_boxes boxes, some touching or crossing the border, some outside or empty."""
    height, width = image.shape[:2]
    box = st.tuples(
        st.integers(-12, width + 5),
        st.integers(-12, height + 5),
        st.integers(-1, width + 12),
        st.integers(-1, height + 12),
    )
    return draw(st.lists(box, max_size=max_boxes))


@st.composite
def image_and_boxes(draw, *, textured: bool = False, max_boxes: int = 4):
    image = draw(textured_images() if textured else images())
    return image, draw(boxes_for(image, max_boxes=max_boxes))


def k_for(name: str):
    """A valid k for each method (None for methods that take none)."""
    return {
        "blur": st.integers(1, 15),
        "pixelate": st.integers(1, 50),
        "noise": st.integers(0, 100),
        "blackout": st.none(),
        "mask": st.none(),
    }[name]


def inside_mask(shape, boxes) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=bool)
    for box in boxes:
        clipped = clip_box(box, shape)
        if clipped is not None:
            x, y, w, h = clipped
            mask[y : y + h, x : x + w] = True
    return mask


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=2)


def run(name, image, boxes, k, seed=0, **options):
    return get_method(name, **options).anonymize(image, boxes, k=k, rng=np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------
# Registry and documentation


def test_registry_lists_the_ad_hoc_methods_first():
    assert available_methods()[: len(AD_HOC)] == list(AD_HOC)
    assert set(AD_HOC) <= set(BUILTIN_METHODS)


@pytest.mark.parametrize("name", AD_HOC)
def test_every_method_documents_k(name):
    method = get_method(name)
    assert isinstance(method, Method)
    described = method.describe()
    assert described["name"] == name
    assert described["k_meaning"]
    assert described["stronger"] in {"higher", "lower", "none"}
    if method.k_range is None:
        assert described["stronger"] == "none"
        assert method.check_k(7) is None  # k is ignored, not rejected
    else:
        low, high = method.k_range
        assert method.check_k(low) == low
        with pytest.raises(MethodError, match=name):
            method.check_k(low - 1)
        with pytest.raises(MethodError, match="required"):
            method.check_k(None)
        if high is not None:
            with pytest.raises(MethodError):
                method.check_k(high + 1)
    assert type(method).__doc__


@pytest.mark.parametrize("name, k", [("blur", 0), ("pixelate", 0), ("noise", 101), ("noise", -1)])
def test_out_of_range_k_is_refused_by_anonymize(name, k):
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(MethodError):
        run(name, image, [(0, 0, 5, 5)], k)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(MethodError, match="pixelate"):
        get_method("no-such-method")


def test_bad_colour_is_refused():
    with pytest.raises(MethodError):
        get_method("blackout", colour=(0, 0, 300))


# ---------------------------------------------------------------------------------------
# Properties every method has


@pytest.mark.parametrize("name", AD_HOC)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_shape_dtype_outside_pixels_and_input_kept(name, data):
    image, boxes = data.draw(image_and_boxes())
    k = data.draw(k_for(name))
    before = image.copy()
    out = run(name, image, boxes, k, seed=data.draw(st.integers(0, 2**16)))
    rgb = to_rgb(image)
    assert out.shape == rgb.shape[:2] + (3,)
    assert out.dtype == np.uint8
    assert np.array_equal(image, before), "the input must not be modified"
    assert not np.shares_memory(out, image), "a new image must be returned"
    outside = ~inside_mask(rgb.shape, boxes)
    assert np.array_equal(out[outside], rgb[outside])


@pytest.mark.parametrize("name", AD_HOC)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_grey_and_rgba_are_converted_first_and_seed_is_deterministic(name, data):
    image, boxes = data.draw(image_and_boxes())
    k = data.draw(k_for(name))
    seed = data.draw(st.integers(0, 2**16))
    first = run(name, image, boxes, k, seed=seed)
    assert np.array_equal(first, run(name, image, boxes, k, seed=seed))
    assert np.array_equal(first, run(name, to_rgb(image), boxes, k, seed=seed))


@pytest.mark.parametrize("name", AD_HOC)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_no_boxes_leaves_the_image_unchanged(name, data):
    image = data.draw(images())
    k = data.draw(k_for(name))
    assert np.array_equal(run(name, image, [], k), to_rgb(image))


@pytest.mark.parametrize("name, k", [("blur", 1), ("noise", 0), ("pixelate", 60)])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_neutral_k_gives_the_input_back(name, k, data):
    # pixelate has no fixed neutral k: any k at or above the box size is neutral, and
    # every drawn box is at most 52 pixels on a side once clipped to a 40x40 image.
    image, boxes = data.draw(image_and_boxes())
    assert np.array_equal(run(name, image, boxes, k), to_rgb(image))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_pixelate_is_neutral_exactly_from_the_box_size(data):
    image, boxes = data.draw(image_and_boxes(max_boxes=1))
    clipped = [b for b in (clip_box(b, image.shape) for b in boxes) if b is not None]
    if not clipped:
        return
    _, _, w, h = clipped[0]
    assert np.array_equal(run("pixelate", image, boxes, max(w, h)), to_rgb(image))


# ---------------------------------------------------------------------------------------
# A stronger k never changes fewer pixels


@PROPERTY_SETTINGS
@given(data=st.data())
def test_noise_changed_pixels_are_nested_in_k(data):
    # Noise guarantees this by construction on any image: the pixels and colours drawn
    # for a lower k are a prefix of those drawn for a higher k.
    image, boxes = data.draw(image_and_boxes())
    k_low = data.draw(st.integers(0, 100))
    k_high = data.draw(st.integers(k_low, 100))
    seed = data.draw(st.integers(0, 2**16))
    rgb = to_rgb(image)
    low = changed(run("noise", image, boxes, k_low, seed=seed), rgb)
    high = changed(run("noise", image, boxes, k_high, seed=seed), rgb)
    assert not (low & ~high).any()


@pytest.mark.parametrize("name", ["blur", "pixelate"])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_stronger_k_never_changes_fewer_pixels(name, data):
    # On images with texture (independent uniform pixels). On arbitrary images this is
    # not a law of smoothing: see test_k_monotonicity_needs_texture below.
    image, boxes = data.draw(image_and_boxes(textured=True))
    k_a = data.draw(k_for(name))
    k_b = data.draw(k_for(name))
    weak, strong = sorted((k_a, k_b), reverse=(name == "pixelate"))
    n_weak = changed(run(name, image, boxes, weak), image).sum()
    n_strong = changed(run(name, image, boxes, strong), image).sum()
    assert n_strong >= n_weak


@pytest.mark.parametrize("name, weak, strong", [("blur", 3, 5), ("pixelate", 10, 2)])
def test_k_monotonicity_needs_texture(name, weak, strong):
    """Documents a limit: on a faint isolated spike, a stronger k changes FEWER pixels.

    Blur spreads the spike so thinly that its neighbours round back to the background;
    pixelate averages it into a block whose mean rounds to the background. Privacy is not
    weaker (the spike is still erased), but the count of changed pixels is not monotone
    in k for every image, which is why the property above is tested on textured images.
    """
    image = np.full((20, 20, 3), 100, np.uint8)
    image[10, 10] = 105 if name == "blur" else 140
    boxes = [(0, 0, 20, 20)]
    n_weak = changed(run(name, image, boxes, weak), image).sum()
    n_strong = changed(run(name, image, boxes, strong), image).sum()
    assert n_strong < n_weak


# ---------------------------------------------------------------------------------------
# Per-method behaviour


def test_blur_even_k_sits_between_its_odd_neighbours():
    image = np.random.default_rng(1).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    box = [(0, 0, 30, 30)]
    outs = {k: run("blur", image, box, k) for k in (1, 2, 3, 4, 5)}
    assert np.array_equal(outs[1], image)
    assert not np.array_equal(outs[2], image)
    for k in (2, 4):
        assert not np.array_equal(outs[k], outs[k + 1])
    # A stronger blur leaves less of the original variation.
    spread = [outs[k].astype(float).std() for k in (1, 2, 3, 4, 5)]
    assert spread == sorted(spread, reverse=True)


def test_blur_uses_only_pixels_inside_the_box():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, :10] = 255  # a bright half just outside the box must not bleed into it
    out = run("blur", image, [(10, 0, 10, 20)], 9)
    assert np.array_equal(out, image)


def test_pixelate_k1_makes_each_box_one_colour():
    image = np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    out = run("pixelate", image, [(5, 5, 10, 12)], 1)
    block = out[5:17, 5:15].reshape(-1, 3)
    assert (block == block[0]).all()
    assert np.allclose(block[0], image[5:17, 5:15].reshape(-1, 3).mean(axis=0), atol=1)


def test_pixelate_makes_k_by_k_blocks():
    image = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = run("pixelate", image, [(0, 0, 40, 40)], 4)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 16


def test_noise_replaces_the_documented_share_of_pixels():
    image = np.zeros((20, 20, 3), np.uint8)
    for k in (0, 10, 37, 100):
        n = changed(run("noise", image, [(0, 0, 20, 20)], k, seed=5), image).sum()
        expected = round(k / 100 * 400)
        # A drawn colour may equal the old one (1 in 2**24 per pixel): at most that many.
        assert expected - 1 <= n <= expected


def test_noise_overlapping_boxes_draw_each_pixel_once():
    image = np.zeros((20, 20, 3), np.uint8)
    out = run("noise", image, [(0, 0, 20, 20), (0, 0, 20, 20)], 50, seed=3)
    assert changed(out, image).sum() in (199, 200)


def test_noise_seed_changes_the_result():
    image = np.zeros((20, 20, 3), np.uint8)
    box = [(0, 0, 20, 20)]
    assert not np.array_equal(run("noise", image, box, 50, 1), run("noise", image, box, 50, 2))


def test_blackout_fills_with_the_colour_and_ignores_k():
    image = np.random.default_rng(4).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    out = run("blackout", image, [(-5, -5, 10, 10)], None, colour=(1, 2, 3))
    assert (out[:5, :5] == (1, 2, 3)).all()
    assert np.array_equal(out, run("blackout", image, [(-5, -5, 10, 10)], 99, colour=(1, 2, 3)))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_mask_bar_stays_inside_each_face_box(data):
    image, boxes = data.draw(image_and_boxes(max_boxes=1))
    method = get_method("mask")
    for (x, y, w, h), _ in method.bars(image, boxes):
        face = clip_box(boxes[0], image.shape)
        fx, fy, fw, fh = face
        assert w > 0 and h > 0
        assert fx <= x and x + w <= fx + fw
        assert fy <= y and y + h <= fy + fh


def test_mask_falls_back_to_face_geometry_without_eyes():
    image = np.full((100, 100, 3), 128, np.uint8)
    ((bar, found),) = get_method("mask").bars(image, [(0, 0, 100, 100)])
    assert not found
    assert bar == (0, 15, 100, 35)
    out = run("mask", image, [(0, 0, 100, 100)], None)
    assert (out[15:50] == 0).all() and (out[:15] == 128).all() and (out[50:] == 128).all()


# ---------------------------------------------------------------------------------------
# Real faces


@pytest.fixture(scope="module")
def lfw_faces(lfw):
    """Five LFW images of different people with their HOG face boxes."""
    picked = []
    for samples in lfw.images_of().values():
        image = read_image(lfw.path(samples[0]))
        boxes = find_regions(image)
        if len(boxes) == 1:
            picked.append((image, boxes))
        if len(picked) == 5:
            return picked
    pytest.fail("fewer than five LFW images with one HOG face")


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name, k", [("blur", 15), ("pixelate", 8), ("noise", 50), ("blackout", None), ("mask", None)]
)
def test_methods_hide_real_faces_and_only_them(lfw_faces, name, k):
    for image, boxes in lfw_faces:
        out = run(name, image, boxes, k)
        inside = inside_mask(image.shape, boxes)
        assert np.array_equal(out[~inside], image[~inside])
        difference = np.abs(out.astype(int) - image.astype(int))[inside].mean()
        assert difference > 5, f"{name} changed the face by only {difference:.1f} on average"


@pytest.mark.realdata
def test_mask_finds_real_eyes_and_covers_them(lfw_faces):
    method = get_method("mask")
    found = 0
    for image, boxes in lfw_faces:
        ((bar, eyes_found),) = method.bars(image, boxes)
        fx, fy, fw, fh = boxes[0]
        x, y, w, h = bar
        found += eyes_found
        centre = (y + h / 2 - fy) / fh
        assert 0.15 < centre < 0.5, "the bar must sit over the eyes, in the upper face"
        assert w >= fw * 0.5, "the bar must span both eyes"
    assert found >= 4


# ---------------------------------------------------------------------------------------
# Set methods: declared, not guessed


class _Paint(Method):
    name = "paint"
    k_meaning = "ignored"
    k_range = None
    stronger = "none"

    def anonymize(self, image, boxes, *, k, rng):
        return np.zeros_like(image)


class _Undeclared(_Paint):
    """Overrides anonymize_set, as plugins did before needs_set existed."""

    def anonymize_set(self, images, boxes, *, k, rng):
        return [self.anonymize(image, b, k=k, rng=rng)
                for image, b in zip(images, boxes, strict=True)]


class _Batching(_Undeclared):
    """Overrides anonymize_set only to batch work; each image is still its own."""

    needs_set = False


class _Averaging(_Undeclared):
    needs_set = True


def test_needs_set_is_what_the_method_declares():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert needs_whole_set(_Paint()) is False
        assert needs_whole_set(_Batching()) is False
        assert needs_whole_set(_Averaging()) is True
        assert needs_whole_set(get_method("blur")) is False
    assert get_method("blur").describe()["needs_set"] is False


def test_an_undeclared_override_is_guessed_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="does not declare needs_set"):
        assert needs_whole_set(_Undeclared()) is True
