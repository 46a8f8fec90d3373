"""The learned attack against the filter attacks, on real faces: rank-1 identification.

Same protocol as ``benchmarks/attack_table.py``: on LFW identities (seeded
:func:`protocol_split`: one gallery photo and one other probe photo per person) the gallery
is encoded clear by the plain recognizer (its own detector); each probe is anonymized inside
its HOG face boxes (the whole image when HOG finds none) with the benchmark's seed rule
(:func:`faceanon.protocol.image_rng`) and attacked. A probe the attacker cannot encode is a
miss, so chance is 1 / identities.

For each (method, k) the learned attacker is trained first (or read from its cache) on
``lfw-singletons`` only; the table gives its training wall time (0 when cached: see the
record's ``wall_seconds``) and its rank-1 on its own held-out singletons.

Usage::

    FACEANON_DATA=/path/to/datasets python benchmarks/learned_attack.py
    python benchmarks/learned_attack.py --identities 50 --variants blur-30 --images 600
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_table import rank1  # noqa: E402

from faceanon.attack_learned import TRAINING_DATASET, Learned, LearnedSettings  # noqa: E402
from faceanon.attacks import get_attack, largest_box  # noqa: E402
from faceanon.datasets import protocol_split, resolve_dataset  # noqa: E402
from faceanon.detect import find_regions  # noqa: E402
from faceanon.imageio import read_image  # noqa: E402
from faceanon.methods import get_method  # noqa: E402
from faceanon.protocol import image_rng  # noqa: E402
from faceanon.recognition import DlibResNetTorch  # noqa: E402

#: The (method, k) the issue asks the learned attacker to win on.
VARIANTS = ("blur-30", "blur-50", "pixelate-10", "pixelate-15")
FILTER_ATTACKS = ("detect", "located", "median", "deblur", "unpixelate", "sharpen")


def _variant(text: str) -> tuple[str, int]:
    method, _, k = text.rpartition("-")
    return method, int(k)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="lfw", help="benchmark dataset (default lfw)")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="split, noise and training seed")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated method-k (default: %(default)s)")
    for field in fields(LearnedSettings):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default),
                            default=field.default, help=f"learned attack (default {field.default})")
    args = parser.parse_args(argv)

    settings = LearnedSettings(**{f.name: getattr(args, f.name) for f in fields(LearnedSettings)})
    variants = [_variant(v) for v in args.variants.split(",") if v]
    dataset = resolve_dataset(args.data)
    training_root = resolve_dataset(TRAINING_DATASET).root.parent
    split = protocol_split(dataset, identities=args.identities, seed=args.seed)
    backend = DlibResNetTorch(threads=1)
    filters = {name: get_attack(name) for name in FILTER_ATTACKS}

    learned, records = {}, {}
    for method, k in variants:
        start = time.perf_counter()
        attack = Learned(settings=settings)
        attack.prepare(method=method, k=k, seed=args.seed, data_root=training_root,
                       echo=lambda line, tag=f"{method} k{k}": print(f"{tag} {line}",
                                                                     file=sys.stderr))
        learned[(method, k)] = attack
        records[(method, k)] = (time.perf_counter() - start, attack.training_record())

    gallery_ids = [s.identity for s in split.gallery]
    probe_ids = [s.identity for s in split.probes]
    gallery = [backend.encode(read_image(dataset.path(s))).embedding for s in split.gallery]
    found: dict[tuple, list[bool]] = defaultdict(list)
    embeddings: dict[tuple, list] = defaultdict(list)
    for index, sample in enumerate(split.probes):
        original = read_image(dataset.path(sample))
        regions = [tuple(b) for b in find_regions(original, detector="hog", region="face")]
        face = largest_box(regions)
        boxes = regions or [(0, 0, original.shape[1], original.shape[0])]
        for method, k in variants:
            rng = image_rng(args.seed, method, k, sample.key)
            anonymized = get_method(method).anonymize(original, boxes, k=k, rng=rng)
            attacks = {**filters, "learned": learned[(method, k)]}
            for name, attack in attacks.items():
                if not attack.applies_to(method):
                    continue
                encoding = attack.encode(anonymized, original_box=face, method=method, k=k,
                                         backend=backend)
                embeddings[(method, k, name)].append(encoding.embedding)
                if name == "detect":
                    found[(method, k)].append(encoding.acquired)
        print(f"\r{index + 1}/{len(split.probes)} probes", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    names = [*FILTER_ATTACKS, "learned"]
    print(f"{dataset.name}: {len(split.identities)} identities, 1 gallery + 1 probe each, "
          f"seed {args.seed}; chance {1 / len(split.identities):.0%}; learned settings "
          f"{settings}\n")
    header = ["method", "HOG finds a face", *[f"rank-1, {n}" for n in names],
              "best filter", "learned - best filter", "training wall s",
              "learned held-out rank-1 (singletons)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for method, k in variants:
        scores = {}
        for name in names:
            probes = embeddings.get((method, k, name))
            if probes is not None:
                scores[name] = rank1(probes, gallery, probe_ids, gallery_ids)
        best = max((n for n in scores if n != "learned"), key=scores.get)
        seconds, record = records[(method, k)]
        held_out = record["curve"][record["best_epoch"]]["valid_rank1"]
        cells = [f"{method} k{k}", f"{np.mean(found[(method, k)]):.0%}",
                 *[f"{scores[n]:.0%}" if n in scores else "-" for n in names],
                 f"{best} {scores[best]:.0%}",
                 f"{100 * (scores['learned'] - scores[best]):+.0f} points",
                 f"{record['wall_seconds']:.0f} (this run {seconds:.0f})",
                 f"{held_out:.0%} of {record['pairs']['held_out']}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
