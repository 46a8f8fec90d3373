"""Who can still be recognised in an anonymized clip: leak rates per method, tracked or not.

For the real clip of ``$FACEANON_DATA/video`` and the photos of its two people, prints one
line per case (method, k, tracking on or off):

* ``fps``: frames anonymized per second (decode + detect + track + anonymize + encode);
* ``leak``: share of all frames in which each person is identified by the attacker
  (dlib HOG + ResNet, threshold 0.6; see :mod:`faceanon.video_bench`), and ``vis``: the
  same over the frames where the attacker identifies the person in the original clip;
* ``any``: people identified in at least one frame;
* ``bare frames`` / ``bare faces``: share of frames with a reference face (dlib CNN on the
  original frames) not covered by the anonymized boxes, and share of reference faces not
  covered.

Then, for every method run both ways, the leak rate in the frames where the detector
missed a face (a reference face not covered by the run *without* tracking), with and
without tracking, for the HOG attacker and for a stronger attacker (dlib CNN detection,
which finds faces the anonymizing HOG detector misses).

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/video_leak_rates.py
    python benchmarks/video_leak_rates.py --frames 60 --cases blur:31           # quicker

The reference detections take about 4 s per frame on one core; they are cached outside the
repository (``~/.cache/faceanon/``), keyed by the clip's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon.datasets import DATA_ENV  # noqa: E402
from faceanon.video_anonymize import anonymize_video  # noqa: E402
from faceanon.video_bench import (  # noqa: E402
    DlibAttacker,
    measure_clip,
    missed_frames,
    reference_faces,
    summarize,
)

PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")
SHORT = {"lin-manuel-miranda": "Lin", "alex-lacamoire": "Alex"}
#: method:k (k empty for methods without one); each runs with and without tracking
#: unless marked "track-only" in ONLY_TRACKED.
DEFAULT_CASES = (
    "blur:15",
    "blur:31",
    "blur:61",
    "pixelate:8",
    "pixelate:16",
    "noise:50",
    "blackout:",
    "ksame:2",
    "deepprivacy:",
)
ONLY_TRACKED = {"blur:61", "noise:50", "ksame:2", "deepprivacy:"}


def clip_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_reference(clip: Path, frames: int | None, cache: Path) -> list:
    """The CNN reference faces of every frame, from the cache or computed and cached."""
    key = {"clip_sha256": clip_sha256(clip), "detector": "cnn", "upsample": 1}
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if all(stored.get(k) == v for k, v in key.items()):
            boxes = stored["frames"]
            if frames is None or len(boxes) >= frames:
                return [[tuple(b[:4]) for b in f] for f in boxes[:frames]]
    started = time.perf_counter()
    print(
        "reference faces (dlib CNN, up-sampled once) on every original frame ...", file=sys.stderr
    )
    boxes = reference_faces(clip, detector="cnn", upsample=1, max_frames=frames)
    print(f"  {len(boxes)} frames in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if frames is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**key, "frames": [[list(b) for b in f] for f in boxes]}))
    return boxes


def fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = Path(os.environ.get(DATA_ENV, "../shared/datasets")) / "video"
    parser.add_argument("--clip", type=Path, default=data / "short_hamilton_clip.mp4")
    parser.add_argument("--frames", type=int, default=None, help="first N frames only")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "faceanon" / "video-reference.json"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument(
        "--strong-cases",
        default="blur:31,blackout:",
        help="cases whose missed frames the CNN attacker also searches (4 s a frame); '' for none",
    )
    args = parser.parse_args()

    clip = args.clip
    gallery = {p: clip.parent / f"{p}.png" for p in PEOPLE}
    reference = cached_reference(clip, args.frames, args.cache)
    attacker = DlibAttacker()
    original = measure_clip(
        clip,
        gallery=gallery,
        attacker=attacker,
        max_frames=args.frames,
        anonymized=[[] for _ in reference],
        reference=reference,
    )
    clear = summarize(original, people=PEOPLE)
    report = {"clip": str(clip), "frames": len(original), "cases": {}}
    report["cases"]["clear"] = {"rows": [r.as_record() for r in original]}

    header = (
        f"{'case':<24} {'fps':>6} {'leak Lin':>8} {'Alex':>5} {'vis Lin':>7} "
        f"{'Alex':>5} {'any':>9} {'bare frames':>11} {'bare faces':>10}"
    )
    lines = [header, "-" * len(header)]

    def line(name, summary, fps=None):
        anywhere = "+".join(SHORT[p] for p in PEOPLE if summary.identified_anywhere[p])
        vis = summary.leak_rate_visible or {}
        lines.append(
            f"{name:<24} {fmt(fps, 1):>6} {fmt(summary.leak_rate[PEOPLE[0]]):>8} "
            f"{fmt(summary.leak_rate[PEOPLE[1]]):>5} {fmt(vis.get(PEOPLE[0])):>7} "
            f"{fmt(vis.get(PEOPLE[1])):>5} {anywhere or 'nobody':>9} "
            f"{fmt(summary.uncovered_frame_share):>11} {fmt(summary.uncovered_face_share):>10}"
        )
        print(lines[-1], file=sys.stderr)

    line("clear (original)", clear)
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.cases.split(","):
            method, _, k = case.partition(":")
            k = int(k) if k else None
            modes = (True,) if case in ONLY_TRACKED else (True, False)
            for tracking in modes:
                strength = "" if k is None else f" k{k}"
                name = f"{method}{strength} {'tracked' if tracking else 'per-frame'}"
                out = Path(scratch) / f"{method}-{k}-{tracking}.mp4"
                try:
                    result = anonymize_video(
                        clip, out, method=method, k=k, tracking=tracking, max_frames=args.frames
                    )
                except ValueError as error:  # e.g. k-Same with fewer tracks than k
                    lines.append(f"{name:<24} refused: {error}")
                    print(lines[-1], file=sys.stderr)
                    continue
                boxes = [f.regions for f in result.boxes]
                rows = measure_clip(
                    out, gallery=gallery, attacker=attacker, anonymized=boxes, reference=reference
                )
                summary = summarize(rows, people=PEOPLE, original=original, fps=result.fps)
                line(name, summary, result.fps)
                runs[(method, k, tracking)] = (out, boxes, rows)
                report["cases"][name] = {
                    "result": result.describe(),
                    "summary": {**summary.__dict__},
                    "rows": [r.as_record() for r in rows],
                }

        lines.append("")
        lines.append(
            "leak rate in the frames the detector missed a face (reference face not "
            "covered without tracking)"
        )
        strong = DlibAttacker(detector="cnn")
        strong_cases = {c for c in args.strong_cases.split(",") if c}
        sub = (
            f"{'case':<16} {'missed':>6} {'attacker':>9} {'Lin no-track':>12} "
            f"{'Lin tracked':>11} {'Alex no-track':>13} {'Alex tracked':>12}"
        )
        lines += [sub, "-" * len(sub)]
        for (method, k, tracking), (_, boxes, _) in list(runs.items()):
            if tracking or (method, k, True) not in runs:
                continue
            missed = missed_frames(boxes, reference)
            case = f"{method}:{'' if k is None else k}"
            for label, who in (("hog", attacker), ("cnn", strong)):
                if not missed or (label == "cnn" and case not in strong_cases):
                    continue
                leaks, records = {}, {}
                for mode in (False, True):
                    out = runs[(method, k, mode)][0]
                    rows = measure_clip(out, gallery=gallery, attacker=who, frames=missed)
                    leaks[mode] = summarize(rows, people=PEOPLE).leak_rate
                    records[mode] = [r.as_record() for r in rows]
                name = f"{method}{'' if k is None else f' k{k}'}"
                lines.append(
                    f"{name:<16} {len(missed):>6} {label:>9} {fmt(leaks[False][PEOPLE[0]]):>12} "
                    f"{fmt(leaks[True][PEOPLE[0]]):>11} {fmt(leaks[False][PEOPLE[1]]):>13} "
                    f"{fmt(leaks[True][PEOPLE[1]]):>12}"
                )
                print(lines[-1], file=sys.stderr)
                report.setdefault("missed", {})[f"{name} {label}"] = {
                    "frames": missed,
                    "no_tracking": leaks[False],
                    "tracking": leaks[True],
                    "rows_no_tracking": records[False],
                    "rows_tracking": records[True],
                }
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
