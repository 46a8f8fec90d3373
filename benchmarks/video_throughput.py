"""Frames per second of video anonymization on this machine, against deface's own figure.

Prints, measured in one run on the same clip:

1. faceanon: ``anonymize_video`` (decode and encode on their own threads, the face
   detector once per frame, tracking, blur), as wall-clock frames per second from opening
   the clip to the renamed output, with the share of the time spent in the detector;
2. the detector alone on frames already decoded (the ceiling the detector sets);
3. deface (github.com/ORB-HD/deface, CenterFace through ONNX Runtime): its own frames per
   second, as its progress bar reports it, and its wall-clock figure including start-up;
4. the ratios faceanon / deface.

deface depends on ``opencv-python`` (not the headless build this project uses), so it
lives in a virtual environment of its own, never in the project's::

    python3 -m venv /tmp/deface-venv
    /tmp/deface-venv/bin/pip install deface onnxruntime

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/video_throughput.py
    python benchmarks/video_throughput.py --deface /tmp/deface-venv/bin/deface --repeat 3

Each measurement is repeated ``--repeat`` times, alternating the tools, and the best run
is kept (the machine is shared; the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon.datasets import DATA_ENV  # noqa: E402
from faceanon.detect import get_detector  # noqa: E402
from faceanon.video import probe_video, read_frames  # noqa: E402
from faceanon.video_anonymize import anonymize_video  # noqa: E402

#: tqdm's progress line: frames done and elapsed time, e.g. "300it [01:19, 3.78it/s]" (deface
#: reads through imageio, which gives no total) or "275/275 [00:21<00:00, 12.9it/s]".
TQDM_LINE = re.compile(r"(\d+)(?:/\d+)? ?(?:it)? \[(?:(\d+):)?(\d+):(\d+)")


def faceanon_run(clip: Path, out: Path, *, method: str, k: int | None, detector: str) -> dict:
    result = anonymize_video(clip, out, method=method, k=k, detector=detector)
    return {
        "fps": result.fps,
        "frames": result.frames,
        "seconds": result.seconds,
        "detect_share": result.detect_seconds / result.seconds,
    }


def detector_only_fps(clip: Path, detector: str) -> float:
    frames = [f.image for f in read_frames(clip)]
    found_by = get_detector(detector)
    found_by.detect(frames[0])  # model loaded before timing
    started = time.perf_counter()
    for image in frames:
        found_by.detect(image)
    return len(frames) / (time.perf_counter() - started)


def deface_run(deface: Path, clip: Path, out: Path, frames: int) -> dict:
    """Run deface on the clip; its own rate from its progress bar, and the wall clock."""
    started = time.perf_counter()
    completed = subprocess.run(
        [str(deface), str(clip), "-o", str(out), "--keep-audio"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0 or not out.is_file():
        raise RuntimeError(f"deface failed ({completed.returncode}): {completed.stderr[-2000:]}")
    # deface's own figure: the frames its progress bar counted over the time it shows (the
    # average, not tqdm's smoothed rate of the last moments).
    matches = TQDM_LINE.findall(completed.stderr.replace("\r", "\n"))
    own, counted = None, None
    if matches:
        done, hours, minutes, seconds = matches[-1]
        elapsed = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
        counted = int(done)
        own = counted / elapsed if elapsed else None
    return {
        "fps": own,
        "frames": counted,
        "wall_fps": (counted or frames) / wall,
        "seconds": wall,
        "output": probe_video(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = Path(os.environ.get(DATA_ENV, "../shared/datasets")) / "video"
    parser.add_argument("--clip", type=Path, default=data / "short_hamilton_clip.mp4")
    parser.add_argument("--method", default="blur")
    parser.add_argument("--k", type=int, default=31)
    parser.add_argument("--detector", default="hog")
    parser.add_argument("--deface", type=Path, default=Path("/tmp/deface-venv/bin/deface"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    info = probe_video(args.clip)
    print(
        f"clip: {args.clip.name}, {info.width}x{info.height}, {info.frames} frames, "
        f"{float(info.frame_rate):.2f} fps; {os.cpu_count()} CPU cores"
    )
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(args.repeat):
            ours.append(
                faceanon_run(
                    args.clip,
                    Path(scratch) / f"ours{attempt}.mp4",
                    method=args.method,
                    k=args.k,
                    detector=args.detector,
                )
            )
            print(f"  faceanon run {attempt + 1}: {ours[-1]['fps']:.2f} frames/s", file=sys.stderr)
            if args.deface.is_file():
                theirs.append(
                    deface_run(
                        args.deface, args.clip, Path(scratch) / f"deface{attempt}.mp4", info.frames
                    )
                )
                print(f"  deface run {attempt + 1}: {theirs[-1]['fps']} frames/s", file=sys.stderr)
    best = max(ours, key=lambda r: r["fps"])
    alone = detector_only_fps(args.clip, args.detector)
    print(
        f"faceanon ({args.detector} once per frame + tracking + {args.method} "
        f"k={args.k}, threaded decode/encode): {best['fps']:.2f} frames/s "
        f"({best['frames']} frames in {best['seconds']:.1f} s; "
        f"{100 * best['detect_share']:.0f} % of it in the detector)"
    )
    print(f"{args.detector} detector alone on decoded frames: {alone:.2f} frames/s")
    if not theirs:
        print(f"deface: not measured ({args.deface} not found; see this script's docstring)")
        return
    deface_best = max(theirs, key=lambda r: r["fps"] or r["wall_fps"])
    own = deface_best["fps"]
    written = deface_best["output"]
    print(
        f"deface (CenterFace, its own progress-bar figure): {own:.2f} frames/s over the "
        f"{deface_best['frames']} frames it counted; wall clock with start-up "
        f"{deface_best['wall_fps']:.2f} frames/s ({deface_best['seconds']:.1f} s)"
    )
    print(
        f"deface's output: {written.width}x{written.height}, {written.frames} frames "
        f"(source {info.width}x{info.height}, {info.frames} frames)"
    )
    if own:
        print(f"ratio faceanon / deface (own figure): {best['fps'] / own:.2f}")
    print(f"ratio faceanon / deface (wall clock): {best['fps'] / deface_best['wall_fps']:.2f}")


if __name__ == "__main__":
    main()
