"""Face tracks: IoU, association, coasting over missed frames, back-filling, padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceanon.tracking import (
    FaceTracker,
    TrackingError,
    iou,
    iou_matrix,
    track_detections,
)
from faceanon.video_bench import coverage

SHAPE = (240, 320)

boxes = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 40), st.integers(0, 40))


def pixel_iou(a, b) -> float:
    """IoU by counting pixels of rasterised boxes: an independent reference."""
    canvas_a = np.zeros((128, 128), bool)
    canvas_b = np.zeros((128, 128), bool)
    canvas_a[a[1] : a[1] + a[3], a[0] : a[0] + a[2]] = True
    canvas_b[b[1] : b[1] + b[3], b[0] : b[0] + b[2]] = True
    union = (canvas_a | canvas_b).sum()
    return float((canvas_a & canvas_b).sum() / union) if union else 0.0


@given(boxes, boxes)
@settings(max_examples=200, deadline=None)
def test_iou_matches_counting_pixels(a, b):
    assert iou(a, b) == pytest.approx(pixel_iou(a, b), abs=1e-12)
    assert iou(a, b) == pytest.approx(iou(b, a))


def test_iou_known_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges share no pixel
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0
    assert iou_matrix([], [(0, 0, 1, 1)]).shape == (0, 1)


def moving_face(frames: int, *, start=(40, 60), step=(0, 0), size=50):
    """The true box of one face in each frame, moving ``step`` pixels per frame."""
    return [(start[0] + step[0] * t, start[1] + step[1] * t, size, size) for t in range(frames)]


def test_one_frame_miss_is_covered_by_the_same_track():
    truth = moving_face(10, step=(4, 0))
    detections = [[box] if t != 5 else [] for t, box in enumerate(truth)]
    frames = track_detections(detections, SHAPE)
    assert [f.index for f in frames] == list(range(10))
    missed = frames[5].boxes
    assert len(missed) == 1 and missed[0].state == "coasted"
    assert coverage(truth[5], frames[5].regions) == 1.0
    assert {b.track for f in frames for b in f.boxes} == {0}


def test_without_tracking_a_missed_frame_is_bare():
    truth = moving_face(10, step=(4, 0))
    detections = [[box] if t != 5 else [] for t, box in enumerate(truth)]
    tracker = FaceTracker.per_frame(SHAPE, margin=0.2)
    frames = [f for d in detections for f in tracker.push(d)] + tracker.finish()
    assert frames[5].boxes == ()
    assert coverage(truth[4], frames[4].regions) == 1.0


def test_coasted_box_follows_the_motion():
    truth = moving_face(12, step=(6, 0))
    detections = [[box] if t < 8 else [] for t, box in enumerate(truth)]
    frames = track_detections(
        detections, SHAPE, margin=0.0, miss_growth=0.0, motion_margin=0.0, backfill=0
    )
    # Three frames after the last detection the face has moved 18 px; the box moved too.
    coasted = frames[10].boxes[0]
    assert coasted.state == "coasted"
    assert abs(coasted.face[0] - truth[10][0]) <= 2
    assert coverage(truth[10], frames[10].regions) > 0.9


def test_track_ends_after_max_misses():
    truth = moving_face(12)
    detections = [[box] if t < 3 else [] for t, box in enumerate(truth)]
    frames = track_detections(detections, SHAPE, max_misses=4, backfill=0)
    kept = [len(f.boxes) for f in frames]
    assert kept == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_new_track_is_backfilled_into_earlier_frames():
    truth = moving_face(10)
    detections = [[box] if t >= 4 else [] for t, box in enumerate(truth)]
    frames = track_detections(detections, SHAPE, backfill=3)
    states = [[b.state for b in f.boxes] for f in frames]
    assert states[:4] == [[], ["backfilled"], ["backfilled"], ["backfilled"]]
    assert all(s == ["detected"] for s in states[4:])
    assert coverage(truth[1], frames[1].regions) == 1.0


def test_frames_come_back_late_by_the_backfill_delay():
    tracker = FaceTracker(SHAPE, backfill=3)
    handed = [len(tracker.push([])) for _ in range(5)]
    assert handed == [0, 0, 0, 1, 1]
    assert [f.index for f in tracker.finish()] == [2, 3, 4]


def test_boxes_are_padded_by_margin_and_motion():
    still = track_detections([[(100, 100, 40, 40)]] * 3, SHAPE, margin=0.5, backfill=0)
    assert still[2].boxes[0].box == (90, 90, 60, 60)  # 25 % on each side
    moving = track_detections(
        [[(100 + 8 * t, 100, 40, 40)] for t in range(6)],
        SHAPE,
        margin=0.0,
        motion_margin=1.0,
        velocity_smoothing=1.0,
        backfill=0,
    )
    x, y, w, h = moving[5].boxes[0].box
    assert (w, h) == (40 + 2 * 8, 40)  # 8 px of motion on each side along x only
    assert moving[5].boxes[0].face == (140, 100, 40, 40)


def test_two_faces_keep_their_own_tracks():
    left = moving_face(8, start=(10, 50), step=(2, 0))
    right = moving_face(8, start=(200, 50), step=(-2, 0))
    detections = [
        [a, b] if t % 3 else [b, a] for t, (a, b) in enumerate(zip(left, right, strict=True))
    ]
    frames = track_detections(detections, SHAPE)
    first = {b.face[0]: b.track for b in frames[0].boxes}
    left_track, right_track = first[10], first[200]
    for frame in frames:
        by_track = {b.track: b.face for b in frame.boxes}
        assert set(by_track) == {left_track, right_track}
        assert by_track[left_track][0] < by_track[right_track][0]


def test_a_far_jump_starts_a_new_track_and_keeps_the_old_one_coasting():
    detections = [[(10, 10, 40, 40)]] * 3 + [[(250, 150, 40, 40)]]
    frames = track_detections(detections, SHAPE, backfill=0)
    last = frames[3].boxes
    assert sorted((b.track, b.state) for b in last) == [(0, "coasted"), (1, "detected")]


def test_box_leaving_the_frame_ends_the_track():
    detections = [[(280 + 12 * t, 100, 40, 40)] for t in range(3)] + [[]] * 8
    frames = track_detections(
        detections,
        SHAPE,
        backfill=0,
        max_misses=20,
        margin=0.0,
        motion_margin=0.0,
        velocity_smoothing=1.0,
    )
    assert all(b.box[0] + b.box[2] <= SHAPE[1] for f in frames for b in f.boxes)
    assert frames[-1].boxes == ()


@given(st.lists(st.lists(boxes, max_size=3), max_size=25), st.integers(0, 4))
@settings(max_examples=100, deadline=None)
def test_every_frame_is_handed_back_once_in_order_and_detections_are_covered(frames, backfill):
    tracked = track_detections(frames, SHAPE, backfill=backfill)
    assert [f.index for f in tracked] == list(range(len(frames)))
    for found, frame in zip(frames, tracked, strict=True):
        for box in found:
            if box[2] > 0 and box[3] > 0:
                assert coverage(box, frame.regions) == 1.0, "a detected face left bare"
        for tracked_box in frame.boxes:
            x, y, w, h = tracked_box.box
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= SHAPE[1] and y + h <= SHAPE[0]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"iou_threshold": 0}, "iou_threshold"),
        ({"max_misses": -1}, "max_misses"),
        ({"backfill": 1.5}, "backfill"),
        ({"margin": -0.1}, "margin"),
        ({"velocity_smoothing": 0}, "velocity_smoothing"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(TrackingError, match=message):
        FaceTracker(SHAPE, **options)


def test_bad_shape_is_refused():
    with pytest.raises(TrackingError, match="shape"):
        FaceTracker((0, 10))
