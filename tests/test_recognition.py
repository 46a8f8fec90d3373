"""The dlib-resnet backend gives what face_recognition 1.3.0 gives, on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.datasets import protocol_split
from faceanon.imageio import read_image
from faceanon.recognition import DlibResNet, distance_matrix, image_sha256

face_recognition = pytest.importorskip(
    "face_recognition", reason="installed with --no-deps by tox for this oracle test"
)


@pytest.fixture(scope="module")
def fifty_faces(lfw):
    split = protocol_split(lfw, identities=50, seed=7)
    return [read_image(lfw.path(s)) for s in split.probes]


def test_matches_face_recognition_on_50_lfw_faces(fifty_faces):
    backend = DlibResNet()
    ours, theirs = [], []
    for image in fifty_faces:
        encoding = backend.encode(image)
        locations = face_recognition.face_locations(image)
        encodings = face_recognition.face_encodings(image)
        assert encoding.faces_found == len(locations)
        if not locations:
            assert encoding.embedding is None
            continue
        # We pick the largest unclipped detector box; face_recognition lists boxes
        # clipped to the image, so find ours among them rather than re-deriving "largest".
        assert encoding.box in locations
        largest = locations.index(encoding.box)
        np.testing.assert_allclose(encoding.embedding, encodings[largest], rtol=0, atol=1e-6)
        ours.append(encoding.embedding)
        theirs.append(encodings[largest])
    assert len(ours) >= 45, "HOG should find a face in nearly every LFW image"
    mine = distance_matrix(ours, ours)
    for row, known in enumerate(theirs):
        np.testing.assert_allclose(
            mine[row], face_recognition.face_distance(np.array(theirs), known), atol=1e-6
        )


def test_no_face_is_a_failure_to_acquire():
    encoding = DlibResNet().encode(np.full((120, 120, 3), 128, np.uint8))
    assert encoding.embedding is None and encoding.faces_found == 0 and not encoding.acquired


def test_distance_matrix_marks_missing_embeddings_nan():
    a, b = np.zeros(128), np.ones(128)
    d = distance_matrix([a, None], [b, a])
    assert d.shape == (2, 2)
    assert d[0, 0] == pytest.approx(np.sqrt(128)) and d[0, 1] == 0
    assert np.isnan(d[1]).all()


def test_backend_name_carries_its_options():
    assert DlibResNet(upsample=0, jitters=2).name != DlibResNet().name
    with pytest.raises(ValueError, match="unknown detector"):
        DlibResNet(detector="sift")


def test_image_hash_depends_on_pixels_and_shape():
    image = np.zeros((4, 6, 3), np.uint8)
    assert image_sha256(image) == image_sha256(image.copy())
    assert image_sha256(image) != image_sha256(image.reshape(6, 4, 3))
    changed = image.copy()
    changed[0, 0, 0] = 1
    assert image_sha256(image) != image_sha256(changed)
