"""How the filter attacks' settings were chosen: on lfw-singletons, never on benchmark people.

Singletons have one photograph each, so rank-1 cannot be measured on them; what can is how
close an attacked face comes to its own original. For each image with a HOG face, the
original is encoded in its face box; it is anonymized there, attacked, and encoded in the
same box (the located descriptor every filter attack uses). Prints, per (method, k) and
setting, the mean descriptor distance to the original (lower: more of the identity is back)
and the share under ``face_recognition``'s 0.6 tolerance. The defaults in
:mod:`faceanon.attacks` are the settings that came out best here.

Usage::

    FACEANON_DATA=/path/to/datasets python benchmarks/attack_tuning.py --images 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon.attacks import css_box, get_attack, largest_box  # noqa: E402
from faceanon.datasets import resolve_dataset  # noqa: E402
from faceanon.detect import find_regions  # noqa: E402
from faceanon.imageio import read_image  # noqa: E402
from faceanon.methods import get_method  # noqa: E402
from faceanon.protocol import DECISION_THRESHOLD  # noqa: E402
from faceanon.recognition import DlibResNet  # noqa: E402

#: (method, ks, attack, the settings tried); the first setting of each list is ``located``
#: alone, the baseline every filter must beat.
CANDIDATES = (
    ("noise", (30, 50), "median", [{"size": 3}, {"size": 5}, {"size": 7}]),
    ("blur", (30, 50), "deblur", [{"balance": b} for b in (0.03, 0.1, 0.3, 1.0)]),
    ("blur", (30, 50), "sharpen", [{"amount": a} for a in (1.0, 2.0, 4.0)]),
    ("pixelate", (10, 15), "unpixelate", [{}]),
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="lfw-singletons")
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args(argv)

    dataset = resolve_dataset(args.data)
    backend = DlibResNet()
    step = max(1, len(dataset.samples) // (3 * args.images))
    faces = []
    for sample in dataset.samples[::step]:
        image = read_image(dataset.path(sample))
        face = largest_box(find_regions(image, detector="hog", region="face"))
        if face is not None:
            faces.append((image, face, backend.encode(image, box=css_box(face)).embedding))
        if len(faces) == args.images:
            break
    print(f"{dataset.name}: {len(faces)} images with a HOG face\n")
    print("| method | attack | setting | mean distance to the original | share < 0.6 |")
    print("|---|---|---|---|---|")
    for method_name, ks, attack_name, settings in CANDIDATES:
        method = get_method(method_name)
        for k in ks:
            for name, options in [("located", {})] + [(attack_name, s) for s in settings]:
                attack = get_attack(name, **options)
                distances = []
                for index, (image, face, clear) in enumerate(faces):
                    hidden = method.anonymize(image, [face], k=k,
                                              rng=np.random.default_rng(index))
                    attacked = attack.encode(hidden, original_box=face, method=method_name, k=k,
                                             backend=backend)
                    distances.append(float(np.linalg.norm(attacked.embedding - clear)))
                shown = ", ".join(f"{key}={value}" for key, value in options.items()) or "-"
                under = np.mean(np.array(distances) <= DECISION_THRESHOLD)
                print(f"| {method_name} k{k} | {name} | {shown} | {np.mean(distances):.3f} "
                      f"| {under:.0%} |", flush=True)


if __name__ == "__main__":
    main()
