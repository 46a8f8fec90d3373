"""Does the GAN's box edge show as a seam? The blends of :class:`DeepPrivacy` compared.

For LFW benchmark faces (the first image of every n-th identity, dlib HOG boxes as the
benchmark finds them), the generator replaces the face once per blend with the same noise
(by default: the narrow box ramp, the feature blend, and a box ramp twice as wide), and
:func:`faceanon.utility.edge_seam` compares the box edges of the result with the same
lines in the original: per face the worst of the four edges, 1 meaning no new straight
edge. Of 100 faces checked by eye, the four highest (all above 2) showed seams.

Prints, for each blend: the median, 90th percentile and maximum of the per-face worst
edge, the share of faces above 2, and the milliseconds per face.

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/gan_seam.py
    python benchmarks/gan_seam.py --faces 50 --weights OUT/deepprivacy128.pt
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from faceanon.datasets import resolve_dataset
from faceanon.deepprivacy import DEFAULT_WEIGHTS, DeepPrivacy
from faceanon.detect import HogDetector
from faceanon.imageio import read_image
from faceanon.utility import edge_seam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="lfw")
    parser.add_argument("--faces", type=int, default=150)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument(
        "--blends",
        default="box,features,box:0.25:0.25",
        help="comma-separated BLEND[:FEATHER[:OUTER_FEATHER]][@SEAM_LIMIT[/SEAM_FEATHER]|@none], "
        "e.g. box,box@none,features,box:0.25",
    )
    args = parser.parse_args()

    dataset = resolve_dataset(args.data)
    by_identity = dataset.images_of()
    names = sorted(by_identity)[:: max(1, len(by_identity) // args.faces)][: args.faces]
    detector = HogDetector(upsample=1)
    faces = []
    for name in names:
        image = read_image(dataset.path(by_identity[name][0]))
        found = detector.detect(image)
        if found:
            faces.append((image, max((d.box for d in found), key=lambda b: b[2] * b[3])))

    print(f"{len(faces)} LFW faces, weights {args.weights}")
    print(f"{'blend':14s} {'median':>7s} {'p90':>7s} {'max':>7s} {'>2':>6s} {'ms/face':>8s}")
    for spec in args.blends.split(","):
        blend_spec, _, limit = spec.partition("@")
        blend, *ramps = blend_spec.split(":")
        options = dict(zip(("feather", "outer_feather"), map(float, ramps), strict=False))
        if limit:  # BLEND@LIMIT[/RAMP]: seam_limit (@none: off) and seam_feather
            limit, _, ramp = limit.partition("/")
            options["seam_limit"] = None if limit == "none" else float(limit)
            if ramp:
                options["seam_feather"] = float(ramp)
        method = DeepPrivacy(weights=args.weights, blend=blend, **options)
        worst, seconds = [], 0.0
        for i, (image, box) in enumerate(faces):
            start = time.perf_counter()
            out = method.anonymize(image, [box], k=None, rng=np.random.default_rng(i))
            seconds += time.perf_counter() - start
            edges = [v for v in edge_seam(image, out, box).values() if math.isfinite(v)]
            if edges:
                worst.append(max(edges))
        worst = np.array(worst)
        print(
            f"{spec:14s} {np.median(worst):7.2f} {np.quantile(worst, 0.9):7.2f} "
            f"{worst.max():7.2f} {np.mean(worst > 2):6.1%} {1000 * seconds / len(faces):8.1f}"
        )


if __name__ == "__main__":
    main()
