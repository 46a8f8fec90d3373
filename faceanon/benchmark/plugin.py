"""The benchmark's pytest plugin, registered through the ``pytest11`` entry point.

pytest loads it in every session of an environment where faceanon is installed, so it
imports nothing heavy (no dlib, torch, DuckDB or numpy) until a collected test asks for
the benchmark. It contributes:

- the ``--bench-*`` options (registered here only);
- parametrization of the arguments ``bench_case`` (a :class:`faceanon.protocol.Case` per
  selected case, id ``blur-k15-naive`` or, for an attack other than ``detect``,
  ``noise-k30-naive-median``, so ``-k median`` selects by attack) and ``bench_variant`` (a
  :class:`faceanon.protocol.Variant` per selected variant, id ``blur-k15``);
- the session fixture ``bench_run`` (:class:`faceanon.benchmark.run.BenchRun`);
- the run's lifecycle: the data is found once at collection (no data: one error line that
  says how to get it), the database run is marked complete, failed or interrupted at the
  end, and a table of the measured cases closes the terminal report.
"""

from __future__ import annotations

import pytest

from faceanon.protocol import DECISION_THRESHOLD, MODES

RUN_KEY = pytest.StashKey["BenchRun"]()
VIDEO_KEY = pytest.StashKey["VideoBench"]()
#: ``--bench-backend`` choices: ``faceanon.recognition.BACKEND_CHOICES``, spelled out here
#: because loading the plugin must not import numpy (a test keeps the two equal).
BACKEND_CHOICES = ("auto", "dlib-resnet", "dlib-resnet-torch")
#: The arguments that make a test a benchmark test.
BENCH_ARGUMENTS = ("bench_run", "bench_case", "bench_variant")


def pytest_addoption(parser: pytest.Parser) -> None:
    from faceanon.benchmark.grids import GRIDS

    group = parser.getgroup("faceanon", "faceanon benchmark")
    group.addoption("--bench-data", default="lfw",
                    help="dataset name (looked up in $FACEANON_DATA, then the user cache) "
                         "or folder; default lfw")
    group.addoption("--bench-fetch", action="store_true",
                    help="download the dataset into the user cache when it is not found "
                         "(as `faceanon data fetch lfw`)")
    group.addoption("--bench-identities", type=int, default=None,
                    help="deterministic subset of N identities (default: per grid)")
    group.addoption("--bench-grid", default=GRIDS[0], choices=GRIDS)
    group.addoption("--bench-methods", default=None, help="comma-separated method names")
    group.addoption("--bench-k", default=None, help="comma-separated strengths to keep")
    group.addoption("--bench-modes", default=None,
                    help=f"comma-separated modes out of {','.join(MODES)}")
    group.addoption("--bench-attacks", default="cheap",
                    help="comma-separated attacks (faceanon.attacks names), each run on the "
                         "methods it applies to; 'cheap' (the default): detect, located, "
                         "median, deblur, unpixelate, sharpen; 'all': every registered "
                         "attack, plugins included")
    group.addoption("--bench-attack-option", action="append", default=[],
                    metavar="ATTACK.KEY=VALUE",
                    help="an option of one attack of the run, repeatable, e.g. "
                         "learned.images=600 (numbers and true/false are parsed; the run's "
                         "config records each attack's settings)")
    group.addoption("--bench-db", default=None,
                    help="DuckDB results file (default results.duckdb, as faceanon report)")
    group.addoption("--bench-seed", type=int, default=0)
    group.addoption("--bench-run-name", default=None)
    group.addoption("--bench-workers", type=int, default=None,
                    help="worker processes (default: one per core); with --bench-executor "
                         "dask the LocalCluster's workers, ignored for --bench-scheduler")
    group.addoption("--bench-executor", default="local",
                    help="where images are anonymized and encoded: local (a process pool, "
                         "the default), dask (a Dask cluster), or a registered executor")
    group.addoption("--bench-scheduler", default=None,
                    help="with --bench-executor dask: address of a running scheduler "
                         "(tcp://host:8786; default $DASK_SCHEDULER_ADDRESS, else a "
                         "LocalCluster of --bench-workers processes)")
    group.addoption("--bench-ship-images", action="store_true",
                    help="with --bench-executor dask: send the image files to the workers "
                         "instead of having them read the dataset path")
    group.addoption("--bench-backend", default="auto", choices=BACKEND_CHOICES,
                    help="recognizer: dlib's face descriptor in torch (dlib-resnet-torch) or "
                         "in dlib (dlib-resnet); default auto, the torch one where it runs "
                         "and equals dlib's to 1e-5, else dlib's")
    group.addoption("--bench-detector", default="hog",
                    help="detector that finds the regions to anonymize")
    group.addoption("--bench-region", default="face",
                    help="what to anonymize in each face: face or eyes")
    group.addoption("--bench-threshold", type=float, default=DECISION_THRESHOLD,
                    help=f"decision threshold for FMR/FNMR (default {DECISION_THRESHOLD}, "
                         "face_recognition's)")
    group.addoption("--bench-utility", dest="bench_utility", action="store_true",
                    default=True,
                    help="measure what anonymization costs, per anonymized image "
                         "(faceanon.utility: HOG retention, landmark error, SSIM/PSNR); "
                         "the default")
    group.addoption("--no-bench-utility", dest="bench_utility", action="store_false",
                    help="do not measure utility (to time what it adds)")
    group.addoption("--bench-thresholds", default=None,
                    help="TOML file of metric bounds that fail a case when crossed")
    group.addoption("--bench-video-frames", type=int, default=None,
                    help="video cases: measure only the first N frames of the clip "
                         "(default: per grid, the whole clip in paper)")


