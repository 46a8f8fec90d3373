"""The DeepPrivacy-style GAN method: contract, weights handling, and the shipped model."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faceanon.deepprivacy import (  # noqa: E402
    DEFAULT_WEIGHTS,
    WEIGHTS_ENV,
    DeepPrivacy,
    Generator,
    GeneratorConfig,
    WeightsError,
    box_mask,
    crop_matrix,
    edge_ramps,
    load_generator,
    save_generator,
    seamed_edges,
)
from faceanon.methods import MethodError, get_method  # noqa: E402


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """An untrained generator: enough for the contract, fast to write."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    save_generator(path, Generator(GeneratorConfig()))
    return path


def _canvas(seed: int, size: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_registered_and_takes_no_k(random_weights):
    method = get_method("deepprivacy", weights=random_weights)
    assert isinstance(method, DeepPrivacy)
    assert method.k_range is None and method.stronger == "none" and not method.uses_k
    assert method.describe()["weights"] == str(random_weights)


def test_changes_only_the_boxes_and_keeps_shape_and_dtype(random_weights):
    image = _canvas(0)
    copy = image.copy()
    boxes = [(30, 40, 70, 80), (150, 150, 60, 50), (-10, 180, 40, 40)]
    out = DeepPrivacy(weights=random_weights).anonymize(
        image, boxes, k=None, rng=np.random.default_rng(0)
    )
    assert np.array_equal(image, copy)
    assert out.shape == image.shape and out.dtype == np.uint8
    outside = np.ones(image.shape[:2], bool)
    for x, y, w, h in boxes:
        outside[max(y, 0) : y + h, max(x, 0) : x + w] = False
    assert np.array_equal(out[outside], image[outside])
    x, y, w, h = boxes[0]
    assert np.abs(out[y : y + h, x : x + w].astype(int) - image[y : y + h, x : x + w]).mean() > 10


def test_no_boxes_returns_an_equal_copy(random_weights):
    image = _canvas(1)
    out = DeepPrivacy(weights=random_weights).anonymize(
        image, [], k=None, rng=np.random.default_rng(0)
    )
    assert out is not image and np.array_equal(out, image)


def test_deterministic_for_a_seed_and_noise_matters(random_weights):
    method = DeepPrivacy(weights=random_weights)
    image, boxes = _canvas(2), [(40, 40, 100, 100)]
    a = method.anonymize(image, boxes, k=None, rng=np.random.default_rng(7))
    b = method.anonymize(image, boxes, k=None, rng=np.random.default_rng(7))
    c = method.anonymize(image, boxes, k=None, rng=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_the_generator_never_sees_the_face(random_weights):
    # Two images that differ only inside the box must give the same output: the box is
    # blanked before the generator runs (the keypoints come from the fallback geometry on
    # noise, so they are the same too when landmarks fail; compare with one fixed box).
    method = DeepPrivacy(weights=random_weights)
    box = (50, 50, 18, 18)  # below the landmark predictor's minimum: keypoints from the box
    a, b = _canvas(3), _canvas(3)
    b[50:68, 50:68] = _canvas(4)[50:68, 50:68]
    out_a = method.anonymize(a, [box], k=None, rng=np.random.default_rng(0))
    out_b = method.anonymize(b, [box], k=None, rng=np.random.default_rng(0))
    # Only the feathered rim (which mixes in the original) may differ.
    inner = (slice(53, 65), slice(53, 65))
    assert np.array_equal(out_a[inner], out_b[inner])


def test_blend_options_are_checked(random_weights):
    with pytest.raises(MethodError, match="blend must be one of box, features, got 'soft'"):
        DeepPrivacy(weights=random_weights, blend="soft")
    with pytest.raises(MethodError, match="feather <= outer_feather"):
        DeepPrivacy(weights=random_weights, blend="features", feather=0.3, outer_feather=0.2)
    with pytest.raises(MethodError, match="0 <= feather <= 0.5"):
        DeepPrivacy(weights=random_weights, feather=-0.1)
    assert DeepPrivacy(weights=random_weights, feather=0.3, outer_feather=0.2).feather == 0.3
    assert DeepPrivacy(weights=random_weights).describe()["blend"] == "box"
    with pytest.raises(MethodError, match="seam_limit must be positive or None"):
        DeepPrivacy(weights=random_weights, seam_limit=0)
    assert DeepPrivacy(weights=random_weights, seam_limit=None).describe()["seam_limit"] is None


def test_box_mask_covers_every_box_pixel_after_cropping():
    rng = np.random.default_rng(0)
    for _ in range(50):
        w, h = rng.integers(20, 300, size=2)
        x, y = rng.integers(0, 200, size=2)
        matrix = crop_matrix((x, y, w, h), 64)
        corners = np.array([[x, y], [x + w, y + h]], np.float64) @ matrix[:, :2].T + matrix[:, 2]
        mask = box_mask(corners.ravel(), 64)
        # Every crop pixel whose source lies in the box (pixel centres) is masked.
        inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
        cols, rows = np.meshgrid(np.arange(64), np.arange(64))
        src = np.stack([cols.ravel(), rows.ravel()], 1) @ inverse[:, :2].T + inverse[:, 2]
        inside = (
            (src[:, 0] >= x - 0.5)
            & (src[:, 0] <= x + w - 0.5)
            & (src[:, 1] >= y - 0.5)
            & (src[:, 1] <= y + h - 0.5)
        )
        assert mask.ravel()[inside].all()


def test_missing_weights_give_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pt"
    method = DeepPrivacy(weights=missing)
    with pytest.raises(WeightsError, match=r"weights not found: .*nope\.pt"):
        method.anonymize(_canvas(0), [(10, 10, 50, 50)], k=None, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"], ids=str
)
def test_corrupt_weights_give_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(WeightsError, match=r"bad\.pt"):
        load_generator(bad)


def test_truncated_real_checkpoint_gives_a_clear_error(tmp_path, random_weights):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(random_weights.read_bytes()[:5000])
    with pytest.raises(WeightsError, match=r"truncated\.pt.*corrupt"):
        load_generator(bad)


def test_other_torch_files_are_named_as_such(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="not a faceanon deepprivacy weights file"):
        load_generator(other)


def test_environment_variable_points_at_other_weights(monkeypatch, random_weights):
    monkeypatch.setenv(WEIGHTS_ENV, str(random_weights))
    assert DeepPrivacy().weights == random_weights
    monkeypatch.delenv(WEIGHTS_ENV)
    assert DeepPrivacy().weights == DEFAULT_WEIGHTS


# ----------------------------------------------------------------------------------------
# The shipped model.


def test_shipped_weights_load_offline_and_are_small():
    assert DEFAULT_WEIGHTS.is_file(), f"missing shipped weights {DEFAULT_WEIGHTS}"
    assert DEFAULT_WEIGHTS.stat().st_size < 10 * 2**20
    generator = load_generator(DEFAULT_WEIGHTS)
    assert generator.config.resolution == 64
    assert not generator.training


@pytest.mark.realdata
def test_shipped_model_replaces_lfw_faces_that_hog_still_finds(lfw):
    """On 20 LFW benchmark faces: fast, changes the face, and HOG still finds a face."""
    from faceanon.imageio import read_image
    from faceanon.landmarks import hog_boxes

    by_identity = lfw.images_of()
    names = sorted(by_identity)[:: len(by_identity) // 20][:20]
    method = DeepPrivacy()
    found, seconds, faces = 0, 0.0, 0
    for i, name in enumerate(names):
        image = read_image(lfw.path(by_identity[name][0]))
        boxes = hog_boxes(image, upsample=1)[:1]
        if not boxes:
            continue
        start = time.perf_counter()
        out = method.anonymize(image, boxes, k=None, rng=np.random.default_rng(i))
        seconds += time.perf_counter() - start
        faces += 1
        x, y, w, h = boxes[0]
        change = np.abs(out[y : y + h, x : x + w].astype(int) - image[y : y + h, x : x + w])
        assert change.mean() > 8
        found += bool(hog_boxes(out, upsample=1))
    assert faces >= 18
    assert seconds / faces < 1.0
    assert found / faces >= 0.9


@pytest.mark.realdata
def test_the_feature_blend_replaces_the_features_as_the_box_blend_does(lfw):
    """Only pixels away from the features keep more of the photo; the features do not."""
    from faceanon.imageio import read_image
    from faceanon.landmarks import feature_blend_mask, hog_boxes, landmarks68

    by_identity = lfw.images_of()
    features, box_blend = DeepPrivacy(blend="features"), DeepPrivacy(blend="box")
    checked = 0
    for i, name in enumerate(sorted(by_identity)[::200][:6]):
        image = read_image(lfw.path(by_identity[name][0]))
        boxes = hog_boxes(image, upsample=1)[:1]
        if not boxes:
            continue
        a = features.anonymize(image, boxes, k=None, rng=np.random.default_rng(i))
        b = box_blend.anonymize(image, boxes, k=None, rng=np.random.default_rng(i))
        x, y, w, h = boxes[0]
        mask = feature_blend_mask(landmarks68(image, boxes[0]), boxes[0])
        core = mask >= 0.999
        assert core.mean() > 0.3
        assert np.array_equal(a[y : y + h, x : x + w][core], b[y : y + h, x : x + w][core])
        outside = np.ones(image.shape[:2], bool)
        outside[y : y + h, x : x + w] = False
        assert np.array_equal(a[outside], image[outside])
        checked += 1
    assert checked >= 5


def test_edge_ramps_are_the_feather_mask_with_a_width_per_edge():
    from faceanon.landmarks import feather_mask

    for h, w in ((80, 60), (33, 47)):
        same = dict.fromkeys(("top", "bottom", "left", "right"), 0.12)
        assert np.array_equal(edge_ramps(h, w, same), feather_mask(h, w, border=0.12))
    wide_left = edge_ramps(80, 60, {"top": 0.1, "bottom": 0.1, "left": 0.5, "right": 0.1})
    # the left ramp reaches 30 px (half of the shorter side), the others 6 px
    assert wide_left[40, 14] == pytest.approx(14.5 / 30) and wide_left[40, -15] == 1.0
    assert wide_left[2, 40] == pytest.approx(2.5 / 6) and wide_left.max() == 1.0


def test_seamed_edges_reads_a_crop_as_the_whole_image_would():
    from faceanon.utility import edge_seam

    rng = np.random.default_rng(5)
    before = rng.integers(90, 110, (160, 200, 3), dtype=np.uint8)
    after = before.copy()
    box = (50, 40, 80, 70)
    # a step along every edge but the left, where it lies beyond the lines measured
    after[40:110, 70:130] = before[40:110, 70:130] // 2
    whole = edge_seam(before, after, box)
    found = seamed_edges(before, after, box, limit=2.0)
    assert found == [e for e, v in whole.items() if v > 2.0]
    assert "left" not in found and {"top", "bottom", "right"} <= set(found)
    # on the image border an edge is never measured
    assert "top" not in seamed_edges(before, after, (50, 0, 80, 70), limit=2.0)


@pytest.mark.realdata
def test_the_seam_limit_widens_only_seamed_edges_and_never_outside_the_box(lfw):
    """On LFW faces: with the seam check, no edge the check flags is left above the limit
    by much, the rest of the box is as the plain blend made it, nothing outside changes."""
    from faceanon.imageio import read_image
    from faceanon.landmarks import hog_boxes
    from faceanon.utility import edge_seam

    by_identity = lfw.images_of()
    plain, checked = DeepPrivacy(seam_limit=None), DeepPrivacy()
    widened = 0
    for i, name in enumerate(sorted(by_identity)[::60][:30]):
        image = read_image(lfw.path(by_identity[name][0]))
        boxes = hog_boxes(image, upsample=1)[:1]
        if not boxes:
            continue
        a = plain.anonymize(image, boxes, k=None, rng=np.random.default_rng(i))
        b = checked.anonymize(image, boxes, k=None, rng=np.random.default_rng(i))
        x, y, w, h = boxes[0]
        outside = np.ones(image.shape[:2], bool)
        outside[y : y + h, x : x + w] = False
        assert np.array_equal(b[outside], image[outside])
        seams = seamed_edges(image, a, boxes[0], limit=checked.seam_limit)
        if not seams:
            assert np.array_equal(a, b)
            continue
        widened += 1
        # the middle of the box, beyond every widened ramp, is the plain blend's
        ramp = int(checked.seam_feather * min(w, h)) + 1
        inner = (slice(y + ramp, y + h - ramp), slice(x + ramp, x + w - ramp))
        assert np.array_equal(a[inner], b[inner])
        after = edge_seam(image, b, boxes[0])
        before = edge_seam(image, a, boxes[0])
        assert all(after[e] < before[e] for e in seams)
    assert widened >= 1
