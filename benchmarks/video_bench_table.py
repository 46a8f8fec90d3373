"""Print the video benchmark's leak-rate table of a run as Markdown, from the database.

Reads the views ``video_case_metrics`` and ``video_person_metrics`` (faceanon/video_metrics.sql)
of the newest video run (or ``--run``) of a results database written by
``pytest bench -k video`` (bench/test_video.py)::

    python benchmarks/video_bench_table.py --db results.duckdb
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon.store import ResultsDB  # noqa: E402


def pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="results.duckdb")
    parser.add_argument("--run", type=int, default=None)
    args = parser.parse_args()
    with ResultsDB(args.db, read_only=True) as db:
        run_ids = db.video_runs()
        if not run_ids:
            sys.exit(f"{args.db}: no video run")
        run_id = args.run or run_ids[0]
        run = db.run(run_id)
        cases = db.video_case_metrics(run_id)
        people = db.video_person_metrics(run_id)
    names = list(run["config"].get("people") or sorted({p["person"] for p in people}))
    short = [n.split("-")[0].capitalize() for n in names]
    print(f"run {run_id} ({run['status']}), {cases[0]['frames']} frames of {cases[0]['clip']}, "
          f"reference detector {cases[0]['reference_detector']}, threshold "
          f"{cases[0]['threshold']}; leak % (where visible %), * = identified in >= 1 frame\n")
    header = ["method", "k", "attack", *[f"leak {s}" for s in short], "uncovered frames %",
              "uncovered faces %", "anonymize fps"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case in cases:
        rows = {p["person"]: p for p in people if p["case_id"] == case["case_id"]}
        cells = []
        for name in names:
            p = rows[name]
            mark = "*" if p["identified_anywhere"] else ""
            cells.append(f"{pct(p['leak_rate'])}{mark} ({pct(p['leak_rate_visible'])})")
        fps = case["anonymize_fps"]
        print("| " + " | ".join([case["method"], "" if case["k"] is None else str(case["k"]),
                                 case["attack"], *cells, pct(case["uncovered_frame_share"]),
                                 pct(case["uncovered_face_share"]),
                                 "–" if fps is None else f"{fps:.1f}"]) + " |")


if __name__ == "__main__":
    main()
