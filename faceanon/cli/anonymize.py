"""``faceanon anonymize``: check the options, run :func:`faceanon.anonymize.anonymize_files`,
print what happened.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from faceanon.anonymize import Outcome, PlanError, Result, anonymize_files, plan_jobs
from faceanon.cli.options import json_option, output_option
from faceanon.methods import available_methods
from faceanon.protocol import OnMiss, Variant


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

    def problem(self, result: Result) -> None:
        if result.status == "failed":
            self.line(f"error: {result.job.source}: {result.error}")
        else:
            prefix = "skipped" if result.status == "skipped" else "error"
            self.line(f"{prefix}: {result.job.source}: {result.error}, not written")

    def step(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _make_method(method_name: str, weights: Path | None):
    from faceanon.methods import MethodError, get_method

    options = {} if weights is None else {"weights": weights}
    try:
        return get_method(method_name, **options)
    except TypeError:
        raise MethodError(f"{method_name} takes no --weights") from None


def _summary_line(outcome: Outcome, ignored: int, output: Path) -> str:
    totals = outcome.totals
    parts = [f"{totals['written']} of {totals['files']} files written"]
    if totals["frames"] > totals["written"]:
        parts.append(f"{totals['frames']} frames")
    parts.append(f"{totals['faces']} faces")
    if totals["whole"]:
        parts.append(f"{totals['whole']} anonymized whole (no face)")
    parts.append(f"{totals['misses']} misses")
    if totals["skipped"]:
        parts.append(f"{totals['skipped']} skipped (no face)")
    parts.append(f"{totals['failures']} failures")
    if ignored:
        parts.append(f"{ignored} non-image files ignored")
    return f"{', '.join(parts)} in {outcome.seconds:.1f} s -> {output}"


def _unknown_type_hint(outcome: Outcome) -> str | None:
    """A hint when files failed that are not image types by their name."""
    from faceanon.formats import is_document_path

    unknown = [r for r in outcome.results
               if r.status == "failed" and not is_document_path(r.job.source)]
    if not unknown:
        return None
    return (f"note: {len(unknown)} of the failed files are not image types by their name; "
            "--ignore-unknown leaves such files in input folders out")


@click.command("anonymize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@output_option(help="Folder for the anonymized images (created; never inside an input "
                    "folder).")
@click.option("--method", "method_name", default="pixelate", show_default=True,
              help=f"Anonymization method: {', '.join(available_methods())}.")
@click.option("--k", "k", type=int, default=None,
              help="Method strength; its meaning depends on the method (e.g. pixelate: "
                   "blocks per side, smaller hides more).")
@click.option("--detector", default="hog", show_default=True,
              help="Face detector: hog, cnn, haar-face (or haar-eyes/haar-glasses with "
                   "--region eyes).")
@click.option("--region", type=click.Choice(["face", "eyes"]), default="face",
              show_default=True, help="What to anonymize in each detected face.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Grow every box by this fraction of its size.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random methods; the same seed gives the same outputs.")
@click.option("--on-miss", type=click.Choice([m.value for m in OnMiss]),
              default=OnMiss.FAIL.value, show_default=True,
              help="A frame with no face found: fail (the file is not written, an "
                   "error), skip (not written, no error) or whole (that frame is "
                   "anonymized whole).")
@click.option("--ignore-unknown", is_flag=True,
              help="Leave out files in input folders whose name is not an image type "
                   "(by default every file is tried, and one that is not an image is an "
                   "error).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels than this (all frames together), "
                   "before decoding them. Default: Pillow's 89.5 million, lowered to what "
                   "half of the available memory holds at about 50 bytes per pixel.")
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint for a generative method (deepprivacy), e.g. from "
                   "`faceanon train-gan`.")
def anonymize_command(inputs, output, method_name, k, detector, region, margin, seed, on_miss,
                      ignore_unknown, max_pixels, as_json, quiet, weights):
    """Anonymize the faces in image files and folders (recursively) into OUTPUT.

    Reads JPEG, PNG (also animated), TIFF (every page), GIF (every frame), WebP (also
    animated), BMP and PPM/PGM/PBM files, at 8 or 16 bits or float, grey, colour, palette,
    CMYK, with or without alpha. Every frame is anonymized, and each output is the same
    kind of file under the same name (format, mode, bit depth, frame count, timing, ICC
    profile), upright and with no other metadata. A frame in which no face is found is
    never written unanonymized (see --on-miss). The exit code is 1 when any file failed
    (a file that is not an image included, see --ignore-unknown) or, with --on-miss fail,
    had a frame with no face.
    """
    from faceanon.detect import DetectorError, get_detector
    from faceanon.methods import MethodError

    try:
        method = _make_method(method_name, weights)
        variant = Variant(method_name, method.check_k(k))
        face_detector = get_detector(detector)
    except (MethodError, DetectorError) as error:
        raise click.UsageError(str(error)) from None
    k_ignored = k is not None and not method.uses_k
    if k_ignored:
        click.echo(f"note: {method_name} takes no k; --k {k} is ignored", err=True)
    if method_name == "mask" and region == "eyes":
        raise click.UsageError(
            "--method mask finds the eyes inside each face itself; use --region face")
    if face_detector.finds == "eye" and region != "eyes":
        raise click.UsageError(f"detector {detector} finds eyes; add --region eyes")
    try:
        jobs, ignored = plan_jobs(list(inputs), output, ignore_unknown=ignore_unknown)
    except PlanError as error:
        raise click.UsageError(str(error)) from None
    if not jobs:
        raise click.UsageError("no image files found in the inputs" if ignore_unknown
                               else "no files found in the inputs")

    reporter = Reporter(len(jobs), quiet=quiet, label=f"anonymize ({method_name})")
    try:
        outcome = anonymize_files(jobs, method=method, variant=variant, detector=face_detector,
                                  region=region, margin=margin, seed=seed, on_miss=on_miss,
                                  max_pixels=max_pixels, on_problem=reporter.problem,
                                  on_step=reporter.step)
    finally:
        reporter.close()

    if as_json:
        document = {
            "method": method.describe(),
            "k": variant.k,
            "k_ignored": k_ignored,
            "detector": detector,
            "region": region,
            "margin": margin,
            "seed": seed,
            "on_miss": on_miss,
            "ignore_unknown": ignore_unknown,
            "max_pixels": max_pixels,
            "output": str(output),
            "ok": outcome.ok,
            "files": [r.as_dict() for r in outcome.results],
            "totals": {**outcome.totals, "ignored_non_images": len(ignored),
                       "seconds": round(outcome.seconds, 3)},
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(_summary_line(outcome, len(ignored), output))
    hint = _unknown_type_hint(outcome)
    if hint:
        click.echo(hint, err=True)
    if not outcome.ok:
        sys.exit(1)
