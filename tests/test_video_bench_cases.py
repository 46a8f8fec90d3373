"""The video benchmark's plumbing (faceanon.benchmark.video): grids, reference boxes and
their cache, the strip's frame, missing data, the frame attacks on a real face."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from faceanon.benchmark.video import (
    VIDEO_GRIDS,
    FrameAttacker,
    VideoBench,
    reference_boxes,
    strip_frame,
    video_cases,
)


def test_grids_start_with_clear_and_run_only_attacks_that_apply():
    for grid in VIDEO_GRIDS:
        cases = video_cases(grid)
        assert cases[0].label == "video-clear-detect"
        assert len({c.label for c in cases}) == len(cases)
        for case in cases:
            if case.attack in ("deblur", "unpixelate", "median"):
                assert (case.method, case.attack) in {("blur", "deblur"),
                                                      ("pixelate", "unpixelate"),
                                                      ("noise", "median")}
    paper = {(c.method, c.k, c.attack) for c in video_cases("paper")}
    assert ("blur", 15, "deblur") in paper and ("clear", None, "deblur") not in paper
    assert {m for m, _, _ in paper} == {"clear", "blur", "pixelate", "noise", "blackout",
                                        "ksame", "deepprivacy"}
    # a method filter keeps the clear baseline
    only = video_cases("paper", methods=["blackout"])
    assert {c.method for c in only} == {"clear", "blackout"}
    assert {c.k for c in video_cases("paper", methods=["blur"], ks=[31])} == {None, 31}


def test_strip_frame_has_the_most_faces_nearest_the_middle():
    reference = [[(0, 0, 1, 1)], [], [(0, 0, 1, 1)] * 2, [(0, 0, 1, 1)], [(0, 0, 1, 1)] * 2,
                 [], [], [(0, 0, 1, 1)] * 2]
    assert strip_frame(reference) == 4
    assert strip_frame([[], []]) == 1


def test_reference_boxes_come_from_the_cache_only_for_the_same_clip(tmp_path, monkeypatch):
    av = pytest.importorskip("av")  # noqa: F841
    from test_video import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=5)
    cache = tmp_path / "cache"
    cache.mkdir()
    stored = {"clip_sha256": "a" * 64, "detector": "haar-face", "upsample": 0,
              "frames": [[[1, 2, 3, 4]]] * 5}
    (cache / "video-reference-haar-face.json").write_text(json.dumps(stored))
    assert reference_boxes(clip, detector="haar-face", frames=3, clip_sha256="a" * 64,
                           cache=cache) == [[(1, 2, 3, 4)]] * 3
    # another clip: detected again (no face in the synthetic clip) and cached for it
    assert reference_boxes(clip, detector="haar-face", frames=None, clip_sha256="b" * 64,
                           cache=cache) == [[]] * 5
    written = json.loads((cache / "video-reference-haar-face.json").read_text())
    assert written["clip_sha256"] == "b" * 64 and len(written["frames"]) == 5
    assert sorted(p.name for p in cache.iterdir()) == ["video-reference-haar-face.json"]


class Options:
    """A stand-in for pytest's config: the plugin's defaults."""

    rootpath = Path(".")

    def getoption(self, name):
        return {"--bench-grid": "smoke", "--bench-video-frames": None}.get(name)


def test_missing_video_data_skips_with_the_way_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEANON_DATA", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match=(
            r"video clip 'short_hamilton_clip.mp4' not found \(looked in .*video\); "
            r"set FACEANON_DATA")):
        VideoBench(Options()).data()
    monkeypatch.delenv("FACEANON_DATA")
    with pytest.raises(pytest.skip.Exception, match=r"\$FACEANON_DATA is not set"):
        VideoBench(Options()).data()


@pytest.mark.realdata
def test_located_attack_encodes_the_face_where_the_reference_box_is():
    from faceanon.imageio import read_image
    from faceanon.video_bench import DlibAttacker

    root = os.environ.get("FACEANON_DATA")
    photo = Path(root or "/nonexistent") / "video" / "lin-manuel-miranda.png"
    if not photo.is_file():
        pytest.skip("the gallery photo of the video folder is needed (FACEANON_DATA)")
    image = read_image(photo)
    ((box, expected),) = DlibAttacker()(image)
    located = FrameAttacker("located")
    ((found_box, embedding),) = located(image, regions=[], reference=[box], method="clear",
                                        k=None)
    assert found_box == tuple(box)
    assert np.linalg.norm(embedding - expected) < 0.05
    # blacked out where the method hid it: the descriptor no longer matches the person
    x, y, w, h = box
    hidden = image.copy()
    hidden[y:y + h, x:x + w] = 0
    ((_, dark),) = located(hidden, regions=[box], reference=[box], method="blackout", k=None)
    assert np.linalg.norm(dark - expected) > 0.6
    # a box outside the frame is dropped, not encoded
    assert located(image, regions=[], reference=[(-50, -50, 20, 20)], method="clear",
                   k=None) == []
