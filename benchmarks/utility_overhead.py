"""What the utility measures add to a benchmark run, per anonymized image.

A benchmark run must encode every anonymized image with dlib (HOG detection, 5-point
landmarks, ResNet descriptor). The utility measures (:mod:`faceanon.utility`) come on top:
per anonymized image one :func:`~faceanon.utility.measure` (landmarks on retained faces,
SSIM and PSNR, the outside check), reusing the recognizer's detection; per original one
:func:`~faceanon.utility.reference` (its landmarks), shared by every variant made from it.

Prints, measured in one run on this machine on real LFW faces anonymized by several
methods:

1. milliseconds per anonymized image of the recognizer's encode, of ``measure`` with the
   recognizer's detection passed in, and of ``measure`` detecting on its own;
2. milliseconds per original of ``reference``;
3. the overhead as a share of the encode: (measure + reference / variants) / encode,
   where ``--variants`` is how many anonymized variants share an original (the paper
   grid: blur, pixelate and noise at 8 strengths, blackout, mask, k-Same at 4 and the GAN
   make 31). The budget is 10 %.

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/utility_overhead.py
    python benchmarks/utility_overhead.py --images 30     # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from faceanon import utility
from faceanon.datasets import resolve_dataset
from faceanon.detect import HogDetector
from faceanon.imageio import read_image
from faceanon.methods import get_method
from faceanon.recognition import DlibResNet

METHODS = (("blur", 15), ("pixelate", 10), ("noise", 30), ("blackout", None), ("deepprivacy", None))


def _box(encoding) -> list:
    """The recognizer's face as ``(x, y, w, h)``: the detection ``measure`` reuses."""
    if encoding.box is None:
        return []
    top, right, bottom, left = encoding.box
    return [(left, top, right - left, bottom - top)]


def _ms(seconds: list[float]) -> str:
    median, mean = 1000 * statistics.median(seconds), 1000 * statistics.fmean(seconds)
    return f"median {median:6.1f} ms, mean {mean:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="lfw")
    parser.add_argument("--images", type=int, default=60, help="originals (one per identity)")
    parser.add_argument("--variants", type=int, default=31, help="variants per original")
    args = parser.parse_args()

    dataset = resolve_dataset(args.data)
    by_identity = dataset.images_of()
    names = sorted(by_identity)[:: max(1, len(by_identity) // args.images)][: args.images]
    detector, recognizer = HogDetector(upsample=1), DlibResNet()
    methods = [(get_method(name), k) for name, k in METHODS]

    encode_s, measure_s, measure_detecting_s, reference_s = [], [], [], []
    retained = total = 0
    for i, name in enumerate(names):
        original = read_image(dataset.path(by_identity[name][0]))
        regions = [d.box for d in detector.detect(original)] or [
            (0, 0, original.shape[1], original.shape[0])
        ]
        start = time.perf_counter()
        ref = utility.reference(original, faces=regions)
        reference_s.append(time.perf_counter() - start)
        for method, k in methods:
            anonymized = method.anonymize(original, regions, k=k, rng=np.random.default_rng(i))
            start = time.perf_counter()
            encoding = recognizer.encode(anonymized)
            encode_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = utility.measure(ref, anonymized, regions, detections=_box(encoding))
            measure_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            utility.measure(ref, anonymized, regions)
            measure_detecting_s.append(time.perf_counter() - start)
            assert result.outside_unchanged, f"{method.name} changed pixels outside its regions"
            retained += sum(f.retained for f in result.faces)
            total += len(result.faces)

    encode, measured = statistics.fmean(encode_s), statistics.fmean(measure_s)
    per_original = statistics.fmean(reference_s)
    overhead = (measured + per_original / args.variants) / encode
    print(f"{len(names)} originals x {len(methods)} methods = {len(encode_s)} anonymized images")
    print(f"recognizer encode (HOG + descriptor):     {_ms(encode_s)}")
    print(f"measure, recognizer's detection reused:  {_ms(measure_s)}")
    print(f"measure, detecting on its own:           {_ms(measure_detecting_s)}")
    print(f"reference, once per original:             {_ms(reference_s)}")
    print(f"faces retained: {retained}/{total}")
    print(
        f"overhead per anonymized image: (measure + reference / {args.variants}) / encode = "
        f"{100 * overhead:.1f} % (budget 10 %)"
    )


if __name__ == "__main__":
    main()
