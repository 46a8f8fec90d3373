"""Utility in the pipeline: one row per anonymized image, equal to measuring it directly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceanon import utility
from faceanon.datasets import protocol_split
from faceanon.detect import anonymization_regions
from faceanon.imageio import read_image
from faceanon.methods import get_method
from faceanon.pipeline import Evaluation, Settings
from faceanon.protocol import Case, image_rng
from faceanon.store import ResultsDB


def _run(db, lfw, split, *, workers, cases, settings=None):
    run_id = db.start_run(name="u", dataset_name="lfw", dataset_fingerprint=lfw.fingerprint,
                          config={}, git_commit=None, git_dirty=None, packages={}, machine={})
    with Evaluation(lfw, split, db=db, run_id=run_id, workers=workers,
                    settings=settings) as evaluation:
        evaluation.plan(cases)
        for case in cases:
            evaluation.run_case(case)
    return run_id


def _stored(db, run_id):
    cursor = db.con.execute("SELECT * FROM image_utility WHERE run_id = ? ORDER BY method, "
                            "k, key", [run_id])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.mark.realdata
def test_each_anonymized_image_gets_one_row_equal_to_measuring_it(lfw, tmp_path):
    split = protocol_split(lfw, identities=4, seed=3)
    cases = [Case("blur", 15, "naive"), Case("blur", 15, "parrot"),
             Case("blur", 15, "parrot", "median"), Case("blackout", None, "naive")]
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = _run(db, lfw, split, workers=2, cases=cases)
        rows = _stored(db, run_id)
        # one row per anonymized image, whatever the modes and attacks that use it: blur
        # anonymizes both sides (parrot), blackout only the probes (naive)
        assert [(r["method"], r["k"]) for r in rows] == [("blackout", None)] * 4 + [
            ("blur", 15)] * 8
        metrics = {(m["method"], m["k"]): m for m in db.utility_metrics(run_id=run_id)}
    assert metrics[("blur", 15)]["retention"] > metrics[("blackout", None)]["retention"]
    assert metrics[("blur", 15)]["n_outside_changed"] == 0
    blur = get_method("blur")
    for row in rows[4:]:  # blur; measured here, detecting on its own
        assert (row["method"], row["k"]) == ("blur", 15)
        sample = next(s for s in (*split.gallery, *split.probes) if s.key == row["key"])
        original = read_image(lfw.path(sample))
        regions = anonymization_regions(original)
        anonymized = blur.anonymize(original, list(regions.boxes), k=15,
                                    rng=image_rng(0, "blur", 15, row["key"]))
        ref = utility.reference_for_regions(original, regions.boxes, found=regions.found,
                                            regions_are_faces=True)
        expected = utility.image_record(ref, anonymized, regions.boxes)
        for name in ("faces", "retained_hog", "landmarks_placed", "nme_faces",
                     "changed_outside"):
            assert row[name] == expected[name], name
        for name in ("nme", "ssim", "psnr", "ssim_face", "psnr_face"):
            if expected[name] is None:
                assert row[name] is None, name
            else:
                assert row[name] == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.realdata
def test_without_utility_nothing_is_measured(lfw, tmp_path):
    split = protocol_split(lfw, identities=2, seed=3)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = _run(db, lfw, split, workers=1, cases=[Case("pixelate", 10, "naive")],
                      settings=Settings(utility=False))
        assert _stored(db, run_id) == []
        # with it (the default), the set method k-Same gets its rows too
        run_id = _run(db, lfw, split, workers=1, cases=[Case("ksame", 2, "naive")])
        rows = _stored(db, run_id)
    assert [r["method"] for r in rows] == ["ksame"] * len(split.probes)  # naive: probes
    assert all(r["changed_outside"] == 0 and r["seconds"] > 0 for r in rows)
    assert all(r["psnr_face"] is None or not math.isinf(r["psnr_face"]) for r in rows)
    assert np.isfinite([r["ssim"] for r in rows]).all()
