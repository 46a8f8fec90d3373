"""What the attack axis costs the report: render time, page size and figures.

Builds two synthetic runs of a grid's shape (its methods, strengths, modes and identities;
distances drawn at random, so no faces are needed): one measured by the ``detect`` attack
only, as before the attack axis, and one by every cheap attack that applies to each method
(:data:`faceanon.attacks.CHEAP_ATTACKS`). Renders each report (no pictures) and prints,
for each, cases, best render time, page size and number of figures, and the ratios, e.g.
``cheap attacks / detect: 4.4x cases, 2.1x render time, 1.9x page size``.

Usage: ``python benchmarks/report_attacks.py [--grid smoke] [--identities 40]
[--repeat 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from faceanon.attacks import CHEAP_ATTACKS, get_attack
from faceanon.benchmark.grids import DEFAULT_IDENTITIES, GRIDS, cases
from faceanon.report import render_report
from faceanon.store import ResultsDB


def fill(db: ResultsDB, grid: str, attacks: list[str], *, identities: int,
         seed: int = 0) -> int:
    """A complete run with every case of ``grid`` under each applicable attack."""
    rng = np.random.default_rng(seed)
    run = db.start_run(name=f"{grid}, {len(attacks)} attacks", dataset_name="synthetic",
                       dataset_fingerprint="-", config={"identities": identities},
                       git_commit=None, git_dirty=None, packages={}, machine={})
    n = identities
    probes = np.repeat([f"p{i:04d}/probe.jpg" for i in range(n)], n)
    gallery = np.tile([f"p{i:04d}/gallery.jpg" for i in range(n)], n)
    mated = np.repeat(np.arange(n), n) == np.tile(np.arange(n), n)
    chosen = [get_attack(name) for name in attacks]
    for case in cases(grid):
        clear = case.method is None
        for attack in chosen:
            if clear and attack.name != "detect":
                continue  # the clear baseline is one case
            if not clear and not attack.applies_to(case.method):
                continue
            distance = rng.normal(0.75, 0.06, n * n) - rng.uniform(0.0, 0.4) * mated
            lost = np.repeat(rng.random(n) < rng.uniform(0.0, 0.6), n)
            distance[lost] = np.nan
            db.write_case(run, method=case.method or "none", k=case.k, mode=case.mode.value,
                          detector="hog", backend="dlib-resnet", attack=attack.name,
                          scores={"probe": probes, "gallery": gallery, "mated": mated,
                                  "distance": distance})
    db.finish_run(run, "complete")
    return run


def measure(db_path: Path, run: int, *, repeat: int) -> dict:
    """Best render time, page size and figure count of one run's report."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(repeat):
            start = time.perf_counter()
            index = render_report(db_path, Path(folder) / f"r{i}", run_ids=[run],
                                  identities=0)
            times.append(time.perf_counter() - start)
        page = index.read_text(encoding="utf-8")
    with ResultsDB(db_path, read_only=True) as db:
        n_cases = db.run(run)["n_cases"]
    return {"cases": n_cases, "seconds": min(times), "bytes": len(page.encode()),
            "figures": page.count("<svg")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=GRIDS, default="smoke")
    parser.add_argument("--identities", type=int, default=None,
                        help="default: the grid's own (smoke 40, paper 250)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    identities = args.identities or DEFAULT_IDENTITIES[args.grid]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "results.duckdb"
        for label, attacks in (("detect", ["detect"]), ("cheap attacks", list(CHEAP_ATTACKS))):
            with ResultsDB(db_path) as db:
                run = fill(db, args.grid, attacks, identities=identities)
            results[label] = measure(db_path, run, repeat=args.repeat)
    for label, r in results.items():
        print(f"{args.grid} grid, {identities} identities, {label}: {r['cases']} cases, "
              f"report in {r['seconds']:.2f} s (best of {args.repeat}), "
              f"{r['bytes'] / 1e6:.2f} MB, {r['figures']} figures")
    base, new = results["detect"], results["cheap attacks"]
    print(f"cheap attacks / detect: {new['cases'] / base['cases']:.1f}x cases, "
          f"{new['seconds'] / base['seconds']:.1f}x render time, "
          f"{new['bytes'] / base['bytes']:.1f}x page size, "
          f"{new['figures'] / base['figures']:.1f}x figures")


if __name__ == "__main__":
    main()
