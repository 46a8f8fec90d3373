"""Utility measures: hand-checkable cases, scikit-image as the reference, and real faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import faceanon.utility as utility
from faceanon.utility import (
    UtilityError,
    box_iou,
    changed_outside,
    edge_seam,
    luma,
    match_faces,
    measure,
    normalized_mean_error,
    psnr,
    reference,
    region_mask,
    ssim_map,
)


def _noise(seed: int, shape=(90, 120, 3)) -> np.ndarray:
    """Smooth random texture: what a photograph's background looks like to SSIM."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (shape[0] // 6, shape[1] // 6, 3), dtype=np.uint8)
    image = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-8, 9, shape)
    return np.clip(image.astype(int) + grain, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Pieces checkable by hand.


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0


def test_faces_match_the_most_overlapping_detection_once():
    faces = [(0, 0, 10, 10), (100, 100, 10, 10), (50, 50, 10, 10)]
    detections = [(101, 100, 10, 10), (1, 0, 10, 10), (0, 1, 10, 10), (54, 50, 10, 10)]
    # (1, 0) and (0, 1) tie at 90/110: the earlier detection wins. Face 3 overlaps its
    # detection by 60/140 = 0.43 >= 0.3.
    assert match_faces(faces, detections) == [(1, 0, 10, 10), (101, 100, 10, 10), (54, 50, 10, 10)]
    assert match_faces(faces, detections, min_iou=0.5)[2] is None
    # One detection never serves two faces.
    assert match_faces([(0, 0, 10, 10), (0, 0, 10, 10)], [(0, 0, 10, 10)])[1] is None


def _landmarks() -> np.ndarray:
    points = np.random.default_rng(0).uniform(0, 100, (68, 2))
    points[36], points[45] = (20.0, 40.0), (60.0, 40.0)  # outer eye corners 40 px apart
    return points


def test_nme_is_the_mean_distance_over_the_outer_eye_corner_distance():
    points = _landmarks()
    assert normalized_mean_error(points, points) == 0.0
    # Every point moved by (6, 8): 10 px = a quarter of the inter-ocular distance.
    assert normalized_mean_error(points, points + (6.0, 8.0)) == pytest.approx(0.25)
    # Half of the points moved by 40 px, half not: mean 20 px = 0.5.
    moved = points.copy()
    moved[::2, 0] += 40.0
    assert normalized_mean_error(points, moved) == pytest.approx(0.5)


def test_nme_refuses_bad_landmarks():
    with pytest.raises(UtilityError, match=r"\(68, 2\)"):
        normalized_mean_error(np.zeros((5, 2)), np.zeros((5, 2)))
    flat = np.zeros((68, 2))
    with pytest.raises(UtilityError, match="coinciding outer eye corners"):
        normalized_mean_error(flat, flat)


def test_psnr_by_hand_and_against_scikit_image():
    a = np.full((20, 30, 3), 100, np.uint8)
    assert psnr(a, a + 10) == pytest.approx(20 * math.log10(255 / 10))
    assert psnr(a, a) == math.inf
    b, c = _noise(1), _noise(2)
    assert psnr(b, c) == pytest.approx(peak_signal_noise_ratio(b, c, data_range=255), abs=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    a = np.full((20, 30, 3), 100, np.uint8)
    # No variance: contrast-structure is C2 / C2 = 1; luminance (2 mu_a mu_b + C1) /
    # (mu_a^2 + mu_b^2 + C1) with C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    whole, full = ssim_map(a, a + 10)
    assert whole == pytest.approx(expected, abs=1e-12)
    assert np.allclose(full, expected)
    assert ssim_map(a, a)[0] == 1.0


@pytest.mark.parametrize(
    "boxes",
    [
        [(40, 30, 35, 30)],  # inside
        [(0, 0, 30, 25)],  # in the corner: SSIM reflects at the image border
        [(100, 60, 20, 30)],  # bottom right corner
        [(10, 10, 20, 20), (80, 50, 30, 30)],  # two regions
        [(5, 5, 4, 4)],  # smaller than the window
    ],
)
def test_ssim_over_the_regions_neighbourhood_equals_the_whole_computation(boxes):
    original = _noise(3)
    anonymized = original.copy()
    for x, y, w, h in boxes:
        anonymized[y : y + h, x : x + w] = _noise(4)[y : y + h, x : x + w]
    expected, expected_map = structural_similarity(
        luma(original), luma(anonymized), data_range=255, full=True
    )
    whole, full = ssim_map(original, anonymized, regions=boxes)
    assert whole == pytest.approx(expected, abs=1e-12)
    assert np.allclose(full, expected_map, atol=1e-12)


def test_changed_outside_counts_pixels_not_channels():
    original = _noise(5)
    anonymized = original.copy()
    anonymized[10:20, 10:20] = 0
    assert changed_outside(original, anonymized, [(10, 10, 10, 10)]) == 0
    anonymized[50, 60, 1] ^= 1
    anonymized[51, 60] ^= 1
    assert changed_outside(original, anonymized, [(10, 10, 10, 10)]) == 2
    assert region_mask((4, 5), [(3, 1, 10, 2)]).sum() == 4


def test_images_of_different_shapes_are_refused():
    with pytest.raises(UtilityError, match=r"\(90, 120, 3\).*\(90, 121, 3\)"):
        changed_outside(_noise(0), _noise(0, (90, 121, 3)), [])


# ----------------------------------------------------------------------------------------
# The seam along a box edge.


def test_a_pasted_step_is_a_seam_and_an_unchanged_box_is_none():
    original = _noise(6, (160, 160, 3))
    box = (40, 50, 80, 70)
    assert edge_seam(original, original.copy(), box) == {
        "top": 1.0,
        "bottom": 1.0,
        "left": 1.0,
        "right": 1.0,
    }
    pasted = original.copy()
    x, y, w, h = box
    pasted[y : y + h, x : x + w] = np.clip(original[y : y + h, x : x + w].astype(int) + 60, 0, 255)
    seams = edge_seam(original, pasted, box)
    assert min(seams.values()) > 2  # what a visible seam measured on LFW faces


def test_the_seam_leaves_out_edges_on_the_image_border():
    original = _noise(7, (100, 100, 3))
    assert set(edge_seam(original, original, (0, 20, 50, 50))) == {"top", "bottom", "right"}


# ----------------------------------------------------------------------------------------
# Whole images: hand-made and real faces.


def test_measure_uses_the_detections_it_is_given(monkeypatch):
    def no_detector(*args, **kwargs):
        raise AssertionError("measure ran a detector although detections were given")

    monkeypatch.setattr(utility, "_hog_boxes", no_detector)
    original = _noise(8)
    ref = reference(original, faces=[(30, 20, 40, 40)])
    anonymized = original.copy()
    anonymized[20:60, 30:70] = 128
    result = measure(ref, anonymized, [(30, 20, 40, 40)], detections=[(32, 22, 40, 40)])
    assert result.retention == 1.0 and result.faces[0].detection == (32, 22, 40, 40)
    assert result.outside_unchanged
    assert result.region_psnr == pytest.approx(
        psnr(original[20:60, 30:70], anonymized[20:60, 30:70])
    )
    assert result.psnr == pytest.approx(psnr(original, anonymized), abs=1e-9)
    missed = measure(ref, anonymized, [(30, 20, 40, 40)], detections=[])
    assert missed.retention == 0.0 and not missed.faces[0].landmarks_placed
    assert math.isnan(missed.nme)


def test_a_change_outside_the_regions_is_reported():
    original = _noise(9)
    ref = reference(original, faces=[])
    anonymized = original.copy()
    anonymized[0:5, 0:5] = 0
    result = measure(ref, anonymized, [(50, 50, 10, 10)], detections=[])
    assert result.changed_outside == 25 and not result.outside_unchanged
    assert result.ssim == pytest.approx(
        structural_similarity(luma(original), luma(anonymized), data_range=255), abs=1e-12
    )
    assert math.isnan(result.retention)


@pytest.fixture(scope="module")
def lfw_faces(lfw):
    from faceanon.imageio import read_image
    from faceanon.landmarks import hog_boxes

    by_identity = lfw.images_of()
    faces = []
    for name in sorted(by_identity)[::150][:8]:
        image = read_image(lfw.path(by_identity[name][0]))
        boxes = hog_boxes(image, upsample=1)[:1]
        if boxes:
            faces.append((image, boxes))
    assert len(faces) >= 6
    return faces


@pytest.mark.realdata
def test_an_unchanged_image_keeps_everything(lfw_faces):
    for image, boxes in lfw_faces:
        ref = reference(image, faces=boxes)
        result = measure(ref, image.copy(), boxes)
        assert result.retention == 1.0 and result.landmarks_placed == 1.0
        assert result.nme == 0.0
        assert result.ssim == 1.0 and result.region_ssim == 1.0
        assert result.psnr == math.inf and result.region_psnr == math.inf


@pytest.mark.realdata
def test_measures_order_methods_as_their_strength_does(lfw_faces):
    from faceanon.methods import get_method

    blur, blackout = get_method("blur"), get_method("blackout")
    results = {"blur-5": [], "blur-45": [], "blackout": []}
    for i, (image, boxes) in enumerate(lfw_faces):
        ref = reference(image, faces=boxes)
        for key, method, k in (
            ("blur-5", blur, 5),
            ("blur-45", blur, 45),
            ("blackout", blackout, None),
        ):
            out = method.anonymize(image, boxes, k=k, rng=np.random.default_rng(i))
            results[key].append(measure(ref, out, boxes))

    def mean(key, attribute):
        return float(np.nanmean([getattr(r, attribute) for r in results[key]]))

    assert all(r.outside_unchanged for rs in results.values() for r in rs)
    # A mild blur keeps the face findable, its landmarks close and the picture similar.
    assert mean("blur-5", "retention") >= 0.8
    assert mean("blur-5", "nme") < 0.1
    # Blackout leaves no face, and less of the picture than any blur.
    assert mean("blackout", "retention") == 0.0
    for attribute in ("ssim", "region_ssim", "psnr", "region_psnr"):
        assert mean("blur-5", attribute) > mean("blur-45", attribute) > mean("blackout", attribute)
    assert mean("blur-45", "region_ssim") < mean("blur-45", "ssim") < 1.0


# ----------------------------------------------------------------------------------------
# The benchmark's record.


class _Face:
    def __init__(self, faces_found, box):
        self.faces_found, self.box = faces_found, box


class _Backend:
    def __init__(self, detector="hog", upsample=1):
        self.detector, self.upsample = detector, upsample


def test_the_recognizer_detection_is_reused_only_when_it_is_complete_and_the_same_hog():
    one = _Face(1, (10, 60, 50, 20))  # top, right, bottom, left
    assert utility.recognizer_detections(one, _Backend()) == [(20, 10, 40, 40)]
    assert utility.recognizer_detections(_Face(0, None), _Backend()) == []
    # the largest of several faces is not the list of them; a cached image was not detected
    assert utility.recognizer_detections(_Face(2, (10, 60, 50, 20)), _Backend()) is None
    assert utility.recognizer_detections(None, _Backend()) is None
    # another detector or up-sampling is not measure()'s HOG
    assert utility.recognizer_detections(one, _Backend(detector="cnn")) is None
    assert utility.recognizer_detections(one, _Backend(upsample=2)) is None


def test_image_record_counts_faces_and_needs_its_original(monkeypatch):
    original = _noise(4)
    anonymized = original.copy()
    anonymized[20:50, 30:70] = 0
    points = _landmarks() * 0.3 + 20
    calls = []

    def fake_landmarks(image, box):
        calls.append(box)
        moved = box == (80, 50, 30, 30) and not np.shares_memory(image, original)
        return points + 3.0 if moved else points

    monkeypatch.setattr(utility, "_landmarks_or_none", fake_landmarks)
    ref = utility.detached(reference(original, faces=[(30, 20, 40, 30), (80, 50, 30, 30)]))
    assert ref.image is None
    with pytest.raises(UtilityError, match="detached"):
        utility.image_record(ref, anonymized, [(30, 20, 40, 30)], detections=[])
    record = utility.image_record(ref, anonymized, [(30, 20, 40, 30)], original=original,
                                  detections=[(31, 20, 40, 30), (80, 50, 30, 30)])
    assert set(record) == set(utility.RECORD_COLUMNS)
    assert (record["faces"], record["retained_hog"], record["landmarks_placed"]) == (2, 2, 2)
    # face 1: its own points again (0); face 2: moved by (3, 3) -> 4.243 / 12 px
    assert len(calls) == 4 and record["nme_faces"] == 2
    assert record["nme"] == pytest.approx((0 + math.hypot(3, 3) / 12.0) / 2)
    assert record["changed_outside"] == 0 and record["seconds"] > 0
    assert record["psnr_face"] < 20 and record["psnr"] > record["psnr_face"]
    # no face found in the original: nothing to retain, NME undefined
    empty = utility.reference_for_regions(original, [(0, 0, 120, 90)], found=False,
                                          regions_are_faces=True)
    record = utility.image_record(empty, anonymized, [(0, 0, 120, 90)], detections=[])
    assert (record["faces"], record["nme"], record["nme_faces"]) == (0, None, 0)
