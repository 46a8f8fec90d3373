"""Measure what an attacker recognises in every frame of a clip, and which faces were left bare.

A video is only as private as its worst frame. :func:`measure_clip` runs an attacker over
every frame of a clip (the original or an anonymized one) and returns one
:class:`FrameRow` per frame: how many faces the attacker found, which of the gallery's
people it identified, the distance of each person's best match, and, when the anonymized
boxes are given, whether every face of the *original* frame found by a reference detector
(:func:`reference_faces`) lies inside the anonymized boxes. :func:`summarize` turns the rows
into the metrics of a case.

The attacker
    Any callable ``attacker(image) -> [(box, embedding), ...]`` that finds and encodes every
    face of an RGB image; the gallery photos are encoded with the same callable (their
    largest face). The default, :class:`DlibAttacker`, is ``face_recognition``'s own
    pipeline: dlib HOG detection (up-sampled once), the 5-point landmarks and the 128-d
    ResNet descriptor, compared by Euclidean distance.

Identification (polarity and ties)
    Distances are Euclidean: *lower* means more alike. Each face the attacker finds is given
    to the nearest gallery person (on an exactly equal distance, the person listed first in
    the gallery) and counts as identifying that person when the distance is at or below the
    threshold (``<=``, as ``face_recognition.compare_faces``; default 0.6, its tolerance). A
    person is identified in a frame when any face of the frame identifies them.

The reference detector
    "Detector missed" is judged against a reference detector on the original frames, a
    stronger one than the HOG detector that anonymizes by default, never against the
    anonymizing detector itself: :func:`reference_faces` defaults to dlib's MMOD CNN
    (up-sampled once); the video benchmark (:mod:`faceanon.benchmark.video`) uses
    RetinaFace in every grid, which also finds the small faces the CNN misses. A reference
    face counts as covered when at least :data:`COVERED_SHARE` of its box lies inside the
    union of the frame's anonymized boxes; each face's covered share is kept in the rows.

Metrics (:class:`ClipSummary`)
    * leak rate of a person: the share of frames in which the person is identified (higher
      = less private); over all frames, and over the frames where the person is identified
      in the original clip ("visible"), when those rows are given;
    * identified anywhere: whether the person is identified in at least one frame;
    * uncovered-face share: the share of frames with at least one reference face not
      covered, and the share of reference faces not covered;
    * frames per second of the anonymization, when given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from faceanon.protocol import DECISION_THRESHOLD

Box = tuple[int, int, int, int]
#: ``attacker(image) -> [(box, embedding), ...]``: every face found in an RGB image.
Attacker = Callable[[np.ndarray], list[tuple[Box, np.ndarray]]]

#: A reference face is covered when at least this share of its box is anonymized.
COVERED_SHARE = 0.9


class VideoBenchError(ValueError):
    """A measurement could not be made (a gallery photo without a face, mismatched inputs)."""


class DlibAttacker:
    """Every face of an image, encoded as ``face_recognition.face_encodings`` does.

    dlib's HOG (or CNN) detector up-sampled ``upsample`` times, the 5-point shape predictor
    and the ResNet descriptor with ``jitters`` re-samples, through the same model files and
    calls as :class:`faceanon.recognition.DlibResNet` (which encodes only the largest
    face). Boxes are ``(x, y, w, h)`` clipped to the image, as ``face_recognition`` clips
    them.

    Parameters
    ----------
    detector : {"hog", "cnn"}
        ``hog`` is ``face_recognition``'s default; ``cnn`` is a stronger attacker (it finds
        turned and small faces HOG misses) at about 40 times the cost on a CPU.
    upsample, jitters
        As in ``face_recognition.face_locations`` / ``face_encodings``.
    """

    def __init__(self, *, detector: str = "hog", upsample: int = 1, jitters: int = 1):
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
        if upsample < 0 or jitters < 1:
            raise ValueError("upsample must be >= 0 and jitters >= 1")
        self.detector = detector
        self.upsample = int(upsample)
        self.jitters = int(jitters)

    @property
    def name(self) -> str:
        return f"dlib-resnet:{self.detector}:up{self.upsample}:jit{self.jitters}:all-faces"

    def __call__(self, image: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        # The models DlibResNet loads, shared with it (loaded once per process).
        from faceanon.recognition import _dlib_models

        find_faces, landmarks, descriptor = _dlib_models(self.detector)
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        found = find_faces(image, self.upsample)
        rects = [f.rect for f in found] if self.detector == "cnn" else list(found)
        faces = []
        for rect in rects:
            shape = landmarks(image, rect)
            embedding = np.array(descriptor.compute_face_descriptor(image, shape, self.jitters))
            left, top = max(rect.left(), 0), max(rect.top(), 0)
            right, bottom = min(rect.right(), width), min(rect.bottom(), height)
            faces.append(((left, top, right - left, bottom - top), embedding))
        return faces


def enrol(
    gallery: Mapping[str, np.ndarray | os.PathLike | str], attacker: Attacker
) -> dict[str, np.ndarray]:
    """Each gallery person's embedding: the largest face of their photo.

    Raises
    ------
    VideoBenchError
        When a photo holds no face the attacker can find (naming the photo).
    """
    from faceanon.imageio import read_image

    if not gallery:
        raise VideoBenchError("the gallery is empty: give at least one person's photo")
    enrolled = {}
    for person, photo in gallery.items():
        image = photo if isinstance(photo, np.ndarray) else read_image(photo)
        faces = attacker(image)
        if not faces:
            where = "" if isinstance(photo, np.ndarray) else f" ({photo})"
            raise VideoBenchError(f"gallery photo of {person}{where}: the attacker finds no face")
        enrolled[person] = max(faces, key=lambda f: f[0][2] * f[0][3])[1]
    return enrolled


def coverage(face: Sequence[int], boxes: Sequence[Sequence[int]]) -> float:
    """Share of the pixels of ``face`` ``(x, y, w, h)`` that lie inside any of ``boxes``.

    1.0 for a face wholly inside the union of the boxes, 0.0 for one outside all of them
    (and for a face with no area).
    """
    x, y, w, h = (int(v) for v in face)
    if w <= 0 or h <= 0:
        return 0.0
    inside = np.zeros((h, w), dtype=bool)
    for bx, by, bw, bh in ((int(v) for v in box) for box in boxes):
        left, top = max(bx - x, 0), max(by - y, 0)
        right, bottom = min(bx + bw - x, w), min(by + bh - y, h)
        if right > left and bottom > top:
            inside[top:bottom, left:right] = True
    return float(inside.mean())


def reference_faces(
    clip: os.PathLike | str,
    *,
    detector: str = "cnn",
    upsample: int = 1,
    max_frames: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[list[Box]]:
    """The faces a reference detector finds in every frame of the (original) clip.

    dlib's CNN with one up-sampling finds faces down to about 40 pixels; it costs about 4 s
    per 640x360 frame on one CPU core, so compute this once per clip and keep it.
    """
    from faceanon.detect import get_detector
    from faceanon.video import VideoReader

    found_by = get_detector(detector, upsample=upsample)
    faces = []
    with VideoReader(clip, max_frames=max_frames) as reader:
        for frame in reader:
            faces.append([d.box for d in found_by.detect(frame.image)])
            if progress is not None:
                progress(frame.index + 1)
    return faces


@dataclass(frozen=True)
class FrameRow:
    """What the attacker got from one frame, and which reference faces were left bare.

    ``distances`` maps each gallery person to the distance of their nearest face in the
    frame (NaN when the attacker found no face). ``identified`` lists the people identified
    (see the module docstring for the rule). ``coverage`` holds, per reference face of the
    original frame, the share of its box inside the anonymized boxes; it and
    ``uncovered_faces`` are empty / ``None`` when no anonymized boxes were given.
    """

    frame: int
    time: float | None
    faces_found: int
    identified: tuple[str, ...]
    distances: dict[str, float]
    reference_faces: int | None = None
    uncovered_faces: int | None = None
    coverage: tuple[float, ...] = ()

    def as_record(self) -> dict:
        """A flat, JSON- and DuckDB-ready dict."""
        return {
            "frame": self.frame,
            "time": self.time,
            "faces_found": self.faces_found,
            "identified": list(self.identified),
            "distances": {p: (None if math.isnan(d) else d) for p, d in self.distances.items()},
            "reference_faces": self.reference_faces,
            "uncovered_faces": self.uncovered_faces,
            "coverage": list(self.coverage),
        }


def identify(
    faces: Sequence[tuple[Box, np.ndarray]],
    enrolled: Mapping[str, np.ndarray],
    *,
    threshold: float = DECISION_THRESHOLD,
) -> tuple[tuple[str, ...], dict[str, float]]:
    """The people identified among ``faces`` and each person's nearest distance."""
    people = list(enrolled)
    if not faces:
        return (), {p: float("nan") for p in people}
    from faceanon.recognition import distance_matrix

    distances = distance_matrix([e for _, e in faces], [enrolled[p] for p in people])
    nearest = {p: float(distances[:, j].min()) for j, p in enumerate(people)}
    found = set()
    for row in distances:
        best = int(np.argmin(row))  # the first of equal minima: gallery order breaks ties
        if row[best] <= threshold:
            found.add(people[best])
    return tuple(p for p in people if p in found), nearest


