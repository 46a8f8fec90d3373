"""dlib-resnet-torch gives dlib's embeddings (to 1e-5) on real faces, batched or not."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from faceanon.datasets import protocol_split
from faceanon.imageio import read_image
from faceanon.recognition import (
    DlibResNet,
    DlibResNetTorch,
    distance_matrix,
    probe_chips,
    torch_backend_status,
)

torch = pytest.importorskip("torch", reason="the torch backend needs the 'gan' extra")
rt = pytest.importorskip("faceanon.resnet_torch")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Weights converted into a private cache, then saved where the backend can load them."""
    folder = tmp_path_factory.mktemp("weights")
    state, sha = rt.cached_state_dict(cache=folder / "cache")
    path = folder / "dlib_resnet.pt"
    rt.save_weights(path, state, dat_sha256=sha)
    return path


@pytest.fixture(scope="module")
def backends(weights_file):
    # One thread, as a pipeline worker runs it: the machine may be shared and busy.
    threads = torch.get_num_threads()
    yield DlibResNet(), DlibResNetTorch(weights=weights_file, batch_size=64, threads=1)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sixty_faces(lfw):
    split = protocol_split(lfw, identities=30, seed=11)
    return [read_image(lfw.path(s)) for s in (*split.gallery, *split.probes)]


@pytest.fixture(scope="module")
def chips_and_dlib(backends, sixty_faces):
    """dlib's face chips of the sixty images and dlib's own embeddings of them."""
    dlib_backend, _ = backends
    faces = [dlib_backend.face_chip(image) for image in sixty_faces]
    chips = np.array([face.chip for face in faces if face.acquired])
    assert len(chips) >= 55, "HOG should find a face in nearly every LFW image"
    return chips, dlib_backend.encode_chips(chips)


@pytest.mark.realdata
def test_equal_to_dlib_on_real_faces(backends, chips_and_dlib):
    _, torch_backend = backends
    chips, theirs = chips_and_dlib
    ours = torch_backend.encode_chips(chips)
    assert ours.dtype == np.float64 and ours.shape == (len(chips), 128)
    assert np.abs(ours - theirs).max() <= rt.CPU_TOLERANCE
    # Every score of a comparison is equal too (the triangle inequality bounds it by
    # 2 * sqrt(128) * 1e-5; what matters is what is measured).
    scores = distance_matrix(list(ours), list(ours))
    reference = distance_matrix(list(theirs), list(theirs))
    assert np.abs(scores - reference).max() <= rt.CPU_TOLERANCE


@pytest.mark.realdata
@pytest.mark.slow
def test_equal_to_dlib_on_the_paper_grids_500_faces(backends, lfw):
    # The contract on the study's own sample: the 500 images of the paper grid's split
    # (250 identities x 2), every face HOG finds, every embedding and every score.
    split = protocol_split(lfw, identities=250, seed=0)
    dlib_backend, torch_backend = backends
    faces = [dlib_backend.face_chip(read_image(lfw.path(s)))
             for s in (*split.gallery, *split.probes)]
    chips = np.array([face.chip for face in faces if face.acquired])
    assert len(faces) == 500 and len(chips) >= 480
    theirs, ours = dlib_backend.encode_chips(chips), torch_backend.encode_chips(chips)
    assert np.abs(ours - theirs).max() <= rt.CPU_TOLERANCE
    scores = distance_matrix(list(ours), list(ours))
    assert np.abs(scores - distance_matrix(list(theirs), list(theirs))).max() <= rt.CPU_TOLERANCE


@pytest.mark.realdata
def test_batching_does_not_change_embeddings(backends, chips_and_dlib):
    _, torch_backend = backends
    chips, reference = chips_and_dlib[0][:20], chips_and_dlib[1][:20]
    one_by_one = np.array([torch_backend.encode_chips(c[None])[0] for c in chips])
    torch_backend.encoder.batch_size = 7  # batches of 7 + a remainder
    try:
        batched = torch_backend.encode_chips(chips)
    finally:
        torch_backend.encoder.batch_size = 64
    assert np.abs(one_by_one - reference).max() <= rt.CPU_TOLERANCE
    assert np.abs(batched - reference).max() <= rt.CPU_TOLERANCE


@pytest.mark.realdata
def test_encode_gives_what_dlib_resnet_gives(backends, sixty_faces):
    # The whole path for single images: detection, box, chip and network.
    dlib_backend, torch_backend = backends
    for image in sixty_faces[:6]:
        expected, got = dlib_backend.encode(image), torch_backend.encode(image)
        assert (got.faces_found, got.box) == (expected.faces_found, expected.box)
        assert np.abs(got.embedding - expected.embedding).max() <= rt.CPU_TOLERANCE


@pytest.mark.realdata
def test_a_given_box_skips_detection(backends, sixty_faces):
    dlib_backend, torch_backend = backends
    image = sixty_faces[0]
    found = dlib_backend.encode(image)
    assert found.acquired
    in_box = torch_backend.encode(image, box=found.box)
    assert in_box.faces_found == 1 and in_box.box == found.box
    assert np.abs(in_box.embedding - dlib_backend.encode(image, box=found.box).embedding).max() \
        <= rt.CPU_TOLERANCE
    with pytest.raises(ValueError, match="has no area"):
        torch_backend.encode(image, box=(10, 5, 20, 5))


