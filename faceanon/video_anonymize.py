"""Anonymize the faces of a video clip: detect in every frame, track, hide, re-encode.

:func:`anonymize_video` decodes the clip on one thread (:class:`faceanon.video.VideoReader`),
runs the face detector once on every frame and the tracker (:class:`faceanon.tracking.FaceTracker`)
on the main thread, hides the tracked boxes with the method, and encodes on another thread
(:class:`faceanon.video.VideoWriter`), which also copies the soundtrack. The output appears
under its name only once complete; any error (unreadable input, a method that cannot run)
leaves no output at all: a clip is never written with a face that should have been hidden.

How each method treats a clip:

* **Ad-hoc methods** (blur, pixelate, noise, blackout, mask) hide every tracked box of
  every frame, each box on its own (one :meth:`~faceanon.methods.Method.anonymize` call per
  box, in track order). Random methods get one generator per track, created afresh in
  every frame from ``(seed, track id)``: noise then draws the same pixels and colours in
  every frame as long as the track's box keeps its size, so the noise sits still on the
  face instead of boiling. It also matters for privacy: noise drawn anew in each frame
  hides different pixels each time, and averaging the frames of a still face would bring
  most of it back.
* **k-Same** (:class:`faceanon.ksame.KSame`) runs over the *tracks* of the whole clip, in
  two passes. A frame holds too few faces to form groups of ``k``; and grouping the faces
  of all frames would defeat the method, because the faces nearest to a face in a clip are
  the same person's in the neighbouring frames, whose average is that person again. So
  each track (one person while on screen) is one member of the set: pass 1 detects,
  tracks and aligns every face, and each track's member is the mean of its aligned faces in
  the frames where it was detected; k-Same groups the tracks, at least ``k`` per group; pass
  2 decodes the clip again and pastes the group's average face into every box of the track,
  aligned to that frame's landmarks. The face stands for at least ``k`` tracks and does not
  flicker. A person who leaves the picture and comes back gets a second track, so ``k``
  tracks may be fewer than ``k`` people; a clip with fewer than ``k`` tracks is refused.
* **The GAN** (:class:`faceanon.deepprivacy.DeepPrivacy`) draws its latent vector for a
  face as the first ``standard_normal`` draw of the generator it is given, and each track's
  box is anonymized with a generator created afresh from ``(seed, track id)``: every frame
  of a track gets the same latent, so the generated face keeps its identity across frames
  and only follows the pose and the surroundings.

Other set-based methods (plugins overriding ``anonymize_set``) have no video mode and are
refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceanon.tracking import FaceTracker, TrackedFrame
from faceanon.video import (
    AUDIO_MODES,
    CONTAINERS,
    Frame,
    VideoError,
    VideoInfo,
    VideoReader,
    VideoWriter,
)

#: ``progress(frames_done, frames_total)``; ``frames_total`` counts the frames of every
#: pass (k-Same decodes the clip twice) and is ``None`` when the clip declares no count.
Progress = Callable[[int, "int | None"], None]


@dataclass
class VideoResult:
    """What :func:`anonymize_video` did.

    ``boxes`` holds, for every frame written, the boxes that were anonymized
    (:class:`faceanon.tracking.TrackedFrame`). ``seconds`` is the wall time from opening
    the input to renaming the output, ``detect_seconds`` and ``anonymize_seconds`` the
    parts of it spent in the detector and the method on the main thread (decoding and
    encoding run beside them on their own threads). ``groups`` lists, for k-Same, the
    track ids averaged together (empty for other methods).
    """

    source: Path
    output: Path
    info: VideoInfo
    method: str
    k: int | None
    frames: int
    detections: int
    tracks: int
    passes: int
    seconds: float
    detect_seconds: float
    anonymize_seconds: float
    tracking: dict = field(default_factory=dict)
    boxes: list[TrackedFrame] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames anonymized per second of wall time, decoding and encoding included."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def describe(self) -> dict:
        """A JSON-ready summary (without the per-frame boxes)."""
        return {
            "source": str(self.source),
            "output": str(self.output),
            "method": self.method,
            "k": self.k,
            "frames": self.frames,
            "detections": self.detections,
            "tracks": self.tracks,
            "anonymized_boxes": sum(len(f.boxes) for f in self.boxes),
            "passes": self.passes,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "detect_seconds": round(self.detect_seconds, 3),
            "anonymize_seconds": round(self.anonymize_seconds, 3),
            "tracking": self.tracking,
            "groups": self.groups,
        }


def track_rng(seed: int, track: int) -> np.random.Generator:
    """The generator of one track: the same stream in every frame of the track."""
    return np.random.default_rng([int(seed), int(track)])


def _method(method, options: Mapping | None):
    from faceanon.methods import Method, get_method

    if isinstance(method, Method):
        if options:
            raise ValueError("method_options apply only when the method is given by name")
        return method
    return get_method(str(method), **dict(options or {}))


def _detector(detector):
    from faceanon.detect import DetectorError, get_detector

    if isinstance(detector, str):
        detector = get_detector(detector)
    if getattr(detector, "finds", "face") != "face":
        raise DetectorError(
            f"{detector.name!r} finds eyes; video anonymization needs a face "
            "detector (hog, cnn, haar-face)"
        )
    return detector


def _tracker(shape, tracking: bool, options: Mapping | None) -> FaceTracker:
    options = dict(options or {})
    if tracking:
        return FaceTracker(shape, **options)
    unknown = set(options) - {"margin"}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ValueError(f"without tracking only 'margin' applies, not {names}")
    return FaceTracker.per_frame(shape, **options)


class _PerTrack:
    """Ad-hoc methods and the GAN: each tracked box on its own, one generator per track."""

    def __init__(self, method, k, seed: int):
        self.method, self.k, self.seed = method, k, seed

    def __call__(self, frame: Frame, tracked: TrackedFrame) -> np.ndarray:
        image = frame.image
        for box in tracked.boxes:
            image = self.method.anonymize(
                image, [box.box], k=self.k, rng=track_rng(self.seed, box.track)
            )
        return image


@dataclass
class _TrackFaces:
    """Pass 1 of k-Same: per track the sum of its aligned detected faces."""

    size: int
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    # Per frame: (track, region, matrix to the canonical frame) of each box.
    placements: dict = field(default_factory=dict)


class _TrackKSame:
    """k-Same over the tracks of a clip (see the module docstring)."""

    def __init__(self, method, k: int, seed: int):
        self.method, self.k, self.seed = method, k, seed
        self.faces = _TrackFaces(size=method.size)
        self.averages: dict[int, np.ndarray] = {}

    def collect(self, frame: Frame, tracked: TrackedFrame) -> None:
        from faceanon.landmarks import align_canonical, face_keypoints

        placed = []
        for box in tracked.boxes:
            # Landmarks are searched in the face's own box; the padded region is only
            # where the average is pasted.
            keypoints, _ = face_keypoints(frame.image, box.face)
            aligned, matrix = align_canonical(frame.image, keypoints[:5], size=self.faces.size)
            placed.append((box.track, box.box, matrix))
            if box.detected:
                total = self.faces.sums.get(box.track)
                aligned = aligned.astype(np.float64)
                self.faces.sums[box.track] = aligned if total is None else total + aligned
                self.faces.counts[box.track] = self.faces.counts.get(box.track, 0) + 1
        self.faces.placements[tracked.index] = placed

    def group(self) -> list[np.ndarray]:
        """Form the k-Same groups of tracks; returns them as arrays of track ids."""
        from faceanon.ksame import _face_ellipse, k_same_clusters
        from faceanon.methods import MethodError

        tracks = sorted(self.faces.sums)
        if not tracks:
            return []
        if len(tracks) < self.k:
            raise MethodError(
                f"ksame: the clip has {len(tracks)} face track(s), fewer than k={self.k}; "
                "on video k-Same averages whole tracks (one person each), so it needs at "
                "least k of them; lower k"
            )
        members = np.stack([self.faces.sums[t] / self.faces.counts[t] for t in tracks])
        ellipse = _face_ellipse(self.faces.size)
        vectors = members[:, ellipse].reshape(len(tracks), -1)
        clusters = k_same_clusters(vectors, self.k, rng=np.random.default_rng(self.seed))
        groups = []
        for cluster in clusters:
            average = members[cluster].mean(axis=0).astype(np.float32)
            ids = np.array([tracks[i] for i in cluster])
            for track in ids:
                self.averages[int(track)] = average
            groups.append(ids)
        return groups

    def __call__(self, frame: Frame, tracked: TrackedFrame) -> np.ndarray:
        placed = self.faces.placements.get(frame.index, [])
        if not placed:
            return frame.image
        out = np.array(frame.image, copy=True)
        for track, region, matrix in placed:
            # KSame's own paste: the same warp and feathered blend as for images.
            self.method._paste(out, self.averages[track], region, matrix)
        return out


def anonymize_video(
    src: os.PathLike | str,
    dst: os.PathLike | str,
    *,
    method,
    k: int | None = None,
    detector="hog",
    tracking: bool = True,
    tracker_options: Mapping | None = None,
    seed: int = 0,
    audio: str = "copy",
    progress: Progress | None = None,
    max_frames: int | None = None,
    method_options: Mapping | None = None,
    encoder_options: Mapping[str, str] | None = None,
) -> VideoResult:
    """Anonymize every face of a clip into a new clip.

    The output keeps the source's frame size, frame rate, timestamps and frame count, and
    copies its audio (``audio="copy"``) without re-encoding; no metadata is carried over
    (see :mod:`faceanon.video`). The face detector runs once per frame; decoding and
    encoding run on threads of their own.

    Parameters
    ----------
    src, dst
        The clip and the file to write (its suffix picks the container, see
        :data:`faceanon.video.CONTAINERS`). ``dst`` must not be ``src``.
    method
        A method name (see :func:`faceanon.methods.available_methods`) or a
        :class:`~faceanon.methods.Method`. How each kind treats a clip is described in this
        module's docstring.
    k
        The method's strength.
    detector
        A face detector name (``hog``, ``cnn``, ``haar-face``) or a
        :class:`~faceanon.detect.Detector`.
    tracking
        Track faces across frames (the default). ``False`` hides only what the detector
        finds in each frame: the "no tracking" baseline, for measurements.
    tracker_options
        Options of :class:`faceanon.tracking.FaceTracker` (without tracking only
        ``margin`` applies).
    seed
        Seed of random methods (per track, see :func:`track_rng`) and of k-Same's grouping.
    audio : {"copy", "drop"}
        Keep the soundtrack (copied packet for packet) or leave it out.
    progress
        Called as ``progress(frames_done, frames_total)`` after every frame of every pass.
    max_frames
        Anonymize only the first ``max_frames`` frames (the audio is cut to match).
    method_options
        Options for the method when it is given by name (e.g. GAN ``weights``).
    encoder_options
        Encoder options replacing the defaults (e.g. ``{"crf": "23"}``).

    Returns
    -------
    VideoResult

    Raises
    ------
    VideoError
        When the input is not a readable video (missing, empty, not a video, no video
        stream, corrupt, truncated), when ``dst`` would overwrite it, or when the output
        cannot be written. Nothing is left under ``dst``.
    faceanon.methods.MethodError, faceanon.detect.DetectorError
        For a method or detector that cannot be used (unknown name, bad ``k``, too few
        tracks for k-Same).
    """
    from faceanon.ksame import KSame
    from faceanon.methods import Method, MethodError

    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {', '.join(AUDIO_MODES)}, got {audio!r}")
    if dst.suffix.lower() not in CONTAINERS:
        raise VideoError(
            dst,
            f"unknown video suffix {dst.suffix or '(none)'}; use one of "
            f"{', '.join(sorted(CONTAINERS))}",
        )
    if dst.resolve() == src.resolve() or (
        dst.exists() and src.exists() and os.path.samefile(src, dst)
    ):
        raise VideoError(dst, "the output would overwrite the input; choose another name")
    chosen = _method(method, method_options)
    k_used = chosen.check_k(k)
    face_detector = _detector(detector)
    set_based = type(chosen).anonymize_set is not Method.anonymize_set
    if set_based and not isinstance(chosen, KSame):
        raise MethodError(f"{chosen.name} works on sets of images and has no video mode")

    passes = 2 if set_based else 1
    # Opening the reader reads the header and the first frame: a bad input fails here,
    # before any work.
    first_reader = VideoReader(src, max_frames=max_frames)
    source = first_reader.info
    total = source.frames
    if total is not None and max_frames is not None:
        total = min(total, max_frames)
    totals = None if total is None else total * passes
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, totals)

    result = VideoResult(
        source=src,
        output=dst,
        info=source,
        method=chosen.name,
        k=k_used,
        frames=0,
        detections=0,
        tracks=0,
        passes=passes,
        seconds=0.0,
        detect_seconds=0.0,
        anonymize_seconds=0.0,
    )

    def detect_and_track(reader: VideoReader, handle: Callable[[Frame, TrackedFrame], None]):
        """Pass over the clip: detect once per frame, track, and hand out final frames."""
        tracker = _tracker(reader.info.shape[:2], tracking, tracker_options)
        result.tracking = {"enabled": bool(tracking), **tracker.describe()}
        held: dict[int, Frame] = {}
        for frame in reader:
            began = time.perf_counter()
            found = face_detector.detect(frame.image)
            result.detect_seconds += time.perf_counter() - began
            result.detections += len(found)
            held[frame.index] = frame
            for tracked in tracker.push([d.box for d in found]):
                handle(held.pop(tracked.index), tracked)
        for tracked in tracker.finish():
            handle(held.pop(tracked.index), tracked)
        result.tracks = tracker.tracks_started

    writer_options = {
        "source": source,
        "audio": audio,
        "trim_audio": max_frames is not None,
        "options": dict(encoder_options or {}),
    }

    if not set_based:
        anonymizer = _PerTrack(chosen, k_used, seed)
        with first_reader as reader, VideoWriter(dst, **writer_options) as writer:

            def write(frame: Frame, tracked: TrackedFrame) -> None:
                began = time.perf_counter()
                image = anonymizer(frame, tracked)
                result.anonymize_seconds += time.perf_counter() - began
                writer.write(frame, image)
                result.boxes.append(tracked)
                step()

            detect_and_track(reader, write)
    else:
        ksame = _TrackKSame(chosen, k_used, seed)
        tracked_frames: dict[int, TrackedFrame] = {}

        def collect(frame: Frame, tracked: TrackedFrame) -> None:
            began = time.perf_counter()
            ksame.collect(frame, tracked)
            result.anonymize_seconds += time.perf_counter() - began
            tracked_frames[tracked.index] = tracked
            step()

        with first_reader as reader:
            detect_and_track(reader, collect)
        began = time.perf_counter()
        result.groups = [[int(t) for t in group] for group in ksame.group()]
        result.anonymize_seconds += time.perf_counter() - began
        with (
            VideoReader(src, max_frames=max_frames) as reader,
            VideoWriter(dst, **writer_options) as writer,
        ):
            for frame in reader:
                tracked = tracked_frames.get(frame.index)
                if tracked is None:  # the clip changed between the passes
                    raise VideoError(src, f"frame {frame.index} was not seen in the first pass")
                began = time.perf_counter()
                image = ksame(frame, tracked)
                result.anonymize_seconds += time.perf_counter() - began
                writer.write(frame, image)
                result.boxes.append(tracked)
                step()
            if reader.frames_read != len(tracked_frames):
                raise VideoError(src, "the second pass decoded a different number of frames")

    result.frames = len(result.boxes)
    result.seconds = time.perf_counter() - started
    return result
