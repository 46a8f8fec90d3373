"""``faceanon anonymize``: anonymize the faces in image files and folders.

Behaviour a privacy tool owes its user:

* EXIF orientation is applied before detection (:func:`faceanon.imageio.read_image`), and
  outputs carry no metadata at all (:func:`faceanon.imageio.write_image`).
* Inputs are never overwritten: an output folder equal to or inside an input folder, or a
  planned output that is an input file, is refused before anything is read.
* A file that cannot be read gets one line naming it and the problem; the other files are
  still processed, and the exit code is 1.
* An image with no face is never written out as it is: ``--on-miss`` decides.

Output layout: a file given on the command line is written as ``OUTDIR/<its name>``; a
folder's images are written under ``OUTDIR`` with the folder's structure mirrored (the
folder's own name is not repeated). When two inputs would write the same output path, the
run is refused before it starts, naming both, rather than silently overwriting one.

Randomness: each image gets its own generator, seeded from ``--seed`` and the image's
output path relative to ``OUTDIR``, so results do not depend on the order files are found
or given in. Set-based methods (k-Same) see all images with faces at once and get one
generator seeded from ``--seed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from faceanon.imageio import ImageReadError, is_image_path, read_image, write_image
from faceanon.methods import available_methods

ON_MISS = ("fail", "skip", "whole")


@dataclass
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path
    key: str  # output path relative to OUTDIR, POSIX style: names the image in results


@dataclass
class Result:
    job: Job
    status: str = "pending"  # ok | whole | miss | skipped | failed
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


class PlanError(click.UsageError):
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


def image_rng(seed: int, key: str) -> np.random.Generator:
    """The generator for one image: from the seed and the image's key, not its position."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:16], "little")])


