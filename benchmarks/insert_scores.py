"""Time the bulk insert of scores into the results database.

Goal (issue): 1,000,000 scores in under 5 seconds. Prints the measured figure, e.g.
``inserted 1,000,000 scores in 0.84 s``.

Usage: ``python benchmarks/insert_scores.py [--n 1000000] [--repeat 3] [--db PATH]``
(default: a fresh database file in a temporary folder, as the real runs write to disk).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from faceanon.store import ResultsDB


def make_scores(n: int, *, n_gallery: int = 1000, seed: int = 0) -> dict:
    """Synthetic comparisons: probe i vs gallery j, 10 % failures to acquire."""
    rng = np.random.default_rng(seed)
    n_probes = -(-n // n_gallery)
    probe_ids = np.repeat(np.arange(n_probes), n_gallery)[:n]
    gallery_ids = np.tile(np.arange(n_gallery), n_probes)[:n]
    mated = (probe_ids % n_gallery) == gallery_ids
    distance = rng.normal(0.75, 0.08, n) - 0.35 * mated
    failed_probe = rng.random(n_probes) < 0.10
    distance[failed_probe[probe_ids]] = np.nan
    probe_names = np.array([f"anon/person_{i:05d}/img_0001.jpg" for i in range(n_probes)],
                           dtype=object)
    gallery_names = np.array([f"orig/person_{j:05d}/img_0002.jpg" for j in range(n_gallery)],
                             dtype=object)
    return {
        "probe": probe_names[probe_ids],
        "gallery": gallery_names[gallery_ids],
        "mated": mated,
        "distance": distance,
        "probe_acquired": ~failed_probe[probe_ids],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()

    scores = make_scores(args.n)
    with tempfile.TemporaryDirectory() as folder:
        path = args.db or Path(folder) / "bench.duckdb"
        with ResultsDB(path) as db:
            run = db.start_run(name="insert benchmark", dataset_name="synthetic",
                               dataset_fingerprint="-", config={}, git_commit=None,
                               git_dirty=None, packages={}, machine={})
            times = []
            for _ in range(args.repeat):
                case = db.add_case(run, method="none", k=None, mode="clear",
                                   detector="-", backend="-")
                start = time.perf_counter()
                db.add_scores(case, **scores)
                db.con.execute("CHECKPOINT")
                times.append(time.perf_counter() - start)
            total = db.con.execute("SELECT count(*) FROM scores").fetchall()[0][0]
            db.finish_run(run, "complete")
    assert total == args.n * args.repeat
    best, worst = min(times), max(times)
    print(f"inserted {args.n:,} scores in {best:.2f} s "
          f"(best of {args.repeat}; worst {worst:.2f} s; incl. CHECKPOINT to disk)")
    if best >= 5.0:
        raise SystemExit(f"too slow: goal is 1,000,000 scores in under 5 s, got {best:.2f} s")


if __name__ == "__main__":
    main()
