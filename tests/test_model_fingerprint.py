"""What computed an embedding: the key the embedding cache keeps beside the backend name."""

from __future__ import annotations

import pytest

from faceanon.recognition import DlibResNet, model_fingerprint


def test_model_fingerprint_follows_bytes_and_versions(tmp_path):
    weights = tmp_path / "a" / "model.dat"
    weights.parent.mkdir()
    weights.write_bytes(b"weights one")
    moved = tmp_path / "b" / "model.dat"
    moved.parent.mkdir()
    moved.write_bytes(b"weights one")
    key = model_fingerprint([weights], versions={"dlib": "19.24.6"})
    assert key.startswith("sha256:") and len(key) == 7 + 64
    assert model_fingerprint([moved], versions={"dlib": "19.24.6"}) == key
    assert model_fingerprint([weights], versions={"dlib": "20.0.0"}) != key
    weights.write_bytes(b"weights two")          # replaced in place: hashed again
    assert model_fingerprint([weights], versions={"dlib": "19.24.6"}) != key
    with pytest.raises(FileNotFoundError):
        model_fingerprint([tmp_path / "missing.dat"], versions={})


def test_dlib_backend_names_its_model_files_and_dlib_version():
    dlib = pytest.importorskip("dlib")
    import face_recognition_models as models

    expected = model_fingerprint(
        [models.face_recognition_model_location(),
         models.pose_predictor_five_point_model_location(),
         models.cnn_face_detector_model_location()], versions={"dlib": dlib.__version__})
    assert DlibResNet().model_fingerprint() == expected
    # the options are in the backend's name, not its model: the same files run both
    assert DlibResNet(upsample=0).model_fingerprint() == expected
