"""``faceanon anonymize``: check the options, run :func:`faceanon.anonymize.anonymize_files`
on the images and :func:`faceanon.video_anonymize.anonymize_video` on the videos, print
what happened.

Files are dispatched by kind: a file with a video suffix (:data:`faceanon.video.VIDEO_SUFFIXES`)
is a video, every other file an image document. Videos are read and written with PyAV,
their faces tracked across frames; each is written under a temporary name and renamed when
complete, so a failed video leaves no output at all.
"""

from __future__ import annotations

import json
import sys
import time
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


class FrameProgress:
    """The progress bar of one video, in frames (every pass: k-Same decodes twice)."""

    def __init__(self, name: str, *, quiet: bool):
        from tqdm import tqdm

        stream = sys.stderr
        show = not quiet and hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=None, desc=name, unit="frame", file=stream, disable=not show,
                        leave=False)

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _anonymize_videos(jobs, *, method, variant, detector, margin, seed, audio, quiet,
                      reporter: Reporter) -> list[Result]:
    """Anonymize every video job with tracking; one :class:`Result` per job.

    A video that cannot be read or written is recorded as ``failed`` with the problem
    (:class:`faceanon.video.VideoError` names the file); the other videos still run. A
    method that cannot run on a video (k-Same with fewer tracks than k) fails that video.
    """
    from faceanon.methods import MethodError
    from faceanon.video import VideoError
    from faceanon.video_anonymize import anonymize_video

    tracker_options = None if margin is None else {"margin": margin}
    results = []
    for job in jobs:
        result = Result(job)
        progress = FrameProgress(job.source.name, quiet=quiet)
        try:
            done = anonymize_video(job.source, job.target, method=method, k=variant.k,
                                   detector=detector, seed=seed, audio=audio,
                                   tracker_options=tracker_options, progress=progress)
        except VideoError as error:
            result.status = "failed"
            result.error = (error.problem if error.path == job.source
                            else f"could not write {error.path}: {error.problem}")
            reporter.problem(result)
        except MethodError as error:
            result.status, result.error = "failed", str(error)
            reporter.problem(result)
        else:
            result.status = "ok"
            result.frames = done.frames
            result.faces = sum(len(frame.boxes) for frame in done.boxes)
            result.boxes = [[tuple(int(v) for v in box) for box in frame.regions]
                            for frame in done.boxes]
        finally:
            progress.close()
        reporter.step()
        results.append(result)
    return results


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
    from faceanon.video import is_video_path

    unknown = [r for r in outcome.results if r.status == "failed"
               and not (is_document_path(r.job.source) or is_video_path(r.job.source))]
    if not unknown:
        return None
    return (f"note: {len(unknown)} of the failed files are not image types by their name; "
            "--ignore-unknown leaves such files in input folders out")


@click.command("anonymize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@output_option(help="Folder for the anonymized images and videos (created; never inside "
                    "an input folder).")
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
@click.option("--margin", type=click.FloatRange(min=0), default=None,
              help="Grow every box by this fraction of its size. Default: 0 for images, "
                   "0.2 for videos (the tracker's padding; a moving face gets more).")
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
@click.option("--audio", type=click.Choice(["copy", "drop"]), default="copy",
              show_default=True,
              help="Videos: copy the soundtrack unchanged (no re-encoding) or leave it out.")
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint for a generative method (deepprivacy), e.g. from "
                   "`faceanon train-gan`.")
def anonymize_command(inputs, output, method_name, k, detector, region, margin, seed, on_miss,
                      ignore_unknown, max_pixels, audio, as_json, quiet, weights):
    """Anonymize the faces in images, videos and folders (recursively) into OUTPUT.

    Reads JPEG, PNG (also animated), TIFF (every page), GIF (every frame), WebP (also
    animated), BMP and PPM/PGM/PBM files, at 8 or 16 bits or float, grey, colour, palette,
    CMYK, with or without alpha. Every frame is anonymized, and each output is the same
    kind of file under the same name (format, mode, bit depth, frame count, timing, ICC
    profile), upright and with no other metadata. A frame in which no face is found is
    never written unanonymized (see --on-miss). The exit code is 1 when any file failed
    (a file that is not an image included, see --ignore-unknown) or, with --on-miss fail,
    had a frame with no face.

    Videos (.mp4, .m4v, .mov, .mkv, .webm; in folders too, mixed with images) keep their
    size, frame rate and frame count, their audio (--audio) and no metadata. The detector
    runs on every frame and faces are tracked across frames: a box is held for a few
    frames after the detector loses a face, and padded while it moves, so a one-frame miss
    does not show a bare face. k-Same averages whole tracks over the clip; the GAN keeps
    one face per track. A video frame with no face is written as it is (--on-miss applies
    to images). A progress bar counts frames.
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
        raise click.UsageError("no image or video files found in the inputs" if ignore_unknown
                               else "no files found in the inputs")
    from faceanon.video import is_video_path

    video_jobs = [job for job in jobs if is_video_path(job.source)]
    image_jobs = [job for job in jobs if not is_video_path(job.source)]
    if video_jobs and region != "face":
        raise click.UsageError("videos are anonymized by face; --region eyes is for images "
                               f"only ({video_jobs[0].source} is a video)")

    reporter = Reporter(len(jobs), quiet=quiet, label=f"anonymize ({method_name})")
    started = time.perf_counter()
    try:
        outcome = anonymize_files(image_jobs, method=method, variant=variant,
                                  detector=face_detector, region=region,
                                  margin=0.0 if margin is None else margin, seed=seed,
                                  on_miss=on_miss, max_pixels=max_pixels,
                                  on_problem=reporter.problem, on_step=reporter.step)
        videos = _anonymize_videos(video_jobs, method=method, variant=variant,
                                   detector=face_detector, margin=margin, seed=seed,
                                   audio=audio, quiet=quiet, reporter=reporter)
    finally:
        reporter.close()
    by_job = {id(r.job): r for r in [*outcome.results, *videos]}
    outcome = Outcome([by_job[id(job)] for job in jobs], time.perf_counter() - started)

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
            "audio": audio,
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
