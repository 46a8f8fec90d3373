"""What each attack costs per anonymized image, against the recognizer's own detect + encode.

The attack axis multiplies the benchmark's encodings, so each attack must cost at most one
encoding: the located attacks skip detection, and a filter's restoration must be small next
to the descriptor. On LFW probes (their HOG box known), anonymized with the method each
filter undoes, this times separately, in one process:

- ``detect + encode``: ``backend.encode(image)``, today's cost per image (on the clear
  image, where a face is always found, so the descriptor always runs);
- ``encode in box``: ``backend.encode(image, box=...)``, the located descriptor;
- each filter's :meth:`~faceanon.attacks.Attack.restore` alone;
- RetinaFace's detection alone;

and prints milliseconds per image and each one's ratio to ``detect + encode``.

Usage::

    FACEANON_DATA=/path/to/datasets python benchmarks/attack_cost.py --images 40
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon.attacks import css_box, get_attack, largest_box  # noqa: E402
from faceanon.datasets import protocol_split, resolve_dataset  # noqa: E402
from faceanon.detect import find_regions  # noqa: E402
from faceanon.imageio import read_image  # noqa: E402
from faceanon.methods import get_method  # noqa: E402
from faceanon.recognition import DlibResNet  # noqa: E402

FILTERS = {"median": ("noise", 30), "deblur": ("blur", 30), "unpixelate": ("pixelate", 10),
           "sharpen": ("blur", 30)}


def timed(function, items) -> float:
    """Mean seconds of ``function(item)`` over ``items`` (after one warm-up call)."""
    function(items[0])
    start = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - start) / len(items)


def main(argv=None) -> None:
    import cv2

    cv2.setNumThreads(1)  # one core, as each benchmark worker has
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="lfw")
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args(argv)

    dataset = resolve_dataset(args.data)
    split = protocol_split(dataset, identities=args.images, seed=0)
    backend = DlibResNet()
    faces = []
    for sample in split.probes:
        image = read_image(dataset.path(sample))
        face = largest_box(find_regions(image, detector="hog", region="face"))
        if face is not None:
            faces.append((image, face))
    seconds = {
        "detect + encode": timed(lambda f: backend.encode(f[0]), faces),
        "encode in box": timed(lambda f: backend.encode(f[0], box=css_box(f[1])), faces),
    }
    for name, (method, k) in FILTERS.items():
        attack = get_attack(name)
        hidden = [(get_method(method).anonymize(image, [face], k=k,
                                                rng=np.random.default_rng(0)), face)
                  for image, face in faces]
        seconds[f"{name} restore ({method} k{k})"] = timed(
            lambda f, a=attack, m=method, k=k: a.restore(f[0], region=f[1], method=m, k=k),
            hidden)
    from faceanon.retinaface import RetinaFaceDetector

    retinaface = RetinaFaceDetector()
    seconds["retinaface detection"] = timed(lambda f: retinaface.detect(f[0]), faces)

    base = seconds["detect + encode"]
    print(f"{dataset.name}: {len(faces)} probes with a HOG face, one process, one thread\n")
    print("| step | ms per image | / detect + encode |")
    print("|---|---|---|")
    for step, value in seconds.items():
        print(f"| {step} | {1000 * value:.1f} | {value / base:.2f} |")


if __name__ == "__main__":
    main()
