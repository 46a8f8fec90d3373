"""The benchmark suite's options, the shared evaluation, and the end-of-run summary.

Every (method, k, mode) is one test, so pytest's own selection works on cases:
``pytest bench -k pixelate``, ``pytest bench -k "blur and reverse"``, ``pytest bench -k clear``.
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from bench.grids import DEFAULT_IDENTITIES, case_id, cases
from faceanon import provenance
from faceanon.datasets import protocol_split, resolve_dataset
from faceanon.pipeline import MODES, Evaluation, Settings
from faceanon.store import DEFAULT_DB, ResultsDB


def pytest_addoption(parser):
    group = parser.getgroup("faceanon", "faceanon benchmark")
    group.addoption("--bench-data", default="lfw", help="dataset name or path (default lfw)")
    group.addoption("--bench-identities", type=int, default=None,
                    help="deterministic subset of N identities (default: per grid)")
    group.addoption("--bench-grid", default="smoke", choices=["smoke", "paper", "full"])
    group.addoption("--bench-methods", default=None, help="comma-separated method names")
    group.addoption("--bench-k", default=None, help="comma-separated strengths to keep")
    group.addoption("--bench-modes", default=None,
                    help=f"comma-separated modes out of {','.join(MODES)}")
    group.addoption("--bench-db", default=DEFAULT_DB, help="DuckDB results file")
    group.addoption("--bench-seed", type=int, default=0)
    group.addoption("--bench-run-name", default=None)
    group.addoption("--bench-workers", type=int, default=None,
                    help="worker processes (default: one per core)")
    group.addoption("--bench-detector", default="hog",
                    help="detector that finds the regions to anonymize")
    group.addoption("--bench-region", default="face", choices=["face", "eyes"])
    group.addoption("--bench-threshold", type=float, default=0.6,
                    help="decision threshold for FMR/FNMR (face_recognition's 0.6)")
    group.addoption("--bench-thresholds", default=None,
                    help="TOML file of metric bounds that fail a case when crossed")


def _split_list(value, cast=str):
    return [cast(v) for v in value.split(",")] if value else None


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    selected = cases(
        config.getoption("--bench-grid"),
        methods=_split_list(config.getoption("--bench-methods")),
        ks=_split_list(config.getoption("--bench-k"), int),
        modes=_split_list(config.getoption("--bench-modes")),
    )
    metafunc.parametrize("case", selected, ids=[case_id(*c) for c in selected])


class BenchRun:
    """One benchmark run: the database row, the evaluation, and what went wrong."""

    def __init__(self, config):
        self.config = config
        self.db = None
        self.run_id = None
        self.evaluation = None
        self.case_ids: list[int] = []
        self.errors = 0
        self.variants: list[tuple[str, object]] = []

    def start(self) -> Evaluation:
        if self.evaluation is not None:
            return self.evaluation
        option = self.config.getoption
        grid = option("--bench-grid")
        dataset = resolve_dataset(option("--bench-data"))
        identities = option("--bench-identities") or DEFAULT_IDENTITIES[grid]
        seed = option("--bench-seed")
        split = protocol_split(dataset, identities=min(identities, len(dataset.identities)),
                               seed=seed)
        settings = Settings(detector=option("--bench-detector"),
                            region=option("--bench-region"), seed=seed)
        self.db = ResultsDB(option("--bench-db"))
        self.db.set_threshold(option("--bench-threshold"))
        commit, dirty = provenance.git_state(Path(self.config.rootpath))
        self.run_id = self.db.start_run(
            name=option("--bench-run-name"),
            dataset_name=dataset.name,
            dataset_fingerprint=dataset.fingerprint,
            config={"grid": grid, "identities": len(split.identities), **split.summary(),
                    **settings.as_dict(), "threshold": option("--bench-threshold"),
                    "dataset_root": str(dataset.root)},
            git_commit=commit,
            git_dirty=dirty,
            packages=provenance.package_versions(),
            machine=provenance.machine(),
        )
        self.evaluation = Evaluation(dataset, split, db=self.db, run_id=self.run_id,
                                     settings=settings, workers=option("--bench-workers"))
        self.evaluation.plan(self.variants)
        return self.evaluation

    def finish(self, exitstatus) -> None:
        if self.run_id is None:
            return
        if self.evaluation is not None:
            self.evaluation.close()
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            status = "interrupted"
        elif self.errors:
            status = "failed"
        else:
            # Cases that crossed a regression bound still measured what they should.
            status = "complete"
        self.db.finish_run(self.run_id, status)
        self.status = status


@pytest.fixture(scope="session")
def bench_run(request) -> BenchRun:
    return request.config._faceanon_run


@pytest.fixture(scope="session")
def bounds(request) -> list[dict]:
    path = request.config.getoption("--bench-thresholds")
    if not path:
        return []
    with open(path, "rb") as handle:
        return tomllib.load(handle).get("bound", [])


def check_bounds(name: str, metrics: dict, bounds: list[dict]) -> list[str]:
    """Messages for every bound of ``bounds`` that case ``name`` crosses."""
    problems = []
    for bound in bounds:
        if not fnmatch(name, bound["case"]):
            continue
        metric = bound["metric"]
        value = metrics.get(metric)
        if value is None:
            problems.append(f"{name}: {metric} is undefined (no comparisons to measure it)")
            continue
        if "max" in bound and value > bound["max"]:
            problems.append(f"{name}: {metric} = {value:.4f} is above its bound {bound['max']}")
        if "min" in bound and value < bound["min"]:
            problems.append(f"{name}: {metric} = {value:.4f} is below its bound {bound['min']}")
    return problems


def pytest_configure(config):
    config._faceanon_run = BenchRun(config)


def pytest_collection_finish(session):
    # The selected cases, after -k: the pipeline prepares each variant while the one
    # before it is being compared.
    run = getattr(session.config, "_faceanon_run", None)
    if run is not None:
        run.variants = [item.callspec.params["case"][:2] for item in session.items
                        if hasattr(item, "callspec") and "case" in item.callspec.params
                        and item.callspec.params["case"][0] is not None]


def pytest_sessionfinish(session, exitstatus):
    run = getattr(session.config, "_faceanon_run", None)
    if run is not None:
        run.finish(exitstatus)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    run = getattr(config, "_faceanon_run", None)
    if run is None or run.run_id is None or not run.case_ids:
        return
    rows = {r["case_id"]: r for r in run.db.case_metrics(run_id=run.run_id)}
    timings = run.db.con.execute(
        "SELECT case_id, name, mean FROM timings WHERE case_id IN (SELECT id FROM cases "
        "WHERE run_id = ?)", [run.run_id]).fetchall()
    per_image = {(c, n): m for c, n, m in timings}
    write = terminalreporter.write_line
    terminalreporter.section(f"faceanon run {run.run_id} ({getattr(run, 'status', '?')}) "
                             f"-> {config.getoption('--bench-db')}")

    def pct(v):
        return "   -" if v is None else f"{100 * v:5.1f}"

    write(f"{'method':<12} {'k':>4} {'mode':<8} {'EER%':>6} {'FMR%':>6} {'FNMR%':>6} "
          f"{'FTA%':>6} {'rank1%':>6} {'anon ms':>8} {'recog ms':>8}")
    for cid in run.case_ids:
        r = rows.get(cid)
        if r is None:
            continue
        anon = per_image.get((cid, "anonymize"))
        recog = per_image.get((cid, "recognize"))
        write(f"{r['method']:<12} {'' if r['k'] is None else r['k']:>4} {r['mode']:<8} "
              f"{pct(r['eer']):>6} {pct(r['fmr']):>6} {pct(r['fnmr']):>6} {pct(r['fta']):>6} "
              f"{pct(r['rank1']):>6} "
              f"{'' if anon is None else f'{1000 * anon:8.2f}':>8} "
              f"{'' if recog is None else f'{1000 * recog:8.1f}':>8}")