def measure_clip(
    clip: os.PathLike | str,
    *,
    gallery: Mapping[str, np.ndarray | os.PathLike | str],
    attacker: Attacker | None = None,
    threshold: float = DECISION_THRESHOLD,
    anonymized: Sequence[Sequence[Sequence[int]]] | None = None,
    reference: Sequence[Sequence[Sequence[int]]] | None = None,
    max_frames: int | None = None,
    frames: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[FrameRow]:
    """Run an attacker over every frame of a clip; one :class:`FrameRow` per frame.

    Parameters
    ----------
    clip
        The clip the attacker sees (original or anonymized).
    gallery
        Person name -> photo (path or RGB array), in the order that breaks ties.
    attacker
        See the module docstring; default :class:`DlibAttacker`.
    threshold
        Identification threshold on the distance (``<=`` identifies).
    anonymized
        Per frame, the boxes that were anonymized (e.g. ``[f.regions for f in
        result.boxes]`` of :func:`faceanon.video_anonymize.anonymize_video`).
    reference
        Per frame, the reference faces of the original clip (:func:`reference_faces`).
        Coverage is measured when both ``anonymized`` and ``reference`` are given.
    max_frames
        Measure only the first frames.
    frames
        Measure only these frame indices (e.g. the frames a detector missed, for an
        attacker too slow to run on every frame); the rows are for these frames only.

    Raises
    ------
    VideoBenchError
        When a gallery photo has no face, or the per-frame boxes do not match the clip's
        frames.
    faceanon.video.VideoError
        When the clip cannot be read.
    """
    from faceanon.video import VideoReader

    attacker = attacker or DlibAttacker()
    enrolled = enrol(gallery, attacker)
    rows = []
    wanted = None if frames is None else set(frames)
    with VideoReader(clip, max_frames=max_frames) as reader:
        for frame in reader:
            if wanted is not None and frame.index not in wanted:
                continue
            faces = attacker(frame.image)
            identified, distances = identify(faces, enrolled, threshold=threshold)
            row = FrameRow(frame.index, frame.time, len(faces), identified, distances)
            if anonymized is not None and reference is not None:
                if frame.index >= len(anonymized) or frame.index >= len(reference):
                    raise VideoBenchError(
                        f"{clip}: frame {frame.index} has no anonymized or reference boxes "
                        f"({len(anonymized)} and {len(reference)} frames given)"
                    )
                shares = tuple(
                    coverage(face, anonymized[frame.index]) for face in reference[frame.index]
                )
                row = FrameRow(
                    row.frame,
                    row.time,
                    row.faces_found,
                    row.identified,
                    row.distances,
                    reference_faces=len(shares),
                    uncovered_faces=sum(share < COVERED_SHARE for share in shares),
                    coverage=shares,
                )
            rows.append(row)
            if progress is not None:
                progress(frame.index + 1)
    return rows


def missed_frames(
    anonymized: Sequence[Sequence[Sequence[int]]],
    reference: Sequence[Sequence[Sequence[int]]],
) -> list[int]:
    """Frames where some reference face is not covered by ``anonymized`` boxes.

    Given the boxes of a run *without* tracking, these are the frames the anonymizing
    detector missed a face in: where tracking has to do the work.
    """
    if len(anonymized) < len(reference):
        raise VideoBenchError(f"{len(anonymized)} frames of boxes for {len(reference)} frames")
    return [
        index
        for index, faces in enumerate(reference)
        if any(coverage(face, anonymized[index]) < COVERED_SHARE for face in faces)
    ]


@dataclass
class ClipSummary:
    """The metrics of one case (see the module docstring); shares are in [0, 1].

    ``leak_rate_visible`` is ``None`` unless the original clip's rows were given, and a
    person's value is NaN when the original clip never identifies them.
    ``uncovered_*`` are ``None`` when coverage was not measured.
    """

    frames: int
    leak_rate: dict[str, float]
    identified_anywhere: dict[str, bool]
    leak_rate_visible: dict[str, float] | None = None
    uncovered_frame_share: float | None = None
    uncovered_face_share: float | None = None
    fps: float | None = None
    frames_with_a_face: int = 0
    extra: dict = field(default_factory=dict)


def leak_rates(
    rows: Sequence[FrameRow], people: Sequence[str], frames: Sequence[int] | None = None
) -> dict[str, float]:
    """Share of the frames (all, or those listed) in which each person is identified.

    NaN for every person when no frame is selected.
    """
    selected = None if frames is None else set(frames)
    chosen = rows if selected is None else [r for r in rows if r.frame in selected]
    if not chosen:
        return {p: float("nan") for p in people}
    return {p: sum(p in r.identified for r in chosen) / len(chosen) for p in people}


def summarize(
    rows: Sequence[FrameRow],
    *,
    people: Sequence[str],
    original: Sequence[FrameRow] | None = None,
    fps: float | None = None,
) -> ClipSummary:
    """The metrics of one case from its per-frame rows.

    ``original`` are the rows of the original clip measured by the same attacker: a
    person's visible frames are those in which it identifies them there.
    """
    if not rows:
        raise VideoBenchError("no frames were measured")
    summary = ClipSummary(
        frames=len(rows),
        leak_rate=leak_rates(rows, people),
        identified_anywhere={p: any(p in r.identified for r in rows) for p in people},
        fps=fps,
        frames_with_a_face=sum(r.faces_found > 0 for r in rows),
    )
    if original is not None:
        summary.leak_rate_visible = {}
        for person in people:
            visible = [r.frame for r in original if person in r.identified]
            summary.leak_rate_visible[person] = leak_rates(rows, [person], visible)[person]
    measured = [r for r in rows if r.uncovered_faces is not None]
    if measured:
        summary.uncovered_frame_share = sum(r.uncovered_faces > 0 for r in measured) / len(measured)
        faces = sum(r.reference_faces for r in measured)
        uncovered = sum(r.uncovered_faces for r in measured)
        summary.uncovered_face_share = uncovered / faces if faces else 0.0
    return summary
