"""Anonymize the faces in image files and folders: the library behind ``faceanon anonymize``.

:func:`plan_jobs` pairs every input with its output and refuses unsafe plans;
:func:`anonymize_files` runs the jobs. The command (:mod:`faceanon.cli.anonymize`) only
checks options and prints.

Behaviour a privacy tool owes its user:

* EXIF orientation is applied before detection (:func:`faceanon.imageio.read_image`), and
  outputs carry no metadata at all (:func:`faceanon.imageio.write_image`).
* Inputs are never overwritten: an output folder equal to or inside an input folder, or a
  planned output that is an input file, is refused before anything is read.
* A file that cannot be read is recorded with the problem; the other files are still
  processed.
* An image with no face is never written out as it is: ``on_miss``
  (:class:`faceanon.protocol.OnMiss`) decides.

Output layout: a file given on the command line is written as ``OUTDIR/<its name>``; a
folder's images are written under ``OUTDIR`` with the folder's structure mirrored (the
folder's own name is not repeated). When two inputs would write the same output path, the
plan is refused before it starts, naming both, rather than silently overwriting one.

Randomness follows the benchmark's rule (:func:`faceanon.protocol.image_rng`): each
image's generator comes from the seed, the method, ``k`` and the image's key (its output
path relative to ``OUTDIR``), so results do not depend on the order files are found or
given in, and an image laid out as in the dataset gets the benchmark's very pixels.
Set-based methods (k-Same) get one generator for the set of images with faces
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
from faceanon.imageio import ImageReadError, is_image_path, read_image, write_image
from faceanon.methods import Method, needs_whole_set
from faceanon.protocol import OnMiss, Variant, image_rng, set_rng

__all__ = ["Job", "Outcome", "PlanError", "Result", "anonymize_files", "plan_jobs"]


@dataclass
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path
    key: str  # output path relative to OUTDIR, POSIX style: names the image in results


@dataclass
class Result:
    """What became of one job.

    ``status`` is ``ok`` (faces anonymized), ``whole`` (no face, anonymized whole),
    ``miss`` (no face: not written, an error), ``skipped`` (no face: not written, not an
    error) or ``failed`` (unreadable or unwritable: ``error`` says why).
    """

    job: Job
    status: str = "pending"
    faces: int = 0
    boxes: list = field(default_factory=list)
    error: str | None = None

    @property
    def written(self) -> bool:
        return self.status in {"ok", "whole"}

    def as_dict(self) -> dict:
        return {
            "input": str(self.job.source),
            "output": str(self.job.target) if self.written else None,
            "status": self.status,
            "faces": self.faces,
            "boxes": [list(b) for b in self.boxes],
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


def plan_jobs(inputs: list[Path], outdir: Path) -> tuple[list[Job], list[Path]]:
    """Pair every input image with its output path, refusing unsafe plans.

    Returns the jobs and the files inside input folders that were ignored because their
    suffix is not an image suffix. Files named on the command line are always attempted,
    whatever their suffix, so that a wrong file gets a clear error instead of silence.

    Raises
    ------
    PlanError
        When the output folder is an input folder or inside one, when an output would be
        an input file, or when two inputs would write the same output.
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
                if not is_image_path(path):
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


def _read(result: Result) -> np.ndarray | None:
    try:
        return read_image(result.job.source)
    except ImageReadError as error:
        problem = error.problem
    except Exception as error:  # e.g. Pillow's DecompressionBombError: still one file
        problem = f"could not read ({type(error).__name__}: {error})"
    result.status, result.error = "failed", problem
    return None


def _write(result: Result, image: np.ndarray, boxes: Sequence) -> None:
    try:
        write_image(result.job.target, image)
    except (OSError, ValueError, KeyError) as error:
        result.status, result.error = "failed", f"could not write {result.job.target}: {error}"
        return
    result.boxes = [tuple(int(v) for v in box) for box in boxes]


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
    on_problem: Callable[[Result], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> Outcome:
    """Anonymize every job's image into its target.

    Parameters
    ----------
    jobs : sequence of Job
        From :func:`plan_jobs`.
    method : Method
        The method object (made once by the caller).
    variant : Variant
        Its registry name and checked ``k`` (:meth:`Method.check_k`): what the images'
        generators are seeded with.
    detector : str or faceanon.detect.Detector
        Finds the faces.
    region, margin
        As in :func:`faceanon.detect.find_regions`.
    seed : int
        Seed of the generators (:func:`faceanon.protocol.image_rng`).
    on_miss : OnMiss or str
        What happens to an image with no face; an unknown value raises
        :class:`faceanon.protocol.OnMissError` before any file is read.
    on_problem : callable, optional
        Called with a result as soon as it fails, misses or is skipped.
    on_step : callable, optional
        Called after each image has been read and detected in.

    Returns
    -------
    Outcome

    Raises
    ------
    faceanon.methods.MethodError
        When the method refuses the images (e.g. k-Same with fewer than k faces); the
        files written before it stay.
    """
    from faceanon.detect import anonymization_regions

    started = time.perf_counter()
    on_miss = OnMiss.parse(on_miss)
    notify = on_problem or (lambda result: None)
    step = on_step or (lambda: None)
    results = [Result(job) for job in jobs]

    def regions(result: Result) -> tuple[np.ndarray | None, list]:
        image = _read(result)
        if image is None:
            notify(result)
            return None, []
        found = anonymization_regions(image, detector=detector, region=region, margin=margin,
                                      on_miss=on_miss)
        if found.found:
            result.status, result.faces = "ok", len(found.boxes)
        elif found.publishable:
            result.status = "whole"
        else:
            result.status = "miss" if on_miss is OnMiss.FAIL else "skipped"
            result.error = "no face found"
            notify(result)
            return None, []
        return image, list(found.boxes)

    def write(result: Result, image: np.ndarray, boxes: list) -> None:
        _write(result, image, boxes)
        if result.status == "failed":
            notify(result)

    if needs_whole_set(method):
        # k-Same needs every face at once: hold the readable images with faces in memory,
        # then anonymize them in one call.
        held: list[tuple[Result, np.ndarray, list]] = []
        for result in results:
            image, boxes = regions(result)
            if image is not None:
                held.append((result, image, boxes))
            step()
        if held:
            rng = set_rng(seed, variant.method, variant.k, [r.job.key for r, _, _ in held])
            outputs = method.anonymize_set([image for _, image, _ in held],
                                           [boxes for _, _, boxes in held], k=variant.k,
                                           rng=rng)
            for (result, _, boxes), output in zip(held, outputs, strict=True):
                write(result, output, boxes)
    else:
        for result in results:
            image, boxes = regions(result)
            if image is not None:
                rng = image_rng(seed, variant.method, variant.k, result.job.key)
                write(result, method.anonymize(image, boxes, k=variant.k, rng=rng), boxes)
            step()
    return Outcome(results, time.perf_counter() - started)
