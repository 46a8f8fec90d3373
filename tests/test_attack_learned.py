"""The learned attack: settings, the singleton-only data rule, training, cache and pickling."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from faceanon.attack_learned import (
    RESIDUAL_BLOCK_COUNT,
    Learned,
    LearnedAttackError,
    _read_weights,
    training_samples,
)
from faceanon.attacks import CHEAP_ATTACKS, available_attacks, get_attack

torch = pytest.importorskip("torch")

#: A budget that trains in seconds: enough to see the loss fall, not to attack well.
TINY = {"images": 120, "epochs": 3, "trainable_from": 12, "batch_size": 32}


def test_registered_but_not_cheap_and_settings_need_no_torch_network():
    from faceanon.resnet_torch import RESIDUAL_BLOCKS

    assert "learned" in available_attacks() and "learned" not in CHEAP_ATTACKS
    attack = get_attack("learned", max_minutes=1)
    assert isinstance(attack, Learned) and attack.options()["max_minutes"] == 1
    assert RESIDUAL_BLOCK_COUNT == len(RESIDUAL_BLOCKS)


@pytest.mark.parametrize("options, message", [
    ({"images": 3}, "images must be >= 10"),
    ({"trainable_from": 14}, "trainable_from must be in 0..13"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"validation": 0.7}, "validation"),
    ({"prefilter": "swirl"}, "prefilter must be none, auto or one of deblur, median"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(LearnedAttackError, match=message):
        Learned(**options)


def test_prefilter_restores_like_its_filter_attack():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    region = (10, 10, 30, 30)
    auto = Learned()  # prefilter="auto" by default
    deblurred = get_attack("deblur").restore(image, region=region, method="blur", k=9)
    assert np.array_equal(auto.restore(image, region=region, method="blur", k=9), deblurred)
    assert not np.array_equal(deblurred, image)
    # No prefilter for the eye mask under auto; none at all under "none".
    assert auto.restore(image, region=region, method="mask", k=None) is image
    assert Learned(prefilter="none").restore(image, region=region, method="blur", k=9) is image


def test_unknown_option_names_the_known_ones():
    with pytest.raises(LearnedAttackError, match="unknown option.*epochz.*known:.*epochs"):
        Learned(epochz=3)


def test_encoding_before_prepare_is_an_error():
    attack = Learned()
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(LearnedAttackError, match="prepare"):
        attack.encode(image, original_box=(10, 10, 50, 50), method="blur", k=30, backend=None)
    with pytest.raises(LearnedAttackError, match="prepare"):
        attack.encode_chips(np.zeros((1, 150, 150, 3), np.uint8))


def _fake_dataset(root, people):
    from PIL import Image

    for person in people:
        (root / person).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / person / f"{person}_0001.jpg")


def test_training_data_sharing_a_benchmark_identity_is_refused(tmp_path):
    _fake_dataset(tmp_path / "lfw-singletons", [f"Person_{i}" for i in range(5)])
    _fake_dataset(tmp_path / "lfw", ["Somebody_Else", "Person_3"])
    with pytest.raises(LearnedAttackError, match="shares 1 identities.*Person_3"):
        training_samples(tmp_path, images=5, seed=0)


def test_training_samples_are_a_seeded_subset(tmp_path):
    _fake_dataset(tmp_path / "lfw-singletons", [f"Person_{i}" for i in range(20)])
    first = [s.relpath for _, s in training_samples(tmp_path, images=8, seed=0)]
    again = [s.relpath for _, s in training_samples(tmp_path, images=8, seed=0)]
    other = [s.relpath for _, s in training_samples(tmp_path, images=8, seed=1)]
    assert first == again and len(set(first)) == 8 and first != other


# ---------------------------------------------------------------------------------------
# Real faces: one tiny training run shared by the tests below


@pytest.fixture(scope="module")
def prepared(lfw_singletons, tmp_path_factory):
    """A learned attack trained on pixelate k10 with the tiny budget, in its own cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEANON_CACHE", str(cache))
        attack = Learned(**TINY)
        attack.prepare(method="pixelate", k=10, seed=0, data_root=lfw_singletons.root.parent)
        yield attack, cache


