"""Time ``faceanon report`` on an existing results database.

Renders the report into a temporary folder (never into ``report/``) a few times and
prints the best time, with and without the picture strip (which reads and anonymizes
dataset images), e.g. ``report of run 3 (21 cases, 33,600 scores): 2.41 s; without
pictures 1.62 s (best of 3)``.

Usage: ``python benchmarks/render_report.py [--db results.duckdb] [--run ID] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from faceanon.report import choose_runs, render_report
from faceanon.store import ResultsDB


def best_time(db: str, run_ids: list[int], *, identities: int, repeat: int) -> float:
    """Best wall time of ``repeat`` renders, in seconds."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(repeat):
            start = time.perf_counter()
            render_report(db, Path(folder) / f"report{i}", run_ids=run_ids,
                          identities=identities)
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="results.duckdb")
    parser.add_argument("--run", type=int, action="append", default=[],
                        help="run id (twice: a comparison), default the newest complete run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--identities", type=int, default=3)
    args = parser.parse_args()
    with ResultsDB(args.db, read_only=True) as db:
        run, _ = choose_runs(db.runs(), args.run)
    full = best_time(args.db, args.run, identities=args.identities, repeat=args.repeat)
    bare = best_time(args.db, args.run, identities=0, repeat=args.repeat)
    print(f"report of run {run['id']} ({run['n_cases']} cases, {run['n_scores']:,} scores): "
          f"{full:.2f} s; without pictures {bare:.2f} s (best of {args.repeat})")


if __name__ == "__main__":
    main()
