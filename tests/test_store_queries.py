"""The queries the report and the benchmark make through ResultsDB (no SQL of their own)."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.store import ResultsDB

PROBES, GALLERY = 4, 3


def _run_with_one_case(db: ResultsDB, *, seed: int) -> tuple[int, int]:
    """A run with one naive case: PROBES x GALLERY comparisons, probe i mated with gallery i."""
    run = db.start_run(name=None, dataset_name="toy", dataset_fingerprint="-", config={},
                       git_commit=None, git_dirty=None, packages={}, machine={})
    case = db.add_case(run, method="blur", k=9, mode="naive", detector="hog", backend="dlib")
    probe = np.repeat([f"p{i}" for i in range(PROBES)], GALLERY)
    gallery = np.tile([f"g{j}" for j in range(GALLERY)], PROBES)
    mated = np.repeat(np.arange(PROBES), GALLERY) == np.tile(np.arange(GALLERY), PROBES)
    db.add_scores(case, probe=probe, gallery=gallery, mated=mated,
                  distance=np.random.default_rng(seed).random(PROBES * GALLERY))
    db.add_timings(case, [{"name": "anonymize", "mean": 0.2, "rounds": PROBES},
                          {"name": "case_wall_time", "mean": 9.0, "rounds": 1,
                           "unit": "seconds per case"}])
    return run, case


def test_queries_of_the_report_and_the_benchmark():
    with ResultsDB(":memory:") as db:
        run, case = _run_with_one_case(db, seed=0)
        _, other = _run_with_one_case(db, seed=1)  # another run: never mixed in
        assert db.one_case_metrics(case) == db.case_metrics(run_id=run)[0]
        with pytest.raises(KeyError):
            db.one_case_metrics(other + 1)
        # Only the per-image figures: the case's wall time has its own unit.
        assert db.per_image_timings(run) == {(case, "anonymize"): 0.2}
        assert db.one_case_metrics(case)["n_mated_acquired"] == GALLERY
        (curve,) = db.det_points(run).values()
        assert len(curve["fmr"]) == len(curve["fnmr"]) == PROBES * GALLERY
        assert curve["fmr"][-1] == 1.0 and curve["fnmr"][-1] == 0.0
        confusion = db.confusion(run, threshold=0.6)
        assert {r["scope"] for r in confusion} == {"acquired", "all"}
        assert {r["case_id"] for r in confusion} == {case}
        assert db.confusion(run, threshold=0.123) == []
        assert db.probe_keys(run) == [(f"p{i}", False) for i in range(PROBES)]
        db.store_embeddings("dlib", ["a", "b"], [np.ones(3), None], [1, 0], model="toy")
        assert db.embedding_counts() == (2, 1)


def test_anonymized_images_equal_to_their_originals_are_counted_per_case():
    with ResultsDB(":memory:") as db:
        run, case = _run_with_one_case(db, seed=0)          # blur, k = 9, naive
        clear = db.add_case(run, method="none", k=None, mode="clear", detector="hog",
                            backend="dlib")
        db.add_images(run, {
            "key": ["p0", "p1", "p0", "p1", "p0", "p1"],
            "role": ["original"] * 2 + ["anonymized"] * 4,
            "method": [None, None, "blur", "blur", "blur", "blur"],
            "k": [None, None, 9, 9, 15, 15],
            # p0 at k = 9 kept its pixels; at k = 15 both changed
            "sha256": ["a", "b", "a", "c", "d", "e"],
        })
        row = db.one_case_metrics(case)
        assert (row["n_anonymized"], row["n_unchanged"]) == (2, 1)
        baseline = db.one_case_metrics(clear)
        assert (baseline["n_anonymized"], baseline["n_unchanged"]) == (None, None)
