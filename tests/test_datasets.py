"""Dataset listing, fingerprint, protocol split, and the `faceanon data` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceanon.cli import main
from faceanon.datasets import DatasetError, load_dataset, protocol_split, resolve_dataset


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
