"""How close a benchmark run comes to the work it cannot avoid, and how it compares with the
plain way of doing the same work.

Prints, measured in one run on this machine:

1. the CPU seconds per image on one core: dlib's HOG detection, 5-point landmarks and
   face chip of an image with a face; the detection alone of an image with none; the
   descriptor network per chip, in torch at the pipeline's batch with one thread, and in
   dlib;
2. the paper grid (500 LFW images = 250 identities x 2; blur, pixelate and noise at eight
   strengths each; clear, naive, reverse and parrot), run by faceanon with its default
   recognizer: the wall time, the floor = (faces x (chip + network) + images without a
   face x detection) / cores, floor / wall (goal: 0.85 or better), how much of the floor
   is dlib's detection, and, from the scheduler, how long the run's processes ran on a
   core and how long they waited for one: floor x cores / time on a core is the share of
   the run's own work that the floor accounts for, whatever else the machine runs;
3. the same work done by a plain ``face_recognition`` process pool (the loop below, as
   the seed study's authors would write it: ``multiprocessing.Pool(2)``, each image read
   with ``face_recognition.load_image_file``, anonymized, its faces found with
   ``face_recognition.face_locations`` and the largest encoded with
   ``face_recognition.face_encodings`` and the default model; the regions to anonymize
   found once per original, as any careful script would), its wall time, the ratio
   plain / faceanon (goal: 2.5x or more), and how its scores differ from faceanon's over
   every comparison of every case (identical: at most 1e-5). ``face_locations`` clips a
   box to the image, and ``face_encodings`` then finds the landmarks in the clipped box,
   while faceanon (like ``face_encodings(image)`` without boxes) uses dlib's box: scores
   of a face whose box touches the image's border are counted apart;
   With ``--attacks`` (e.g. ``cheap``) the paper grid runs those attacks as well
   (:mod:`faceanon.attacks`): the floor then adds, per attacked image, the attack's
   restoration filter (CPU seconds per image of that method and k, measured here) and
   its encoding: a located or filter attack costs landmarks + chip in the original's face
   box (no detection) + the network, ``detect`` what an image costs without attacks;
4. the speed-up over a single-process version of the seed study's approach (for each
   case, for each probe/gallery pair: anonymize, encode both images, compare), measured
   on a smaller grid in the same run (goal: 20x or more).

The machine may be shared: compare the ratios, which are measured in the same run; the
load average is printed before and after each timed part.

Usage (with faceanon installed in the environment; the script imports the installed
package, never the checkout)::

    FACEANON_DATA=../shared/datasets python benchmarks/throughput.py
    python benchmarks/throughput.py --identities 50 --skip-seed-loop   # quicker
    python benchmarks/throughput.py --identities 50 --skip-plain --skip-seed-loop \
        --attacks cheap                                                # with attacks

Every database is a fresh temporary file, so no embedding comes from an earlier run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceanon.attacks import get_attack, parse_attacks
from faceanon.benchmark.grids import cases as grid_cases
from faceanon.datasets import protocol_split, resolve_dataset
from faceanon.detect import anonymization_regions
from faceanon.imageio import read_image
from faceanon.methods import get_method
from faceanon.pipeline import ENCODE_BATCH, Evaluation, Settings
from faceanon.protocol import image_rng
from faceanon.recognition import (
    BACKENDS,
    DlibResNet,
    distance_matrix,
    get_backend,
    resolve_backend,
)
from faceanon.store import ResultsDB

AD_HOC = ("blur", "pixelate", "noise")
#: Largest score difference that counts as identical (faceanon.resnet_torch.CPU_TOLERANCE).
IDENTICAL = 1e-5


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# --- faceanon ------------------------------------------------------------------------------


@dataclass
class PipelineRun:
    wall: float
    #: seconds the run's processes (workers and this one) ran on a core, and were ready to
    #: run but waited for one (other work on the machine), or None off Linux
    on_core: float | None
    waiting: float | None
    encoded: int
    faceless: int
    backend: str
    #: case label -> distances (probes x gallery, split order; NaN: no score)
    scores: dict[str, np.ndarray]
    #: images encoded in the original's face box (located and filter attacks)
    in_box: int = 0
    #: (attack, method, k) -> images that attack restored (filter attacks only)
    restored: dict | None = None


def scheduler_seconds(pid: int | str) -> np.ndarray | None:
    """(seconds on a core, seconds waiting for one) of a live process so far (Linux)."""
    try:
        on_core, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return np.array([int(on_core), int(waiting)]) / 1e9


def run_pipeline(dataset, split, cases, *, workers: int, backend: str = "auto",
                 keep_scores: bool = False, utility: bool = False) -> PipelineRun:
    """Run the cases in a fresh database: wall and CPU time, what it encoded, its scores.

    The scheduler's figures tell a slow pipeline from a busy machine: on a machine shared
    with other work the wall time grows, and so does the time the run's processes wait
    for a core, not the time they run on one.
    """
    with tempfile.TemporaryDirectory() as scratch:
        with ResultsDB(Path(scratch) / "r.duckdb") as db:
            run_id = db.start_run(name="throughput", dataset_name=dataset.name,
                                  dataset_fingerprint=dataset.fingerprint, config={},
                                  git_commit=None, git_dirty=None, packages={}, machine={})
            start, here = time.perf_counter(), scheduler_seconds("self")
            with Evaluation(dataset, split, db=db, run_id=run_id, workers=workers,
                            settings=Settings(backend=backend, utility=utility)) as evaluation:
                evaluation.plan(cases)
                ids = {case.label: evaluation.run_case(case).case_id for case in cases}
                used = evaluation.backend.name
                # the pool's processes, read before it shuts down (a private attribute:
                # this script measures the pipeline from outside)
                pool = evaluation.executor._pool
                spent = [scheduler_seconds(pid) for pid in (pool._processes if pool else ())]
            wall = time.perf_counter() - start
            spent.append(None if here is None else scheduler_seconds("self") - here)
            on_core, waiting = (None, None) if any(x is None for x in spent) else sum(spent)
            # encodings by detection (the backend's own encoder) and in a known box
            (encoded, faceless, in_box), = db.con.execute(
                "SELECT count(*) FILTER (WHERE backend NOT LIKE '%+%'), "
                "count(*) FILTER (WHERE backend NOT LIKE '%+%' AND embedding IS NULL), "
                "count(*) FILTER (WHERE backend LIKE '%+box') FROM embeddings").fetchall()
            restored = dict(((a, m, k), n) for a, m, k, n in db.con.execute(
                "SELECT attack, method, k, count(*) FROM images WHERE run_id = ? "
                "AND role = 'anonymized' AND attack NOT IN ('detect', 'located') "
                "GROUP BY ALL", [run_id]).fetchall())
            scores = {label: stored_scores(db, case_id, split)
                      for label, case_id in ids.items()} if keep_scores else {}
    return PipelineRun(wall, on_core, waiting, encoded, faceless, used, scores, in_box,
                       restored)


def stored_scores(db, case_id: int, split) -> np.ndarray:
    rows = db.con.execute("SELECT probe, gallery, distance FROM scores WHERE case_id = ?",
                          [case_id]).fetchnumpy()
    probe_index = {p.key: i for i, p in enumerate(split.probes)}
    gallery_index = {g.key: i for i, g in enumerate(split.gallery)}
    out = np.full((len(split.probes), len(split.gallery)), np.nan)
    distances = np.ma.filled(np.ma.asarray(rows["distance"], dtype=float), np.nan)
    out[[probe_index[p] for p in rows["probe"]], [gallery_index[g] for g in rows["gallery"]]] = \
        distances
    return out


# --- the floor -----------------------------------------------------------------------------


@dataclass
class Costs:
    chip: float  # detection + landmarks + chip of an image with a face
    no_face: float  # detection of an image without a face
    network: float  # the default backend's network, per chip, at the pipeline's batch
    dlib_network: float  # dlib's own descriptor, per chip
    in_box: float = 0.0  # landmarks + chip in a known face box (no detection)


def per_item(call, items) -> float:
    """CPU seconds per item of ``call(item)`` in this process: the time it ran on a core,
    which other work on a shared machine does not inflate (everything here runs on one
    thread: dlib, and torch as the pipeline's workers run it)."""
    start = time.process_time()
    for item in items:
        call(item)
    return (time.process_time() - start) / len(items)


def per_image_costs(dataset, samples, *, backend: str = "auto") -> Costs:
    """CPU seconds per image of each step on one core (images read beforehand)."""
    name = resolve_backend(backend)
    recognizer = get_backend(name, **BACKENDS[name].worker_options)  # as in each worker
    images = [read_image(dataset.path(s)) for s in samples]
    faces = [recognizer.face_chip(image) for image in images]  # also loads the models
    chip = per_item(recognizer.face_chip, images)
    no_face = per_item(recognizer.face_chip, [np.full((250, 250, 3), 127, np.uint8)] * 20)

    chips = np.array([f.chip for f in faces if f.acquired])
    batches = np.resize(chips, (4, ENCODE_BATCH, *chips.shape[1:]))
    recognizer.encode_chips(batches[0])  # warm up
    dlib_backend = DlibResNet()
    boxed = [(image, face.box) for image, face in zip(images, faces, strict=True)
             if face.acquired]
    in_box = per_item(lambda pair: recognizer.face_chip(pair[0], box=pair[1]), boxed)
    return Costs(chip, no_face, per_item(recognizer.encode_chips, batches) / ENCODE_BATCH,
                 per_item(dlib_backend.encode_chips, batches) / ENCODE_BATCH, in_box)


def restore_costs(dataset, samples, keys) -> dict:
    """CPU seconds per image of each filter attack's restoration, per (attack, method, k),
    on real anonymized faces (restored in their anonymization regions, as the pipeline
    does)."""
    originals = [read_image(dataset.path(s)) for s in samples]
    regions = [anonymization_regions(image, detector="hog").boxes for image in originals]
    out = {}
    for attack_name, method_name, k in keys:
        attack, method = get_attack(attack_name), get_method(method_name)
        anonymized = [method.anonymize(image, list(boxes), k=k,
                                       rng=image_rng(0, method_name, k, sample.key))
                      for image, boxes, sample in zip(originals, regions, samples,
                                                      strict=True)]

        def restore(pair, attack=attack, method_name=method_name, k=k):
            image, boxes = pair
            for box in boxes:
                image = attack.restore(image, region=box, method=method_name, k=k)

        pairs = list(zip(anonymized, regions, strict=True))
        restore(pairs[0])  # untimed: the first call imports the filter's library
        out[(attack_name, method_name, k)] = per_item(restore, pairs)
    return out


# --- the plain face_recognition pool ---------------------------------------------------------

_METHODS: dict = {}


def _plain_encoding(image: np.ndarray):
    """The largest face's encoding (or None), and whether a face box touches the border."""
    import face_recognition

    locations = face_recognition.face_locations(image)
    if not locations:
        return None, False
    largest = max(locations, key=lambda b: ((b[2] - b[0]) * (b[1] - b[3]), -b[0], -b[3]))
    encoding = face_recognition.face_encodings(image, [largest])[0]
    height, width = image.shape[:2]
    border = any(min(top, left) <= 0 or bottom >= height or right >= width
                 for top, right, bottom, left in locations)
    return encoding, border


def _plain_original(path: str):
    import face_recognition

    image = face_recognition.load_image_file(path)
    return anonymization_regions(image).boxes, _plain_encoding(image)


def _plain_variant(task):
    import face_recognition

    path, boxes, method, k, key, seed = task
    if method not in _METHODS:
        _METHODS[method] = get_method(method)
    image = face_recognition.load_image_file(path)
    anonymized = _METHODS[method].anonymize(image, list(boxes), k=k,
                                            rng=image_rng(seed, method, k, key))
    return _plain_encoding(anonymized)


@dataclass
class PlainRun:
    wall: float
    #: case label -> distances (probes x gallery, split order; NaN: no score)
    scores: dict[str, np.ndarray]
    #: case label -> comparisons (probes x gallery) of an image with a face box at its border
    border: dict[str, np.ndarray]


def plain_pool(dataset, split, cases, *, workers: int, seed: int = 0) -> PlainRun:
    """The same work by a plain face_recognition process pool."""
    samples = [*split.gallery, *split.probes]
    paths = [str(dataset.path(s)) for s in samples]
    scores, border = {}, {}
    start = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        found = pool.map(_plain_original, paths)
        boxes = {s.key: b for s, (b, _) in zip(samples, found, strict=True)}
        original = {s.key: e for s, (_, e) in zip(samples, found, strict=True)}
        anonymized: dict = {}
        for case in cases:
            variant = case.variant
            if variant is not None and variant not in anonymized:
                tasks = [(path, boxes[s.key], variant.method, variant.k, s.key, seed)
                         for s, path in zip(samples, paths, strict=True)]
                encoded = pool.map(_plain_variant, tasks)
                anonymized = {variant: {s.key: e for s, e in zip(samples, encoded, strict=True)}}
            probes = anonymized[variant] if case.mode.probes_anonymized else original
            gallery = anonymized[variant] if case.mode.gallery_anonymized else original
            scores[case.label] = distance_matrix([probes[p.key][0] for p in split.probes],
                                                 [gallery[g.key][0] for g in split.gallery])
            border[case.label] = (np.array([probes[p.key][1] for p in split.probes])[:, None]
                                  | np.array([gallery[g.key][1] for g in split.gallery])[None])
    return PlainRun(time.perf_counter() - start, scores, border)


@dataclass
class ScoreDifference:
    compared: int  # comparisons scored by both
    one_sided: int  # comparisons scored by one side only
    largest: float  # largest |difference| over the comparisons scored by both
    largest_inside: float  # the same, leaving out comparisons with a face at the border
    at_border: int  # comparisons scored by both with a face at the border
    differing: int  # comparisons differing by more than IDENTICAL
    unexplained: int  # the same, with no face at the border


def score_difference(ours: dict[str, np.ndarray], plain: PlainRun) -> ScoreDifference:
    """How faceanon's scores differ from the plain pool's, case by case.

    For a face whose box touches the image's border, ``face_recognition.face_locations``
    clips the box and ``face_encodings(image, [box])`` then runs the landmarks in the
    clipped box, while faceanon (like ``face_encodings(image)``) runs them in dlib's box:
    those comparisons may differ, any other may not.
    """
    compared = one_sided = at_border = differing = unexplained = 0
    largest = largest_inside = 0.0
    for label, mine in ours.items():
        theirs, border = plain.scores[label], plain.border[label]
        both = ~np.isnan(mine) & ~np.isnan(theirs)
        one_sided += int((np.isnan(mine) != np.isnan(theirs)).sum())
        compared += int(both.sum())
        difference = np.where(both, np.abs(mine - theirs), 0.0)
        largest = max(largest, float(difference.max()))
        largest_inside = max(largest_inside, float(np.where(border, 0.0, difference).max()))
        at_border += int((both & border).sum())
        differing += int((difference > IDENTICAL).sum())
        unexplained += int(((difference > IDENTICAL) & ~border).sum())
    return ScoreDifference(compared, one_sided, largest, largest_inside, at_border, differing,
                           unexplained)


# --- the seed study's pair loop -------------------------------------------------------------


def naive_seed_study(dataset, split, cases) -> float:
    """The seed study's loop: every pair re-anonymizes and re-encodes both images."""
    backend = DlibResNet()
    settings = Settings()
    start = time.perf_counter()
    for case in cases:
        method = get_method(case.method) if case.method else None
        for probe in split.probes:
            for gallery in split.gallery:
                faces = []
                for sample, anonymized in ((probe, case.mode.probes_anonymized),
                                           (gallery, case.mode.gallery_anonymized)):
                    image = read_image(dataset.path(sample))
                    if anonymized:
                        boxes = list(anonymization_regions(
                            image, detector=settings.detector, region=settings.region,
                            on_miss=settings.on_miss).boxes)
                        image = method.anonymize(
                            image, boxes, k=case.k,
                            rng=image_rng(0, case.method, case.k, sample.key))
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
    parser.add_argument("--backend", default="auto",
                        help="faceanon's recognizer (default auto: what a run uses)")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--utility", action="store_true",
                        help="measure utility per image too, as pytest bench does by default "
                             "(off: the same work as the plain pool)")
    parser.add_argument("--skip-plain", action="store_true",
                        help="no plain face_recognition pool")
    parser.add_argument("--skip-seed-loop", action="store_true",
                        help="no seed-study pair loop")
    parser.add_argument("--attacks", default="detect",
                        help="attacks the paper grid runs (faceanon.attacks names, 'cheap' or "
                             "'all'); default detect, the seed study's attacker")
    args = parser.parse_args()

    dataset = resolve_dataset(args.data)
    cores = args.workers
    split = protocol_split(dataset, identities=args.identities, seed=0)
    print(f"dataset {dataset.name}: {len(split.gallery) + len(split.probes)} images, "
          f"{cores} cores; load average {load_average()}")
    for sample in (*split.gallery, *split.probes):  # both sides then read from the page cache
        dataset.path(sample).read_bytes()

    costs = per_image_costs(dataset, list(split.probes[:20]), backend=args.backend)
    print(f"CPU time on one core: detection + landmarks + chip {1000 * costs.chip:.1f} ms, "
          f"detection of an image with no face {1000 * costs.no_face:.1f} ms; network per chip "
          f"{1000 * costs.network:.1f} ms ({args.backend}, batch {ENCODE_BATCH}), "
          f"dlib's {1000 * costs.dlib_network:.1f} ms")

    if not args.skip_paper:
        attacks = parse_attacks(args.attacks)
        paper = grid_cases("paper", methods=AD_HOC, attacks=attacks)
        ours = run_pipeline(dataset, split, paper, workers=cores, backend=args.backend,
                            utility=args.utility,
                            keep_scores=not args.skip_plain)
        faces = ours.encoded - ours.faceless
        detection = faces * costs.chip + ours.faceless * costs.no_face
        restoring = restore_costs(dataset, list(split.probes[:8]), sorted(ours.restored or {},
                                                                          key=str))
        restore = sum(n * restoring[key] for key, n in (ours.restored or {}).items())
        boxed = ours.in_box * (costs.in_box + costs.network)
        floor = (detection + faces * costs.network + boxed + restore) / cores
        dlib_floor = (detection + (faces + ours.in_box) * costs.dlib_network
                      + ours.in_box * costs.in_box + restore) / cores
        print(f"paper grid: {len(paper)} cases (attacks {', '.join(attacks)}), "
              f"{ours.encoded} images encoded by detection, {ours.faceless} of them with no "
              f"face found, {ours.in_box} in the original's face box; backend {ours.backend}")
        print(f"  floor  {floor:8.1f} s  (({faces} x ({1000 * costs.chip:.1f} + "
              f"{1000 * costs.network:.1f}) + {ours.faceless} x {1000 * costs.no_face:.1f}"
              f" + {ours.in_box} x ({1000 * costs.in_box:.1f} + {1000 * costs.network:.1f})"
              f") ms / {cores} + {restore:.1f} s of restoration / {cores}); detection is "
              f"{detection / cores / floor:.0%} of it")
        for attack in dict.fromkeys(key[0] for key in sorted(restoring, key=str)):
            keys = [key for key in restoring if key[0] == attack]
            images = sum(ours.restored[key] for key in keys)
            spent = sum(ours.restored[key] * restoring[key] for key in keys)
            slowest = max(keys, key=restoring.get)
            print(f"    {attack}: {1000 * spent / images:.1f} ms per image over {images} "
                  f"images (slowest {slowest[1]} k{slowest[2]}: "
                  f"{1000 * restoring[slowest]:.1f} ms)")
        print(f"  wall   {ours.wall:8.1f} s  (load average {load_average()})")
        print(f"  floor / wall = {floor / ours.wall:.2f}  (goal >= 0.85); the same work with "
              f"dlib's descriptor has a floor of {dlib_floor:.1f} s")
        if ours.on_core is not None:
            print(f"  its processes ran {ours.on_core:.1f} s on a core and waited "
                  f"{ours.waiting:.1f} s for one (other work on the machine): floor x cores / "
                  f"time on a core = {floor * cores / ours.on_core:.2f}")
        if not args.skip_plain:
            plain = plain_pool(dataset, split, paper, workers=cores)
            difference = score_difference(ours.scores, plain)
            print(f"plain face_recognition pool of {cores}, the same work: {plain.wall:.1f} s "
                  f"(load average {load_average()})")
            print(f"  plain / faceanon = {plain.wall / ours.wall:.2f}x  (goal >= 2.5x)")
            identical = (difference.largest_inside <= IDENTICAL and not difference.one_sided
                         and not difference.unexplained)
            print(f"  scores: {difference.compared} comparisons scored by both, "
                  f"{difference.one_sided} by one only; largest difference "
                  f"{difference.largest_inside:.2g} where no face touches the image's border "
                  f"({'identical' if identical else 'NOT identical'} to {IDENTICAL:g})")
            print(f"  {difference.at_border} comparisons have a face at the border, where "
                  f"face_recognition encodes its clipped box: "
                  f"{difference.differing - difference.unexplained} of them differ by more "
                  f"than {IDENTICAL:g} (largest {difference.largest:.2g}); "
                  f"{difference.unexplained} without a face there do")

    if not args.skip_seed_loop:
        small = protocol_split(dataset, identities=args.naive_identities, seed=0)
        small_cases = grid_cases("smoke", methods=["blur", "pixelate"], ks=[15, 90, 10])
        naive = naive_seed_study(dataset, small, small_cases)
        fast = run_pipeline(dataset, small, small_cases, workers=cores, backend=args.backend)
        print(f"small grid ({len(small_cases)} cases, {args.naive_identities} identities): "
              f"seed-study loop {naive:.1f} s, faceanon {fast.wall:.1f} s, "
              f"speed-up {naive / fast.wall:.1f}x  (goal >= 20x)")


if __name__ == "__main__":
    main()
