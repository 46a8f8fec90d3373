"""One case end to end on real faces; the parallel path gives the serial path's scores."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.datasets import protocol_split
from faceanon.pipeline import Evaluation, Settings, image_rng
from faceanon.store import ResultsDB


def _scores(db, case_id):
    return db.con.execute(
        "SELECT probe, gallery, mated, distance FROM scores WHERE case_id = ? "
        "ORDER BY probe, gallery", [case_id]).fetchall()


def _run(db, lfw, split, workers, cases):
    run_id = db.start_run(name=f"w{workers}", dataset_name="lfw",
                          dataset_fingerprint=lfw.fingerprint, config={}, git_commit=None,
                          git_dirty=None, packages={}, machine={})
    with Evaluation(lfw, split, db=db, run_id=run_id, workers=workers) as evaluation:
        # The parallel path also prepares each next variant ahead (plan); the serial one not.
        evaluation.plan([c[:2] for c in cases if c[0] is not None])
        ids = [evaluation.run_case(*case)[0] for case in cases]
    db.finish_run(run_id, "complete")
    return ids


def test_parallel_scores_equal_serial_scores(lfw, tmp_path):
    split = protocol_split(lfw, identities=8, seed=11)
    cases = [(None, None, "clear"), ("blur", 15, "naive"), ("noise", 30, "parrot"),
             ("pixelate", 10, "reverse"), ("blur", 15, "reverse")]
    # Separate databases, so the second run cannot take its embeddings from the first.
    with ResultsDB(tmp_path / "serial.duckdb") as serial_db:
        serial = [_scores(serial_db, c) for c in _run(serial_db, lfw, split, 1, cases)]
    with ResultsDB(tmp_path / "parallel.duckdb") as parallel_db:
        parallel = [_scores(parallel_db, c) for c in _run(parallel_db, lfw, split, 2, cases)]
    for one, two in zip(serial, parallel, strict=True):
        assert len(one) == len(two) == 64
        for a, b in zip(one, two, strict=True):
            assert a[:3] == b[:3]
            assert (a[3] is None and b[3] is None) or a[3] == pytest.approx(b[3], abs=1e-12)


def test_clear_baseline_recognizes_100_lfw_identities(lfw, tmp_path):
    split = protocol_split(lfw, identities=100, seed=0)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        (case_id,) = _run(db, lfw, split, 2, [(None, None, "clear")])
        metrics = next(r for r in db.case_metrics() if r["case_id"] == case_id)
    assert metrics["n_mated"] == 100 and metrics["n_nonmated"] == 100 * 99
    assert metrics["eer"] < 0.05, metrics
    assert metrics["rank1"] > 0.9, metrics
    assert metrics["fta"] < 0.05


def test_strong_pixelation_is_counted_as_failure_to_acquire(lfw, tmp_path):
    split = protocol_split(lfw, identities=12, seed=5)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        naive, clear = _run(db, lfw, split, 2, [("pixelate", 5, "naive"),
                                                (None, None, "clear")])
        rows = {r["case_id"]: r for r in db.case_metrics()}
        stored = db.con.execute(
            "SELECT count(*) FILTER (distance IS NULL), count(*) FROM scores WHERE case_id = ?",
            [naive]).fetchall()[0]
    # Comparisons with an undetectable probe are kept, with no distance, never dropped.
    assert stored[1] == 12 * 12
    assert rows[naive]["fta"] > 0.5 and stored[0] >= rows[naive]["fta"] * 144 - 1e-9
    assert rows[naive]["rank1"] < rows[clear]["rank1"]


def test_embeddings_are_reused_across_runs(lfw, tmp_path):
    split = protocol_split(lfw, identities=4, seed=2)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        _run(db, lfw, split, 1, [(None, None, "clear")])
        before = db.con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0]
        run_id = db.start_run(name="again", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        evaluation = Evaluation(lfw, split, db=db, run_id=run_id, workers=1)
        originals = evaluation.originals()
        after = db.con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0]
    assert before == after == 8
    assert all(r.encode_seconds == 0.0 for r in originals.values()), "nothing re-encoded"
    assert sum(r.encoding.acquired for r in originals.values()) >= 7


def test_mode_and_method_must_agree(lfw, tmp_path):
    split = protocol_split(lfw, identities=2, seed=0)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        evaluation = Evaluation(lfw, split, db=db, run_id=1, settings=Settings(), workers=1)
        with pytest.raises(ValueError, match="clear mode takes no method"):
            evaluation.run_case("blur", 5, "clear")
        with pytest.raises(ValueError, match="unknown mode"):
            evaluation.run_case("blur", 5, "sideways")


def test_decoded_image_cache_keeps_to_its_budget(tmp_path):
    from PIL import Image

    from faceanon.pipeline import DecodedImages

    paths = []
    for index in range(4):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.full((10, 10, 3), index, np.uint8)).save(path)
        paths.append(str(path))
    cache = DecodedImages(budget_bytes=2 * 300)
    for path in paths:
        image = cache.read(path)
        assert not image.flags.writeable, "a shared original must not be changed in place"
    assert list(cache.images) == paths[2:] and cache.used == 600
    assert cache.read(paths[3]) is cache.images[paths[3]]


def test_image_rng_depends_on_every_part():
    draw = [image_rng(0, "noise", 5, "a/b.jpg").random(),
            image_rng(1, "noise", 5, "a/b.jpg").random(),
            image_rng(0, "noise", 6, "a/b.jpg").random(),
            image_rng(0, "noise", 5, "a/c.jpg").random()]
    assert len(set(draw)) == 4
    assert image_rng(0, "noise", 5, "a/b.jpg").random() == draw[0]
    assert np.isfinite(draw).all()