def pytest_configure(config: pytest.Config) -> None:
    from faceanon.benchmark.run import BenchRun
    from faceanon.benchmark.video import VideoBench

    config.stash[RUN_KEY] = BenchRun(config)
    config.stash[VIDEO_KEY] = VideoBench(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_video_case" in metafunc.fixturenames:
        cases = metafunc.config.stash[VIDEO_KEY].planned_cases()
        metafunc.parametrize("bench_video_case", cases, ids=[c.label for c in cases])
    wanted = [name for name in ("bench_case", "bench_variant") if name in metafunc.fixturenames]
    if not wanted:
        return
    from faceanon.errors import FaceanonError

    run = metafunc.config.stash[RUN_KEY]
    try:
        if "bench_case" in wanted:
            cases = run.planned_cases()
            metafunc.parametrize("bench_case", cases, ids=[c.label for c in cases])
        if "bench_variant" in wanted:
            variants = run.planned_variants()
            metafunc.parametrize("bench_variant", variants, ids=[v.label for v in variants])
    except (FaceanonError, ValueError) as error:
        raise pytest.UsageError(str(error)) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly:
        return
    # The video cases left after -k: the video run is complete only when all were stored.
    config.stash[VIDEO_KEY].planned = sum(
        "bench_video_case" in getattr(getattr(item, "callspec", None), "params", {})
        for item in session.items)
    needs_bench = [item for item in session.items
                   if set(BENCH_ARGUMENTS) & set(getattr(item, "fixturenames", ()))]
    if not needs_bench:
        return
    from faceanon.errors import FaceanonError

    # The selected cases, after -k: the pipeline prepares each variant while the one
    # before it is being compared.
    cases = [item.callspec.params["bench_case"] for item in needs_bench
             if "bench_case" in getattr(getattr(item, "callspec", None), "params", {})]
    try:
        config.stash[RUN_KEY].prepare(cases)
    except FaceanonError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.fixture(scope="session")
def bench_run(request: pytest.FixtureRequest):
    """The benchmark session (:class:`faceanon.benchmark.run.BenchRun`)."""
    return request.config.stash[RUN_KEY]


@pytest.fixture(scope="session")
def bench_video(request: pytest.FixtureRequest):
    """The video cases' session (:class:`faceanon.benchmark.video.VideoBench`)."""
    return request.config.stash[VIDEO_KEY]


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    video = session.config.stash.get(VIDEO_KEY, None)
    if video is not None:
        video.finish(exitstatus)
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None:
        run.finish(exitstatus)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    video = config.stash.get(VIDEO_KEY, None)
    if video is not None and video.run_id is not None and video.case_ids:
        terminalreporter.section(f"faceanon video run {video.run_id} ({video.status or '?'}) "
                                 f"-> {video.db.path}")
        for line in video.summary_lines():
            terminalreporter.write_line(line)
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.run_id is None or not run.case_ids:
        return
    terminalreporter.section(f"faceanon run {run.run_id} ({run.status or '?'}) "
                             f"-> {run.db_path}")
    for line in run.summary_lines():
        terminalreporter.write_line(line)
