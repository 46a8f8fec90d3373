"""One test per (method, k, recognition mode): measure it, store it, check its bounds."""

from __future__ import annotations

import statistics

import pytest

from bench.conftest import check_bounds
from bench.grids import case_id


def _stats(name: str, seconds: list[float]) -> dict:
    return {
        "name": name,
        "min": min(seconds),
        "max": max(seconds),
        "median": statistics.median(seconds),
        "mean": statistics.fmean(seconds),
        "stddev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0,
        "rounds": len(seconds),
        "unit": "seconds per image",
    }


def test_privacy(case, bench_run, bounds, benchmark):
    method, k, mode = case
    evaluation = bench_run.start()
    try:
        # One round: a case must not be repeated (its scores are written once). The
        # per-image figures below come from timing every image inside the pipeline.
        cid, timing = benchmark.pedantic(
            evaluation.run_case, args=(method, k, mode), rounds=1, iterations=1
        )
    except Exception:
        bench_run.errors += 1
        raise
    bench_run.case_ids.append(cid)
    rows = [_stats(name, values) for name, values in timing.items() if values]
    if benchmark.stats is not None:  # None under --benchmark-disable
        stats = benchmark.stats.stats
        rows.append({"name": "case", "min": stats.min, "max": stats.max,
                     "median": stats.median, "mean": stats.mean, "stddev": stats.stddev,
                     "rounds": stats.rounds, "unit": "seconds per case"})
    bench_run.db.add_timings(cid, rows)
    benchmark.extra_info.update({f"{r['name']}_mean_s": r["mean"] for r in rows})
    benchmark.extra_info["case_id"] = cid
    metrics = next(r for r in bench_run.db.case_metrics(run_id=bench_run.run_id)
                   if r["case_id"] == cid)
    problems = check_bounds(case_id(method, k, mode), metrics, bounds)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
