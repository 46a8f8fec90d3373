"""k-Same-Pixel: the clustering guarantee, the method contract, and the paper's bound on LFW."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceanon.ksame import KSame, k_same_clusters
from faceanon.methods import MethodError, get_method


def _canvas(seed: int, size: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


BOX = (40, 40, 80, 80)


def test_registered_with_k_semantics():
    method = get_method("ksame")
    assert isinstance(method, KSame)
    assert method.k_range == (2, None)
    assert method.stronger == "higher"
    with pytest.raises(MethodError, match="k=1 out of range"):
        method.check_k(1)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=40),
    k=st.integers(min_value=2, max_value=7),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_clusters_partition_the_set_in_groups_of_k_to_2k_minus_1(n, k, seed):
    vectors = np.random.default_rng(seed).normal(size=(n, 5))
    if n < k:
        with pytest.raises(MethodError, match=f"holds {n} face.*k={k}"):
            k_same_clusters(vectors, k)
        return
    clusters = k_same_clusters(vectors, k, rng=np.random.default_rng(seed))
    members = np.concatenate(clusters)
    assert sorted(members.tolist()) == list(range(n))
    assert all(k <= len(c) <= 2 * k - 1 for c in clusters)
    # Every cluster but the last is a seed and its k-1 nearest among the faces left then.
    left = set(range(n))
    for cluster in clusters[:-1]:
        assert len(cluster) == k
        seed_face = cluster[0]
        others = np.array(sorted(left))
        distances = np.linalg.norm(vectors[others] - vectors[seed_face], axis=1)
        kth = np.sort(distances)[k - 1]
        chosen = np.linalg.norm(vectors[cluster] - vectors[seed_face], axis=1)
        assert chosen.max() <= kth + 1e-12
        left -= set(cluster.tolist())


def test_set_smaller_than_k_is_refused_with_sizes():
    method = KSame()
    images = [_canvas(1), _canvas(2)]
    with pytest.raises(MethodError, match=r"holds 2 face\(s\) in 2 image\(s\), fewer than k=3"):
        method.anonymize_set(images, [[BOX], [BOX]], k=3, rng=np.random.default_rng(0))


def test_single_image_with_one_face_is_refused():
    with pytest.raises(MethodError, match="fewer than k=2"):
        KSame().anonymize(_canvas(0), [BOX], k=2, rng=np.random.default_rng(0))


def test_faces_of_one_image_form_a_set():
    image = _canvas(3, size=300)
    boxes = [(10, 10, 80, 80), (110, 10, 80, 80), (10, 150, 80, 80), (160, 160, 90, 100)]
    out = KSame().anonymize(image, boxes, k=2, rng=np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    for x, y, w, h in boxes:
        assert not np.array_equal(out[y : y + h, x : x + w], image[y : y + h, x : x + w])


def test_only_pixels_inside_the_boxes_change_and_inputs_are_untouched():
    images = [_canvas(s) for s in range(5)]
    boxes = [[BOX], [(0, 0, 60, 70)], [(100, 90, 60, 70)], [BOX, (0, 120, 40, 40)], []]
    copies = [image.copy() for image in images]
    outputs = KSame().anonymize_set(images, boxes, k=2, rng=np.random.default_rng(0))
    for image, copy, out, image_boxes in zip(images, copies, outputs, boxes, strict=True):
        assert np.array_equal(image, copy)
        assert out.shape == image.shape and out.dtype == np.uint8
        outside = np.ones(image.shape[:2], bool)
        for x, y, w, h in image_boxes:
            outside[y : y + h, x : x + w] = False
        assert np.array_equal(out[outside], image[outside])
    assert np.array_equal(outputs[4], images[4])


def test_same_seed_same_output():
    images = [_canvas(s) for s in range(7)]
    boxes = [[BOX]] * 7
    a = KSame().anonymize_set(images, boxes, k=3, rng=np.random.default_rng(5))
    b = KSame().anonymize_set(images, boxes, k=3, rng=np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_cluster_members_all_get_the_cluster_average(monkeypatch):
    # With the same geometry for every face (keypoints from the box), the members of one
    # cluster must come out identical inside the box, apart from the feathered rim, and
    # equal to the mean of their aligned faces: nobody keeps their own face.
    import faceanon.ksame as ksame
    from faceanon.landmarks import keypoints_from_box

    monkeypatch.setattr(
        ksame, "face_keypoints", lambda image, box: (keypoints_from_box(box), False)
    )
    base = _canvas(9)
    x, y, w, h = BOX
    images = []
    for s in range(4):
        image = base.copy()
        image[y : y + h, x : x + w] = np.full((h, w, 3), 40 * s + 20, np.uint8)
        images.append(image)
    outputs = KSame().anonymize_set(images, [[BOX]] * 4, k=4, rng=np.random.default_rng(0))
    inset = 6
    inner = [o[y + inset : y + h - inset, x + inset : x + w - inset] for o in outputs]
    assert all(np.array_equal(a, inner[0]) for a in inner[1:])
    # The grey levels 20, 60, 100, 140 average to 80.
    assert np.abs(inner[0].astype(int) - 80).max() <= 1


# ----------------------------------------------------------------------------------------
# The paper's guarantee on real faces.


def _lfw_set(lfw, n):
    from faceanon.imageio import read_image
    from faceanon.landmarks import hog_boxes

    by_identity = lfw.images_of()
    names = sorted(by_identity)[:: max(1, len(by_identity) // n)]
    images, boxes = [], []
    for name in names:
        image = read_image(lfw.path(by_identity[name][0]))
        found = hog_boxes(image, upsample=1)
        if found:
            images.append(image)
            boxes.append(found[:1])
        if len(images) == n:
            break
    return images, boxes


def _descriptors(images, boxes, *, box_only):
    import dlib
    import face_recognition_models as models

    from faceanon.landmarks import shape_predictor_68  # noqa: F401 - same dlib build

    five = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    resnet = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    out = []
    for image, (box,) in zip(images, boxes, strict=True):
        x, y, w, h = box
        if box_only:
            # What the method controls: the box, on grey. Context outside the box (hair,
            # clothes, background) is never changed by any method and is not a face.
            view = np.full_like(image, 128)
            view[y : y + h, x : x + w] = image[y : y + h, x : x + w]
            image = view
        rect = dlib.rectangle(x, y, x + w - 1, y + h - 1)
        out.append(np.array(resnet.compute_face_descriptor(image, five(image, rect), 1)))
    return np.stack(out)


def _aligned_descriptors(faces):
    """dlib ResNet descriptors of canonical-frame faces (upscaled; the frame is the box)."""
    import cv2
    import dlib
    import face_recognition_models as models

    five = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    resnet = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    out = []
    for face in faces:
        image = cv2.resize(np.clip(face, 0, 255).astype(np.uint8), (200, 200))
        image = cv2.copyMakeBorder(image, 50, 50, 50, 50, cv2.BORDER_REPLICATE)
        rect = dlib.rectangle(70, 70, 229, 229)
        out.append(np.array(resnet.compute_face_descriptor(image, five(image, rect), 1)))
    return np.stack(out)


def _rank1(probes, gallery):
    distances = np.linalg.norm(probes[:, None] - gallery[None], axis=2)
    return float(np.mean(distances.argmin(axis=1) == np.arange(len(probes))))


@pytest.mark.realdata
@pytest.mark.slow
def test_rank1_against_own_originals_is_at_most_one_in_k_on_lfw(lfw):
    """Newton et al.'s bound, measured with dlib's ResNet on 60 LFW faces, k=3.

    In the paper's setting (aligned faces, the de-identified set matched against its own
    originals) the bound must hold exactly. Pasted back into the pictures, each member
    keeps its own box placement, the thin feathered rim and everything outside the box,
    so the recognizer does slightly better than in the aligned frame; that end-to-end
    number is checked against 1/k + 0.1 (measured here: aligned 0.27, box only 0.35,
    whole picture 0.38).
    """
    k = 3
    images, boxes = _lfw_set(lfw, 60)
    assert len(images) >= 50
    method = KSame()
    result = method.deidentify_aligned(images, boxes, k=k, rng=np.random.default_rng(0))
    assert all(len(c) >= k for c in result.clusters)
    originals = _aligned_descriptors(result.aligned)
    assert _rank1(originals, originals) == 1.0  # the measurement can recognise
    assert _rank1(_aligned_descriptors(result.deidentified), originals) <= 1 / k

    outputs = method.anonymize_set(images, boxes, k=k, rng=np.random.default_rng(0))
    for box_only in (True, False):
        rank1 = _rank1(
            _descriptors(outputs, boxes, box_only=box_only),
            _descriptors(images, boxes, box_only=box_only),
        )
        assert rank1 <= 1 / k + 0.1, f"box_only={box_only}: rank-1 {rank1:.3f}"


@pytest.mark.realdata
def test_cli_refuses_a_folder_with_fewer_faces_than_k(lfw, tmp_path):
    import shutil

    from click.testing import CliRunner

    from faceanon.cli import main

    folder = tmp_path / "two"
    folder.mkdir()
    for sample in lfw.samples[:2]:
        shutil.copy(lfw.path(sample), folder / sample.relpath.replace("/", "_"))
    result = CliRunner().invoke(
        main,
        ["anonymize", str(folder), "-o", str(tmp_path / "out"), "--method", "ksame", "--k", "3"],
    )
    assert result.exit_code != 0
    assert "fewer than k=3" in result.output
    assert not any((tmp_path / "out").glob("*.jpg"))


#: sha256 over the uint8 outputs of k-Same (k=3, rng seed 3) on the first HOG face of every
#: 60th LFW identity (24 images), recorded with the code before the blend moved into
#: ``faceanon.landmarks.paste_warped``: refactoring must not change a single pixel.
KSAME_LFW_DIGEST = "c8a644b95f65a77575b3b8d50427e94096ba6e9a4bb4f185c058e0e2c430200c"


@pytest.mark.realdata
def test_outputs_on_real_faces_are_bit_identical_to_the_recorded_ones(lfw):
    import hashlib

    from faceanon.imageio import read_image
    from faceanon.landmarks import hog_boxes

    by_identity = lfw.images_of()
    images, boxes = [], []
    for name in sorted(by_identity)[::60][:24]:
        image = read_image(lfw.path(by_identity[name][0]))
        images.append(image)
        boxes.append(hog_boxes(image, upsample=1)[:1])
    assert sum(map(len, boxes)) >= 20
    outputs = KSame().anonymize_set(images, boxes, k=3, rng=np.random.default_rng(3))
    digest = hashlib.sha256()
    for out in outputs:
        digest.update(out.tobytes())
    assert digest.hexdigest() == KSAME_LFW_DIGEST
