"""Anonymize the faces in image files and folders: the library behind ``faceanon anonymize``.

:func:`plan_jobs` pairs every input with its output and refuses unsafe plans;
:func:`anonymize_files` runs the jobs. The command (:mod:`faceanon.cli.anonymize`) only
checks options and prints.

Behaviour a privacy tool owes its user:

* Every file is read as a document (:func:`faceanon.formats.read_document`): every frame of
  a multi-page TIFF or an animated GIF, PNG or WebP, at its own depth and mode, upright
  (EXIF orientation applied). Each frame is anonymized, and the output is the same kind of
  file (format, mode, bit depth, frame count, timing, ICC profile) with no other metadata
  (:func:`faceanon.formats.write_document`).
* Inputs are never overwritten: an output folder equal to or inside an input folder, or a
  planned output that is an input file, is refused before anything is read.
* A file that cannot be read (not an image, damaged, a kind that cannot be written back,
  above the pixel limit) is recorded with the problem; the other files are still
  processed.
* Nothing is written that still shows a face that should have been hidden: ``on_miss``
  (:class:`faceanon.protocol.OnMiss`) decides about a frame with no face. Under ``fail``
  and ``skip`` a file with such a frame is not written at all (a document cannot lose a
  frame); under ``whole`` that frame is anonymized whole.

Output layout: a file given on the command line is written as ``OUTDIR/<its name>``; a
folder's files are written under ``OUTDIR`` with the folder's structure mirrored (the
folder's own name is not repeated). When two inputs would write the same output path, the
plan is refused before it starts, naming both, rather than silently overwriting one.

Randomness follows the benchmark's rule (:func:`faceanon.protocol.image_rng`): each
frame's generator comes from the seed, the method, ``k`` and the frame's key (the output
path relative to ``OUTDIR``, with ``#<frame index>`` added for files of several frames),
so results do not depend on the order files are found or given in, and a one-frame image
laid out as in the dataset gets the benchmark's very pixels. Set-based methods (k-Same)
get every frame of every file with a face as one set, with one generator
(:func:`faceanon.protocol.set_rng`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.formats import (
    ImageDocument,
    ImageReadError,
    ImageWriteError,
    is_document_path,
    read_document,
    write_document,
)
from faceanon.methods import Method, MethodError, needs_whole_set
from faceanon.protocol import OnMiss, Variant, image_rng, set_rng
from faceanon.video import is_video_path

__all__ = [
    "Job",
    "Outcome",
    "PlanError",
    "Result",
    "anonymize_files",
    "frame_keys",
    "frame_regions",
    "plan_jobs",
]

Box = tuple[int, int, int, int]


@dataclass
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path
    key: str  # output path relative to OUTDIR, POSIX style: names the image in results


@dataclass
class Result:
    """What became of one job.

    ``status`` is ``ok`` (a face in every frame, anonymized), ``whole`` (at least one frame
    had no face and was anonymized whole), ``miss`` (a frame had no face: not written, an
    error), ``skipped`` (a frame had no face: not written, not an error) or ``failed``
    (unreadable or unwritable: ``error`` says why). ``boxes`` holds one list of boxes per
    frame, as anonymized.
    """

    job: Job
    status: str = "pending"
    frames: int = 0
    faces: int = 0
    boxes: list[list[Box]] = field(default_factory=list)
    error: str | None = None

    @property
    def written(self) -> bool:
        return self.status in {"ok", "whole"}

    def as_dict(self) -> dict:
        return {
            "input": str(self.job.source),
            "output": str(self.job.target) if self.written else None,
            "status": self.status,
            "frames": self.frames,
            "faces": self.faces,
            "boxes": [[list(box) for box in frame] for frame in self.boxes],
            "error": self.error,
        }


@dataclass
class Outcome:
    """Every job's result, with totals and the wall time."""

    results: list[Result]
    seconds: float

    @property
    def totals(self) -> dict[str, int]:
        results = self.results
        return {
            "files": len(results),
            "written": sum(r.written for r in results),
            "frames": sum(r.frames for r in results if r.written),
            "faces": sum(r.faces for r in results),
            "misses": sum(r.status == "miss" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "whole": sum(r.status == "whole" for r in results),
            "failures": sum(r.status == "failed" for r in results),
        }

    @property
    def ok(self) -> bool:
        """False when a file failed or (with ``on_miss="fail"``) had no face."""
        totals = self.totals
        return totals["failures"] == 0 and totals["misses"] == 0


class PlanError(FaceanonError):
    """The inputs and the output folder do not make a safe plan."""


def _walk(folder: Path) -> Iterator[Path]:
    # Hidden files and folders are skipped: they are editor, OS or sync-tool files, and a
    # half-written ``.partial-`` output of an earlier run must not become an input.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def plan_jobs(
    inputs: Sequence[Path], outdir: Path, *, ignore_unknown: bool = False
) -> tuple[list[Job], list[Path]]:
    """Pair every input file with its output path, refusing unsafe plans.

    Parameters
    ----------
    inputs : sequence of Path
        Files and folders (walked recursively; hidden files and folders are left out).
    outdir : Path
        The output folder.
    ignore_unknown : bool
        Leave out files inside input folders whose suffix is not one of
        :data:`faceanon.formats.DOCUMENT_SUFFIXES` or a video suffix
        (:data:`faceanon.video.VIDEO_SUFFIXES`). By default every file is planned, so
        that a file the tool cannot read is reported rather than silently left behind.
        Files named in ``inputs`` are always planned.

    Returns
    -------
    jobs : list of Job
    ignored : list of Path
        The files left out by ``ignore_unknown``.

    Raises
    ------
    PlanError
        When an input does not exist, when the output folder is an input folder or inside
        one, when an output would be an input file, or when two inputs would write the
        same output.
    """
    outdir_resolved = outdir.resolve()
    jobs: list[Job] = []
    ignored: list[Path] = []
    for given in inputs:
        resolved = given.resolve()
        if given.is_dir():
            if outdir_resolved == resolved or resolved in outdir_resolved.parents:
                raise PlanError(
                    f"output folder {outdir} is inside input folder {given}; anonymized "
                    "files could overwrite or be mixed with the originals. Choose an output "
                    "folder outside the inputs."
                )
            for path in _walk(given):
                if ignore_unknown and not (is_document_path(path) or is_video_path(path)):
                    ignored.append(path)
                    continue
                relative = path.relative_to(given)
                jobs.append(Job(path, outdir / relative, relative.as_posix()))
        elif given.exists():
            jobs.append(Job(given, outdir / given.name, given.name))
        else:
            raise PlanError(f"input {given} does not exist")

    sources = {job.source.resolve(): job.source for job in jobs}
    seen: dict[Path, Job] = {}
    for job in jobs:
        target = job.target.resolve()
        overwritten = sources.get(target) or _same_file_as_any(job.target, jobs)
        if overwritten:
            raise PlanError(
                f"output {job.target} would overwrite input {overwritten}; choose an output "
                "folder that holds no input"
            )
        if target in seen:
            raise PlanError(
                f"{seen[target].source} and {job.source} would both be written to "
                f"{job.target}; anonymize them into different output folders"
            )
        seen[target] = job
    return jobs, ignored