def test_jitters_are_refused_with_the_reason(weights_file):
    with pytest.raises(ValueError, match="does not jitter"):
        DlibResNetTorch(jitters=2, weights=weights_file)


def test_name_says_backend_weights_and_device(backends):
    dlib_backend, torch_backend = backends
    sha = rt.file_sha256(rt.default_dat_path())
    assert torch_backend.name == f"dlib-resnet-torch:{sha[:12]}:hog:up1:jit1:cpu"
    assert torch_backend.name != dlib_backend.name


def test_model_fingerprint_says_weights_and_torch(backends, weights_file, tmp_path):
    dlib_backend, torch_backend = backends
    key = torch_backend.model_fingerprint()
    assert key.startswith("sha256:") and key != dlib_backend.model_fingerprint()
    assert torch_backend.model_fingerprint() == key
    # other weights bytes under the same .dat sha256: another model, another cache key
    state, sha = rt.load_weights(weights_file)
    state = {name: tensor.clone() for name, tensor in state.items()}
    first = next(name for name, tensor in state.items() if tensor.is_floating_point())
    state[first] += 1e-3
    other = tmp_path / "other.pt"
    rt.save_weights(other, state, dat_sha256=sha)
    assert DlibResNetTorch(weights=other, threads=1).model_fingerprint() != key


def test_chips_must_be_150px_uint8(backends):
    _, torch_backend = backends
    with pytest.raises(ValueError, match=r"uint8 of shape \(n, 150, 150, 3\).*float64"):
        torch_backend.encode_chips(np.zeros((2, 150, 150, 3)))
    with pytest.raises(ValueError, match=r"\(150, 150, 3\)"):
        torch_backend.encode_chips(np.zeros((150, 150, 3), np.uint8))
    assert torch_backend.encode_chips(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_status_reports_equality_on_probe_chips():
    status = torch_backend_status(device="cpu")
    assert status.available and status.equal, status.reason
    assert status.max_abs_difference <= status.tolerance == rt.CPU_TOLERANCE
    # the probes differ from each other, so the comparison is not of one repeated vector
    assert len({c.tobytes() for c in probe_chips()}) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA report")
def test_status_without_cuda_says_why():
    status = torch_backend_status(device="cuda")
    assert not status.available and not status.equal
    assert "CUDA" in status.reason


def test_cache_is_keyed_by_sha_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    state, sha = rt.cached_state_dict(cache=tmp_path)
    cached = tmp_path / f"{sha}.pt"
    assert cached.is_file() and list(tmp_path.iterdir()) == [cached]

    def no_conversion(*args, **kwargs):
        raise AssertionError("a valid cache must not be converted again")

    monkeypatch.setattr(rt, "convert", no_conversion)
    again, _ = rt.cached_state_dict(cache=tmp_path)
    assert all(torch.equal(again[k], state[k]) for k in state)
    monkeypatch.undo()

    cached.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="converting .* again"):
        rebuilt, _ = rt.cached_state_dict(cache=tmp_path)
    assert all(torch.equal(rebuilt[k], state[k]) for k in state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.load_weights(cached)  # the rebuilt file is whole


def test_bad_weights_file_is_named(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(rt.WeightsError, match=r"weights\.pt: not a converted weights file"):
        rt.load_weights(bad)
    torch.save({"format": "faceanon-dlib-resnet-torch/1", "dat_sha256": "0" * 64,
                "state_dict": {"fc.weight": torch.zeros(3, 3)}}, bad)
    with pytest.raises(rt.WeightsError, match=r"weights\.pt: tensors do not fit"):
        rt.load_weights(bad)


def test_another_architecture_is_refused(monkeypatch):
    monkeypatch.setattr(rt, "RESIDUAL_BLOCKS", rt.RESIDUAL_BLOCKS[:-1])
    with pytest.raises(rt.WeightsError, match="do not nest as dlib's face ResNet"):
        rt.convert()


def test_zero_padded_add_matches_dlibs_rule():
    # dlib's add_prev of a (1, 2, 1, 1) and a (1, 1, 2, 2) tensor: the output is
    # (1, 2, 2, 2); each element is the sum of the inputs that have it, 0 elsewhere.
    a = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    b = torch.tensor([[10.0, 20.0], [30.0, 40.0]]).view(1, 1, 2, 2)
    out = rt._add_zero_padded(a, b)
    expected = torch.tensor([[[11.0, 20.0], [30.0, 40.0]], [[2.0, 0.0], [0.0, 0.0]]])
    assert torch.equal(out[0], expected)


def test_importing_recognition_loads_neither_torch_nor_dlib():
    code = ("import sys, faceanon.recognition, faceanon.dlib_dat; "
            "print(sorted(m for m in ('torch', 'dlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