@pytest.mark.realdata
def test_training_reduces_the_loss(prepared):
    attack, _ = prepared
    record = attack.training_record()
    curve = record["curve"]
    assert len(curve) == TINY["epochs"] + 1 and record["steps"] > 0
    # Epoch 0 is dlib's network as it is; fine-tuning must beat it on held-out faces.
    assert min(p["valid_loss"] for p in curve[1:]) < curve[0]["valid_loss"]
    assert curve[-1]["train_loss"] < curve[1]["train_loss"]
    assert record["settings"]["images"] == TINY["images"] and record["method"] == "pixelate"
    assert record["split"]["faces"] == record["pairs"]["train"] + record["pairs"]["held_out"]
    assert record["wall_seconds"] > 0 and len(record["code_version"]) == 16


@pytest.mark.realdata
def test_no_training_file_is_a_benchmark_identity(prepared, lfw, lfw_singletons):
    attack, _ = prepared
    files = attack.training_files()
    assert len(files) == attack.training_record()["split"]["faces"]
    benchmark_people = set(lfw.identities)
    assert not benchmark_people & set(lfw_singletons.identities)
    used_people = {f.split("/")[0] for f in files}
    assert used_people <= set(lfw_singletons.identities)
    assert not used_people & benchmark_people
    assert all((lfw_singletons.root / f).is_file() for f in files)


@pytest.mark.realdata
def test_cache_hit_returns_the_same_weights(prepared, lfw_singletons, monkeypatch):
    attack, cache = prepared
    monkeypatch.setenv("FACEANON_CACHE", str(cache))
    stamp = attack.weights_path.stat().st_mtime_ns
    again = Learned(**TINY)
    again.prepare(method="pixelate", k=10, seed=0, data_root=lfw_singletons.root.parent)
    assert again.weights_path == attack.weights_path
    assert again.weights_path.stat().st_mtime_ns == stamp  # read, not trained again
    assert again.training_record() == attack.training_record()
    chips = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    assert np.array_equal(again.encode_chips(chips), attack.encode_chips(chips))
    # The pipeline's per-attack hook passes its backend; the tuned network still encodes.
    assert np.array_equal(again.encode_chips(chips, backend=object()), attack.encode_chips(chips))
    other = Learned(**{**TINY, "epochs": 2})
    assert other.cache_path(method="pixelate", k=10, seed=0,
                            data_root=lfw_singletons.root.parent) != attack.weights_path
    assert attack.cache_path(method="pixelate", k=15, seed=0,
                             data_root=lfw_singletons.root.parent) != attack.weights_path


@pytest.mark.realdata
def test_picklable_after_prepare_and_encodes_the_same(prepared, lfw):
    from faceanon.attacks import largest_box
    from faceanon.detect import find_regions
    from faceanon.imageio import read_image
    from faceanon.methods import get_method
    from faceanon.recognition import DlibResNetTorch

    attack, _ = prepared
    sample = lfw.samples[0]
    original = read_image(lfw.path(sample))
    regions = find_regions(original, detector="hog")
    hidden = get_method("pixelate").anonymize(original, regions, k=10,
                                              rng=np.random.default_rng(0))
    backend = DlibResNetTorch(threads=1)
    encoding = attack.encode(hidden, original_box=largest_box(regions), method="pixelate",
                             k=10, backend=backend)
    assert encoding.acquired and encoding.embedding.shape == (128,)
    blob = pickle.dumps(attack)  # the loaded network stays behind
    assert len(blob) < 100_000
    copy = pickle.loads(blob)
    assert copy._model is None
    again = copy.encode(hidden, original_box=largest_box(regions), method="pixelate", k=10,
                        backend=backend)
    assert np.array_equal(again.embedding, encoding.embedding)
    # The fine-tuned network is not dlib's: the attack really uses its own weights.
    plain = backend.encode(hidden, box=encoding.box).embedding
    assert not np.allclose(plain, encoding.embedding)
    with pytest.raises(LearnedAttackError, match="prepared for pixelate k=10.*blur k=30"):
        copy.encode(hidden, original_box=largest_box(regions), method="blur", k=30,
                    backend=backend)


