"""``faceanon anonymize`` on videos: dispatch by kind, audio, progress, bad input, mixed folders.

Synthetic clips (tests/test_video.py's ``make_clip``) with a scripted detector test the
command's handling fast; the first frames of the real clip test it on real faces.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

av = pytest.importorskip("av")

from test_video import ScriptedDetector, box_mean, make_clip  # noqa: E402

import faceanon.detect  # noqa: E402
from faceanon.cli import main  # noqa: E402
from faceanon.video import VideoReader, VideoWriter, probe_video  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(main, ["anonymize", *[str(a) for a in args]])


@pytest.fixture
def scripted(monkeypatch):
    """``--detector`` gives a detector that finds ``FACE`` in every frame."""
    real = faceanon.detect.get_detector

    def get_detector(name, **options):
        return ScriptedDetector() if name == "scripted" else real(name, **options)

    monkeypatch.setattr(faceanon.detect, "get_detector", get_detector)


def frames_of(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [frame.image for frame in reader]


def test_a_clip_is_written_under_its_name_with_its_frames_and_audio(tmp_path, scripted):
    source = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    result = invoke(source, "-o", out, "--method", "blackout", "--detector", "scripted",
                    "--json")
    assert result.exit_code == 0, result.output
    written = out / "clip.mp4"
    info, original = probe_video(written), probe_video(source)
    assert (info.width, info.height, info.frames, info.frame_rate) == (
        original.width, original.height, 12, original.frame_rate)
    assert info.audio == ("aac",)  # copied by default
    assert all(box_mean(image) < 20 for image in frames_of(written))  # the face is black
    document = json.loads(result.stdout)
    (entry,) = document["files"]
    assert (entry["status"], entry["frames"], entry["faces"]) == ("ok", 12, 12)
    assert document["audio"] == "copy" and document["totals"]["written"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]  # no temporary left


def test_audio_can_be_dropped(tmp_path, scripted):
    source = make_clip(tmp_path / "clip.mp4")
    result = invoke(source, "-o", tmp_path / "out", "--method", "blackout", "--detector",
                    "scripted", "--audio", "drop")
    assert result.exit_code == 0, result.output
    assert probe_video(tmp_path / "out" / "clip.mp4").audio == ()


def test_a_folder_of_videos_and_images_mixed(tmp_path, scripted):
    from PIL import Image

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    make_clip(folder / "a.mp4", frames=6)
    make_clip(folder / "sub" / "b.mkv", frames=5, audio=False)
    Image.fromarray(np.full((64, 96, 3), 200, np.uint8)).save(folder / "still.png")
    result = invoke(folder, "-o", tmp_path / "out", "--method", "pixelate", "--k", "4",
                    "--detector", "scripted", "--json")
    assert result.exit_code == 0, result.output
    files = {Path(f["input"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["a.mp4"]["frames"] == 6 and files["b.mkv"]["frames"] == 5
    assert files["still.png"]["status"] == "ok"
    assert probe_video(tmp_path / "out" / "sub" / "b.mkv").audio == ()
    assert (tmp_path / "out" / "still.png").is_file()


def test_progress_bar_counts_frames(tmp_path, scripted, monkeypatch):
    from faceanon.cli import anonymize as command

    seen = []

    class Recording(command.FrameProgress):
        def __call__(self, done, total):
            seen.append((done, total))
            super().__call__(done, total)

    monkeypatch.setattr(command, "FrameProgress", Recording)
    source = make_clip(tmp_path / "clip.mp4", frames=7)
    result = invoke(source, "-o", tmp_path / "out", "--method", "blackout", "--detector",
                    "scripted")
    assert result.exit_code == 0, result.output
    assert seen == [(i, 7) for i in range(1, 8)]


@pytest.mark.parametrize("make, problem", [
    (lambda d: (d / "notes.mp4").write_text("text, not a video\n" * 20) and d / "notes.mp4",
     "not a video"),
    (lambda d: make_clip(d / "sound.mp4", video=False), "no video stream"),
    (lambda d: (d / "cut.mp4").write_bytes(
        make_clip(d / "whole.mp4", frames=40, faststart=True).read_bytes()[:9000])
     and d / "cut.mp4", "truncated|not a video"),
])
def test_bad_video_is_named_and_leaves_nothing(tmp_path, scripted, make, problem):
    folder = tmp_path / "in"
    folder.mkdir()
    source = make(folder)
    good = make_clip(folder / "good.mp4", frames=4)
    out = tmp_path / "out"
    result = invoke(source, good, "-o", out, "--method", "blackout", "--detector", "scripted")
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert str(source) in line
    import re

    assert re.search(problem, line), line
    # the good clip is still written; the bad one leaves no file, not even a temporary
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"]
    assert "1 of 2 files written" in result.stdout


def test_video_with_eye_region_is_refused(tmp_path):
    source = make_clip(tmp_path / "clip.mp4")
    result = invoke(source, "-o", tmp_path / "out", "--method", "blur", "--k", "9",
                    "--detector", "haar-eyes", "--region", "eyes")
    assert result.exit_code == 2
    assert "videos are anonymized by face" in result.output and str(source) in result.output
    assert not (tmp_path / "out").exists()


def test_ignore_unknown_keeps_videos(tmp_path, scripted):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.mov", frames=3)
    (folder / "notes.txt").write_text("not media")
    result = invoke(folder, "-o", tmp_path / "out", "--method", "blackout", "--detector",
                    "scripted", "--ignore-unknown")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mov"]
    assert "1 non-image files ignored" in result.stdout


# ------------------------------------------------------------------------ the real clip


@pytest.fixture(scope="module")
def real_start(tmp_path_factory) -> Path:
    """The first 8 frames of the real clip, with its soundtrack cut to match."""
    from faceanon.datasets import DATA_ENV

    root = os.environ.get(DATA_ENV)
    source = Path(root) / "video" / "short_hamilton_clip.mp4" if root else None
    if source is None or not source.is_file():
        reason = f"the real clip is needed: set {DATA_ENV} to a folder holding video/"
        if os.environ.get("FACEANON_REQUIRE_DATA") == "1":
            pytest.fail(f"FACEANON_REQUIRE_DATA=1 but {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("real")
    target = folder / "clip.mp4"
    with VideoReader(source, max_frames=8) as reader, VideoWriter(
            target, source=reader.info, audio="copy", trim_audio=True) as writer:
        for frame in reader:
            writer.write(frame, frame.image)
    shutil.copyfile(source.parent / "lin-manuel-miranda.png", folder / "lin-manuel-miranda.png")
    return folder


@pytest.mark.realdata
def test_real_clip_and_photo_from_the_command_line(tmp_path, real_start):
    out = tmp_path / "out"
    result = invoke(real_start, "-o", out, "--method", "blur", "--k", "30", "--json")
    assert result.exit_code == 0, result.output
    files = {Path(f["input"]).name: f for f in json.loads(result.stdout)["files"]}
    video = files["clip.mp4"]
    assert video["status"] == "ok" and video["frames"] == 8 and video["faces"] >= 8
    info = probe_video(out / "clip.mp4")
    assert (info.width, info.height, info.frames, info.audio) == (640, 360, 8, ("aac",))
    # every anonymized box differs from the original there: the face was blurred
    before, after = frames_of(real_start / "clip.mp4"), frames_of(out / "clip.mp4")
    for original, anonymized, boxes in zip(before, after, video["boxes"], strict=True):
        assert boxes
        for x, y, w, h in boxes:
            region = (slice(max(y, 0), y + h), slice(max(x, 0), x + w))
            difference = np.abs(original[region].astype(int) - anonymized[region].astype(int))
            assert difference.mean() > 3
    assert files["lin-manuel-miranda.png"]["status"] == "ok"
