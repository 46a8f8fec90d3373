"""The image_utility table and the utility_metrics view, checked against numpy."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest

from faceanon import store
from faceanon.store import SCHEMA_VERSION, UTILITY_COLUMNS, ResultsDB


def _start(db: ResultsDB) -> int:
    return db.start_run(name="u", dataset_name="lfw", dataset_fingerprint="f", config={},
                        git_commit=None, git_dirty=None, packages={}, machine={})


def _rows(n: int, *, method: str, k: int | None, seed: int) -> list[dict]:
    """Random but valid rows: some originals without faces, some NME undefined, one
    unchanged face region (PSNR inf), one image changed outside its region."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        faces = int(rng.integers(0, 3))
        retained = int(rng.integers(0, faces + 1))
        placed = int(rng.integers(0, retained + 1))
        nme_faces = int(rng.integers(0, placed + 1))
        rows.append({
            "method": method, "k": k, "key": f"id{i}/img.jpg", "faces": faces,
            "retained_hog": retained, "landmarks_placed": placed,
            "nme": float(rng.uniform(0, 0.3)) if nme_faces else None, "nme_faces": nme_faces,
            "ssim": float(rng.uniform(0.3, 1)), "psnr": float(rng.uniform(10, 40)),
            "ssim_face": float(rng.uniform(0, 1)), "psnr_face": float(rng.uniform(5, 30)),
            "changed_outside": 0, "seconds": float(rng.uniform(0.01, 0.05)),
        })
    rows[0]["psnr_face"] = math.inf
    rows[1]["changed_outside"] = 7
    rows[2]["ssim_face"] = rows[2]["psnr_face"] = None  # no region (nothing anonymized)
    return rows


def _expected(rows: list[dict]) -> dict:
    def column(name):
        return np.array([np.nan if r[name] is None else r[name] for r in rows], float)

    faces, nme_faces = column("faces"), column("nme_faces")
    nme = column("nme")
    defined = nme_faces > 0
    return {
        "n_images": len(rows),
        "n_faces": faces.sum(),
        "retention": column("retained_hog").sum() / faces.sum(),
        "landmarks_placed": column("landmarks_placed").sum() / faces.sum(),
        "nme": (nme[defined] * nme_faces[defined]).sum() / nme_faces.sum(),
        "n_nme_faces": nme_faces.sum(),
        "ssim": column("ssim").mean(),
        "psnr": np.median(column("psnr")),
        "ssim_face": np.nanmean(column("ssim_face")),
        "psnr_face": np.nanmedian(column("psnr_face")),
        "n_outside_changed": int((column("changed_outside") > 0).sum()),
        "seconds_per_image": column("seconds").mean(),
    }


def _write(db: ResultsDB, run: int, rows: list[dict], *, k: int | None = 3) -> int:
    return db.write_case(
        run, method=rows[0]["method"], k=k, mode="naive", detector="hog", backend="dlib",
        scores={"probe": ["p"], "gallery": ["g"], "mated": np.array([True]),
                "distance": np.array([0.3])},
        utility=rows)


def test_utility_metrics_equal_numpy_on_known_rows():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        blur = _rows(40, method="blur", k=3, seed=1)
        blackout = _rows(25, method="blackout", k=None, seed=2)
        _write(db, run, blur)
        _write(db, run, blackout, k=None)
        other_run = _start(db)
        _write(db, other_run, _rows(5, method="blur", k=3, seed=3))
        got = {(r["method"], r["k"]): r for r in db.utility_metrics(run_id=run)}
        assert sorted(got, key=str) == [("blackout", None), ("blur", 3)]
        for rows, key in ((blur, ("blur", 3)), (blackout, ("blackout", None))):
            expected = _expected(rows)
            for name, value in expected.items():
                assert got[key][name] == pytest.approx(value, rel=1e-12), name
        assert got[("blur", 3)]["psnr_face"] > 0
        assert len(db.utility_metrics()) == 3


def test_a_share_without_faces_is_null_not_zero():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        rows = _rows(3, method="blur", k=3, seed=1)
        for row in rows:
            row.update(faces=0, retained_hog=0, landmarks_placed=0, nme=None, nme_faces=0)
        _write(db, run, rows)
        (metrics,) = db.utility_metrics(run_id=run)
        assert metrics["retention"] is None and metrics["nme"] is None
        assert metrics["n_faces"] == 0


def test_bad_utility_rows_are_refused_and_nothing_is_written():
    with ResultsDB(":memory:") as db:
        run = _start(db)
        rows = _rows(3, method="blur", k=3, seed=1)
        rows[1]["retained_hog"] = rows[1]["faces"] + 1
        with pytest.raises(ValueError, match="more faces retained"):
            _write(db, run, rows)
        rows = _rows(3, method="blur", k=3, seed=1)
        rows[2]["colour"] = 1
        with pytest.raises(ValueError, match="exactly the columns"):
            _write(db, run, rows)
        rows = _rows(3, method="blur", k=3, seed=1)
        rows[0]["key"] = None                       # NOT NULL: fails inside the transaction
        with pytest.raises(duckdb.ConstraintException):
            _write(db, run, rows)
        counts = db.con.execute(
            "SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM image_utility)"
        ).fetchone()
        assert counts == (0, 0)


def test_deleting_a_run_deletes_its_utility_rows(tmp_path):
    with ResultsDB(tmp_path / "r.duckdb") as db:
        keep, gone = _start(db), _start(db)
        for run in (keep, gone):
            _write(db, run, _rows(4, method="blur", k=3, seed=run))
        db.finish_run(gone, "complete")
        db.delete_run(gone)
        assert [r["run_id"] for r in db.utility_metrics()] == [keep]


def test_a_version_2_database_gains_the_table_once(tmp_path):
    path = tmp_path / "v2.duckdb"
    with ResultsDB(path) as db:
        run = _start(db)
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE image_utility")
    con.execute("UPDATE schema_version SET version = 2")
    con.close()
    with ResultsDB(path) as db:
        assert db.con.execute("SELECT version FROM schema_version").fetchone() == (
            SCHEMA_VERSION,)
        _write(db, run, _rows(3, method="blur", k=3, seed=1))
        store._migrate_2_to_3(db.con)                # idempotent: the table stays as it is
        assert db.con.execute("SELECT count(*) FROM image_utility").fetchone() == (3,)
        columns = [r[0] for r in db.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'image_utility' ORDER BY ordinal_position").fetchall()]
        assert columns == ["run_id", *UTILITY_COLUMNS]


def test_detector_retention_counts_each_image_once_among_originals_with_a_face(tmp_path):
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run = _start(db)
        # originals: a and b have a face, c has none (not counted)
        db.add_images(run, {"key": ["a", "b", "c"], "role": ["original"] * 3,
                            "acquired": [True, True, False], "faces_found": [1, 1, 0]})
        anonymized = {"key": ["a", "b", "c", "a", "b", "a", "a"],
                      "role": ["anonymized"] * 7, "method": ["blur"] * 7, "k": [15] * 7,
                      "attack": ["detect:retinaface"] * 3 + ["detect:cnn"] * 2
                      + ["detect", "detect:retinaface"],
                      "faces_found": [2, 0, 1, 0, 0, 1, 2],
                      "acquired": [True, False, True, False, False, True, True]}
        db.add_images(run, anonymized)  # the last row: a again (another case's images)
        rows = db.detector_retention(run_id=run)
    assert [(r["attack"], r["n_images"], r["n_found"], r["retention"]) for r in rows] == [
        ("detect:cnn", 2, 0, 0.0), ("detect:retinaface", 2, 1, 0.5)]