@pytest.mark.realdata
def test_corrupt_cache_file_is_an_error_and_is_retrained(prepared, lfw_singletons,
                                                         monkeypatch, tmp_path):
    attack, cache = prepared
    monkeypatch.setenv("FACEANON_CACHE", str(cache))
    # Changed tensors under the old checksum: named as corrupt, never used.
    payload = torch.load(attack.weights_path, weights_only=True)
    name = sorted(payload["tail"])[0]
    payload["tail"][name] = payload["tail"][name] + 1
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(LearnedAttackError, match="tampered.pt.*do not match the sha256"):
        _read_weights(tampered)
    # A damaged file in the cache: prepare warns, trains again and replaces it.
    good = attack.weights_path.read_bytes()
    attack.weights_path.write_bytes(good[: len(good) // 2])
    with pytest.raises(LearnedAttackError, match="corrupt learned-attack weights"):
        _read_weights(attack.weights_path)
    retrained = Learned(**TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        retrained.prepare(method="pixelate", k=10, seed=0, data_root=lfw_singletons.root.parent)
    assert any("corrupt" in str(w.message) and "training again" in str(w.message)
               for w in caught)
    tail, record, _ = _read_weights(retrained.weights_path)
    assert record["steps"] == attack.training_record()["steps"] and tail


@pytest.mark.realdata
def test_the_pipeline_scores_learned_cases_with_the_tuned_network(prepared, lfw, tmp_path,
                                                                   monkeypatch):
    # The benchmark path: prepared once in the main process (here a cache hit), pickled
    # to two workers, chips batched per attack. The distances must be the tuned
    # network's, as the attack computes them called directly.
    from faceanon.attacks import largest_box
    from faceanon.datasets import protocol_split
    from faceanon.detect import anonymization_regions
    from faceanon.imageio import read_image
    from faceanon.methods import get_method
    from faceanon.pipeline import Evaluation, Settings, worker_backend
    from faceanon.protocol import Case, image_rng
    from faceanon.recognition import distance_matrix
    from faceanon.store import ResultsDB

    _, cache = prepared
    monkeypatch.setenv("FACEANON_CACHE", str(cache))
    split = protocol_split(lfw, identities=4, seed=2)
    case = Case("pixelate", 10, "naive", "learned")
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run_id = db.start_run(name="x", dataset_name="lfw", dataset_fingerprint="x",
                              config={}, git_commit=None, git_dirty=None, packages={},
                              machine={})
        with Evaluation(lfw, split, db=db, run_id=run_id, workers=2,
                        attacks={"learned": Learned(**TINY)},
                        data_root=lfw.root.parent) as evaluation:
            evaluation.plan([case])
            case_id = evaluation.run_case(case).case_id
        stored = db.con.execute("SELECT probe, gallery, distance FROM scores "
                                "WHERE case_id = ?", [case_id]).fetchall()
        trainings = db.attack_trainings(run_id)
    assert [(t["method"], t["k"], t["attack"]) for t in trainings] == [
        ("pixelate", 10, "learned")]
    # The weights in the cache now (an earlier test may have retrained them), as the
    # pipeline loaded them.
    attack = Learned(**TINY)
    attack.prepare(method="pixelate", k=10, seed=0, data_root=lfw.root.parent)
    assert trainings[0]["record"] == attack.training_record()

    backend = worker_backend(Settings().resolved())
    probes = []
    for sample in split.probes:
        original = read_image(lfw.path(sample))
        regions = anonymization_regions(original, detector="hog", region="face").boxes
        hidden = get_method("pixelate").anonymize(
            original, list(regions), k=10, rng=image_rng(0, "pixelate", 10, sample.key))
        box = largest_box(regions) if len(regions) == 1 else None
        found = backend.encode(original).box
        face = None if found is None else (found[3], found[0], found[1] - found[3],
                                           found[2] - found[0])
        probes.append(attack.encode(hidden, original_box=face, method="pixelate", k=10,
                                    backend=backend, anonymized_box=box).embedding)
    gallery = [backend.encode(read_image(lfw.path(s))).embedding for s in split.gallery]
    expected = distance_matrix(probes, gallery)
    index = {(p.key, g.key): expected[i, j] for i, p in enumerate(split.probes)
             for j, g in enumerate(split.gallery)}
    assert len(stored) == len(index)
    for probe, gallery_key, distance in stored:
        assert distance == pytest.approx(index[(probe, gallery_key)], abs=1e-5)