def _same_file_as_any(target: Path, jobs: list[Job]) -> Path | None:
    # Hard links and bind mounts escape resolve(); compare inodes for outputs that exist.
    if not target.exists():
        return None
    for job in jobs:
        try:
            if os.path.samefile(target, job.source):
                return job.source
        except OSError:
            continue
    return None


#: Formats whose frames are an animation (one scene over time), not separate pictures as
#: the pages of a TIFF are: faces are followed across their frames.
ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP"})


def frame_regions(
    frames: Sequence[np.ndarray],
    *,
    detector,
    region: str = "face",
    margin: float = 0.0,
    on_miss: OnMiss | str = OnMiss.FAIL,
    animated: bool = False,
):
    """Where to anonymize each frame of one file.

    Each frame is searched on its own (:func:`faceanon.detect.anonymization_regions`,
    which also applies the no-face rule). In an animation (``animated``, frames of one
    size, face regions) the faces are then followed across frames with the video
    tracker (:func:`faceanon.tracking.track_detections`), as :mod:`faceanon.video_anonymize`
    does: a frame where the detector misses a face still gets that face's box (held a few
    frames, following its motion), and the boxes of frames where it was found are kept
    and only ever added to. Only a frame with neither a detection nor a tracked box falls
    to the no-face rule.

    Parameters
    ----------
    frames : sequence of ndarray
        The file's frames as RGB ``uint8``, in order.
    detector, region, margin, on_miss
        As in :func:`faceanon.detect.anonymization_regions`.
    animated : bool, optional
        Whether the frames are an animation (:data:`ANIMATED_FORMATS`), not separate
        pictures.

    Returns
    -------
    list of faceanon.detect.Regions
        One per frame.
    """
    from faceanon.detect import Regions, anonymization_regions

    found = [
        anonymization_regions(frame, detector=detector, region=region, margin=margin,
                              on_miss=on_miss)
        for frame in frames
    ]
    shapes = {frame.shape[:2] for frame in frames}
    if not animated or region != "face" or len(frames) < 2 or len(shapes) != 1:
        return found
    from faceanon.tracking import track_detections

    # The detections already carry the margin asked for; the tracker adds none to them.
    tracked = track_detections([list(r.boxes) if r.found else [] for r in found],
                               shapes.pop(), margin=0.0)
    out = []
    for per_frame, frame in zip(found, tracked, strict=True):
        held = [box.box for box in frame.boxes if not box.detected]
        if not held:
            out.append(per_frame)
        elif per_frame.found:
            out.append(Regions(boxes=(*per_frame.boxes, *held), found=True))
        else:  # a face the detector lost in this frame: covered by its track
            out.append(Regions(boxes=tuple(held), found=True))
    return out


