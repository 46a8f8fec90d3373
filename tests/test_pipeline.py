"""One case end to end on real faces; the parallel path gives the serial path's scores."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from faceanon.attacks import Located
from faceanon.datasets import protocol_split
from faceanon.pipeline import Evaluation, EvaluationError, Settings
from faceanon.protocol import Case, CaseError, OnMissError
from faceanon.store import ResultsDB


def _scores(db, case_id):
    return db.con.execute(
        "SELECT probe, gallery, mated, distance FROM scores WHERE case_id = ? "
        "ORDER BY probe, gallery", [case_id]).fetchall()


def _run(db, lfw, split, workers, cases):
    run_id = db.start_run(name=f"w{workers}", dataset_name="lfw",
                          dataset_fingerprint=lfw.fingerprint, config={}, git_commit=None,
                          git_dirty=None, packages={}, machine={})
    cases = [case if isinstance(case, Case) else Case(*case) for case in cases]
    with Evaluation(lfw, split, db=db, run_id=run_id, workers=workers) as evaluation:
        # The parallel path also prepares each next variant ahead (plan); the serial one not.
        evaluation.plan(cases)
        ids = [evaluation.run_case(case).case_id for case in cases]
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


def test_mode_and_method_must_agree():
    with pytest.raises(CaseError, match="clear mode takes no method"):
        Case("blur", 5, "clear")
    with pytest.raises(CaseError, match="unknown mode 'sideways'"):
        Case("blur", 5, "sideways")
    with pytest.raises(EvaluationError, match="cannot be measured"):
        Settings(on_miss="skip")


def test_an_unknown_miss_policy_is_refused_in_the_pipeline_as_in_the_cli():
    # An unknown policy would leave a missed face as it is: refused, never taken as one.
    with pytest.raises(OnMissError, match=r"unknown on_miss 'ignore'; use one of whole"):
        Settings(on_miss="ignore")


def test_each_method_is_made_once_per_evaluation(lfw, tmp_path, monkeypatch):
    import faceanon.pipeline

    made = []
    real = faceanon.pipeline.get_method

    def counting(name, **options):
        made.append(name)
        return real(name, **options)

    monkeypatch.setattr(faceanon.pipeline, "get_method", counting)
    split = protocol_split(lfw, identities=3, seed=4)
    cases = [Case("blur", 15, mode) for mode in ("naive", "reverse", "parrot")]
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = db.start_run(name="once", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        with Evaluation(lfw, split, db=db, run_id=run_id, workers=1) as evaluation:
            evaluation.plan(cases)
            results = [evaluation.run_case(case) for case in cases]
    assert made == ["blur"]
    assert [r.case.label for r in results] == ["blur-k15-naive", "blur-k15-reverse",
                                               "blur-k15-parrot"]


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


# -- the attack axis ------------------------------------------------------------------------


def _direct_attack(lfw, sample, variant_k, method_name, attack_name, backend, seed):
    """What the attack library makes of one anonymized image, called directly."""
    from faceanon.attacks import get_attack
    from faceanon.detect import anonymization_regions
    from faceanon.imageio import read_image
    from faceanon.methods import get_method
    from faceanon.protocol import image_rng

    original = read_image(lfw.path(sample))
    regions = anonymization_regions(original, detector="hog", region="face").boxes
    box = backend.encode(original).box
    face = None if box is None else (box[3], box[0], box[1] - box[3], box[2] - box[0])
    anonymized = get_method(method_name).anonymize(
        original, list(regions), k=variant_k,
        rng=image_rng(seed, method_name, variant_k, sample.key))
    attack = get_attack(attack_name)
    if len(regions) == 1:
        return attack.encode(anonymized, original_box=face, method=method_name, k=variant_k,
                             backend=backend, anonymized_box=regions[0])
    restored = anonymized  # several faces hidden: the pipeline restores each region
    for region in regions:
        restored = attack.restore(restored, region=region, method=method_name, k=variant_k)
    return attack.encode_restored(restored, original_box=face, backend=backend)


@pytest.mark.realdata
def test_attacked_scores_equal_the_attack_library_run_directly(lfw, tmp_path):
    from faceanon.imageio import read_image
    from faceanon.pipeline import worker_backend
    from faceanon.recognition import distance_matrix

    backend = worker_backend(Settings().resolved())  # what the pipeline's workers use

    split = protocol_split(lfw, identities=5, seed=3)
    cases = [Case("noise", 30, "naive", "median"), Case("noise", 30, "reverse", "located"),
             Case("noise", 30, "naive"), Case("pixelate", 10, "parrot", "unpixelate")]
    with ResultsDB(tmp_path / "r.duckdb") as db:
        ids = _run(db, lfw, split, 2, cases)  # the parallel path: attacks are pickled
        images = db.con.execute(
            "SELECT method, attack, count(*) FROM images WHERE role = 'anonymized' "
            "GROUP BY ALL ORDER BY ALL").fetchall()
        stored = {case_id: _scores(db, case_id) for case_id in ids}
    # each attack processed exactly the sides its mode anonymizes (5 images a side)
    assert images == [("noise", "detect", 5), ("noise", "located", 5), ("noise", "median", 5),
                      ("pixelate", "unpixelate", 10)]
    originals = {s.key: backend.encode(read_image(lfw.path(s)))
                 for s in (*split.gallery, *split.probes)}
    for case, case_id in zip(cases, ids, strict=True):
        attacked = {s.key: _direct_attack(lfw, s, case.k, case.method, case.attack, backend, 0)
                    for s in (*split.gallery, *split.probes)}
        probe_side = attacked if case.mode.probes_anonymized else originals
        gallery_side = attacked if case.mode.gallery_anonymized else originals
        expected = distance_matrix([probe_side[p.key].embedding for p in split.probes],
                                   [gallery_side[g.key].embedding for g in split.gallery])
        index = {(p.key, g.key): expected[i, j] for i, p in enumerate(split.probes)
                 for j, g in enumerate(split.gallery)}
        assert len(stored[case_id]) == 25
        for probe, gallery, _, distance in stored[case_id]:
            want = index[(probe, gallery)]
            if np.isnan(want):
                assert distance is None, (case.label, probe, gallery)
            else:
                assert distance == pytest.approx(want, abs=1e-5), (case.label, probe, gallery)
    assert any(row[3] is not None for row in stored[ids[0]]), "median found faces"


def test_an_attack_that_does_not_apply_is_refused(lfw, tmp_path):
    from faceanon.attacks import AttackError

    split = protocol_split(lfw, identities=2, seed=1)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = db.start_run(name="x", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        with Evaluation(lfw, split, db=db, run_id=run_id, workers=1) as evaluation:
            with pytest.raises(AttackError, match="'deblur' undoes blur only, not 'noise'"):
                evaluation.compare(Case("noise", 30, "naive", "deblur"))


class _PreparedLocated(Located):
    """A located attack that must be prepared per (method, k), like a trained one."""

    name = "prepared-located"
    summary = "located, after a preparation that records what it was prepared for"
    calls: list = []

    def __init__(self):
        self.prepared_for = None

    def prepare(self, *, method, k, seed, data_root):
        type(self).calls.append((method, k, os.getpid()))
        self.prepared_for = (method, k, seed, str(data_root))

    def training_record(self):
        return {"prepared_for": list(self.prepared_for)}

    def restore(self, image, *, region, method, k):
        if self.prepared_for is None or self.prepared_for[:2] != (method, k):
            raise AssertionError(f"attacked {method} k{k} prepared for {self.prepared_for}")
        return super().restore(image, region=region, method=method, k=k)


def test_an_attack_is_prepared_once_per_variant_in_the_main_process(lfw, tmp_path):
    split = protocol_split(lfw, identities=2, seed=1)
    attack = _PreparedLocated()
    _PreparedLocated.calls.clear()
    cases = [Case("noise", 30, mode, "prepared-located") for mode in ("naive", "reverse")]
    cases.append(Case("blur", 15, "naive", "prepared-located"))
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = db.start_run(name="x", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        with Evaluation(lfw, split, db=db, run_id=run_id, workers=1,
                        attacks={attack.name: attack}, data_root=tmp_path) as evaluation:
            evaluation.plan(cases)
            for case in cases:
                evaluation.run_case(case)
            prepared = evaluation._prepared[(cases[-1].variant, attack.name)]
        trainings = db.attack_trainings(run_id)
    assert _PreparedLocated.calls == [("noise", 30, os.getpid()), ("blur", 15, os.getpid())]
    assert attack.prepared_for is None, "the attack given is copied, never prepared itself"
    # what workers receive: the prepared copy, pickled with the tasks
    assert pickle.loads(pickle.dumps(prepared)).prepared_for == ("blur", 15, 0, str(tmp_path))
    assert trainings == [
        {"method": "blur", "k": 15, "attack": "prepared-located",
         "record": {"prepared_for": ["blur", 15, 0, str(tmp_path)]}},
        {"method": "noise", "k": 30, "attack": "prepared-located",
         "record": {"prepared_for": ["noise", 30, 0, str(tmp_path)]}}]


@pytest.mark.realdata
def test_an_unplanned_attack_after_cached_originals_still_uses_the_face_box(lfw, tmp_path):
    # The embedding cache keeps no face box: originals served from it must be encoded
    # again before a located attack runs, or it would silently fall back to detection.
    split = protocol_split(lfw, identities=3, seed=6)
    located = Case("noise", 30, "naive", "located")
    with ResultsDB(tmp_path / "planned.duckdb") as db:
        (planned,) = _run(db, lfw, split, 1, [located])
        want = _scores(db, planned)
    with ResultsDB(tmp_path / "cached.duckdb") as db:
        _run(db, lfw, split, 1, [Case("noise", 30, "naive")])  # caches the originals
        run_id = db.start_run(name="again", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        with Evaluation(lfw, split, db=db, run_id=run_id, workers=1) as evaluation:
            evaluation.run_case(Case("noise", 30, "naive"))  # no plan: detect only
            assert all(r.encode_seconds == 0.0 for r in evaluation.originals().values())
            unplanned = evaluation.run_case(located).case_id
        got = _scores(db, unplanned)
    assert [row[:3] for row in got] == [row[:3] for row in want]
    for a, b in zip(got, want, strict=True):
        assert (a[3] is None and b[3] is None) or a[3] == pytest.approx(b[3], abs=1e-9)


class _OwnNetworkLocated(Located):
    """A located attack with a network of its own: every chip maps to one fixed point."""

    name = "own-network"

    def encode_chips(self, chips, *, backend):
        return np.full((len(chips), 128), 0.05)


@pytest.mark.realdata
@pytest.mark.parametrize("workers", [1, 2])
def test_an_attack_with_its_own_network_encodes_its_chips_with_it(lfw, tmp_path, workers):
    # The learned attacker's chips must go through its tuned network, never the plain
    # recognizer's: with a network that maps every chip to one point, each gallery
    # image is equally far from every (anonymized) probe.
    split = protocol_split(lfw, identities=3, seed=6)
    attack = _OwnNetworkLocated()
    case = Case("blur", 15, "naive", attack.name)
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = db.start_run(name="x", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        with Evaluation(lfw, split, db=db, run_id=run_id, workers=workers,
                        attacks={attack.name: attack}, data_root=tmp_path) as evaluation:
            evaluation.plan([case])
            case_id = evaluation.run_case(case).case_id
        rows = _scores(db, case_id)
    by_gallery: dict[str, set[float]] = {}
    for _probe, gallery, _mated, distance in rows:
        assert distance is not None, "a located attack acquires every face"
        by_gallery.setdefault(gallery, set()).add(round(distance, 9))
    assert len(by_gallery) > 1 and all(len(d) == 1 for d in by_gallery.values())
