"""How close a benchmark run comes to the cost of the encodings it cannot avoid.

Prints, measured in one run on this machine:

1. the floor: (images that must be encoded) x (single-image detect + encode time,
   measured here) / (cores);
2. the wall time of the paper grid (500 LFW images = 250 identities x 2; blur, pixelate
   and noise at 8 strengths each; clear, naive, reverse and parrot);
3. floor / wall (goal: 0.85 or better);
4. the speed-up over a straightforward single-process version of the seed study's
   approach (for each case, for each probe/gallery pair: anonymize, encode both images,
   compare), measured on a smaller grid in the same run (goal: 20x or more).

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/throughput.py
    python benchmarks/throughput.py --identities 50 --naive-identities 8   # quicker

Every database is a fresh temporary file, so no embedding comes from an earlier run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's bench/ grids
from bench.grids import PAPER_KS  # noqa: E402
from faceanon.datasets import protocol_split, resolve_dataset  # noqa: E402
from faceanon.imageio import read_image  # noqa: E402
from faceanon.methods import get_method  # noqa: E402
from faceanon.pipeline import MODES, Evaluation, Settings, _regions, image_rng  # noqa: E402
from faceanon.recognition import DlibResNet  # noqa: E402
from faceanon.store import ResultsDB  # noqa: E402

AD_HOC = ("blur", "pixelate", "noise")


def grid_cases(ks_per_method: dict[str, list[int]]) -> list:
    cases = [(None, None, "clear")]
    for method, ks in ks_per_method.items():
        for k in ks:
            cases += [(method, k, mode) for mode in MODES if mode != "clear"]
    return cases


def run_pipeline(dataset, split, cases, *, workers: int) -> tuple[float, int, int]:
    """Wall seconds of a run, distinct images it had to encode, and how many had no face."""
    with tempfile.TemporaryDirectory() as scratch:
        with ResultsDB(Path(scratch) / "r.duckdb") as db:
            run_id = db.start_run(name="throughput", dataset_name=dataset.name,
                                  dataset_fingerprint=dataset.fingerprint, config={},
                                  git_commit=None, git_dirty=None, packages={}, machine={})
            start = time.perf_counter()
            with Evaluation(dataset, split, db=db, run_id=run_id, workers=workers) as ev:
                ev.plan([c[:2] for c in cases if c[0] is not None])
                for case in cases:
                    ev.run_case(*case)
            wall = time.perf_counter() - start
            encoded, faceless = db.con.execute(
                "SELECT count(*), count(*) FILTER (embedding IS NULL) FROM embeddings"
            ).fetchall()[0]
    return wall, encoded, faceless


def single_image_seconds(dataset, samples, backend: DlibResNet) -> float:
    """Mean detect + encode time of one image on one core (images read beforehand)."""
    images = [read_image(dataset.path(s)) for s in samples]
    backend.encode(images[0])  # models loaded before timing
    start = time.perf_counter()
    for image in images:
        backend.encode(image)
    return (time.perf_counter() - start) / len(images)


def no_face_seconds(backend: DlibResNet) -> float:
    """Time of one image in which the detector finds nothing (no descriptor to compute)."""
    blank = np.full((250, 250, 3), 127, np.uint8)
    backend.encode(blank)
    start = time.perf_counter()
    for _ in range(20):
        backend.encode(blank)
    return (time.perf_counter() - start) / 20


def naive_seed_study(dataset, split, cases) -> float:
    """The seed study's loop: every pair re-anonymizes and re-encodes both images."""
    backend = DlibResNet()
    settings = Settings()
    start = time.perf_counter()
    for method_name, k, mode in cases:
        method = get_method(method_name) if method_name else None
        for probe in split.probes:
            for gallery in split.gallery:
                faces = []
                for sample, anonymized in ((probe, mode in {"naive", "parrot"}),
                                           (gallery, mode in {"reverse", "parrot"})):
                    image = read_image(dataset.path(sample))
                    if anonymized:
                        boxes, _ = _regions(image, settings)
                        image = method.anonymize(
                            image, boxes, k=k, rng=image_rng(0, method_name, k, sample.key))
                    faces.append(backend.encode(image).embedding)
                if faces[0] is not None and faces[1] is not None:
                    np.linalg.norm(faces[0] - faces[1])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="lfw")
    parser.add_argument("--identities", type=int, default=250)
    parser.add_argument("--naive-identities", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()

    dataset = resolve_dataset(args.data)
    cores = args.workers
    split = protocol_split(dataset, identities=args.identities, seed=0)
    print(f"dataset {dataset.name}: {len(split.gallery) + len(split.probes)} images, "
          f"{cores} cores")

    probe_sample = list(split.probes[:20])
    t_single = single_image_seconds(dataset, probe_sample, DlibResNet())
    print(f"single image detect + encode, one core: {1000 * t_single:.1f} ms")

    if not args.skip_paper:
        paper = grid_cases({m: PAPER_KS[m] for m in AD_HOC})
        wall, encoded, faceless = run_pipeline(dataset, split, paper, workers=cores)
        floor = encoded * t_single / cores
        print(f"paper grid: {len(paper)} cases, {encoded} images encoded, "
              f"{faceless} of them with no face found")
        print(f"  floor  {floor:8.1f} s  ({encoded} x {1000 * t_single:.1f} ms / {cores})")
        print(f"  wall   {wall:8.1f} s")
        print(f"  floor / wall = {floor / wall:.2f}  (goal >= 0.85)")
        # An image with no face costs only the detector, so the floor overstates
        # the unavoidable work; this one charges each image what it really needs.
        t_empty = no_face_seconds(DlibResNet())
        strict = ((encoded - faceless) * t_single + faceless * t_empty) / cores
        print(f"  strict floor {strict:.1f} s (no-face image {1000 * t_empty:.1f} ms): "
              f"strict floor / wall = {strict / wall:.2f}")

    small = protocol_split(dataset, identities=args.naive_identities, seed=0)
    small_cases = grid_cases({"blur": [15, 90], "pixelate": [10]})
    naive = naive_seed_study(dataset, small, small_cases)
    ours, _, _ = run_pipeline(dataset, small, small_cases, workers=cores)
    print(f"small grid ({len(small_cases)} cases, {args.naive_identities} identities): "
          f"seed-study loop {naive:.1f} s, faceanon {ours:.1f} s, "
          f"speed-up {naive / ours:.1f}x  (goal >= 20x)")


if __name__ == "__main__":
    main()
