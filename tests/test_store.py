"""ResultsDB: schema, run lifecycle, bulk inserts, embedding cache, the ``runs`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from faceanon.store import DEFAULT_DB, ResultsDB, runs_command

TABLES = {"runs", "cases", "images", "scores", "embeddings", "timings", "settings",
          "confusion_thresholds"}
VIEWS = {"case_metrics", "confusion", "det_curve"}


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


def test_schema_is_idempotent(db_path):
    with ResultsDB(db_path) as db:
        run = _start(db)
        _fill(db, run)
        db.set_threshold(0.5)
        db.set_confusion_thresholds([0.4])
    with ResultsDB(db_path) as db:                       # schema and views run again
        names = {r[0] for r in db.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        assert TABLES | VIEWS <= names
        assert db.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert db.threshold == 0.5                       # settings survive reopening
        assert db.confusion_thresholds() == [0.4]
        assert len(db.case_metrics()) == 1
        assert _start(db) == run + 1                     # ids keep counting
    with ResultsDB(db_path, read_only=True) as db:
        assert len(db.runs()) == 2


def test_new_database_defaults():
    with ResultsDB(":memory:") as db:
        assert db.threshold == 0.6
        assert db.confusion_thresholds() == [0.575, 0.6]


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
    with ResultsDB(":memory:") as db:
        vec = np.linspace(-1, 1, 128)
        db.store_embeddings("dlib", ["s1", "s2"], [vec, None], [1, 0])
        assert db.cached_embeddings("dlib", []) == {}
        got = db.cached_embeddings("dlib", ["s1", "s2", "s3", "s1"])
        assert set(got) == {"s1", "s2"}
        assert got["s1"][0].dtype == np.float64
        np.testing.assert_array_equal(got["s1"][0], vec)
        assert got["s1"][1] == 1
        assert got["s2"] == (None, 0)
        assert db.cached_embeddings("other-backend", ["s1"]) == {}
        assert db.cached_embedding_keys("dlib") == {"s1", "s2"}
        assert db.cached_embedding_keys("other-backend") == set()
        # insert-or-ignore: an existing (backend, sha256) keeps its first value
        db.store_embeddings("dlib", ["s1", "s3", "s3"], [np.zeros(128), None, None], [2, 0, 0])
        got = db.cached_embeddings("dlib", ["s1", "s3"])
        np.testing.assert_array_equal(got["s1"][0], vec)
        assert got["s3"] == (None, 0)
        db.store_embeddings("other-backend", ["s1"], [np.ones(4)], [3])
        np.testing.assert_array_equal(db.cached_embeddings("other-backend", ["s1"])["s1"][0],
                                      np.ones(4))
        db.store_embeddings("dlib", [], [], [])


def test_delete_run_keeps_other_runs_and_cache():
    with ResultsDB(":memory:") as db:
        keep, gone = _start(db), _start(db)
        _fill(db, keep)
        case = _fill(db, gone)
        db.store_embeddings("dlib", ["s"], [np.ones(128)], [1])
        db.delete_run(gone)
        assert [r["id"] for r in db.runs()] == [keep]
        for table, column, value in [("cases", "run_id", gone), ("images", "run_id", gone),
                                     ("scores", "case_id", case), ("timings", "case_id", case)]:
            assert db.con.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?",
                                  [value]).fetchone()[0] == 0
        assert db.con.execute("SELECT count(*) FROM scores").fetchone()[0] == 12
        assert "s" in db.cached_embeddings("dlib", ["s"])
        with pytest.raises(KeyError):
            db.delete_run(gone)


# -- the runs CLI ------------------------------------------------------------------------


def test_runs_cli(db_path):
    with ResultsDB(db_path) as db:
        first = _start(db, name="first")
        _fill(db, first)
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
    assert data[1]["n_scores"] == 12 and data[1]["config"]["seed"] == 1

    result = runner.invoke(runs_command, ["show", str(first), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "status: complete" in result.output and "blur" in result.output

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
        db.store_embeddings("dlib", ["s"], [np.ones(3)], [1])
        db.con.execute("SELECT * FROM range(10)").fetchone()
        assert set(db.cached_embeddings("dlib", ["s"])) == {"s"}
        db.con.execute("SELECT * FROM range(10)").fetchone()
        db.add_scores(case, probe=["p"], gallery=["g"], mated=np.array([True]),
                      distance=np.array([0.2]))
        db.con.execute("SELECT * FROM range(10)").fetchone()
        assert db.case_metrics()[0]["n_mated"] == 1
