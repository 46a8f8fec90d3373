"""Face tracks across video frames, so that a face the detector loses for a frame stays hidden.

A face detector run on each frame on its own misses faces now and then (motion blur, a
turned head, a hand in front); one frame with a bare face is enough to identify a person.
:class:`FaceTracker` turns per-frame detections into tracks, tracking by detection as the
IOU tracker of Bochinski, Eiselein and Sikora (2017) and SORT (Bewley et al. 2016) do, and
gives every frame the boxes to anonymize:

* **association**: the detections of a frame are matched to the tracks' predicted boxes by
  intersection over union (IoU), as a linear assignment (Hungarian method,
  :func:`scipy.optimize.linear_sum_assignment`) that maximises the summed IoU; a pair is
  kept only when its IoU is at least ``iou_threshold``. A detection left over starts a new
  track; a track left over *coasts*.
* **coasting**: a track the detector loses keeps a box for up to ``max_misses`` frames,
  moved by the track's velocity (its centre's displacement per frame, smoothed) and grown by
  ``miss_growth`` of its size per missed frame, because the face's position grows less
  certain with every frame. A track that is found again continues; one missed longer ends.
* **back-filling**: a new track is also given boxes in the ``backfill`` frames before it
  was first detected (the same box, grown as when coasting), since a face often enters the
  picture, or turns towards the camera, a few frames before the detector fires. The tracker
  therefore hands frames back ``backfill`` frames late: the caller keeps that many frames.
* **padding**: every box is grown by ``margin`` of its width and height (detector boxes are
  tight: dlib's HOG box runs from the eyebrows to the chin), and, while the face moves, by
  ``motion_margin`` frames of its motion on each side along each axis, so a box that lags
  one frame behind a moving face still covers it.

Tracks are never *confirmed* before their boxes are used (as SORT does to suppress false
alarms): a false detection only hides a patch that needed no hiding, while a delay would
leave a real face bare. Hiding more than needed is the safe failure.

With ``max_misses=0``, ``backfill=0`` and ``motion_margin=0`` the tracker hands back the
detections of each frame, grown by ``margin``, and nothing else: :meth:`FaceTracker.per_frame`
builds that, the "no tracking" baseline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]

#: The state of a tracked box in one frame.
STATES = ("detected", "coasted", "backfilled")


class TrackingError(ValueError):
    """A tracker option is out of range."""


@dataclass(frozen=True)
class TrackedBox:
    """One track's box in one frame.

    ``box`` is the region to anonymize: ``face`` padded by the tracker's margins and
    clipped to the frame. ``face`` is the face's own box: the detection in frames where the
    detector found it, the track's prediction otherwise. ``state`` is ``"detected"``,
    ``"coasted"`` (the detector lost the face; the box follows the track's motion) or
    ``"backfilled"`` (a frame before the track's first detection).
    """

    track: int
    box: Box
    face: Box
    state: str

    @property
    def detected(self) -> bool:
        return self.state == "detected"


@dataclass(frozen=True)
class TrackedFrame:
    """The boxes of one frame, by frame index (0 = the first frame pushed)."""

    index: int
    boxes: tuple[TrackedBox, ...]

    @property
    def regions(self) -> list[Box]:
        """The boxes to anonymize, in track order."""
        return [tracked.box for tracked in self.boxes]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when either has no area)."""
    return float(iou_matrix([a], [b])[0, 0])


def iou_matrix(
    boxes_a: Sequence[Sequence[float]], boxes_b: Sequence[Sequence[float]]
) -> np.ndarray:
    """IoU of every box of ``boxes_a`` (rows) with every box of ``boxes_b`` (columns).

    Boxes are ``(x, y, w, h)`` with the right and bottom edges exclusive, so two boxes
    that only touch have IoU 0. A box with no area has IoU 0 with everything.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    ax0, ay0 = a[:, 0, None], a[:, 1, None]
    ax1, ay1 = ax0 + a[:, 2, None], ay0 + a[:, 3, None]
    bx0, by0 = b[None, :, 0], b[None, :, 1]
    bx1, by1 = bx0 + b[None, :, 2], by0 + b[None, :, 3]
    inter_w = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    inter_h = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    intersection = inter_w * inter_h
    area_a = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None)
    area_b = np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(union > 0, intersection / union, 0.0)
    return result


def _clip(box: np.ndarray, shape: Sequence[int]) -> Box | None:
    """Round a float ``(x, y, w, h)`` outwards to pixels and clip it to the frame."""
    height, width = int(shape[0]), int(shape[1])
    left, top = int(np.floor(box[0])), int(np.floor(box[1]))
    right, bottom = int(np.ceil(box[0] + box[2])), int(np.ceil(box[1] + box[3]))
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        return None
    return (left, top, right - left, bottom - top)


def _grow(box: np.ndarray, *, fraction: float, extra: np.ndarray) -> np.ndarray:
    """Grow ``box`` by ``fraction`` of its size (half on each side) plus ``extra`` per side."""
    x, y, w, h = box
    dx = w * fraction / 2.0 + extra[0]
    dy = h * fraction / 2.0 + extra[1]
    return np.array([x - dx, y - dy, w + 2 * dx, h + 2 * dy])


class _Track:
    """Mutable state of one track: its face box (float), velocity and missed frames."""

    def __init__(self, ident: int, box: np.ndarray):
        self.id = ident
        self.box = box.astype(np.float64)  # current estimate: detection or prediction
        self.anchor = self.box.copy()  # the last detection
        self.velocity = np.zeros(2)  # centre displacement per frame, smoothed
        self.misses = 0

    def predicted(self) -> np.ndarray:
        """The face box expected in the next frame: moved by one frame of velocity."""
        return self.box + np.array([*self.velocity, 0.0, 0.0])


class FaceTracker:
    """Turns each frame's face detections into tracked boxes to anonymize.

    Push the detections of every frame in order with :meth:`push`; it returns the frames
    whose boxes are final (each frame is final once ``backfill`` later frames have been
    pushed). Call :meth:`finish` after the last frame for the rest. See the module's
    docstring for the rules.

    Parameters
    ----------
    shape : (height, width)
        Frame size; boxes are clipped to it.
    iou_threshold : float
        Smallest IoU between a track's predicted box and a detection that continues the
        track (0 < t <= 1).
    max_misses : int
        Frames a track keeps a box after its last detection (0: none).
    backfill : int
        Frames before a track's first detection that get its box too (0: none).
    margin : float
        Every box is grown by this fraction of its width and height (0.2: 20 % larger).
    motion_margin : float
        Every box is also grown, on each side, by this many frames of the track's motion
        along each axis.
    miss_growth : float
        A coasted or back-filled box grows by this fraction of its size per frame away
        from the nearest detection.
    velocity_smoothing : float
        Weight of the newest displacement in the track's velocity (exponential smoothing;
        1 keeps only the newest).
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        iou_threshold: float = 0.2,
        max_misses: int = 10,
        backfill: int = 5,
        margin: float = 0.2,
        motion_margin: float = 1.5,
        miss_growth: float = 0.05,
        velocity_smoothing: float = 0.5,
    ):
        if len(shape) < 2 or int(shape[0]) < 1 or int(shape[1]) < 1:
            raise TrackingError(f"shape must be (height, width) of a frame, got {shape!r}")
        if not 0 < iou_threshold <= 1:
            raise TrackingError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        for name, value in (("max_misses", max_misses), ("backfill", backfill)):
            if int(value) != value or value < 0:
                raise TrackingError(f"{name} must be a whole number >= 0, got {value}")
        for name, value in (
            ("margin", margin),
            ("motion_margin", motion_margin),
            ("miss_growth", miss_growth),
        ):
            if value < 0:
                raise TrackingError(f"{name} must be >= 0, got {value}")
        if not 0 < velocity_smoothing <= 1:
            raise TrackingError(f"velocity_smoothing must be in (0, 1], got {velocity_smoothing}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.iou_threshold = float(iou_threshold)
        self.max_misses = int(max_misses)
        self.backfill = int(backfill)
        self.margin = float(margin)
        self.motion_margin = float(motion_margin)
        self.miss_growth = float(miss_growth)
        self.velocity_smoothing = float(velocity_smoothing)
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame = 0
        # Frames not yet final: (index, list of TrackedBox), oldest first.
        self._pending: deque[tuple[int, list[TrackedBox]]] = deque()

    @classmethod
    def per_frame(cls, shape: Sequence[int], *, margin: float = 0.2) -> FaceTracker:
        """A tracker that keeps nothing between frames: each frame's detections, padded.

        The baseline "without tracking": a face the detector misses in a frame is not
        covered in that frame.
        """
        return cls(
            shape, max_misses=0, backfill=0, motion_margin=0.0, miss_growth=0.0, margin=margin
        )

    def describe(self) -> dict:
        """The options, for a run's record."""
        return {
            "iou_threshold": self.iou_threshold,
            "max_misses": self.max_misses,
            "backfill": self.backfill,
            "margin": self.margin,
            "motion_margin": self.motion_margin,
            "miss_growth": self.miss_growth,
            "velocity_smoothing": self.velocity_smoothing,
        }

    @property
    def delay(self) -> int:
        """How many frames :meth:`push` hands frames back late (``backfill``)."""
        return self.backfill

    @property
    def tracks_started(self) -> int:
        """How many tracks have been started so far."""
        return self._next_id

    def _region(self, face: np.ndarray, velocity: np.ndarray, distance: int) -> Box | None:
        """The padded, clipped box of a face ``distance`` frames from its nearest detection."""
        fraction = self.margin + self.miss_growth * distance
        extra = self.motion_margin * np.abs(velocity)
        return _clip(_grow(face, fraction=fraction, extra=extra), self.shape)

    def push(self, detections: Sequence[Sequence[int]]) -> list[TrackedFrame]:
        """Add the next frame's face detections ``(x, y, w, h)``; return frames now final."""
        index = self._frame
        self._frame += 1
        found = np.asarray([tuple(d)[:4] for d in detections], dtype=np.float64).reshape(-1, 4)
        found = found[(found[:, 2] > 0) & (found[:, 3] > 0)]
        matches, unmatched_tracks, unmatched_found = self._associate(found)

        boxes: list[TrackedBox] = []
        for track_index, found_index in matches:
            track = self._tracks[track_index]
            detection = found[found_index]
            centre = detection[:2] + detection[2:] / 2.0
            previous = track.anchor[:2] + track.anchor[2:] / 2.0
            # Displacement per frame since the last detection (misses + 1 frames ago).
            step = (centre - previous) / (track.misses + 1)
            s = self.velocity_smoothing
            track.velocity = s * step + (1.0 - s) * track.velocity
            track.box = detection.copy()
            track.anchor = detection.copy()
            track.misses = 0
            self._emit(boxes, track, "detected", distance=0)

        survivors = []
        for track_index in unmatched_tracks:
            track = self._tracks[track_index]
            track.misses += 1
            if track.misses > self.max_misses:
                continue
            track.box = track.predicted()
            if self._emit(boxes, track, "coasted", distance=track.misses):
                survivors.append(track)
        matched = [self._tracks[t] for t, _ in matches]

        born = []
        for found_index in unmatched_found:
            track = _Track(self._next_id, found[found_index])
            self._next_id += 1
            self._emit(boxes, track, "detected", distance=0)
            born.append(track)

        self._tracks = sorted(matched + survivors + born, key=lambda t: t.id)
        for track in born:
            self._backfill(track)
        boxes.sort(key=lambda b: b.track)
        self._pending.append((index, boxes))
        ready = []
        while len(self._pending) > self.backfill:
            ready.append(self._finalise(self._pending.popleft()))
        return ready

    def finish(self) -> list[TrackedFrame]:
        """Every frame still held back; call once after the last :meth:`push`."""
        ready = [self._finalise(item) for item in self._pending]
        self._pending.clear()
        return ready

    def _emit(self, boxes: list, track: _Track, state: str, *, distance: int) -> bool:
        region = self._region(track.box, track.velocity, distance)
        face = _clip(track.box, self.shape)
        if region is None or face is None:
            return False  # the face left the frame
        boxes.append(TrackedBox(track.id, region, face, state))
        return True

    def _backfill(self, track: _Track) -> None:
        # Called before the current frame joins the pending ones: they are all earlier
        # frames, oldest first, and at most ``backfill`` of them.
        earlier = list(self._pending)[-self.backfill :] if self.backfill else []
        for distance, (_, boxes) in enumerate(reversed(earlier), start=1):
            region = self._region(track.box, track.velocity, distance)
            face = _clip(track.box, self.shape)
            if region is not None and face is not None:
                boxes.append(TrackedBox(track.id, region, face, "backfilled"))
                boxes.sort(key=lambda b: b.track)

    def _associate(self, found: np.ndarray):
        """Match tracks to detections by IoU; returns matches and the unmatched of each."""
        if not self._tracks or len(found) == 0:
            return [], list(range(len(self._tracks))), list(range(len(found)))
        from scipy.optimize import linear_sum_assignment

        predicted = np.array([track.predicted() for track in self._tracks])
        overlap = iou_matrix(predicted, found)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        matches = [
            (int(r), int(c))
            for r, c in zip(rows, cols, strict=True)
            if overlap[r, c] >= self.iou_threshold
        ]
        matched_rows = {r for r, _ in matches}
        matched_cols = {c for _, c in matches}
        unmatched_tracks = [i for i in range(len(self._tracks)) if i not in matched_rows]
        unmatched_found = [j for j in range(len(found)) if j not in matched_cols]
        return matches, unmatched_tracks, unmatched_found

    @staticmethod
    def _finalise(item: tuple[int, list[TrackedBox]]) -> TrackedFrame:
        index, boxes = item
        return TrackedFrame(index, tuple(boxes))


def track_detections(
    detections: Sequence[Sequence[Sequence[int]]], shape: Sequence[int], **options
) -> list[TrackedFrame]:
    """Track a whole list of per-frame detections at once (see :class:`FaceTracker`)."""
    tracker = FaceTracker(shape, **options)
    frames: list[TrackedFrame] = []
    for found in detections:
        frames.extend(tracker.push(found))
    frames.extend(tracker.finish())
    return frames
