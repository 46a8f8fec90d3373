"""What measuring utility adds to a whole benchmark run: the same grid with and without.

Runs ``pytest bench`` (privacy cases only) twice per round on the same data, once with
``--no-bench-utility`` and once with ``--bench-utility`` (order alternating between rounds),
each into a fresh results database so that neither reuses the other's embeddings, and
prints for each round the wall time of both and their ratio, the summed
``case_wall_time`` ratio, and from the utility run the mean seconds per image of
measuring utility against those of recognition. The budget is 10 % (issue 15).

Usage::

    FACEANON_DATA=../shared/datasets python benchmarks/utility_run_overhead.py
    python benchmarks/utility_run_overhead.py --grid paper --methods blur,pixelate \\
        --identities 40
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceanon.store import ResultsDB


def _run(args, *, utility: bool, db: Path) -> float:
    command = [sys.executable, "-m", "pytest", str(args.bench), "-q", "-p", "no:cacheprovider",
               "-k", "test_privacy", "--bench-grid", args.grid, "--bench-db", str(db),
               "--bench-utility" if utility else "--no-bench-utility"]
    if args.methods:
        command += ["--bench-methods", args.methods]
    if args.identities:
        command += ["--bench-identities", str(args.identities)]
    if args.workers:
        command += ["--bench-workers", str(args.workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a bound crossed is still a measured run
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall


def _case_wall(db: Path) -> float:
    with ResultsDB(db, read_only=True) as reader:
        return float(reader.con.execute(
            "SELECT sum(mean) FROM timings WHERE name = 'case_wall_time'").fetchone()[0])


def _per_image(db: Path) -> tuple[float, float, int]:
    with ResultsDB(db, read_only=True) as reader:
        utility, n = reader.con.execute(
            "SELECT avg(seconds), count(*) FROM image_utility").fetchone()
        (recognize,) = reader.con.execute(
            "SELECT avg(mean) FROM timings WHERE name = 'recognize'").fetchone()
    return float(utility), float(recognize), int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", default=str(Path(__file__).parents[1] / "bench"))
    parser.add_argument("--grid", default="smoke")
    parser.add_argument("--methods", default=None)
    parser.add_argument("--identities", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the results databases in this (new) folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="utility-overhead-") as scratch:
        folder = scratch
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=False)
            folder = args.keep
        for round_ in range(args.rounds):
            walls, cases = {}, {}
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for utility in order:
                db = Path(folder) / f"r{round_}-{'with' if utility else 'without'}.duckdb"
                walls[utility] = _run(args, utility=utility, db=db)
                cases[utility] = _case_wall(db)
            per_utility, per_recognize, n = _per_image(
                Path(folder) / f"r{round_}-with.duckdb")
            print(f"round {round_ + 1} ({args.grid}, methods {args.methods or 'all'}, "
                  f"identities {args.identities or 'grid default'}):")
            print(f"  pytest wall: without {walls[False]:.1f} s, with {walls[True]:.1f} s, "
                  f"ratio {walls[True] / walls[False]:.3f}")
            print(f"  sum of case_wall_time: without {cases[False]:.1f} s, with "
                  f"{cases[True]:.1f} s, ratio {cases[True] / cases[False]:.3f}")
            print(f"  per anonymized image ({n} images): utility {1000 * per_utility:.1f} ms, "
                  f"recognition {1000 * per_recognize:.1f} ms (mean over cases), "
                  f"ratio {per_utility / per_recognize:.3f}")


if __name__ == "__main__":
    main()
