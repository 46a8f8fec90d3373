"""Detectors and find_regions, on synthetic inputs and on real LFW faces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceanon.detect import (
    DETECTORS,
    Detection,
    DetectorError,
    clip_box,
    eye_band,
    find_regions,
    get_detector,
    grow_box,
)
from faceanon.imageio import read_image


def inside(box, outer) -> bool:
    x, y, w, h = box
    ox, oy, ow, oh = outer
    return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union


# ---------------------------------------------------------------------------------------
# Without real faces


def test_names_and_errors():
    assert DETECTORS == ("hog", "cnn", "haar-face", "haar-eyes", "haar-glasses")
    for name in DETECTORS:
        assert get_detector(name).name == name
    with pytest.raises(DetectorError, match="hog"):
        get_detector("nope")
    with pytest.raises(DetectorError, match="hog"):
        get_detector("hog", no_such_option=1)
    with pytest.raises(DetectorError):
        get_detector("haar-eyes", face_detector="haar-eyes")


def test_detection_box():
    detection = Detection(1, 2, 3, 4, score=0.5)
    assert detection.box == (1, 2, 3, 4)
    assert Detection(1, 2, 3, 4).score is None


@settings(max_examples=200, deadline=None)
@given(
    box=st.tuples(*[st.integers(-50, 50)] * 4),
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    margin=st.floats(0, 2),
)
def test_clip_and_grow_stay_inside_the_image(box, shape, margin):
    for result in (clip_box(box, shape), grow_box(box, margin, shape)):
        if result is not None:
            x, y, w, h = result
            assert w > 0 and h > 0
            assert inside(result, (0, 0, shape[1], shape[0]))
    clipped = clip_box(box, shape)
    grown = grow_box(box, margin, shape)
    if clipped is not None:
        assert grown is not None and inside(clipped, grown)


def test_grow_box_by_a_fraction():
    assert grow_box((40, 40, 20, 10), 0.5, (100, 100)) == (35, 38, 30, 14)
    assert grow_box((0, 0, 20, 20), 1.0, (100, 100)) == (0, 0, 30, 30)
    with pytest.raises(DetectorError):
        grow_box((0, 0, 1, 1), -0.1, (10, 10))


@pytest.mark.parametrize("name", ["hog", "haar-face", "haar-eyes", "haar-glasses"])
def test_no_face_in_a_flat_or_tiny_image(name):
    detector = get_detector(name)
    for image in (np.full((120, 120, 3), 128, np.uint8), np.zeros((1, 1, 3), np.uint8)):
        assert detector.detect(image) == []


def test_find_regions_options_are_checked():
    image = np.full((50, 50, 3), 128, np.uint8)
    assert find_regions(image) == []
    assert find_regions(image, region="eyes") == []
    with pytest.raises(DetectorError, match="region"):
        find_regions(image, region="mouth")
    with pytest.raises(DetectorError, match="eyes"):
        find_regions(image, detector="haar-eyes", region="face")


def test_eye_band_outside_the_image_is_none():
    assert eye_band(np.zeros((10, 10, 3), np.uint8), (20, 20, 5, 5)) is None


# ---------------------------------------------------------------------------------------
# Real faces


@pytest.fixture(scope="module")
def faces(lfw):
    """Five LFW images of different people (the first image of the first five)."""
    people = list(lfw.images_of().values())[:5]
    return [read_image(lfw.path(samples[0])) for samples in people]


@pytest.fixture(scope="module")
def hog_boxes(faces):
    detector = get_detector("hog")
    return [[d.box for d in detector.detect(image)] for image in faces]


@pytest.mark.realdata
def test_hog_finds_the_centred_face(faces, hog_boxes):
    # LFW crops are centred on the face found by a Viola-Jones detector.
    single = [boxes for boxes in hog_boxes if len(boxes) == 1]
    assert len(single) >= 4
    for (box,) in single:
        x, y, w, h = box
        assert abs(x + w / 2 - 125) < 25 and abs(y + h / 2 - 125) < 30
        assert 60 < w < 160


@pytest.mark.realdata
def test_hog_matches_face_recognition_exactly(faces, hog_boxes, monkeypatch):
    from PIL import ImageFile

    # Importing face_recognition sets the process-wide ImageFile.LOAD_TRUNCATED_IMAGES =
    # True, after which Pillow silently accepts truncated files; put it back afterwards so
    # the bad-input tests keep seeing truncated images as errors.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", ImageFile.LOAD_TRUNCATED_IMAGES)
    face_recognition = pytest.importorskip("face_recognition")
    for image, boxes in zip(faces, hog_boxes, strict=True):
        theirs = face_recognition.face_locations(image)
        assert boxes == [
            (left, top, right - left, bottom - top) for top, right, bottom, left in theirs
        ]


@pytest.mark.realdata
def test_hog_scores_and_grey_input(faces):
    detector = get_detector("hog")
    detections = detector.detect(faces[0])
    assert detections and all(isinstance(d.score, float) for d in detections)
    grey = faces[0].mean(axis=2).astype(np.uint8)
    assert len(detector.detect(grey)) == len(detections)


@pytest.mark.realdata
def test_haar_face_agrees_with_hog(faces, hog_boxes):
    detector = get_detector("haar-face")
    agree = 0
    for image, boxes in zip(faces, hog_boxes, strict=True):
        found = detector.detect(image)
        assert all(d.score is not None and d.score >= detector.min_neighbors for d in found)
        agree += any(iou(d.box, b) > 0.3 for d in found for b in boxes)
    assert agree >= 4


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["haar-eyes", "haar-glasses"])
def test_eyes_are_found_inside_faces(faces, hog_boxes, name):
    detector = get_detector(name)
    with_eyes = 0
    for image, boxes in zip(faces, hog_boxes, strict=True):
        eyes = detector.detect(image, faces=boxes)
        assert len(eyes) <= 2 * len(boxes)
        for eye in eyes:
            assert any(inside(eye.box, face) for face in boxes)
            face = next(f for f in boxes if inside(eye.box, f))
            assert eye.y + eye.h / 2 < face[1] + 0.6 * face[3], "eyes sit in the upper face"
        with_eyes += bool(eyes)
        # Without faces given, the detector finds them itself: same eyes.
        assert [e.box for e in detector.detect(image)] == [e.box for e in eyes]
    assert with_eyes >= 4


@pytest.mark.realdata
def test_find_regions_faces_eyes_and_margin(faces, hog_boxes):
    for image, boxes in zip(faces, hog_boxes, strict=True):
        assert find_regions(image) == boxes
        bands = find_regions(image, region="eyes")
        assert len(bands) == len(boxes)
        for band, face in zip(bands, boxes, strict=True):
            assert inside(band, face)
            assert band[3] < face[3] * 0.6, "a band, not the whole face"
        grown = find_regions(image, margin=0.2)
        for big, face in zip(grown, boxes, strict=True):
            assert inside(face, big)
            assert big[2] > face[2] or big[0] == 0 or big[0] + big[2] == image.shape[1]
        # An eye cascade as the detector implies eye bands from that cascade alone.
        assert len(find_regions(image, detector="haar-glasses", region="eyes")) == len(boxes)


@pytest.mark.realdata
@pytest.mark.slow
def test_cnn_agrees_with_hog_on_one_image(faces, hog_boxes):
    # The CNN takes about a second per image on a CPU: one image only.
    found = get_detector("cnn").detect(faces[0])
    assert len(found) == 1
    assert isinstance(found[0].score, float)
    assert iou(found[0].box, hog_boxes[0][0]) > 0.4
