"""ResultsDB: schema, run lifecycle, bulk inserts, embedding cache, the ``runs`` CLI."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from faceanon import store
from faceanon.cli.runs import runs_command
from faceanon.store import (
    DEFAULT_DB,
    DEFAULT_THRESHOLD,
    SCHEMA_VERSION,
    DatabaseLockedError,
    ResultsDB,
    SchemaVersionError,
    StoreError,
)

TABLES = {"runs", "cases", "images", "scores", "embeddings", "timings", "schema_version",
          "confusion_thresholds", "attack_trainings", "image_utility", "video_cases",
          "video_frames"}
VIEWS = {"case_metrics", "confusion", "det_curve", "utility_metrics", "detector_retention"}


def _start(db: ResultsDB, **overrides) -> int:
    options = dict(name="smoke", dataset_name="lfw", dataset_fingerprint="abc123",
                   config={"methods": ["blur"], "seed": 1}, git_commit="deadbeef" * 5,
                   git_dirty=False, packages={"numpy": "2.4.6"}, machine={"cpu": "x86"})
    options.update(overrides)
    return db.start_run(**options)


def _fill(db: ResultsDB, run: int, *, n: int = 12) -> int:
    case = db.add_case(run, method="blur", k=9, mode="naive", detector="hog", backend="dlib",
                       options={"sigma": 3})
    rng = np.random.default_rng(0)
    db.add_scores(case, probe=[f"p{i % 4}" for i in range(n)],
                  gallery=[f"g{i // 4}" for i in range(n)],
                  mated=np.array([i % 4 == i // 4 for i in range(n)]),
                  distance=rng.random(n))
    db.add_timings(case, [{"name": "anonymize", "min": 0.1, "median": 0.2, "mean": 0.2,
                           "stddev": 0.01, "rounds": 5}])
    db.add_images(run, {"key": ["a.jpg"], "role": ["original"], "sha256": ["00"],
                        "acquired": [True], "faces_found": [1], "backend": ["dlib"]})
    return case


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "results.duckdb"


def test_default_path():
    assert DEFAULT_DB == "results.duckdb"


def test_reopening_keeps_runs_and_settings(db_path):
    with ResultsDB(db_path) as db:
        run = _start(db, threshold=0.5)
        _fill(db, run)
        db.set_confusion_thresholds([0.4])
    with ResultsDB(db_path) as db:                       # opened again: nothing re-created
        names = {r[0] for r in db.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        assert TABLES | VIEWS <= names
        assert db.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert db.run(run)["threshold"] == 0.5           # the run keeps its threshold
        assert db.confusion_thresholds() == [0.4]
        assert len(db.case_metrics()) == 1
        assert _start(db) == run + 1                     # ids keep counting
        assert db.run(run + 1)["threshold"] == DEFAULT_THRESHOLD
    with ResultsDB(db_path, read_only=True) as db:
        assert len(db.runs()) == 2
        assert len(db.case_metrics()) == 1               # readers get the views too
        assert db.con.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
    # the metric views live on connections, never in the file
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        stored = con.execute("SELECT view_name FROM duckdb_views() "
                             "WHERE NOT internal AND NOT temporary").fetchall()
        assert stored == []
    finally:
        con.close()


def test_new_database_defaults():
    with ResultsDB(":memory:") as db:
        assert db.run(_start(db))["threshold"] == 0.6
        assert db.confusion_thresholds() == [0.575, 0.6]
        with pytest.raises(ValueError, match="finite"):
            _start(db, threshold=float("nan"))


def test_read_only_needs_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ResultsDB(tmp_path / "missing.duckdb", read_only=True)


def test_run_lifecycle():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        (row,) = db.runs()
        assert row["id"] == run and row["status"] == "running" and row["finished"] is None
        assert row["config"] == {"methods": ["blur"], "seed": 1}
        assert row["packages"] == {"numpy": "2.4.6"}
        assert row["git_dirty"] is False and row["dataset_fingerprint"] == "abc123"
        case = _fill(db, run)
        db.finish_run(run, "complete")
        (row,) = db.runs()
        assert row["status"] == "complete" and row["finished"] >= row["started"]
        assert row["n_cases"] == 1 and row["n_scores"] == 12
        (metrics,) = db.case_metrics(run_id=run)
        assert metrics["case_id"] == case and metrics["method"] == "blur"
        assert metrics["k"] == 9 and metrics["mode"] == "naive"
        assert db.case_metrics(run_id=run + 1) == []
        with pytest.raises(ValueError):
            db.finish_run(run, "running")
        with pytest.raises(KeyError):
            db.finish_run(run + 1, "failed")
        with pytest.raises(ValueError):
            db.add_case(run, method="blur", k=1, mode="bogus", detector="hog",
                        backend="dlib")


def test_scores_round_trip_with_nulls():
    with ResultsDB(":memory:") as db:
        case = db.add_case(_start(db), method="pixelate", k=None, mode="clear",
                           detector="hog", backend="dlib")
        distance = np.array([0.1, np.nan, 0.3, np.inf, 0.5])
        mated = np.array([True, False, False, True, False])
        acquired = np.array([True, False, True, True, True])
        db.add_scores(case, probe=np.array(list("abcde")),          # numpy unicode
                      gallery=["g"] * 5, mated=mated, distance=distance,
                      probe_acquired=acquired)
        rows = db.con.execute("SELECT probe, gallery, mated, distance, probe_acquired, "
                              "gallery_enrolled FROM scores ORDER BY probe").fetchall()
        assert rows == [
            ("a", "g", True, 0.1, True, None),
            ("b", "g", False, None, False, None),
            ("c", "g", False, 0.3, True, None),
            ("d", "g", True, None, True, None),           # +inf: never a match -> NULL
            ("e", "g", False, 0.5, True, None),
        ]
        with pytest.raises(ValueError):
            db.add_scores(case, probe=["a"], gallery=["g"], mated=np.array([True]),
                          distance=np.array([-np.inf]))
        with pytest.raises(ValueError):
            db.add_scores(case, probe=["a", "b"], gallery=["g"], mated=np.array([True, True]),
                          distance=np.array([0.1, 0.2]))
        with pytest.raises(TypeError):
            db.add_scores(case, probe=["a"], gallery=["g"], mated=np.array([1]),
                          distance=np.array([0.1]))


def test_bulk_insert_is_fast_enough():
    """A smoke version of benchmarks/insert_scores.py: 200k rows well within budget."""
    import time

    n = 200_000
    with ResultsDB(":memory:") as db:
        case = db.add_case(_start(db), method="blur", k=1, mode="naive", detector="hog",
                           backend="dlib")
        names = np.array([f"img_{i:04d}" for i in range(1000)], dtype=object)
        start = time.perf_counter()
        db.add_scores(case, probe=names[np.arange(n) // 200], gallery=names[np.arange(n) % 200],
                      mated=np.zeros(n, dtype=bool), distance=np.random.default_rng(0).random(n))
        assert time.perf_counter() - start < 5.0
        assert db.con.execute("SELECT count(*) FROM scores").fetchone()[0] == n


def test_images_and_timings():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        db.add_images(run, {"key": np.array(["a", "b"]), "role": ["original", "anonymized"],
                            "method": [None, "blur"], "k": [None, 3], "sha256": ["1", "2"],
                            "acquired": [True, False], "faces_found": [1, 0],
                            "backend": ["dlib", "dlib"]})
        assert db.con.execute("SELECT key, role, method, k, acquired, faces_found FROM images "
                              "ORDER BY key").fetchall() == [
            ("a", "original", None, None, True, 1), ("b", "anonymized", "blur", 3, False, 0)]
        with pytest.raises(ValueError):
            db.add_images(run, {"key": ["a"], "role": ["original"], "colour": ["red"]})
        with pytest.raises(ValueError):
            db.add_images(run, {"key": ["a", "b"], "role": ["original"]})
        case = db.add_case(run, method="blur", k=3, mode="naive", detector="hog",
                           backend="dlib")
        db.add_timings(case, [
            {"name": "anonymize", "min": 1e-3, "median": 2e-3, "mean": 2e-3, "stddev": 1e-4,
             "rounds": 10},
            {"name": "recognize", "min": 0.1, "median": 0.2, "mean": 0.2, "stddev": 0.01,
             "rounds": 3, "unit": "seconds per comparison"},
        ])
        assert db.con.execute("SELECT name, rounds, unit FROM timings ORDER BY name").fetchall() \
            == [("anonymize", 10, "seconds per image"), ("recognize", 3, "seconds per comparison")]


def test_embedding_cache_round_trip():
    m = {"model": "m1"}
    with ResultsDB(":memory:") as db:
        vec = np.linspace(-1, 1, 128)
        db.store_embeddings("dlib", ["s1", "s2"], [vec, None], [1, 0], **m)
        assert db.cached_embeddings("dlib", [], **m) == {}
        got = db.cached_embeddings("dlib", ["s1", "s2", "s3", "s1"], **m)
        assert set(got) == {"s1", "s2"}
        assert got["s1"][0].dtype == np.float64
        np.testing.assert_array_equal(got["s1"][0], vec)
        assert got["s1"][1] == 1
        assert got["s2"] == (None, 0)
        assert db.cached_embeddings("other-backend", ["s1"], **m) == {}
        assert db.cached_embedding_keys("dlib", **m) == {"s1", "s2"}
        assert db.cached_embedding_keys("other-backend", **m) == set()
        # insert-or-ignore: an existing (backend, model, sha256) keeps its first value
        db.store_embeddings("dlib", ["s1", "s3", "s3"], [np.zeros(128), None, None],
                            [2, 0, 0], **m)
        got = db.cached_embeddings("dlib", ["s1", "s3"], **m)
        np.testing.assert_array_equal(got["s1"][0], vec)
        assert got["s3"] == (None, 0)
        db.store_embeddings("other-backend", ["s1"], [np.ones(4)], [3], **m)
        np.testing.assert_array_equal(
            db.cached_embeddings("other-backend", ["s1"], **m)["s1"][0], np.ones(4))
        db.store_embeddings("dlib", [], [], [], **m)


def test_embedding_cache_never_mixes_models():
    """The same backend name and pixels, computed by other model files: a cache miss."""
    with ResultsDB(":memory:") as db:
        db.store_embeddings("dlib-resnet:hog:up1:jit1", ["s"], [np.ones(3)], [1], model="old")
        assert db.cached_embeddings("dlib-resnet:hog:up1:jit1", ["s"], model="new") == {}
        assert db.cached_embedding_keys("dlib-resnet:hog:up1:jit1", model="new") == set()
        db.store_embeddings("dlib-resnet:hog:up1:jit1", ["s"], [np.zeros(3)], [1],
                            model="new")
        np.testing.assert_array_equal(
            db.cached_embeddings("dlib-resnet:hog:up1:jit1", ["s"], model="new")["s"][0],
            np.zeros(3))
        np.testing.assert_array_equal(
            db.cached_embeddings("dlib-resnet:hog:up1:jit1", ["s"], model="old")["s"][0],
            np.ones(3))
        # every backend must say what computed its embeddings
        with pytest.raises(TypeError, match="model"):
            db.cached_embeddings("dlib-resnet:hog:up1:jit1", ["s"])
        with pytest.raises(ValueError, match="model must name"):
            db.store_embeddings("dlib-resnet:hog:up1:jit1", ["s"], [np.ones(3)], [1],
                                model="")


def test_delete_run_keeps_other_runs_and_cache():
    with ResultsDB(":memory:") as db:
        keep, gone = _start(db), _start(db)
        _fill(db, keep)
        case = _fill(db, gone)
        db.store_embeddings("dlib", ["s"], [np.ones(128)], [1], model="m")
        db.finish_run(gone, "failed")
        db.delete_run(gone)
        assert [r["id"] for r in db.runs()] == [keep]
        for table, column, value in [("cases", "run_id", gone), ("images", "run_id", gone),
                                     ("scores", "case_id", case), ("timings", "case_id", case)]:
            assert db.con.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?",
                                  [value]).fetchone()[0] == 0
        assert db.con.execute("SELECT count(*) FROM scores").fetchone()[0] == 12
        assert "s" in db.cached_embeddings("dlib", ["s"], model="m")
        with pytest.raises(KeyError):
            db.delete_run(gone)


# -- the runs CLI ------------------------------------------------------------------------


def test_runs_cli(db_path):
    with ResultsDB(db_path) as db:
        first = _start(db, name="first")
        _fill(db, first)
        hidden = db.add_case(first, method="blackout", k=None, mode="naive", detector="hog",
                             backend="dlib")                # no probe has a face
        db.add_scores(hidden, probe=["p0", "p0", "p1", "p1"], gallery=["g0", "g1"] * 2,
                      mated=np.array([True, False, False, True]), distance=np.full(4, np.nan))
        db.finish_run(first, "complete")
        second = _start(db, name="second")
    runner = CliRunner()

    result = runner.invoke(runs_command, ["list", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["id", "status"]
    assert lines[1].split()[:2] == [str(second), "running"]
    assert lines[2].split()[:2] == [str(first), "complete"]

    result = runner.invoke(runs_command, ["list", "--db", str(db_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["id"] for r in data] == [second, first]
    assert data[1]["n_scores"] == 12 + 4 and data[1]["config"]["seed"] == 1

    result = runner.invoke(runs_command, ["show", str(first), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "status: complete" in result.output and "blur" in result.output
    (blackout,) = [line for line in result.output.splitlines() if "blackout" in line]
    assert "not reached" in blackout                        # not 0.500

    result = runner.invoke(runs_command, ["show", str(first), "--db", str(db_path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["run"]["id"] == first and shown["cases"][0]["method"] == "blur"

    result = runner.invoke(runs_command, ["show", "999", "--db", str(db_path)])
    assert result.exit_code != 0 and "no run 999" in result.output

    result = runner.invoke(runs_command, ["delete", str(first), "--db", str(db_path)],
                           input="n\n")
    assert result.exit_code != 0                          # aborted, nothing deleted
    result = runner.invoke(runs_command, ["delete", str(first), "--db", str(db_path)],
                           input="y\n")
    assert result.exit_code == 0, result.output
    # `second` is still running, in this very process: deleting it is refused
    result = runner.invoke(runs_command, ["delete", str(second), "--db", str(db_path), "--yes"])
    assert result.exit_code != 0 and "still running" in result.output
    with ResultsDB(db_path) as db:
        db.finish_run(second, "interrupted")
    result = runner.invoke(runs_command, ["delete", str(second), "--db", str(db_path), "--yes"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(runs_command, ["list", "--db", str(db_path)])
    assert result.output.strip() == "no runs"


def test_runs_cli_missing_database(tmp_path):
    runner = CliRunner()
    missing = str(tmp_path / "nope.duckdb")
    for args in (["list"], ["show", "1"], ["delete", "1", "--yes"]):
        result = runner.invoke(runs_command, [*args, "--db", missing])
        assert result.exit_code != 0
        assert "no results database" in result.output
    assert not (tmp_path / "nope.duckdb").exists()


def test_runs_is_wired_into_the_cli(db_path):
    from faceanon.cli import main

    ResultsDB(db_path).close()
    result = CliRunner().invoke(main, ["runs", "list", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "no runs" in result.output


def test_methods_work_while_caller_holds_an_unfinished_result():
    """DuckDB 2 refuses register()/sql() while an execute() result is half fetched."""
    with ResultsDB(":memory:") as db:
        case = db.add_case(_start(db), method="blur", k=1, mode="naive", detector="hog",
                           backend="dlib")
        db.con.execute("SELECT * FROM range(10)").fetchone()
        db.store_embeddings("dlib", ["s"], [np.ones(3)], [1], model="m")
        db.con.execute("SELECT * FROM range(10)").fetchone()
        assert set(db.cached_embeddings("dlib", ["s"], model="m")) == {"s"}
        db.con.execute("SELECT * FROM range(10)").fetchone()
        db.add_scores(case, probe=["p"], gallery=["g"], mated=np.array([True]),
                      distance=np.array([0.2]))
        db.con.execute("SELECT * FROM range(10)").fetchone()
        assert db.case_metrics()[0]["n_mated"] == 1


# -- methods and weights a run records ---------------------------------------------------


def test_run_records_methods_and_weights():
    gan = {"name": "deepprivacy", "weights": "/w/deepprivacy64.pt", "weights_sha256": "ab" * 32}
    with ResultsDB(":memory:") as db:
        run = _start(db, methods={"blur": {"name": "blur", "k_meaning": "kernel"}})
        db.record_methods(run, {"deepprivacy": gan})
        assert db.run(run)["methods"] == {"blur": {"name": "blur", "k_meaning": "kernel"},
                                          "deepprivacy": gan}
        with pytest.raises(ValueError, match="weights_sha256"):
            db.record_methods(run, {"deepprivacy": {"weights": "/w/other.pt"}})
        with pytest.raises(ValueError, match="weights_sha256"):
            _start(db, methods={"deepprivacy": {**gan, "weights_sha256": "not-a-hash"}})
        with pytest.raises(KeyError):
            db.record_methods(run + 99, {"blur": {}})
        assert db.run(run)["methods"]["deepprivacy"] == gan     # nothing half-recorded


# -- one case in one transaction ----------------------------------------------------------


def _case_data(n: int, seq: int = 0) -> dict:
    rng = np.random.default_rng(seq)
    return dict(
        scores={"probe": [f"p{i % 50}" for i in range(n)],
                "gallery": [f"g{i // 50}" for i in range(n)],
                "mated": np.array([i % 50 == i // 50 for i in range(n)]),
                "distance": rng.random(n)},
        images={"key": [f"{seq}/a", f"{seq}/b", f"{seq}/c"], "role": ["anonymized"] * 3,
                "method": ["blur"] * 3, "k": [seq] * 3},
        timings=[{"name": "anonymize", "mean": 0.1}, {"name": "recognize", "mean": 0.2}],
    )


def test_write_case_is_all_or_nothing():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        case = db.write_case(run, method="blur", k=3, mode="naive", detector="hog",
                             backend="dlib", options={"seq": 0}, **_case_data(200))
        counts = db.con.execute(
            "SELECT (SELECT count(*) FROM scores WHERE case_id = $c), "
            "(SELECT count(*) FROM timings WHERE case_id = $c), "
            "(SELECT count(*) FROM images WHERE run_id = $r)", {"c": case, "r": run}).fetchone()
        assert counts == (200, 2, 3)
        assert db.case_metrics(run_id=run)[0]["n_mated"] == 4
        # bad parts are refused before anything is written
        bad = _case_data(10)
        bad["scores"]["mated"] = bad["scores"]["mated"][:5]
        with pytest.raises(ValueError, match="mated"):
            db.write_case(run, method="blur", k=4, mode="naive", detector="hog",
                          backend="dlib", **bad)
        bad = _case_data(10)
        bad["timings"] = [{"name": "anonymize", "colour": 1}]
        with pytest.raises(ValueError, match="timing"):
            db.write_case(run, method="blur", k=4, mode="naive", detector="hog",
                          backend="dlib", **bad)
        # a failure inside the transaction rolls the case back
        bad = _case_data(10)
        bad["images"]["role"] = ["nonsense"] * 3                # CHECK constraint
        with pytest.raises(duckdb.ConstraintException):
            db.write_case(run, method="blur", k=4, mode="naive", detector="hog",
                          backend="dlib", **bad)
        assert db.con.execute("SELECT count(*) FROM cases").fetchone()[0] == 1
        assert db.con.execute("SELECT count(*) FROM scores").fetchone()[0] == 200


# -- schema versions ----------------------------------------------------------------------

SCHEMA_V1 = Path(__file__).parent / "data" / "schema_v1"


def _make_v1_database(path) -> None:
    """A database as faceanon wrote it before schema versions (copies of its SQL files).

    Run 1 recorded threshold 0.5 in its config, run 2 recorded none (the database's
    setting, 0.7, applied to it), run 3 was left 'running' by a process that is gone.
    """
    con = duckdb.connect(str(path))
    try:
        con.execute((SCHEMA_V1 / "schema.sql").read_text())
        con.execute((SCHEMA_V1 / "metrics.sql").read_text())
        con.execute("UPDATE settings SET threshold = 0.7 WHERE id = 1")
        for config, status in ((json.dumps({"threshold": 0.5, "seed": 1}), "complete"),
                               (json.dumps({"seed": 2}), "complete"), ("{}", "running")):
            con.execute("INSERT INTO runs (name, started, status, dataset_name, "
                        "dataset_fingerprint, config) VALUES ('old', now(), ?, 'lfw', 'f', ?)",
                        [status, config])
        for run in (1, 2):
            (case,) = con.execute(
                "INSERT INTO cases (run_id, method, k, mode, detector, backend) "
                "VALUES (?, 'blur', 9, 'naive', 'hog', 'dlib') RETURNING id", [run]).fetchone()
            # distances 0.1 .. 0.9: mated 0.2, 0.6; non-mated 0.4, 0.8
            con.execute("INSERT INTO scores VALUES (?, 'pa', 'ga', true, 0.2, true, true), "
                        "(?, 'pb', 'gb', true, 0.6, true, true), "
                        "(?, 'pa', 'gb', false, 0.4, true, true), "
                        "(?, 'pb', 'ga', false, 0.8, true, true)", [case] * 4)
        con.execute("INSERT INTO embeddings VALUES ('dlib', 's', [1.0, 2.0], 1, now())")
    finally:
        con.close()


def test_old_database_is_upgraded_in_place(db_path):
    _make_v1_database(db_path)
    with ResultsDB(db_path) as db:
        runs = {r["id"]: r for r in db.runs()}
        # each run keeps the threshold it was measured at
        assert runs[1]["threshold"] == 0.5 and runs[2]["threshold"] == 0.7
        assert runs[3]["status"] == "crashed"     # its writer held the file; it is gone
        metrics = {m["run_id"]: m for m in db.case_metrics()}
        # at 0.5: non-mated 0.4 matches (FMR 1/2), mated 0.6 does not (FNMR 1/2);
        # at 0.7: FMR 1/2, FNMR 0
        assert (metrics[1]["fmr"], metrics[1]["fnmr"]) == (0.5, 0.5)
        assert (metrics[2]["fmr"], metrics[2]["fnmr"]) == (0.5, 0.0)
        # the cache did not say which model computed it: emptied, never reused
        assert db.con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0
        assert db.con.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
        assert _start(db) == 4
    with ResultsDB(db_path, read_only=True) as db:
        assert [r["id"] for r in db.runs()] == [4, 3, 2, 1]
        assert db.run(3)["status"] == "crashed"


def test_old_database_opened_read_only_is_upgraded_too(db_path):
    _make_v1_database(db_path)
    with ResultsDB(db_path, read_only=True) as db:
        assert db.run(1)["threshold"] == 0.5
        assert len(db.case_metrics()) == 2


def test_old_database_that_cannot_be_written_is_refused(db_path, monkeypatch):
    _make_v1_database(db_path)
    before = db_path.read_bytes()
    monkeypatch.setattr(store.os, "access", lambda path, mode: False)
    with pytest.raises(SchemaVersionError, match="older faceanon.*copy it somewhere writable"):
        ResultsDB(db_path, read_only=True)
    assert db_path.read_bytes() == before


def test_failed_upgrade_changes_nothing(db_path, monkeypatch):
    _make_v1_database(db_path)

    def half_then_fail(con):
        con.execute("ALTER TABLE runs RENAME TO runs_v1")
        con.execute("DROP TABLE embeddings")
        raise RuntimeError("disk full")

    monkeypatch.setitem(store._MIGRATIONS, 1, half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        ResultsDB(db_path)
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 1
        assert con.execute("SELECT threshold FROM settings").fetchall() == [(0.7,)]
    finally:
        con.close()


def test_newer_or_foreign_databases_are_refused(db_path, tmp_path):
    ResultsDB(db_path).close()
    con = duckdb.connect(str(db_path))
    con.execute("UPDATE schema_version SET version = ?", [SCHEMA_VERSION + 1])
    con.close()
    for read_only in (False, True):
        with pytest.raises(SchemaVersionError, match="newer faceanon.*upgrade faceanon"):
            ResultsDB(db_path, read_only=read_only)
    foreign = tmp_path / "other.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE sales (amount INTEGER)")
    con.close()
    with pytest.raises(SchemaVersionError, match="other.duckdb: not a faceanon results"):
        ResultsDB(foreign)
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database")
    with pytest.raises(StoreError, match="notes.duckdb: cannot open"):
        ResultsDB(text)
    assert text.read_text() == "not a database"


# -- never locked out: processes sharing one database --------------------------------------

# A writer like the benchmark: one run, cases written one transaction each.
WRITER = """
import sys, time
import numpy as np
from faceanon.store import ResultsDB
path, name, cases, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \\
    float(sys.argv[5])
