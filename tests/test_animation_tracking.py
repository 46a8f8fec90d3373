"""Animated images follow faces across frames with the video tracker; pages do not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceanon.anonymize import ANIMATED_FORMATS, frame_regions
from faceanon.cli import main
from faceanon.detect import Detection, Detector
from faceanon.formats import read_document
from faceanon.imageio import read_image

FACE = (30, 20, 40, 44)


class _Scripted(Detector):
    """Finds ``FACE`` in every frame except those in ``misses``, in call order."""

    name = "scripted"

    def __init__(self, misses=()):
        self.misses, self.calls = set(misses), 0

    def detect(self, image):
        index, self.calls = self.calls, self.calls + 1
        return [] if index in self.misses else [Detection(*FACE)]


def _frames(count=6):
    return [np.full((90, 120, 3), 128, np.uint8) for _ in range(count)]


def _covers(boxes, face=FACE) -> bool:
    x, y, w, h = face
    return any(bx <= x and by <= y and bx + bw >= x + w and by + bh >= y + h
               for bx, by, bw, bh in boxes)


def test_an_animation_frame_the_detector_missed_keeps_the_faces_box():
    regions = frame_regions(_frames(), detector=_Scripted(misses={3}), on_miss="fail",
                            animated=True)
    assert [r.found for r in regions] == [True] * 6
    assert _covers(regions[3].boxes), regions[3].boxes
    # frames where the face was found keep exactly their own boxes
    assert regions[2].boxes == (FACE,) and regions[4].boxes == (FACE,)


def test_pages_are_separate_pictures_and_are_not_tracked():
    regions = frame_regions(_frames(), detector=_Scripted(misses={3}), on_miss="fail",
                            animated=False)
    assert not regions[3].publishable and regions[2].boxes == (FACE,)


def test_a_face_never_seen_near_a_frame_still_falls_to_the_no_face_rule():
    # The tracker holds a lost face for a few frames only; far from any detection the
    # frame has no face, and the file's policy decides (here: anonymize it whole).
    regions = frame_regions(_frames(30), detector=_Scripted(misses=set(range(1, 30))),
                            on_miss="whole", animated=True)
    assert _covers(regions[1].boxes)
    assert regions[29].boxes == ((0, 0, 120, 90),) and not regions[29].found


def test_animated_formats_are_the_ones_with_frames_over_time():
    assert ANIMATED_FORMATS == {"GIF", "PNG", "WEBP"}


@pytest.mark.realdata
def test_an_animated_gif_with_a_frame_hog_misses_is_written_with_that_face_covered(
        lfw, tmp_path):
    face = read_image(lfw.path(lfw.samples[0]))
    upside_down = np.ascontiguousarray(face[::-1])  # HOG finds no upright face in it
    # each frame a little brighter: Pillow merges identical consecutive GIF frames
    frames = [np.clip(f.astype(int) + 3 * i, 0, 255).astype(np.uint8)
              for i, f in enumerate([face, face, upside_down, face, face])]
    source = tmp_path / "in" / "wave.gif"
    source.parent.mkdir()
    pictures = [Image.fromarray(f) for f in frames]
    pictures[0].save(source, save_all=True, append_images=pictures[1:], duration=80, loop=0)

    result = CliRunner().invoke(main, ["anonymize", str(source), "-o", str(tmp_path / "out"),
                                       "--method", "blackout", "--json"])
    assert result.exit_code == 0, result.output  # without tracking: "no face found in frame 3"
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["status"] == "ok" and entry["frames"] == 5
    held = entry["boxes"][2]
    assert held and _covers(held, tuple(entry["boxes"][1][0]))
    written = read_document(tmp_path / "out" / "wave.gif").frames
    assert len(written) == 5
    x, y, w, h = held[0]
    assert written[2].pixels[y + 2 : y + h - 2, x + 2 : x + w - 2].max() <= 8, "blacked out"
