"""Time the metric views over many scores.

Goal (issue): all of ``case_metrics`` over 10 million scores (about 160 cases) in under
2 s. Prints the figure for each view, e.g. ``case_metrics: 160 cases over 10,000,000
scores in 1.23 s``.

Usage: ``python benchmarks/metric_views.py [--cases 160] [--probes 250] [--gallery 250]``
(10,000,000 scores by default; the database is a temporary file, as in real runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from faceanon.store import ResultsDB


def fill(db: ResultsDB, *, n_cases: int, n_probes: int, n_gallery: int, seed: int = 0) -> int:
    """Insert ``n_cases`` cases of ``n_probes x n_gallery`` synthetic comparisons.

    Cases vary from clear (well separated, all acquired) to strong anonymization
    (overlapping scores, up to 95 % of probes not acquired), like a real run.
    """
    rng = np.random.default_rng(seed)
    run = db.start_run(name="metric view benchmark", dataset_name="synthetic",
                       dataset_fingerprint="-", config={}, git_commit=None, git_dirty=None,
                       packages={}, machine={})
    probe_ids = np.repeat(np.arange(n_probes), n_gallery)
    gallery_ids = np.tile(np.arange(n_gallery), n_probes)
    mated = (probe_ids % n_gallery) == gallery_ids
    probes = np.array([f"anon/{i:05d}.jpg" for i in range(n_probes)], dtype=object)[probe_ids]
    gallery = np.array([f"orig/{j:05d}.jpg" for j in range(n_gallery)],
                       dtype=object)[gallery_ids]
    for c in range(n_cases):
        strength = c / max(n_cases - 1, 1)
        distance = rng.normal(0.75, 0.08, probe_ids.size) - 0.35 * (1 - strength) * mated
        failed = rng.random(n_probes) < 0.95 * strength
        distance[failed[probe_ids]] = np.nan
        case = db.add_case(run, method=f"m{c % 16}", k=c // 16, mode="naive",
                           detector="hog", backend="dlib")
        db.add_scores(case, probe=probes, gallery=gallery, mated=mated, distance=distance,
                      probe_acquired=~failed[probe_ids],
                      gallery_enrolled=np.ones(probe_ids.size, dtype=bool))
    db.finish_run(run, "complete")
    return run


def timed(db: ResultsDB, query: str, repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = len(db.con.execute(query).fetchall())
        times.append(time.perf_counter() - start)
    return min(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=160)
    parser.add_argument("--probes", type=int, default=250)
    parser.add_argument("--gallery", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--all-views", action="store_true",
                        help="also time confusion and det_curve")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, \
            ResultsDB(Path(folder) / "bench.duckdb") as db:
        start = time.perf_counter()
        fill(db, n_cases=args.cases, n_probes=args.probes, n_gallery=args.gallery)
        db.con.execute("CHECKPOINT")
        n_scores = db.con.execute("SELECT count(*) FROM scores").fetchall()[0][0]
        threads = db.con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        print(f"filled {n_scores:,} scores in {time.perf_counter() - start:.1f} s "
              f"(DuckDB threads: {threads})")
        best, rows = timed(db, "SELECT * FROM case_metrics", args.repeat)
        print(f"case_metrics: {rows} cases over {n_scores:,} scores in {best:.2f} s "
              f"(best of {args.repeat})")
        seconds, _ = timed(db, "SELECT * FROM case_metrics WHERE case_id = 1", args.repeat)
        print(f"case_metrics, one case: {seconds:.3f} s")
        if args.all_views:
            seconds, n = timed(db, "SELECT * FROM confusion", 1)
            print(f"confusion: {n:,} rows in {seconds:.2f} s")
            # computed in DuckDB, not fetched into Python (millions of points)
            seconds, _ = timed(db, "SELECT count(*), sum(fmr) FROM det_curve", 1)
            n = db.con.execute("SELECT count(*) FROM det_curve").fetchall()[0][0]
            print(f"det_curve, all cases: {n:,} points in {seconds:.2f} s")
            seconds, n = timed(db, "SELECT * FROM det_curve WHERE case_id = 1", args.repeat)
            print(f"det_curve, one case: {n:,} points in {seconds:.3f} s")
    if best >= 2.0:
        print(f"goal missed: case_metrics should take under 2 s, took {best:.2f} s")


if __name__ == "__main__":
    main()
