"""The benchmark suite as its users run it: selection with -k, runs, interruption, bounds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bench.conftest import check_bounds
from bench.grids import case_id, cases

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tmp_path, *args, plugin: str | None = None):
    command = [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider",
               "--bench-identities", "4", "--bench-db", str(tmp_path / "r.duckdb"), *args]
    env = dict(os.environ)
    if plugin:
        (tmp_path / "interrupter.py").write_text(plugin)
        env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        command += ["-p", "interrupter"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_case_ids_are_readable_and_selectable():
    ids = [case_id(*c) for c in cases("paper")]
    assert "pixelate-k16-naive" not in ids and "pixelate-k10-naive" in ids
    assert ids[0] == "clear" and "blackout-parrot" in ids and "blur-k90-reverse" in ids
    assert len(ids) == len(set(ids))
    assert all(c[2] == "reverse" for c in cases("smoke", modes=["reverse"]))
    selected = cases("paper", methods=["noise"], ks=[5, 90])
    assert {c[1] for c in selected if c[0] == "noise"} == {5, 90}


def test_k_selection_writes_only_those_cases(lfw, tmp_path):
    result = run_bench(tmp_path, "-k", "pixelate", "--bench-data", str(lfw.root))
    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        methods = {m for (m,) in con.execute("SELECT DISTINCT method FROM cases").fetchall()}
        status = con.execute("SELECT status FROM runs").fetchall()
        timings = con.execute("SELECT count(DISTINCT name) FROM timings").fetchall()[0][0]
    assert methods == {"pixelate"}
    assert status == [("complete",)]
    assert timings >= 2
    assert "pixelate" in result.stdout and "rank1%" in result.stdout


INTERRUPT = '''
calls = 0
def pytest_runtest_call(item):
    global calls
    calls += 1
    if calls == 2:
        raise KeyboardInterrupt
'''


def test_interrupted_run_is_marked(lfw, tmp_path):
    result = run_bench(tmp_path, "-k", "blur", "--bench-data", str(lfw.root),
                       plugin=INTERRUPT)
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout + result.stderr
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status, finished IS NOT NULL FROM runs").fetchall() == [
            ("interrupted", True)]


def test_bounds_name_metric_bound_and_value():
    bounds = [{"case": "clear", "metric": "eer", "max": 0.05},
              {"case": "blackout-*", "metric": "geer", "min": 0.45}]
    assert check_bounds("clear", {"eer": 0.01}, bounds) == []
    (problem,) = check_bounds("clear", {"eer": 0.2}, bounds)
    assert "eer" in problem and "0.05" in problem and "0.2000" in problem
    (problem,) = check_bounds("blackout-naive", {"geer": 0.3}, bounds)
    assert "below its bound 0.45" in problem
    assert check_bounds("blur-k5-naive", {"eer": 0.9}, bounds) == []
