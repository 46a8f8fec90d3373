"""Which GAN to ship: generators and blends compared on privacy and utility, on the CPU.

For each variant (weights x blend), on LFW benchmark identities the GAN never saw (one
gallery and one probe image each, :func:`faceanon.datasets.protocol_split`, as the
benchmark chooses them):

Privacy (naive mode, plain loop)
    The probes are anonymized (dlib HOG boxes; the whole image where none is found, as the
    benchmark does) and searched among the original gallery with dlib's ResNet: rank-1 is
    the share of probes whose nearest gallery face is their own identity, a probe in which
    no face is found counting as a miss; FTA is the share of such probes. ``located``:
    rank-1 of the attacker who knows where the face is (the largest anonymized box is
    encoded, no detection), as the benchmark's ``located`` attack. Lower rank-1 is
    more privacy. With 250 identities one probe is 0.4 points.
Utility (:mod:`faceanon.utility`, on the same anonymized probes)
    Detection retention, landmark NME and where landmarks could be placed, SSIM and PSNR
    over the image and the face region, the box-edge seam (share of faces whose worst
    edge is above 2), and the milliseconds per face.

The clear baseline (probes not anonymized) is printed first. ``--json`` writes every number
for the model card.

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/gan_compare.py \\
        --weights faceanon/weights/deepprivacy64.pt --weights OUT/deepprivacy128.pt
    python benchmarks/gan_compare.py --identities 60 --blends box,features   # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from faceanon import utility
from faceanon.datasets import protocol_split, resolve_dataset
from faceanon.deepprivacy import BLENDS, DEFAULT_WEIGHTS, DeepPrivacy
from faceanon.detect import find_regions
from faceanon.imageio import read_image
from faceanon.recognition import DlibResNet


def _rank1(probe_embeddings: list, gallery: np.ndarray) -> float:
    """Share of probes whose nearest gallery embedding is their own (row i is identity i)."""
    hits = 0
    for i, embedding in enumerate(probe_embeddings):
        if embedding is not None:
            hits += int(np.argmin(np.linalg.norm(gallery - embedding, axis=1)) == i)
    return hits / len(probe_embeddings)


def _mean(values) -> float:
    """Mean over the defined values (NaN left out; inf, an unchanged image's PSNR, kept)."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def evaluate(name, anonymize, probes, gallery, recognizer) -> dict:
    """Anonymize every probe, then measure privacy and utility."""
    embeddings, located, results, seams, seconds = [], [], [], [], 0.0
    for i, (image, regions, ref) in enumerate(probes):
        start = time.perf_counter()
        out = anonymize(image, regions, np.random.default_rng(i))
        seconds += time.perf_counter() - start
        encoding = recognizer.encode(out)
        embeddings.append(encoding.embedding)
        # The located attacker knows where the face was (the largest region anonymized).
        x, y, w, h = max(regions, key=lambda r: r[2] * r[3])
        located.append(recognizer.encode(out, box=(y, x + w, y + h, x)).embedding)
        # HOG on the whole image: the recognizer keeps only the largest face's box.
        result = utility.measure(ref, out, regions)
        if not result.outside_unchanged:
            raise SystemExit(f"{name} changed {result.changed_outside} pixels outside its boxes")
        results.append(result)
        for box in ref.faces:
            edges = [v for v in utility.edge_seam(image, out, box).values() if math.isfinite(v)]
            if edges:
                seams.append(max(edges))
    faces = [f for r in results for f in r.faces]
    return {
        "variant": name,
        "rank1": _rank1(embeddings, gallery),
        "rank1_located": _rank1(located, gallery),
        "fta": float(np.mean([e is None for e in embeddings])),
        "retention": float(np.mean([f.retained for f in faces])) if faces else math.nan,
        "landmarks_placed": float(np.mean([f.landmarks_placed for f in faces])) if faces else 0,
        "nme": _mean([f.nme for f in faces]),
        "ssim": _mean([r.ssim for r in results]),
        "region_ssim": _mean([r.region_ssim for r in results]),
        "psnr": _mean([r.psnr for r in results]),
        "region_psnr": _mean([r.region_psnr for r in results]),
        "seam_over_2": float(np.mean(np.array(seams) > 2)) if seams else math.nan,
        "seam_p90": float(np.quantile(seams, 0.9)) if seams else math.nan,
        "ms_per_image": 1000 * seconds / len(probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="lfw")
    parser.add_argument("--identities", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", action="append", help="repeat; default the shipped 64 px")
    parser.add_argument(
        "--blends",
        default=",".join(BLENDS),
        help="comma-separated BLEND[:FEATHER[:OUTER_FEATHER]][@SEAM_LIMIT[/SEAM_FEATHER]|@none],"
        " e.g. features,box,box@none,box:0.25",
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    weights = args.weights or [str(DEFAULT_WEIGHTS)]

    dataset = resolve_dataset(args.data)
    split = protocol_split(dataset, identities=args.identities, seed=args.seed)
    recognizer = DlibResNet()
    gallery = []
    for sample in split.gallery:
        encoding = recognizer.encode(read_image(dataset.path(sample)))
        gallery.append(encoding.embedding if encoding.acquired else np.full(128, np.inf))
    gallery = np.stack(gallery)
    probes = []
    for sample in split.probes:
        image = read_image(dataset.path(sample))
        regions = find_regions(image, detector="hog")
        faces = list(regions)
        if not regions:  # the benchmark's on_miss="whole"
            regions = [(0, 0, image.shape[1], image.shape[0])]
        probes.append((image, regions, utility.reference(image, faces=faces)))

    rows = [
        evaluate("clear", lambda image, regions, rng: image.copy(), probes, gallery, recognizer)
    ]
    for path in weights:
        for spec in args.blends.split(","):
            blend_spec, _, limit = spec.partition("@")
            blend, *ramps = blend_spec.split(":")
            options = dict(zip(("feather", "outer_feather"), map(float, ramps), strict=False))
            if limit:  # BLEND@LIMIT[/RAMP]: seam_limit (@none: off) and seam_feather
                limit, _, ramp = limit.partition("/")
                options["seam_limit"] = None if limit == "none" else float(limit)
                if ramp:
                    options["seam_feather"] = float(ramp)
            method = DeepPrivacy(weights=path, blend=blend, **options)
            resolution = method.generator.config.resolution
            name = f"{Path(path).name} ({resolution} px), {spec}"

            def anonymize(image, regions, rng, method=method):
                return method.anonymize(image, regions, k=None, rng=rng)

            rows.append(evaluate(name, anonymize, probes, gallery, recognizer))
            rows[-1].update(weights=path, blend=blend, **options)

    print(f"{len(probes)} LFW identities (naive: anonymized probes against original gallery)")
    columns = (
        ("rank1", "rank-1", "{:.3f}"),
        ("rank1_located", "located", "{:.3f}"),
        ("fta", "FTA", "{:.3f}"),
        ("retention", "detected", "{:.3f}"),
        ("nme", "NME", "{:.3f}"),
        ("ssim", "SSIM", "{:.3f}"),
        ("region_ssim", "face SSIM", "{:.3f}"),
        ("psnr", "PSNR", "{:.1f}"),
        ("region_psnr", "face PSNR", "{:.1f}"),
        ("seam_over_2", "seam>2", "{:.3f}"),
        ("ms_per_image", "ms/img", "{:.0f}"),
    )
    print(f"{'variant':44s}" + "".join(f"{title:>10s}" for _, title, _ in columns))
    for row in rows:
        cells = "".join(f"{fmt.format(row[key]):>10s}" for key, _, fmt in columns)
        print(f"{row['variant']:44s}{cells}")
    if args.json:
        payload = {"identities": len(probes), "seed": args.seed, "data": str(dataset.root)}
        args.json.write_text(json.dumps({**payload, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