db = ResultsDB(path)
run = db.start_run(name=name, dataset_name="lfw", dataset_fingerprint="f", config={},
                   git_commit=None, git_dirty=None, packages={}, machine={})
print(run, flush=True)
seq = 0
while cases < 0 or seq < cases:
    rng = np.random.default_rng(seq)
    print("writing", seq, flush=True)
    db.write_case(
        run, method="blur", k=seq, mode="naive", detector="hog", backend="dlib",
        options={"seq": seq},
        scores={"probe": [f"p{i % 500}" for i in range(n)],
                "gallery": [f"g{i // 500}" for i in range(n)],
                "mated": np.arange(n) % 500 == np.arange(n) // 500,
                "distance": rng.random(n)},
        images={"key": [f"{seq}/a", f"{seq}/b", f"{seq}/c"], "role": ["anonymized"] * 3},
        timings=[{"name": "anonymize", "mean": 0.1}, {"name": "recognize", "mean": 0.2}])
    print("wrote", seq, flush=True)
    seq += 1
    time.sleep(pause)
db.finish_run(run, "complete")
db.close()
print("done", flush=True)
"""

# A process that keeps the file open, as the DuckDB shell or a notebook does.
HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def _spawn(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _incomplete_cases(db: ResultsDB, n: int) -> list:
    """Cases missing part of what write_case wrote, and parts whose case is missing."""
    return db.con.execute(
        """WITH c AS (SELECT id, run_id, (options->>'seq')::INTEGER AS seq FROM cases)
           SELECT 'case', c.id FROM c
           WHERE (SELECT count(*) FROM scores s WHERE s.case_id = c.id) <> $n
              OR (SELECT count(*) FROM timings t WHERE t.case_id = c.id) <> 2
              OR (SELECT count(*) FROM images i WHERE i.run_id = c.run_id
                  AND split_part(i.key, '/', 1)::INTEGER = c.seq) <> 3
           UNION ALL
           SELECT 'orphan score', case_id FROM scores WHERE case_id NOT IN (SELECT id FROM c)
           UNION ALL
           SELECT 'orphan timing', case_id FROM timings WHERE case_id NOT IN (SELECT id FROM c)
           UNION ALL
           SELECT 'orphan image', run_id FROM images i WHERE NOT EXISTS (
               SELECT 1 FROM c WHERE c.run_id = i.run_id
               AND c.seq = split_part(i.key, '/', 1)::INTEGER)""", {"n": n}).fetchall()


@pytest.mark.slow
def test_killed_writer_leaves_every_case_complete_or_absent(db_path):
    """SIGKILL a writer at 10 random moments: no case is ever half written, and the run
    of each killed process is marked crashed by the next open."""
    n = 100_000                      # scores per case: most of the writer's time is spent
    chooser = random.Random(12)      # writing them, so kills land inside transactions
    written, inside = [], 0
    for _ in range(10):
        writer = _spawn(WRITER, db_path, "victim", -1, n, 0)
        run = int(writer.stdout.readline())
        time.sleep(chooser.uniform(0.05, 1.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        said = writer.stdout.read().split()
        inside += bool(said) and said[-2] == "writing"      # killed inside write_case
        with ResultsDB(db_path) as db:
            assert _incomplete_cases(db, n) == []
            assert db.run(run)["status"] == "crashed"
            written.append(db.run(run)["n_cases"])
    assert sum(written) > 0, "the writer never got to write a case"
    assert inside >= 3, f"only {inside} of 10 kills landed inside a case's transaction"


def test_two_writers_and_a_reader_share_one_database(db_path):
    """Two runs write one database at once; both complete, and a reader can list the
    runs while they write. Each writer pauses 0.3 s between cases, as a run computes
    between its writes (a writer that never pauses keeps the file busy all the time)."""
    n, cases = 20_000, 8
    writers = [_spawn(WRITER, db_path, name, cases, n, 0.3) for name in ("one", "two")]
    runs = [int(w.stdout.readline()) for w in writers]
    seen_running = 0
    while any(w.poll() is None for w in writers):
        with ResultsDB(db_path, read_only=True) as db:
            listed = {r["id"]: r["status"] for r in db.runs()}
        seen_running += sum(listed.get(run) == "running" for run in runs)
        time.sleep(0.05)
    for writer in writers:
        writer.wait()
        # read through the text wrappers: communicate() would skip what they buffered
        out, err = writer.stdout.read(), writer.stderr.read()
        assert writer.returncode == 0, err
        assert out.splitlines()[-1] == "done"
    assert seen_running > 0
    with ResultsDB(db_path, read_only=True) as db:
        for run in runs:
            assert db.run(run)["status"] == "complete"
            assert db.run(run)["n_cases"] == cases and db.run(run)["n_scores"] == cases * n
        assert _incomplete_cases(db, n) == []


def test_a_process_that_keeps_the_file_is_named(db_path, monkeypatch):
    ResultsDB(db_path).close()
    holder = _spawn(HOLDER, db_path)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(DatabaseLockedError) as caught:
            ResultsDB(db_path, read_only=True, lock_timeout=0.5)
        message = str(caught.value)
        assert "\n" not in message
        assert f"process {holder.pid}" in message and "close or stop it" in message
        # the command line says the same, as one line, without a traceback
        monkeypatch.setattr(store, "READ_LOCK_TIMEOUT", 0.5)
        result = CliRunner().invoke(runs_command, ["list", "--db", str(db_path)])
        assert result.exit_code == 1
        assert f"process {holder.pid}" in result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()
    with ResultsDB(db_path, read_only=True) as db:     # released: readable again
        assert db.runs() == []


def test_a_live_run_of_another_process_is_never_marked_crashed(db_path):
    writer = _spawn(WRITER, db_path, "slow", 1, 10, 60)    # one case, then a long pause
    try:
        run = int(writer.stdout.readline())
        for _ in range(3):
            with ResultsDB(db_path) as db:                  # a writer opens: checks runs
                assert db.run(run)["status"] == "running"
    finally:
        writer.kill()
        writer.wait()
    with ResultsDB(db_path, read_only=True) as db:          # readers see it crashed ...
        assert db.run(run)["status"] == "crashed"
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("running",)]
    con.close()
    with ResultsDB(db_path):                                # ... a writer records it
        pass
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("crashed",)]
    con.close()


def test_runs_elsewhere_are_judged_by_their_heartbeat(db_path):
    with ResultsDB(db_path) as db:
        fresh, stale, reused, mine = (_start(db) for _ in range(4))
        now = store._now()
        db.con.execute("UPDATE runs SET host = 'elsewhere', pid = 1, heartbeat = ? "
                       "WHERE id = ?", [now - timedelta(seconds=60), fresh])
        db.con.execute("UPDATE runs SET host = 'elsewhere', pid = 1, heartbeat = ? "
                       "WHERE id = ?", [now - timedelta(seconds=store.STALE_AFTER + 60), stale])
        # this process, but the run started before the process did: its pid was reused
        db.con.execute("UPDATE runs SET started = ? WHERE id = ?",
                       [now - timedelta(days=30), reused])
    with ResultsDB(db_path) as db:
        status = {r["id"]: r["status"] for r in db.runs()}
    assert status == {fresh: "running", stale: "crashed", reused: "crashed", mine: "running"}


def test_heartbeat_is_refreshed_while_a_run_is_open(db_path):
    db = ResultsDB(db_path)
    try:
        db.heartbeat_interval = 0.05
        run = _start(db)
        first = db.run(run)["heartbeat"]
        deadline = time.monotonic() + 10
        while db.run(run)["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.run(run)["heartbeat"] > first
        db.finish_run(run, "complete")
        finished = db.run(run)["heartbeat"]
        time.sleep(0.3)
        assert db.run(run)["heartbeat"] == finished       # no beats after the run ended
    finally:
        db.close()


# -- the attack axis (schema version 3) ---------------------------------------------------


def _scores_2x2() -> dict:
    return {"probe": ["pa", "pa", "pb", "pb"], "gallery": ["ga", "gb", "ga", "gb"],
            "mated": np.array([True, False, False, True]),
            "distance": np.array([0.2, 0.8, 0.7, 0.3])}


def test_unchanged_images_are_counted_per_attack():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        originals = {"key": ["pa", "pb"], "role": ["original"] * 2, "sha256": ["oa", "ob"]}
        # detect saw both published images; median only the probe pa, and pb was published
        # unchanged (its sha256 is its original's)
        detect_rows = {"key": ["pa", "pb"], "role": ["anonymized"] * 2,
                       "method": ["blur"] * 2, "k": [9] * 2, "sha256": ["xa", "xb"]}
        median_rows = {"key": ["pb"], "role": ["anonymized"], "method": ["blur"], "k": [9],
                       "sha256": ["ob"], "attack": ["median"]}
        detect = db.write_case(run, method="blur", k=9, mode="naive", detector="hog",
                               backend="dlib", scores=_scores_2x2(), images=originals)
        db.add_images(run, detect_rows)
        median = db.write_case(run, method="blur", k=9, mode="naive", detector="hog",
                               backend="dlib", attack="median", scores=_scores_2x2(),
                               images=median_rows)
        rows = {r["case_id"]: r for r in db.case_metrics(run_id=run)}
        stored = db.con.execute("SELECT key, attack FROM images WHERE role = 'anonymized' "
                                "ORDER BY attack, key").fetchall()
    assert stored == [("pa", "detect"), ("pb", "detect"), ("pb", "median")]
    assert (rows[detect]["n_anonymized"], rows[detect]["n_unchanged"]) == (2, 0)
    assert (rows[median]["n_anonymized"], rows[median]["n_unchanged"]) == (1, 1)


def test_attack_trainings_are_stored_with_their_case_and_deleted_with_their_run():
    record = {"split": {"train": 3000, "validation": 1038}, "loss": [0.9, 0.5]}
    with ResultsDB(":memory:") as db:
        run = _start(db)
        with pytest.raises(ValueError, match="must be a mapping"):
            db.write_case(run, method="blur", k=30, mode="naive", detector="hog",
                          backend="dlib", attack="learned", scores=_scores_2x2(),
                          attack_trainings=[{"method": "blur", "k": 30, "attack": "learned",
                                             "record": [1, 2]}])
        assert db.con.execute("SELECT count(*) FROM cases").fetchone() == (0,)
        db.write_case(run, method="blur", k=30, mode="naive", detector="hog", backend="dlib",
                      attack="learned", scores=_scores_2x2(),
                      attack_trainings=[{"method": "blur", "k": 30, "attack": "learned",
                                         "record": record}])
        assert db.attack_trainings(run) == [
            {"method": "blur", "k": 30, "attack": "learned", "record": record}]
        db.finish_run(run, "complete")
        db.delete_run(run)
        assert db.con.execute("SELECT count(*) FROM attack_trainings").fetchone() == (0,)


def _make_v2_database(path) -> None:
    """A version 2 database: today's tables without images.attack, attack_trainings
    (version 3) and image_utility (version 4)."""
    today = (Path(store.__file__).parent / "schema.sql").read_text()
    version_2 = re.sub(r"CREATE TABLE attack_trainings \(.*?\n\);", "", today, flags=re.S)
    version_2 = re.sub(r"CREATE TABLE IF NOT EXISTS image_utility \(.*?\n\);", "",
                       version_2, flags=re.S)
    version_2 = re.sub(r",\n    attack      VARCHAR NOT NULL DEFAULT 'detect'[^\n]*", "",
                       version_2).replace(f"VALUES ({SCHEMA_VERSION})", "VALUES (2)")
    assert "image_utility" not in version_2
    assert "attack_trainings" not in version_2 and "VALUES (2)" in version_2
    con = duckdb.connect(str(path))
    try:
        con.execute(version_2)
        con.execute("INSERT INTO runs (name, started, status, dataset_name, "
                    "dataset_fingerprint, threshold) VALUES ('v2', now(), 'complete', 'lfw', "
                    "'f', 0.6)")
        con.execute("INSERT INTO images (run_id, key, role, method, k, sha256) "
                    "VALUES (1, 'a', 'anonymized', 'blur', 9, 'x')")
    finally:
        con.close()


def test_version_2_database_gains_the_attack_axis_and_utility(db_path):
    _make_v2_database(db_path)
    with ResultsDB(db_path) as db:
        assert db.con.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
        assert db.con.execute("SELECT count(*) FROM image_utility").fetchone() == (0,)
        # every earlier image was seen by the only attacker there was
        assert db.con.execute("SELECT key, attack FROM images").fetchall() == [("a", "detect")]
        assert db.attack_trainings(1) == []
        assert TABLES <= {r[0] for r in db.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
    # the step is idempotent: run again on a database that already has its changes
    con = duckdb.connect(str(db_path))
    try:
        store._migrate_2_to_3(con)
        store._migrate_3_to_4(con)
        store._migrate_4_to_5(con)
        assert con.execute("SELECT count(*), min(attack) FROM images").fetchone() == (1, "detect")
    finally:
        con.close()


def test_connections_opened_in_another_thread_never_break_a_bulk_insert(db_path):
    # DuckDB loses its Python table functions ("python_arrow_scan does not exist") when a
    # connection to the file opens or closes in one thread while another thread's insert
    # scans an Arrow table, as the heartbeat thread does beside write_case.
    import threading

    with ResultsDB(db_path) as db:
        run = _start(db)
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                db.runs()

        thread = threading.Thread(target=reader)
        thread.start()
        failures = []
        try:
            for index in range(300):
                try:
                    db.add_images(run, {"key": [f"k{index}"], "role": ["original"]})
                except duckdb.Error as error:
                    failures.append(str(error))
        finally:
            stop.set()
            thread.join()
        assert failures == []
        assert db.con.execute("SELECT count(*) FROM images").fetchone() == (300,)


def test_the_heartbeat_never_makes_a_case_conflict(db_path):
    # The heartbeat thread refreshes the run's row, as every write_case does in its
    # transaction; at the same moment DuckDB fails one with "Conflict on update!".
    with ResultsDB(db_path) as db:
        db.heartbeat_interval = 0.001  # a beat all the time
        run = _start(db)
        failures = []
        for index in range(100):
            try:
                db.write_case(run, method="blur", k=index + 1, mode="naive", detector="hog",
                              backend="dlib", scores=_scores_2x2())
            except duckdb.Error as error:
                failures.append(str(error))
        assert failures == []
        assert db.con.execute("SELECT count(*) FROM cases").fetchone() == (100,)
        db.finish_run(run, "complete")
