"""The pipeline's recognizer: torch by default where it equals dlib, the same scores either way.

A run with ``dlib-resnet-torch`` (the default where torch is installed and equal) must
give every score of a run with ``dlib-resnet`` to 1e-5 and the same metrics, or a metric
that moved must rest on a score within that 1e-5 of the decision threshold or of another
score (a tie that the difference can flip).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from faceanon import recognition
from faceanon.benchmark.grids import cases as grid_cases
from faceanon.datasets import protocol_split
from faceanon.pipeline import Evaluation, Settings
from faceanon.protocol import DECISION_THRESHOLD
from faceanon.store import ResultsDB

torch = pytest.importorskip("torch", reason="the torch backend needs the 'gan' extra")
rt = pytest.importorskip("faceanon.resnet_torch")

TOLERANCE = rt.CPU_TOLERANCE


def _evaluate(lfw, split, cases, db, *, backend: str, workers: int):
    run_id = db.start_run(name=backend, dataset_name="lfw", dataset_fingerprint=lfw.fingerprint,
                          config={}, git_commit=None, git_dirty=None, packages={}, machine={})
    with Evaluation(lfw, split, db=db, run_id=run_id, workers=workers,
                    settings=Settings(backend=backend)) as evaluation:
        evaluation.plan(cases)
        ids = {evaluation.run_case(case).case_id: case.label for case in cases}
    db.finish_run(run_id, "complete")
    scores = {}
    for case_id, label in ids.items():
        scores[label] = db.con.execute(
            "SELECT probe, gallery, mated, distance FROM scores WHERE case_id = ? "
            "ORDER BY probe, gallery", [case_id]).fetchall()
    metrics = {ids[row["case_id"]]: row for row in db.case_metrics(run_id=run_id)}
    images = db.con.execute(
        "SELECT role, method, k, key, faces_found, acquired, backend FROM images "
        "WHERE run_id = ? ORDER BY role, method, k, key", [run_id]).fetchall()
    return scores, metrics, images


def _explanation(distances: list[float | None]) -> str:
    """Why a metric may move when every score moves by at most the tolerance, or ''."""
    values = np.sort(np.array([d for d in distances if d is not None]))
    near = values[np.abs(values - DECISION_THRESHOLD) <= TOLERANCE]
    if len(near):
        return f"score {near[0]:.7f} within {TOLERANCE:g} of the threshold"
    gaps = np.diff(values)
    if len(gaps) and gaps.min() <= 2 * TOLERANCE:  # each side of a tie may move by 1e-5
        return f"two scores {gaps.min():.2g} apart"
    return ""


@pytest.mark.realdata
@pytest.mark.slow
def test_a_smoke_run_scores_the_same_with_either_backend(lfw, tmp_path):
    split = protocol_split(lfw, identities=10, seed=3)
    cases = grid_cases("smoke", methods=["blur", "pixelate"])
    assert len(cases) == 13  # clear + 2 methods x 2 strengths x 3 modes
    # dlib on the serial path, torch on the parallel one: the default way each runs.
    with ResultsDB(tmp_path / "dlib.duckdb") as db:
        dlib_scores, dlib_metrics, dlib_images = _evaluate(
            lfw, split, cases, db, backend="dlib-resnet", workers=1)
    with ResultsDB(tmp_path / "torch.duckdb") as db:
        torch_scores, torch_metrics, torch_images = _evaluate(
            lfw, split, cases, db, backend="dlib-resnet-torch", workers=2)

    # The same faces were found in the same images (detection is dlib's in both).
    assert [row[:6] for row in dlib_images] == [row[:6] for row in torch_images]
    assert {row[6].split(":")[0] for row in torch_images} == {"dlib-resnet-torch"}
    assert {row[6].split(":")[0] for row in dlib_images} == {"dlib-resnet"}
    largest = 0.0
    for label in dlib_scores:
        ours, theirs = torch_scores[label], dlib_scores[label]
        assert len(ours) == len(theirs) == 100
        for a, b in zip(ours, theirs, strict=True):
            assert a[:3] == b[:3]
            assert (a[3] is None) == (b[3] is None), (label, a, b)
            if a[3] is not None:
                largest = max(largest, abs(a[3] - b[3]))
    assert largest <= TOLERANCE
    assert largest > 0, "two backends agreeing to the last bit would mean one was not run"

    for label, expected in dlib_metrics.items():
        got = torch_metrics[label]
        moved = []
        for column, value in expected.items():
            if column in {"case_id", "run_id", "backend"}:
                continue
            if column.endswith("threshold") and value is not None:
                # a score itself (where the curve crosses), so it moves with the scores
                assert got[column] == pytest.approx(value, abs=TOLERANCE), (label, column)
            elif got[column] != value:
                moved.append(f"{column} {value} -> {got[column]}")
        if moved:
            why = _explanation([row[3] for row in dlib_scores[label]])
            assert why, f"{label}: {', '.join(moved)} with no score near a threshold or tie"


def test_auto_is_torch_where_it_equals_dlib_else_dlib(monkeypatch):
    status = recognition.torch_backend_status()
    assert status.equal, status.reason
    assert recognition.resolve_backend("auto") == "dlib-resnet-torch"
    assert Settings().backend == "auto"
    assert Settings().resolved().backend == "dlib-resnet-torch"
    # A forced backend is taken as it is.
    assert Settings(backend="dlib-resnet").resolved().backend == "dlib-resnet"

    unequal = recognition.TorchBackendStatus(True, False, 3e-5, 1e-5, "cpu",
                                             "largest difference 3e-05 exceeds 1e-05")
    monkeypatch.setattr(recognition, "_torch_backend_status", lambda device: unequal)
    assert recognition.resolve_backend("auto") == "dlib-resnet"
    assert recognition.resolve_backend("dlib-resnet-torch") == "dlib-resnet-torch"
    with pytest.raises(ValueError, match="'dlib-resnet-gpu'; choose one of auto, dlib-resnet,"):
        recognition.resolve_backend("dlib-resnet-gpu")


def test_workers_encode_with_one_torch_thread(monkeypatch):
    from faceanon import pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a process default a worker must not use
    try:
        settings = Settings(backend="dlib-resnet-torch")
        pipeline._init_worker(settings, frozenset(), {})  # what each pool process runs
        backend = pipeline._WORKER["backend"]
        seen = []
        forward = backend.encoder.model.forward
        monkeypatch.setattr(backend.encoder.model, "forward",
                            lambda chips: seen.append(torch.get_num_threads()) or forward(chips))
        backend.encode_chips(recognition.probe_chips())
        assert seen == [1]
        assert torch.get_num_threads() == 2, "the process's own setting is restored"
        # The serial path and the speed test encode with the same backend options.
        assert pipeline.worker_backend(settings).threads == 1
        options = {"threads": 2}
        assert pipeline.worker_backend(Settings(backend="dlib-resnet-torch",
                                                backend_options=options)).threads == 2
    finally:
        torch.set_num_threads(threads)


def test_model_fingerprint_says_which_model_and_libraries(tmp_path):
    import hashlib

    import dlib
    import face_recognition_models as models

    paths = [Path(models.pose_predictor_five_point_model_location()),
             Path(models.face_recognition_model_location()),
             Path(models.cnn_face_detector_model_location())]
    lines = sorted([*(f"{p.name}\t{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in paths),
                    f"dlib=={dlib.__version__}"])
    expected = "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert recognition.DlibResNet().model_fingerprint() == expected

    state, sha = rt.cached_state_dict()
    same = tmp_path / "same.pt"
    rt.save_weights(same, state, dat_sha256=sha)
    other = tmp_path / "other.pt"
    rt.save_weights(other, state, dat_sha256="0" * 64)
    fingerprint = recognition.DlibResNetTorch(weights=same).model_fingerprint()
    assert fingerprint.startswith("sha256:") and fingerprint != expected, "torch is in it"
    assert recognition.DlibResNetTorch().model_fingerprint() == fingerprint
    # Weights said to come from another .dat are another model, whatever their tensors.
    assert recognition.DlibResNetTorch(weights=other).model_fingerprint() != fingerprint


def test_bench_backend_choices_are_the_recognizers():
    from faceanon.benchmark.plugin import BACKEND_CHOICES as PLUGIN_CHOICES

    assert PLUGIN_CHOICES == recognition.BACKEND_CHOICES


@pytest.mark.realdata
@pytest.mark.slow
def test_bench_backend_is_recorded_in_the_run_config(lfw, tmp_path):
    from test_bench import run_bench

    for requested, used in (("dlib-resnet", "dlib-resnet"), ("auto", "dlib-resnet-torch")):
        db = tmp_path / f"{requested}.duckdb"
        result = run_bench(tmp_path, "-k", "test_privacy and clear", "--bench-data", str(lfw.root),
                           "--bench-backend", requested, "--bench-db", str(db))
        assert result.returncode == 0, result.stdout + result.stderr
        with duckdb.connect(str(db), read_only=True) as con:
            (config,) = con.execute("SELECT config FROM runs").fetchone()
            (backend,) = con.execute("SELECT DISTINCT backend FROM cases").fetchone()
        config = json.loads(config)
        assert (config["backend_requested"], config["backend"]) == (requested, used)
        assert backend.split(":")[0] == used
        if requested == "auto":
            status = config["torch_backend_status"]
            assert status["equal"] and status["max_abs_difference"] <= status["tolerance"]
        else:
            assert "torch_backend_status" not in config
