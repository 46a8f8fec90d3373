"""Dataset listing, fingerprint, protocol split, and the `faceanon data` commands."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceanon.cli import main
from faceanon.datasets import (
    DatasetError,
    load_dataset,
    protocol_split,
    resolve_dataset,
    split_rank,
)


def make_dataset(root, counts, suffix=".png"):
    for person, count in counts.items():
        (root / person).mkdir(parents=True)
        for index in range(count):
            pixels = np.full((8, 8, 3), index * 20, np.uint8)
            Image.fromarray(pixels).save(root / person / f"{person}_{index:04d}{suffix}")
    return root


def test_lists_images_of_every_format_and_ignores_others(tmp_path):
    make_dataset(tmp_path, {"ann": 2})
    for suffix in (".jpg", ".bmp", ".webp", ".pgm"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ann" / f"x{suffix}")
    (tmp_path / "ann" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("top-level files are not identities")
    dataset = load_dataset(tmp_path)
    assert dataset.identities == ["ann"]
    assert len(dataset.samples) == 6


def test_fingerprint_changes_with_content_listing(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 3})
    before = load_dataset(tmp_path).fingerprint
    assert load_dataset(tmp_path).fingerprint == before
    (tmp_path / "bob" / "bob_0000.png").rename(tmp_path / "bob" / "bob_renamed.png")
    assert load_dataset(tmp_path).fingerprint != before


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(tmp_path)


def test_split_is_seeded_disjoint_and_capped(tmp_path):
    make_dataset(tmp_path, {"ann": 1, "bob": 2, "cy": 7, "dee": 3})
    dataset = load_dataset(tmp_path)
    split = protocol_split(dataset, seed=3)
    assert split.identities == ("bob", "cy", "dee")  # ann has a single image
    assert len(split.gallery) == 3 and len(split.probes) == 3
    assert not {s.relpath for s in split.gallery} & {s.relpath for s in split.probes}
    assert split == protocol_split(dataset, seed=3)
    more = protocol_split(dataset, seed=3, max_probes=5, n_gallery=2)
    assert [s.identity for s in more.gallery].count("cy") == 2
    assert [s.identity for s in more.probes].count("cy") == 5
    seeds = {tuple(s.relpath for s in protocol_split(dataset, seed=x).gallery) for x in range(8)}
    assert len(seeds) > 1, "the seed must matter"


def test_identity_subset_is_deterministic(tmp_path):
    make_dataset(tmp_path, {f"p{i:02d}": 2 for i in range(20)})
    dataset = load_dataset(tmp_path)
    first = protocol_split(dataset, identities=5, seed=1).identities
    assert first == protocol_split(dataset, identities=5, seed=1).identities
    assert len(first) == 5
    with pytest.raises(DatasetError, match="only 20"):
        protocol_split(dataset, identities=21)


def test_resolve_by_name_under_env_and_helpful_error(tmp_path, monkeypatch):
    make_dataset(tmp_path / "mine", {"ann": 2})
    monkeypatch.setenv("FACEANON_DATA", str(tmp_path))
    assert resolve_dataset("mine").name == "mine"
    with pytest.raises(DatasetError, match="faceanon data fetch nothere"):
        resolve_dataset("nothere", cache=tmp_path / "cache")


def _split_by_definition(dataset, *, identities, seed, n_gallery=1, max_probes=1):
    """The split as its docstring defines it, written out with hashlib alone."""
    def rank(*parts):
        return hashlib.sha256("\x1f".join((str(seed), *parts)).encode()).hexdigest()

    people: dict[str, list[str]] = {}
    for sample in dataset.samples:
        people.setdefault(sample.identity, []).append(sample.relpath)
    eligible = [p for p in people if len(people[p]) > n_gallery]
    chosen = sorted(sorted(eligible, key=rank)[:identities])
    gallery, probes = [], []
    for person in chosen:
        ordered = sorted(people[person], key=lambda key: rank(person, key))
        gallery += sorted(ordered[:n_gallery])
        probes += sorted(ordered[n_gallery:n_gallery + max_probes])
    return gallery, probes


def _keys(split):
    return [s.key for s in split.gallery], [s.key for s in split.probes]


def test_split_follows_its_documented_hash_order(tmp_path):
    make_dataset(tmp_path, {f"p{i:02d}": 2 + i % 5 for i in range(30)})
    dataset = load_dataset(tmp_path)
    for seed in (0, 1, 7):
        for identities, n_gallery, max_probes in ((10, 1, 1), (24, 2, 3), (5, 1, 2)):
            split = protocol_split(dataset, identities=identities, seed=seed,
                                   n_gallery=n_gallery, max_probes=max_probes)
            assert _keys(split) == _split_by_definition(
                dataset, identities=identities, seed=seed, n_gallery=n_gallery,
                max_probes=max_probes)
    assert split_rank(3, "ann", "ann/1.png") == hashlib.sha256(
        b"3\x1fann\x1fann/1.png").hexdigest()


def test_split_does_not_use_pythons_random(tmp_path, monkeypatch):
    """random.shuffle / sample may change between Python versions; the split must not."""
    import random

    make_dataset(tmp_path, {f"p{i:02d}": 4 for i in range(12)})
    dataset = load_dataset(tmp_path)
    before = protocol_split(dataset, identities=6, seed=2)

    def refuse(*args, **kwargs):
        raise AssertionError("the split used Python's random module")

    for name in ("shuffle", "sample", "random", "choice", "choices", "seed"):
        monkeypatch.setattr(random.Random, name, refuse)
    assert protocol_split(dataset, identities=6, seed=2) == before


def test_more_identities_keep_the_fewer(tmp_path):
    make_dataset(tmp_path, {f"p{i:02d}": 3 for i in range(25)})
    dataset = load_dataset(tmp_path)
    few = protocol_split(dataset, identities=5, seed=4)
    many = protocol_split(dataset, identities=15, seed=4)
    assert set(few.identities) <= set(many.identities)
    assert set(few.gallery) <= set(many.gallery) and set(few.probes) <= set(many.probes)


# The split of the shared LFW (1481 people with two or more images), pinned: sha256 over
# the gallery keys, a "--" line and the probe keys, newline separated. If one of these
# changes, every benchmark number changes with it: re-measure bench/thresholds.toml.
LFW_SPLITS = {
    (40, 0): "78bd14af09c2468d253ac12fa192e3a6d42cef4a4d0b249b91aeb5813d704cd6",
    (40, 1): "1e4c274427dbe7fa34f2acc300f28728d589563154389bbbcb49705f1e8ac151",
    (250, 0): "3ecf722c385bb55ac1c7868d08290d0a6f2c2fea5fab6b2a8792b118f44e2ebf",
    (None, 0): "666d41b75ca069925d54309caaf40e718c5d40b7575f9988dcfb2ad191fc5ccf",
}


@pytest.mark.parametrize(("identities", "seed"), list(LFW_SPLITS))
def test_split_of_shared_lfw_is_pinned(lfw, identities, seed):
    split = protocol_split(lfw, identities=identities, seed=seed)
    gallery, probes = _keys(split)
    digest = hashlib.sha256("\n".join([*gallery, "--", *probes]).encode()).hexdigest()
    assert digest == LFW_SPLITS[(identities, seed)]
    assert (gallery, probes) == _split_by_definition(lfw, identities=identities or 10**6,
                                                     seed=seed)


def test_split_of_real_lfw_begins_as_pinned(lfw):
    split = protocol_split(lfw, identities=250, seed=0)
    assert [s.key for s in split.gallery[:2]] == [
        "Abdel_Nasser_Assidi/Abdel_Nasser_Assidi_0002.jpg",
        "Adolfo_Aguilar_Zinser/Adolfo_Aguilar_Zinser_0002.jpg"]
    assert [s.key for s in split.probes[:2]] == [
        "Abdel_Nasser_Assidi/Abdel_Nasser_Assidi_0001.jpg",
        "Adolfo_Aguilar_Zinser/Adolfo_Aguilar_Zinser_0003.jpg"]


def test_split_of_real_lfw_matches_the_study_size(lfw):
    split = protocol_split(lfw, identities=250, seed=0)
    assert len(split.gallery) + len(split.probes) == 500
    assert {s.identity for s in split.gallery} == {s.identity for s in split.probes}


def test_data_info_on_shared_lfw(lfw):
    result = CliRunner().invoke(main, ["data", "info", str(lfw.root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["identities"] == 1481 and info["images"] == 8030
    assert info["identities_with_2_or_more"] == 1481
    assert info["fingerprint"] == lfw.fingerprint
