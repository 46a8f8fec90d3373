"""Peak memory of anonymizing one photo, per megapixel: the basis of the default pixel limit.

For each size, a fresh process reads a JPEG made from a real LFW face scaled to that many
pixels, detects faces (dlib HOG, as ``faceanon anonymize`` does by default), blurs them
(k = 31), merges the result back and writes the file, exactly through
:mod:`faceanon.formats`. Its peak resident memory minus its resident memory after the
imports is the cost of the image. Prints a table, the least-squares bytes per pixel (all
steps, and reading + writing alone), and the ratio to
:data:`faceanon.formats.PEAK_BYTES_PER_PIXEL`, which must stay at or above 1.0 for the
limit to keep the promise of no out-of-memory kill.

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/image_memory.py
    python benchmarks/image_memory.py --megapixels 1,4,9 --no-detect   # quicker

The scaled images live in a temporary folder and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def child(path: Path, detect: bool) -> None:
    """Anonymize one file; print JSON with the baseline and peak memory and the timings."""
    import numpy as np

    from faceanon.detect import find_regions, get_detector
    from faceanon.formats import read_document, write_document
    from faceanon.methods import get_method

    detector = get_detector("hog") if detect else None
    method = get_method("blur")
    baseline = _rss_bytes()
    started = time.perf_counter()
    document = read_document(path, max_pixels=10**12)
    views = document.rgb_frames()
    boxes = []
    for view in views:
        found = find_regions(view, detector=detector) if detect else []
        height, width = view.shape[:2]
        boxes.append(found or [(width // 4, height // 4, width // 2, height // 2)])
    anonymized = [
        method.anonymize(view, frame_boxes, k=31, rng=np.random.default_rng(0))
        for view, frame_boxes in zip(views, boxes, strict=True)
    ]
    write_document(path.with_name("out-" + path.name), document.with_anonymized(anonymized, boxes))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"baseline": baseline, "peak": peak, "seconds": seconds,
                      "faces": sum(len(b) for b in boxes)}))


def measure(face_path: Path, megapixels: list[float], detect: bool) -> list[dict]:
    from PIL import Image

    rows = []
    with Image.open(face_path) as opened:
        face = opened.convert("RGB")
    with tempfile.TemporaryDirectory() as scratch:
        for mp in megapixels:
            side = round((mp * 1e6) ** 0.5)
            path = Path(scratch) / f"face-{side}.jpg"
            face.resize((side, side), Image.Resampling.BICUBIC).save(path, quality=90)
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(path)]
                + ([] if detect else ["--no-detect"]),
                check=True, capture_output=True, text=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["pixels"] = side * side
            rows.append(row)
            path.unlink()
            path.with_name("out-" + path.name).unlink()
    return rows


def slope(rows: list[dict]) -> float:
    """Least-squares bytes per pixel of (peak - baseline) against pixels."""
    import numpy as np

    pixels = np.array([row["pixels"] for row in rows], float)
    cost = np.array([row["peak"] - row["baseline"] for row in rows], float)
    fitted, _ = np.polyfit(pixels, cost, 1)
    return float(fitted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="1,4,9,16,25,36")
    parser.add_argument("--no-detect", action="store_true", help="read, blur and write only")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, detect=not args.no_detect)
        return

    from faceanon.datasets import resolve_dataset
    from faceanon.formats import PEAK_BYTES_PER_PIXEL

    dataset = resolve_dataset("lfw")
    face_path = dataset.path(dataset.samples[0])
    megapixels = [float(v) for v in args.megapixels.split(",")]
    runs = [("read + blur + write", False)]
    if not args.no_detect:
        runs.append(("read + HOG detect + blur + write", True))
    for label, detect in runs:
        rows = measure(face_path, megapixels, detect)
        print(f"\n{label}:")
        print(f"{'MP':>6} {'baseline MiB':>13} {'peak MiB':>9} {'cost MiB':>9} "
              f"{'B/pixel':>8} {'seconds':>8} {'faces':>5}")
        for row in rows:
            cost = row["peak"] - row["baseline"]
            print(f"{row['pixels'] / 1e6:6.1f} {row['baseline'] / 2**20:13.0f} "
                  f"{row['peak'] / 2**20:9.0f} {cost / 2**20:9.0f} "
                  f"{cost / row['pixels']:8.1f} {row['seconds']:8.1f} {row['faces']:5d}")
        per_pixel = slope(rows)
        print(f"least-squares cost: {per_pixel:.1f} bytes per pixel; "
              f"PEAK_BYTES_PER_PIXEL = {PEAK_BYTES_PER_PIXEL} is "
              f"{PEAK_BYTES_PER_PIXEL / per_pixel:.2f}x that")


if __name__ == "__main__":
    main()