class Reporter:
    """Per-file lines and the progress bar, on stderr, without tearing each other."""

    def __init__(self, total: int, *, quiet: bool, label: str):
        from tqdm import tqdm

        stream = sys.stderr
        show = not quiet and total > 1 and hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, desc=label, unit="img", file=stream, disable=not show)

    def line(self, text: str) -> None:
        from tqdm import tqdm

        if self.bar.disable:
            click.echo(text, err=True)
        else:
            tqdm.write(text, file=sys.stderr)

    def step(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


@click.command("anonymize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the anonymized images (created; never inside an input folder).",
)
@click.option(
    "--method",
    "method_name",
    default="pixelate",
    show_default=True,
    help=f"Anonymization method: {', '.join(available_methods())}.",
)
@click.option(
    "--k",
    "k",
    type=int,
    default=None,
    help="Method strength; its meaning depends on the method (e.g. pixelate: blocks "
    "per side, smaller hides more).",
)
@click.option(
    "--detector",
    default="hog",
    show_default=True,
    help="Face detector: hog, cnn, haar-face (or haar-eyes/haar-glasses with --region eyes).",
)
@click.option(
    "--region",
    type=click.Choice(["face", "eyes"]),
    default="face",
    show_default=True,
    help="What to anonymize in each detected face.",
)
@click.option(
    "--margin",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Grow every box by this fraction of its size.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the random methods; the same seed gives the same outputs.",
)
@click.option(
    "--on-miss",
    type=click.Choice(ON_MISS),
    default="fail",
    show_default=True,
    help="No face found: fail (not written, error), skip (not written, no error) "
    "or whole (anonymize the whole image).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document with per-file results and totals on stdout.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint for a generative method (deepprivacy), e.g. from `faceanon train-gan`.",
)
def anonymize_command(
    inputs, outdir, method_name, k, detector, region, margin, seed, on_miss, as_json, quiet,
    weights,
):
    """Anonymize the faces in image files and folders (recursively) into OUTDIR.

    Outputs keep their file names and formats and carry no metadata. An image in which
    no face is found is never written unanonymized (see --on-miss). The exit code is 1
    when any file failed or (with --on-miss fail) had no face.
    """
    from faceanon.detect import DetectorError, get_detector
    from faceanon.methods import Method, MethodError, get_method

    started = time.perf_counter()
    try:
        options = {} if weights is None else {"weights": weights}
        try:
            method = get_method(method_name, **options)
        except TypeError:
            raise MethodError(f"{method_name} takes no --weights") from None
        k_used = method.check_k(k)
        face_detector = get_detector(detector)
    except (MethodError, DetectorError) as error:
        raise click.UsageError(str(error)) from None
    k_ignored = k is not None and not method.uses_k
    if k_ignored:
        click.echo(f"note: {method_name} takes no k; --k {k} is ignored", err=True)
    if method_name == "mask" and region == "eyes":
        raise click.UsageError(
            "--method mask finds the eyes inside each face itself; use --region face"
        )
    if face_detector.finds == "eye" and region != "eyes":
        raise click.UsageError(f"detector {detector} finds eyes; add --region eyes")

    jobs, ignored = plan_jobs(list(inputs), outdir)
    if not jobs:
        raise click.UsageError("no image files found in the inputs")

    set_based = type(method).anonymize_set is not Method.anonymize_set
    results = [Result(job) for job in jobs]
    reporter = Reporter(len(jobs), quiet=quiet, label=f"anonymize ({method_name})")

    def regions(result: Result) -> tuple[np.ndarray | None, list]:
        """Read and detect; record failures and misses. Returns (image, boxes)."""
        from faceanon.detect import find_regions

        try:
            image = read_image(result.job.source)
        except ImageReadError as error:
            problem = error.problem
        except Exception as error:  # e.g. Pillow's DecompressionBombError: still one file
            problem = f"could not read ({type(error).__name__}: {error})"
        else:
            problem = None
        if problem is not None:
            result.status, result.error = "failed", problem
            reporter.line(f"error: {result.job.source}: {problem}")
            return None, []
        boxes = find_regions(image, detector=face_detector, region=region, margin=margin)
        if boxes:
            result.status = "ok"
            result.faces = len(boxes)
            return image, boxes
        if on_miss == "whole":
            result.status = "whole"
            return image, [(0, 0, image.shape[1], image.shape[0])]
        result.status = "miss" if on_miss == "fail" else "skipped"
        result.error = "no face found"
        prefix = "error" if on_miss == "fail" else "skipped"
        reporter.line(f"{prefix}: {result.job.source}: no face found, not written")
        return None, []

    def write(result: Result, image: np.ndarray, boxes: list) -> None:
        try:
            write_image(result.job.target, image)
        except (OSError, ValueError, KeyError) as error:
            result.status, result.error = "failed", f"could not write {result.job.target}: {error}"
            reporter.line(f"error: {result.job.source}: {result.error}")
            return
        result.boxes = [tuple(int(v) for v in box) for box in boxes]

    try:
        if set_based:
            # k-Same needs every face at once: hold the readable images with faces in
            # memory, then anonymize them in one call.
            held: list[tuple[Result, np.ndarray, list]] = []
            for result in results:
                image, boxes = regions(result)
                if image is not None:
                    held.append((result, image, boxes))
                reporter.step()
            if held:
                rng = np.random.default_rng(seed)
                outputs = method.anonymize_set(
                    [image for _, image, _ in held], [b for _, _, b in held], k=k_used, rng=rng
                )
                for (result, _, boxes), output in zip(held, outputs, strict=True):
                    write(result, output, boxes)
        else:
            for result in results:
                image, boxes = regions(result)
                if image is not None:
                    output = method.anonymize(
                        image, boxes, k=k_used, rng=image_rng(seed, result.job.key)
                    )
                    write(result, output, boxes)
                reporter.step()
    except MethodError as error:
        raise click.ClickException(f"{method_name}: {error}") from None
    finally:
        reporter.close()

    seconds = time.perf_counter() - started
    totals = {
        "files": len(results),
        "written": sum(r.written for r in results),
        "faces": sum(r.faces for r in results),
        "misses": sum(r.status == "miss" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "whole": sum(r.status == "whole" for r in results),
        "failures": sum(r.status == "failed" for r in results),
        "ignored_non_images": len(ignored),
        "seconds": round(seconds, 3),
    }
    failed = totals["failures"] > 0 or totals["misses"] > 0
    if as_json:
        document = {
            "method": method.describe(),
            "k": k_used,
            "k_ignored": k_ignored,
            "detector": detector,
            "region": region,
            "margin": margin,
            "seed": seed,
            "on_miss": on_miss,
            "output": str(outdir),
            "ok": not failed,
            "files": [r.as_dict() for r in results],
            "totals": totals,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        parts = [
            f"{totals['written']} of {totals['files']} files written",
            f"{totals['faces']} faces",
        ]
        if totals["whole"]:
            parts.append(f"{totals['whole']} anonymized whole (no face)")
        parts.append(f"{totals['misses']} misses")
        if totals["skipped"]:
            parts.append(f"{totals['skipped']} skipped (no face)")
        parts.append(f"{totals['failures']} failures")
        if ignored:
            parts.append(f"{len(ignored)} non-image files ignored")
        click.echo(f"{', '.join(parts)} in {seconds:.1f} s -> {outdir}")
    if failed:
        sys.exit(1)
