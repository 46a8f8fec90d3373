"""Executors: the registry, dask never imported by default, and the Dask executor on
LocalClusters and an external cluster: same scores as the local pool (ad-hoc, k-Same,
the GAN), a worker killed mid-run, a lost scheduler, workers that see other files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from faceanon.executors import (
    DaskExecutor,
    ExecutorError,
    LocalPool,
    available_executors,
    get_executor,
)


def test_registry_names_the_executors_and_refuses_an_unknown_one():
    assert available_executors()[:2] == ["local", "dask"]
    assert isinstance(get_executor("local", workers=3), LocalPool)
    with pytest.raises(ExecutorError, match=r"unknown executor 'spark'; known executors: "
                                            r"local, dask"):
        get_executor("spark")


def test_a_scheduler_comes_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    local = DaskExecutor(workers=3)
    assert local.describe() == {"name": "dask", "scheduler": "LocalCluster",
                                "ship_images": False, "workers": 3}
    assert local.notes() == []
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.5:8786")
    remote = DaskExecutor(workers=3)
    assert remote.scheduler == "tcp://10.0.0.5:8786" and remote.workers is None
    assert remote.notes() == ["faceanon: --bench-workers 3 ignored: the Dask cluster at "
                              "tcp://10.0.0.5:8786 has its own workers"]
    assert DaskExecutor(scheduler="tcp://other:1").scheduler == "tcp://other:1"


def test_the_default_install_and_the_local_pool_never_import_dask():
    # A fresh interpreter: this one has imported dask for the other tests.
    code = textwrap.dedent("""
        import sys
        import faceanon, faceanon.pipeline, faceanon.benchmark.plugin
        from faceanon.executors import get_executor
        if __name__ == "__main__":
            with get_executor("local", workers=2) as pool:
                pool.start(print, ("worker ready",))
                assert list(pool.map(len, [[1, 2], [3]], files=[["a", "b"], ["c"]])) == [2, 1]
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
            print("LOADED", loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("faceanon.executors.CONNECT_TIMEOUT", 2)
    executor = DaskExecutor(scheduler="tcp://127.0.0.1:9")
    with pytest.raises(ExecutorError, match=r"cannot reach the Dask scheduler at "
                                            r"tcp://127\.0\.0\.1:9"):
        executor.start(print, ())
    assert not executor.started


def test_without_dask_the_executor_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    with pytest.raises(ExecutorError, match=r"pip install 'faceanon\[dask\]'"):
        DaskExecutor(workers=1).start(print, ())


def test_a_worker_error_travels_back_with_its_message(tmp_path):
    # ImageReadError cannot be unpickled on its own (its __init__ takes two arguments);
    # where distributed has made exceptions picklable it travels as it is, elsewhere as
    # a WorkerTaskError: either way the client reads which file and what went wrong.
    import pickle

    from faceanon.errors import FaceanonError
    from faceanon.executors import _dask_task, _install_checked_images
    from faceanon.imageio import read_image

    _install_checked_images()
    missing = str(tmp_path / "gone.jpg")
    with pytest.raises(FaceanonError) as caught:
        _dask_task(lambda batch: [read_image(path) for path in batch], [missing], {}, None)
    travelled = pickle.loads(pickle.dumps(caught.value))
    assert f"{missing}: file not found" in str(travelled)


def test_bench_options_need_the_dask_executor(tmp_path):
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench",
         "--bench-data", str(tmp_path), "--bench-scheduler", "tcp://h:8786"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--bench-scheduler and --bench-ship-images need --bench-executor dask, not " \
           "'local'" in result.stderr, result.stderr


# --- real faces ---------------------------------------------------------------------------

CASES = [(None, None, "clear"), ("blur", 15, "naive"), ("ksame", 3, "reverse"),
         ("deepprivacy", None, "parrot"), ("blur", 15, "parrot"),
         # attacks ride in the task that makes the image (prepared, pickled to workers)
         ("blur", 15, "naive", "deblur"), ("ksame", 3, "reverse", "located")]


def _scores(db, case_id):
    return db.con.execute(
        "SELECT probe, gallery, mated, distance, probe_acquired, gallery_enrolled "
        "FROM scores WHERE case_id = ? ORDER BY probe, gallery", [case_id]).fetchall()


def _run(path, lfw, split, executor, cases, *, batch_size=2, during=None):
    """Every case of ``cases`` with ``executor``, in a fresh database: their scores.

    Every run cuts the same batches: which chips share a batch moves a distance by
    about 1e-8 (torch), so runs compared to 1e-12 must batch alike.
    """
    from faceanon.pipeline import Evaluation
    from faceanon.protocol import Case
    from faceanon.store import ResultsDB

    with ResultsDB(path) as db:
        run_id = db.start_run(name=executor.name, dataset_name="lfw",
                              dataset_fingerprint=lfw.fingerprint, config={},
                              git_commit=None, git_dirty=None, packages={}, machine={})
        cases = [Case(*case) for case in cases]
        with Evaluation(lfw, split, db=db, run_id=run_id, executor=executor,
                        batch_size=batch_size) as evaluation:
            evaluation.plan(cases)
            if during is not None:
                during(evaluation)
            ids = [evaluation.run_case(case).case_id for case in cases]
        return [_scores(db, case_id) for case_id in ids]


def _assert_equal(one, two):
    assert len(one) == len(two)
    for rows_one, rows_two in zip(one, two, strict=True):
        assert len(rows_one) == len(rows_two) > 0
        for a, b in zip(rows_one, rows_two, strict=True):
            assert a[:3] == b[:3] and a[4:] == b[4:]
            assert (a[3] is None and b[3] is None) or abs(a[3] - b[3]) <= 1e-12, (a, b)


@pytest.fixture(scope="module")
def split(lfw):
    from faceanon.datasets import protocol_split

    return protocol_split(lfw, identities=4, seed=7)


@pytest.fixture(scope="module")
def pool_scores(lfw, split, tmp_path_factory):
    """The local pool's scores of :data:`CASES`: what every Dask run must equal."""
    return _run(tmp_path_factory.mktemp("pool") / "r.duckdb", lfw, split,
                LocalPool(workers=2), CASES)


@pytest.mark.realdata
@pytest.mark.slow
def test_a_local_cluster_gives_the_pools_scores(lfw, split, pool_scores, tmp_path):
    # Ad-hoc (blur), set-based (k-Same: each set anonymized in the client, its images
    # encoded by the workers) and generative (the GAN, loaded once per worker).
    executor = DaskExecutor(workers=2)
    scores = _run(tmp_path / "r.duckdb", lfw, split, executor, CASES)
    _assert_equal(pool_scores, scores)
    # Shipping the files gives the same scores as reading them from the shared path.
    shipped = _run(tmp_path / "s.duckdb", lfw, split, DaskExecutor(workers=2, ship_images=True),
                   CASES[:2])
    _assert_equal(pool_scores[:2], shipped)


def _kill_a_busy_worker(killed: dict):
    """A ``during`` hook: once a worker runs a batch, SIGKILL its process (a thread)."""

    def watch(evaluation):
        executor = evaluation.executor
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if executor.started:
                busy = [w for w, keys in executor.client.processing().items() if keys]
                if busy:
                    pids = executor.client.run(os.getpid, workers=busy[:1])
                    killed["worker"], killed["pid"] = next(iter(pids.items()))
                    killed["pending"] = sum(map(len, executor.client.processing().values()))
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            time.sleep(0.05)

    def during(evaluation):
        thread = threading.Thread(target=watch, args=(evaluation,), daemon=True)
        thread.start()
        killed["thread"] = thread

    return during


@pytest.mark.realdata
@pytest.mark.slow
def test_a_worker_killed_mid_run_has_its_batches_run_elsewhere(lfw, split, pool_scores,
                                                               tmp_path):
    killed: dict = {}
    scores = _run(tmp_path / "r.duckdb", lfw, split, DaskExecutor(workers=2), CASES[:2],
                  during=_kill_a_busy_worker(killed))
    killed["thread"].join()
    assert "pid" in killed, "no worker was ever busy"
    assert killed["pending"] > 1, "the worker died with the run still going"
    _assert_equal(pool_scores[:2], scores)


def _start_cluster(tmp_path, workers: int):
    """A scheduler and ``workers`` worker processes, as on a real cluster."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written whole before the scheduler listens
    import json

    address = json.loads(scheduler_file.read_text())["address"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers",
         str(workers), "--nthreads", "1", "--no-dashboard"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return address, scheduler, worker


@pytest.mark.realdata
@pytest.mark.slow
def test_workers_that_see_other_files_fail_loudly(lfw, split, tmp_path, monkeypatch):
    # The client's reference hash of one original is not what the workers decode: as if
    # a node held another photo under the same path.
    import faceanon.executors

    victim = str(lfw.path(split.probes[0]))
    real = faceanon.executors._pixel_sha256
    monkeypatch.setattr(faceanon.executors, "_pixel_sha256",
                        lambda path: "0" * 64 if path == victim else real(path))
    with pytest.raises(faceanon.executors.ImageMismatchError,
                       match=rf"{victim}: the worker on .* decoded pixels with sha256 "
                             rf".*, the client 0000000000000000: this node sees other files"):
        _run(tmp_path / "r.duckdb", lfw, split, DaskExecutor(workers=1), CASES[:1])


KILL_SCHEDULER = '''
import os, signal

def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid.endswith("[clear]"):
        os.kill(int(os.environ["TEST_SCHEDULER_PID"]), signal.SIGKILL)
'''


@pytest.mark.realdata
@pytest.mark.slow
def test_the_benchmark_on_a_cluster_that_loses_its_scheduler_is_failed(lfw, tmp_path):
    import duckdb

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    address, scheduler, worker = _start_cluster(tmp_path, 1)
    (tmp_path / "killer.py").write_text(KILL_SCHEDULER)
    env = {**os.environ, "TEST_SCHEDULER_PID": str(scheduler.pid),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    try:
        result = subprocess.run(
            [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
             "killer", "bench", "-k", "test_privacy", "--bench-data", str(lfw.root),
             "--bench-identities", "3", "--bench-methods", "blur", "--bench-k", "15",
             "--bench-modes", "clear,naive", "--bench-attacks", "detect",
             "--bench-executor", "dask", "--bench-scheduler",
             address, "--bench-workers", "3", "--bench-db", str(tmp_path / "r.duckdb")],
            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait()
    out = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert f"--bench-workers 3 ignored: the Dask cluster at {address}" in out
    assert f"lost the Dask scheduler at {address}" in out
    assert "1 failed, 1 passed" in out
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
        assert con.execute("SELECT count(*) FROM cases").fetchall() == [(1,)]
        (config,) = con.execute("SELECT config FROM runs").fetchone()
    assert '"scheduler": "' + address + '"' in config