def frame_keys(key: str, count: int) -> list[str]:
    """The generator keys of a file's frames: the file's key for a one-frame file (the
    benchmark's key for the same image), ``key#<index>`` for each frame otherwise."""
    if count == 1:
        return [key]
    return [f"{key}#{index}" for index in range(count)]


@dataclass
class _Held:
    """A read document waiting to be anonymized: its frames' views and boxes."""

    result: Result
    document: ImageDocument
    views: list[np.ndarray]
    boxes: list[list[Box]]


def _describe_missing(missing: list[int], count: int) -> str:
    if count == 1:
        return "no face found"
    frames = ", ".join(str(index + 1) for index in missing)
    noun = "frame" if len(missing) == 1 else "frames"
    return f"no face found in {noun} {frames} of {count}"


def anonymize_files(
    jobs: Sequence[Job],
    *,
    method: Method,
    variant: Variant,
    detector,
    region: str = "face",
    margin: float = 0.0,
    seed: int = 0,
    on_miss: OnMiss | str = OnMiss.FAIL,
    max_pixels: int | None = None,
    on_problem: Callable[[Result], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> Outcome:
    """Anonymize every frame of every job's file into its target, as the same kind of file.

    Parameters
    ----------
    jobs : sequence of Job
        From :func:`plan_jobs`.
    method : Method
        The method object (made once by the caller).
    variant : Variant
        Its registry name and checked ``k`` (:meth:`Method.check_k`): what the frames'
        generators are seeded with.
    detector : str or faceanon.detect.Detector
        Finds the faces.
    region, margin
        As in :func:`faceanon.detect.find_regions`.
    seed : int
        Seed of the generators (:func:`faceanon.protocol.image_rng`).
    on_miss : OnMiss or str
        What happens to a frame with no face: ``whole`` anonymizes the frame whole;
        ``fail`` and ``skip`` leave the whole file unwritten (``miss``, an error, or
        ``skipped``). An unknown value raises :class:`faceanon.protocol.OnMissError`
        before any file is read.
    max_pixels : int, optional
        Refuse files with more pixels (all frames together), before decoding them.
        Default: :func:`faceanon.formats.default_max_pixels`.
    on_problem : callable, optional
        Called with a result as soon as it fails, misses or is skipped.
    on_step : callable, optional
        Called after each file has been read and detected in.

    Returns
    -------
    Outcome

    Raises
    ------
    faceanon.methods.MethodError
        When the method refuses the images (e.g. k-Same with fewer than k faces); the
        files written before it stay.
    """
    started = time.perf_counter()
    on_miss = OnMiss.parse(on_miss)
    notify = on_problem or (lambda result: None)
    step = on_step or (lambda: None)
    results = [Result(job) for job in jobs]

    def fail(result: Result, problem: str) -> None:
        result.status, result.error = "failed", problem
        notify(result)

    def prepare(result: Result) -> _Held | None:
        try:
            document = read_document(result.job.source, max_pixels=max_pixels)
        except ImageReadError as error:
            fail(result, error.problem)
            return None
        views = document.rgb_frames()
        regions = frame_regions(views, detector=detector, region=region, margin=margin,
                                on_miss=on_miss,
                                animated=document.format in ANIMATED_FORMATS)
        result.frames = len(views)
        missing = [index for index, found in enumerate(regions) if not found.publishable]
        if missing:
            # A file cannot be written with a frame left out, nor with a face left in.
            result.status = "miss" if on_miss is OnMiss.FAIL else "skipped"
            result.error = _describe_missing(missing, len(views))
            notify(result)
            return None
        result.faces = sum(len(found.boxes) for found in regions if found.found)
        result.status = "ok" if all(found.found for found in regions) else "whole"
        return _Held(result, document, views, [list(found.boxes) for found in regions])

    def write(held: _Held, anonymized: Sequence[np.ndarray]) -> None:
        result = held.result
        try:
            document = held.document.with_anonymized(anonymized, held.boxes)
            write_document(result.job.target, document)
        except ImageWriteError as error:
            fail(result, f"could not write {result.job.target}: {error.problem}")
            return
        except ValueError as error:
            # The anonymized pixels do not fit the file (a palette without an opaque
            # colour, a method returning another shape): nothing is written.
            fail(result, f"could not write {result.job.target}: {error}")
            return
        result.boxes = [[tuple(int(v) for v in box) for box in boxes] for boxes in held.boxes]

    if needs_whole_set(method):
        # k-Same needs every face at once: hold the readable files with faces in memory,
        # then anonymize all their frames in one call.
        held: list[_Held] = []
        for result in results:
            prepared = prepare(result)
            if prepared is not None:
                held.append(prepared)
            step()
        if held:
            keys = [key for h in held for key in frame_keys(h.result.job.key, len(h.views))]
            rng = set_rng(seed, variant.method, variant.k, keys)
            outputs = method.anonymize_set([view for h in held for view in h.views],
                                           [boxes for h in held for boxes in h.boxes],
                                           k=variant.k, rng=rng)
            outputs = list(outputs)
            if len(outputs) != len(keys):
                raise MethodError(
                    f"{variant.method} returned {len(outputs)} images for {len(keys)} frames")
            start = 0
            for h in held:
                write(h, outputs[start : start + len(h.views)])
                start += len(h.views)
    else:
        for result in results:
            prepared = prepare(result)
            if prepared is not None:
                keys = frame_keys(result.job.key, len(prepared.views))
                anonymized = [
                    method.anonymize(view, boxes, k=variant.k,
                                     rng=image_rng(seed, variant.method, variant.k, key))
                    for view, boxes, key in zip(prepared.views, prepared.boxes, keys,
                                                strict=True)
                ]
                write(prepared, anonymized)
            step()
    return Outcome(results, time.perf_counter() - started)
