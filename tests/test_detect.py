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
    both_eyes,
    clip_box,
    eye_band,
    find_regions,
    get_detector,
    grow_box,
    to_grey,
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


# ---------------------------------------------------------------------------------------
# The eye band fails closed


class FixedEyes:
    """An eye detector stand-in that reports the given boxes in every face."""

    def __init__(self, *boxes):
        self.boxes = boxes

    def detect_in_face(self, grey, face):
        return [Detection(*box) for box in self.boxes]


def covers(band, box) -> bool:
    return inside(box, band)


FACE = (50, 50, 100, 100)          # centre x = 100
LEFT_EYE, RIGHT_EYE = (62, 78, 20, 14), (118, 78, 20, 14)
LEFT_BROW = (62, 64, 20, 10)


def test_both_eyes_needs_one_on_each_side():
    assert both_eyes([Detection(*LEFT_EYE), Detection(*RIGHT_EYE)], FACE)
    assert both_eyes([Detection(*RIGHT_EYE), Detection(*LEFT_EYE)], FACE)
    assert not both_eyes([Detection(*LEFT_EYE), Detection(*LEFT_BROW)], FACE)
    assert not both_eyes([Detection(*LEFT_EYE)], FACE)
    assert not both_eyes([Detection(90, 78, 20, 14), Detection(*RIGHT_EYE)], FACE)  # on centre


def test_eye_band_fits_two_eyes_on_either_side():
    image = np.zeros((200, 200, 3), np.uint8)
    band, found = eye_band(image, FACE, eye_detectors=[FixedEyes(LEFT_EYE, RIGHT_EYE)])
    assert found
    assert covers(band, LEFT_EYE) and covers(band, RIGHT_EYE)
    assert band == (57, 73, 86, 24)             # the eyes, padded by 0.25 x 20 px


@pytest.mark.parametrize("hits", [(LEFT_EYE, LEFT_BROW), (LEFT_EYE,), (LEFT_BROW,), ()],
                         ids=["eye and its eyebrow", "one eye", "one eyebrow", "nothing"])
def test_eye_band_without_both_eyes_covers_the_face_width(hits):
    """An eye and its eyebrow are two hits but not two eyes: the other eye must not be
    left bare. Every case without two eyes gets the full-width band."""
    image = np.zeros((200, 200, 3), np.uint8)
    band, found = eye_band(image, FACE, eye_detectors=[FixedEyes(*hits)])
    assert found == bool(hits)
    assert band[0] == FACE[0] and band[2] == FACE[2]
    assert covers(band, LEFT_EYE) and covers(band, RIGHT_EYE)
    for hit in hits:                            # and stretches over whatever was hit
        assert covers(band, hit)
    assert inside(band, FACE)


def test_a_later_detector_with_both_eyes_wins():
    image = np.zeros((200, 200, 3), np.uint8)
    band, found = eye_band(image, FACE, eye_detectors=[FixedEyes(LEFT_EYE, LEFT_BROW),
                                                       FixedEyes(LEFT_EYE, RIGHT_EYE)])
    assert found and band == (57, 73, 86, 24)


@pytest.fixture(scope="module")
def lfw_eyes(lfw):
    """Faces HOG finds in the first image of every fifth LFW person (about 300), each
    with the positions of its eyes' 68-point landmarks (36-47)."""
    from faceanon.landmarks import LandmarkError, landmarks68

    detector = get_detector("hog")
    found = []
    for samples in list(lfw.images_of().values())[::5]:
        image = read_image(lfw.path(samples[0]))
        for face in detector.detect(image):
            try:
                points = landmarks68(image, face.box)
            except LandmarkError:
                continue
            found.append((samples[0].key, image, face.box, points[36:48]))
    return found


def _band_covers_eyes(band, points) -> bool:
    x, y, w, h = band
    return bool(((points[:, 0] >= x) & (points[:, 0] <= x + w - 1)
                 & (points[:, 1] >= y) & (points[:, 1] <= y + h - 1)).all())


@pytest.mark.realdata
@pytest.mark.slow
def test_eye_band_covers_both_eyes_of_real_faces(lfw_eyes):
    assert len(lfw_eyes) >= 250
    bare = [key for key, image, face, points in lfw_eyes
            if not _band_covers_eyes(eye_band(image, face)[0], points)]
    assert len(bare) <= 0.01 * len(lfw_eyes), bare


class EyeAndItsEyebrow:
    """The plain eye cascade, but reporting its hit left of the face's centre together
    with a false hit on the eyebrow just above it: the failure the geometry check stops."""

    def __init__(self):
        self.cascade = get_detector("haar-eyes")

    def detect_in_face(self, grey, face):
        centre = face[0] + face[2] / 2
        left = [e for e in self.cascade.detect_in_face(grey, face) if e.x + e.w / 2 < centre]
        if not left:
            return []
        eye = left[0]
        brow = Detection(eye.x, max(face[1], eye.y - eye.h // 2), eye.w, eye.h // 2)
        return [eye, brow]


@pytest.mark.realdata
@pytest.mark.slow
def test_eye_and_eyebrow_never_leave_the_other_eye_bare(lfw_eyes):
    detector = EyeAndItsEyebrow()
    faked = bare = 0
    for _, image, face, points in lfw_eyes:
        band, found = eye_band(image, face, eye_detectors=[detector])
        faked += len(detector.detect_in_face(to_grey(image), face)) == 2
        bare += not _band_covers_eyes(band, points)
    assert faked >= 0.5 * len(lfw_eyes)          # the fault was injected in most faces
    assert bare <= 0.01 * len(lfw_eyes)
