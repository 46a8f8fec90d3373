"""What each attack recovers from each anonymization, on real faces: rank-1 identification.

A plain loop, no database, to check the attack library (:mod:`faceanon.attacks`) before
and apart from the benchmark. On LFW identities (seeded :func:`protocol_split`: one
gallery photo and one other probe photo per person), the gallery is encoded clear; each
probe is anonymized inside its HOG face box (the whole image when HOG finds no face, as the
benchmark does) and attacked. Rank-1 counts every probe: a probe the attacker cannot
encode is a miss, so chance is 1 / identities.

Prints one markdown table: per (method, k), how often HOG still finds a face in the
anonymized probe, then the rank-1 of every attack that applies (``-``: the attack does not
undo that method), then each attack's mean milliseconds per image (restore + encode).

Usage::

    FACEANON_DATA=/path/to/datasets python benchmarks/attack_table.py
    python benchmarks/attack_table.py --identities 30 --attacks detect,located,median
    python benchmarks/attack_table.py --attacks cheap,detect:retinaface
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon.attacks import get_attack, largest_box, parse_attacks  # noqa: E402
from faceanon.datasets import protocol_split, resolve_dataset  # noqa: E402
from faceanon.detect import find_regions  # noqa: E402
from faceanon.imageio import read_image  # noqa: E402
from faceanon.methods import get_method  # noqa: E402
from faceanon.recognition import DlibResNet, distance_matrix  # noqa: E402

#: The rows of issue 13's table.
VARIANTS: tuple[tuple[str, int | None], ...] = (
    ("noise", 30),
    ("noise", 50),
    ("mask", None),
    ("blur", 30),
    ("blur", 50),
    ("blur", 90),
    ("pixelate", 10),
    ("pixelate", 15),
)


def rank1(probe_embeddings, gallery_embeddings, probe_ids, gallery_ids) -> float:
    """Share of probes whose nearest gallery face is the same person (no face: a miss)."""
    distances = distance_matrix(probe_embeddings, gallery_embeddings)
    hits = 0
    for row, identity in zip(distances, probe_ids, strict=True):
        if np.isnan(row).all():
            continue
        hits += gallery_ids[int(np.nanargmin(row))] == identity
    return hits / len(probe_ids)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="lfw", help="dataset name or path (default lfw)")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="split and noise seed")
    parser.add_argument("--attacks", default="cheap", help="'cheap', 'all' or a list")
    args = parser.parse_args(argv)

    dataset = resolve_dataset(args.data)
    split = protocol_split(dataset, identities=args.identities, seed=args.seed)
    names = parse_attacks(args.attacks)
    attacks = {name: get_attack(name) for name in names}
    backend = DlibResNet()
    gallery_ids = [s.identity for s in split.gallery]
    probe_ids = [s.identity for s in split.probes]
    gallery = [backend.encode(read_image(dataset.path(s))).embedding for s in split.gallery]

    found: dict[str, list[bool]] = defaultdict(list)
    embeddings: dict[tuple[str, str], list] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    for index, sample in enumerate(split.probes):
        original = read_image(dataset.path(sample))
        regions = [tuple(b) for b in find_regions(original, detector="hog", region="face")]
        face = largest_box(regions)
        boxes = regions or [(0, 0, original.shape[1], original.shape[0])]

        # The clear row: the recognizer's own detection, and the descriptor in the face box.
        clear = backend.encode(original)
        found["clear"].append(clear.acquired)
        embeddings[("clear", "detect")].append(clear.embedding)
        located = get_attack("located").encode_restored(
            original, original_box=face, backend=backend
        )
        embeddings[("clear", "located")].append(located.embedding)

        for method_name, k in VARIANTS:
            row = f"{method_name} k{k}" if k is not None else method_name
            rng = np.random.default_rng([args.seed, index])
            anonymized = get_method(method_name).anonymize(original, boxes, k=k, rng=rng)
            for name, attack in attacks.items():
                if not attack.applies_to(method_name):
                    continue
                start = time.perf_counter()
                encoding = attack.encode(
                    anonymized, original_box=face, method=method_name, k=k, backend=backend
                )
                seconds[name].append(time.perf_counter() - start)
                embeddings[(row, name)].append(encoding.embedding)
                if name == "detect":
                    found[row].append(encoding.acquired)
        print(f"\r{index + 1}/{len(split.probes)} probes", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    rows = ["clear"] + [f"{m} k{k}" if k is not None else m for m, k in VARIANTS]
    header = ["method", "HOG finds a face"] + [f"rank-1, {name}" for name in names]
    print(f"{dataset.name}: {len(split.identities)} identities, 1 gallery + 1 probe each, "
          f"seed {args.seed}; chance {1 / len(split.identities):.0%}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row, f"{np.mean(found[row]):.0%}" if found[row] else "-"]
        for name in names:
            probes = embeddings.get((row, name))
            cells.append("-" if probes is None else
                         f"{rank1(probes, gallery, probe_ids, gallery_ids):.0%}")
        print("| " + " | ".join(cells) + " |")
    print("\nmean ms per anonymized image (restore + find + encode): " + ", ".join(
        f"{name} {1000 * np.mean(seconds[name]):.0f}" for name in names if seconds[name]))


if __name__ == "__main__":
    main()
