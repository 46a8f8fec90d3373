"""Video: decoding and encoding with PyAV, anonymize_video end to end, the attacker's rows.

Synthetic clips (made here with PyAV itself, not with faceanon's writer) test the file
handling and the pipeline with a scripted detector; the real clip of ``$FACEANON_DATA/video``
tests the whole chain on real faces, on its first frames only to stay fast.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from faceanon.detect import Detection, Detector  # noqa: E402
from faceanon.methods import Method, MethodError  # noqa: E402
from faceanon.video import (  # noqa: E402
    VideoError,
    VideoReader,
    VideoWriter,
    probe_video,
    read_frames,
)
from faceanon.video_anonymize import anonymize_video, track_rng  # noqa: E402
from faceanon.video_bench import (  # noqa: E402
    DlibAttacker,
    coverage,
    identify,
    measure_clip,
    missed_frames,
    summarize,
)

SIZE = (96, 64)  # width, height
FACE = (24, 16, 32, 32)  # where the scripted detector "finds" a face
AUDIO_RATE = 8000


def make_clip(
    path: Path,
    *,
    frames: int = 12,
    size=SIZE,
    rate=Fraction(25),
    audio: bool = True,
    video: bool = True,
    metadata: dict | None = None,
    faststart: bool = False,
    rotation: int | None = None,
) -> Path:
    """A small H.264 (+ AAC) clip: a bright square on a frame-numbered grey background."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        out.metadata.update(metadata or {})
        if video:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.metadata.update(metadata or {})
            if rotation is not None:
                stream.set_display_rotation(rotation)
        if audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
        for index in range(frames):
            if video:
                image = np.full((size[1], size[0], 3), 40 + 8 * (index % 20), np.uint8)
                x, y, w, h = FACE
                image[y : y + h, x : x + w] = 230
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                for packet in stream.encode(frame):
                    out.mux(packet)
            if audio:
                samples = int(AUDIO_RATE / rate)
                t = (np.arange(samples) + index * samples) / AUDIO_RATE
                tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                chunk.sample_rate = AUDIO_RATE
                chunk.pts = index * samples
                for packet in sound.encode(chunk):
                    out.mux(packet)
        for stream in out.streams:
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


class ScriptedDetector(Detector):
    """Finds ``FACE`` in every frame except those listed in ``misses``; counts its calls."""

    name = "scripted"

    def __init__(self, boxes=(FACE,), misses=()):
        self.boxes = list(boxes)
        self.misses = set(misses)
        self.calls = 0

    def detect(self, image):
        index = self.calls
        self.calls += 1
        return [] if index in self.misses else [Detection(*b) for b in self.boxes]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


# ------------------------------------------------------------------------ reading, writing


def test_reader_hands_out_every_frame_upright_rgb(clip):
    info = probe_video(clip)
    assert (info.width, info.height, info.frames) == (96, 64, 12)
    assert info.frame_rate == 25 and info.audio == ("aac",)
    frames = list(read_frames(clip))
    assert [f.index for f in frames] == list(range(12))
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    x, y, w, h = FACE
    assert frames[0].image[y + 8 : y + h - 8, x + 8 : x + w - 8].mean() > 200
    assert frames[5].time == pytest.approx(5 / 25)


def test_round_trip_keeps_size_rate_count_timestamps_and_copies_audio(tmp_path, clip):
    target = tmp_path / "out" / "copy.mp4"
    with VideoReader(clip) as reader, VideoWriter(target, source=reader.info) as writer:
        for frame in reader:
            writer.write(frame, frame.image)
    before, after = probe_video(clip), probe_video(target)
    assert (after.width, after.height, after.frames) == (before.width, before.height, 12)
    assert after.frame_rate == before.frame_rate
    assert [f.time for f in read_frames(target)] == [f.time for f in read_frames(clip)]
    assert audio_packets(target) == audio_packets(clip) != []
    difference = [
        np.abs(a.image.astype(int) - b.image.astype(int)).mean()
        for a, b in zip(read_frames(clip), read_frames(target), strict=True)
    ]
    assert max(difference) < 3
    assert files_in(target.parent) == ["copy.mp4"]


def test_a_written_video_gets_the_umasks_permissions_like_an_image(tmp_path, clip):
    # Published files are readable as the user's umask says (0644 under 022), not 0600.
    import os
    import stat

    old = os.umask(0o022)
    try:
        with VideoReader(clip) as reader, VideoWriter(tmp_path / "v.mp4",
                                                     source=reader.info) as writer:
            for frame in reader:
                writer.write(frame, frame.image)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "v.mp4").stat().st_mode) == 0o644


def test_audio_can_be_dropped(tmp_path, clip):
    result = anonymize_video(
        clip, tmp_path / "o.mp4", method="blur", k=9, detector=ScriptedDetector(), audio="drop"
    )
    assert probe_video(result.output).audio == ()


def test_metadata_is_not_carried_over(tmp_path):
    secrets = {
        "title": "Rehearsal at home",
        "comment": "call 555 0199",
        "location": "+48.8584+002.2945/",
        "artist": "A. Person",
    }
    source = make_clip(tmp_path / "tagged.mp4", metadata=secrets)
    with av.open(str(source)) as container:
        assert container.metadata.get("title") == "Rehearsal at home"  # the test can see tags
    result = anonymize_video(
        source, tmp_path / "o.mp4", method="blur", k=9, detector=ScriptedDetector()
    )
    with av.open(str(result.output)) as container:
        tags = [dict(container.metadata)] + [dict(s.metadata) for s in container.streams]
    values = " ".join(str(v) for t in tags for v in t.values())
    for secret in secrets.values():
        assert secret not in values


def test_rotated_clip_is_read_and_written_upright(tmp_path):
    source = make_clip(tmp_path / "phone.mp4", rotation=90, audio=False)
    info = probe_video(source)
    assert (info.rotation, info.width, info.height) == (90, 64, 96)
    first = next(read_frames(source))
    stored = np.full((64, 96, 3), 40, np.uint8)
    x, y, w, h = FACE
    stored[y : y + h, x : x + w] = 230
    expected = np.rot90(stored, 1)  # a 90 degree counter-clockwise display rotation
    assert first.image.shape == expected.shape
    assert np.abs(first.image.astype(int) - expected.astype(int)).mean() < 4
    out = tmp_path / "upright.mp4"
    with VideoReader(source) as reader, VideoWriter(out, source=reader.info) as writer:
        for frame in reader:
            writer.write(frame, frame.image)
    written = probe_video(out)
    assert (written.rotation, written.width, written.height) == (0, 64, 96)


def test_writer_refuses_a_wrong_frame_and_leaves_nothing(tmp_path, clip):
    info = probe_video(clip)
    with pytest.raises(ValueError, match="expected uint8"):
        with VideoWriter(tmp_path / "o.mp4", source=info) as writer:
            writer.write(next(read_frames(clip)), np.zeros((10, 10, 3), np.uint8))
    assert files_in(tmp_path) == ["clip.mp4"]


def test_odd_frame_size_is_refused_by_name(tmp_path, clip):
    # H.264 4:2:0 cannot even make such a clip here, so the source's header is edited.
    odd = dataclasses.replace(probe_video(clip), width=95)
    with pytest.raises(VideoError, match="clip.mp4.*95x64 is odd"):
        VideoWriter(tmp_path / "o.mp4", source=odd)
    assert files_in(tmp_path) == ["clip.mp4"]


# ----------------------------------------------------------------------------- bad input


def _not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is text, not a video\n" * 20)
    return path, "not a video"


def _empty(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    return path, "file is empty"


def _missing(tmp_path):
    return tmp_path / "missing.mp4", "file not found"


def _audio_only(tmp_path):
    return make_clip(tmp_path / "sound.mp4", video=False), "no video stream"


def _truncated_index_first(tmp_path):
    # With the index (moov) first, the demuxer knows the frame count and runs out of data.
    whole = make_clip(tmp_path / "whole.mp4", frames=40, faststart=True).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    (tmp_path / "whole.mp4").unlink()
    return path, "truncated"


def _truncated_index_last(tmp_path):
    # With the index last (FFmpeg's default), a cut file has no index at all.
    whole = make_clip(tmp_path / "whole.mp4", frames=40).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    (tmp_path / "whole.mp4").unlink()
    return path, "not a video"


def _folder(tmp_path):
    path = tmp_path / "folder.mp4"
    path.mkdir()
    return path, "folder"


@pytest.mark.parametrize(
    "make",
    [
        _not_a_video,
        _empty,
        _missing,
        _audio_only,
        _truncated_index_first,
        _truncated_index_last,
        _folder,
    ],
)
def test_bad_input_is_named_and_nothing_is_written(tmp_path, make):
    source, problem = make(tmp_path)
    before = files_in(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(VideoError, match=problem) as raised:
        anonymize_video(source, out / "clip.mp4", method="blur", k=9, detector=ScriptedDetector())
    assert str(source) in str(raised.value) and raised.value.path == source
    assert isinstance(raised.value, ValueError)
    assert not out.exists() or files_in(out) == []
    assert files_in(tmp_path) == before or files_in(tmp_path) == sorted([*before, "out"])


class FailsOnFrame(Method):
    name = "fails"
    k_meaning = "none"
    k_range = None

    def __init__(self, frame):
        self.frame, self.calls = frame, 0

    def anonymize(self, image, boxes, *, k, rng):
        self.calls += 1
        if self.calls > self.frame:
            raise RuntimeError("method broke")
        return np.zeros_like(image)


def test_a_failure_midway_leaves_no_output(tmp_path, clip):
    with pytest.raises(RuntimeError, match="method broke"):
        anonymize_video(
            clip, tmp_path / "out" / "o.mp4", method=FailsOnFrame(6), detector=ScriptedDetector()
        )
    assert files_in(tmp_path / "out") == []


def test_the_input_is_never_overwritten(tmp_path, clip):
    before = clip.read_bytes()
    with pytest.raises(VideoError, match="overwrite the input"):
        anonymize_video(clip, clip, method="blur", k=9, detector=ScriptedDetector())
    link = tmp_path / "link.mp4"
    os.link(clip, link)
    with pytest.raises(VideoError, match="overwrite the input"):
        anonymize_video(clip, link, method="blur", k=9, detector=ScriptedDetector())
    assert clip.read_bytes() == before


def test_unknown_output_suffix_is_refused_before_any_work(tmp_path, clip):
    detector = ScriptedDetector()
    with pytest.raises(VideoError, match="unknown video suffix .gif"):
        anonymize_video(clip, tmp_path / "o.gif", method="blur", k=9, detector=detector)
    assert detector.calls == 0


# ------------------------------------------------------------------- anonymize_video


def box_mean(image, box=FACE, inset=6):
    x, y, w, h = box
    return image[y + inset : y + h - inset, x + inset : x + w - inset].mean()


def test_detector_runs_once_per_frame_and_progress_counts_frames(tmp_path, clip):
    detector = ScriptedDetector()
    seen = []
    result = anonymize_video(
        clip,
        tmp_path / "o.mp4",
        method="blackout",
        detector=detector,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert detector.calls == 12 == result.frames
    assert seen == [(i, 12) for i in range(1, 13)]
    assert probe_video(result.output).frames == 12
    assert result.fps > 0 and result.detections == 12 and result.tracks == 1


def test_tracking_covers_a_frame_the_detector_missed(tmp_path, clip):
    tracked = anonymize_video(
        clip, tmp_path / "tracked.mp4", method="blackout", detector=ScriptedDetector(misses={5})
    )
    bare = anonymize_video(
        clip,
        tmp_path / "bare.mp4",
        method="blackout",
        detector=ScriptedDetector(misses={5}),
        tracking=False,
    )
    with_tracking = list(read_frames(tracked.output))
    without = list(read_frames(bare.output))
    assert all(box_mean(f.image) < 20 for f in with_tracking)
    assert box_mean(without[5].image) > 200  # the bare face the tracker prevents
    assert [b.state for b in tracked.boxes[5].boxes] == ["coasted"]
    assert bare.boxes[5].boxes == ()


def test_max_frames_writes_the_start_and_trims_the_audio(tmp_path, clip):
    result = anonymize_video(
        clip, tmp_path / "o.mp4", method="blur", k=5, detector=ScriptedDetector(), max_frames=4
    )
    assert probe_video(result.output).frames == 4
    copied, source = audio_packets(result.output), audio_packets(clip)
    assert 0 < len(copied) < len(source) and copied == source[: len(copied)]


class FirstDraw(Method):
    """Paints each box with a value from the first normal draw of its generator."""

    name = "first-draw"
    k_meaning = "none"
    k_range = None

    def __init__(self):
        self.draws = []

    def anonymize(self, image, boxes, *, k, rng):
        draw = float(rng.standard_normal())
        self.draws.append((tuple(boxes[0]), draw))
        out = image.copy()
        x, y, w, h = boxes[0]
        out[y : y + h, x : x + w] = int(128 + 40 * np.tanh(draw))
        return out


def test_random_methods_draw_the_same_stream_in_every_frame_of_a_track(tmp_path, clip):
    other = (64, 20, 24, 24)
    method = FirstDraw()
    anonymize_video(
        clip,
        tmp_path / "o.mp4",
        method=method,
        detector=ScriptedDetector(boxes=[FACE, other]),
        seed=3,
        tracker_options={"margin": 0.0, "motion_margin": 0.0},
    )
    per_box = {}
    for box, draw in method.draws:
        per_box.setdefault(box, set()).add(draw)
    assert len(per_box) == 2 and all(len(d) == 1 for d in per_box.values())
    assert per_box[FACE] != per_box[other]
    assert per_box[FACE] == {float(track_rng(3, 0).standard_normal())}


def test_gan_keeps_one_latent_per_track(tmp_path, clip):
    pytest.importorskip("torch")
    still = make_clip(tmp_path / "still.mp4", frames=6, audio=False)
    result = anonymize_video(
        still,
        tmp_path / "gan.mp4",
        method="deepprivacy",
        detector=ScriptedDetector(),
        tracker_options={"margin": 0.0},
    )
    # The background brightens from frame to frame; the generated face must not jump
    # more than the source does around it.
    frames = [f.image.astype(float) for f in read_frames(result.output)]
    inside = [box_mean(f, inset=4) for f in frames]
    steps = np.abs(np.diff(inside))
    assert steps.max() < 16  # the source's background moves 8 per frame
    assert np.abs(frames[0] - frames[1])[16:48, 24:56].mean() < 16


def test_ksame_groups_whole_tracks_and_refuses_too_few(tmp_path, clip):
    three = [(4, 4, 28, 28), (34, 4, 28, 28), (64, 30, 28, 28)]
    result = anonymize_video(
        clip,
        tmp_path / "ks.mp4",
        method="ksame",
        k=3,
        detector=ScriptedDetector(boxes=three),
        tracker_options={"margin": 0.0, "motion_margin": 0.0},
    )
    assert result.passes == 2 and result.tracks == 3 and result.frames == 12
    assert result.groups == [[0, 1, 2]]  # one group of three tracks, not of 3 frames
    source, written = next(read_frames(clip)).image, next(read_frames(result.output)).image
    for x, y, _, _ in three:
        centre = (slice(y + 9, y + 19), slice(x + 9, x + 19))
        assert np.abs(source[centre].astype(int) - written[centre].astype(int)).mean() > 8
    with pytest.raises(MethodError, match="3 face track.*fewer than k=4"):
        anonymize_video(
            clip, tmp_path / "none.mp4", method="ksame", k=4, detector=ScriptedDetector(boxes=three)
        )
    assert not (tmp_path / "none.mp4").exists()
    assert sorted(files_in(tmp_path)) == ["clip.mp4", "ks.mp4"]


def test_eye_detectors_are_refused(tmp_path, clip):
    from faceanon.detect import DetectorError

    with pytest.raises(DetectorError, match="finds eyes"):
        anonymize_video(clip, tmp_path / "o.mp4", method="blur", k=5, detector="haar-eyes")


# ---------------------------------------------------------------------- measurement


def test_coverage_counts_the_face_pixels_inside_any_box():
    assert coverage((0, 0, 10, 10), [(0, 0, 10, 10)]) == 1.0
    assert coverage((0, 0, 10, 10), [(0, 0, 5, 10), (5, 0, 5, 10)]) == 1.0
    assert coverage((0, 0, 10, 10), [(0, 0, 5, 10), (0, 0, 5, 10)]) == 0.5
    assert coverage((0, 0, 10, 10), []) == 0.0
    assert coverage((0, 0, 10, 10), [(20, 20, 5, 5)]) == 0.0


def test_identify_takes_the_nearest_person_at_or_below_the_threshold():
    gallery = {"a": np.zeros(128), "b": np.full(128, 0.1)}
    near_b = np.full(128, 0.09)
    identified, distances = identify([((0, 0, 1, 1), near_b)], gallery, threshold=0.6)
    assert identified == ("b",)
    assert distances["b"] == pytest.approx(0.01 * np.sqrt(128))
    exactly = np.zeros(128)
    exactly[0] = 0.6
    assert identify([((0, 0, 1, 1), exactly)], {"a": np.zeros(128)})[0] == ("a",)
    tie = {"first": np.zeros(128), "second": np.zeros(128)}
    assert identify([((0, 0, 1, 1), np.zeros(128))], tie)[0] == ("first",)
    assert identify([], gallery)[0] == ()
    assert np.isnan(identify([], gallery)[1]["a"])


def test_summary_and_missed_frames():
    from faceanon.video_bench import FrameRow

    rows = [
        FrameRow(0, 0.0, 1, ("a",), {"a": 0.4, "b": 0.9}, 1, 0, (1.0,)),
        FrameRow(1, 0.1, 1, (), {"a": 0.7, "b": 0.9}, 2, 1, (1.0, 0.2)),
        FrameRow(2, 0.2, 0, (), {"a": np.nan, "b": np.nan}, 0, 0, ()),
        FrameRow(3, 0.3, 1, ("a",), {"a": 0.5, "b": 0.8}, 1, 0, (0.95,)),
    ]
    original = [FrameRow(i, None, 1, ("a",), {}) for i in (0, 1)]
    summary = summarize(rows, people=["a", "b"], original=original, fps=12.5)
    assert summary.leak_rate == {"a": 0.5, "b": 0.0}
    assert summary.identified_anywhere == {"a": True, "b": False}
    assert summary.leak_rate_visible["a"] == 0.5 and np.isnan(summary.leak_rate_visible["b"])
    assert summary.uncovered_frame_share == 0.25
    assert summary.uncovered_face_share == 0.25
    assert missed_frames([[(0, 0, 10, 10)], []], [[(0, 0, 10, 10)], [(0, 0, 4, 4)]]) == [1]


# ---------------------------------------------------------------------- the real clip

PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")


@pytest.fixture(scope="module")
def real_video() -> Path:
    from faceanon.datasets import DATA_ENV

    root = os.environ.get(DATA_ENV)
    folder = Path(root) / "video" if root else None
    if folder is None or not (folder / "short_hamilton_clip.mp4").is_file():
        reason = f"the real clip is needed: set {DATA_ENV} to a folder holding video/"
        if os.environ.get("FACEANON_REQUIRE_DATA") == "1":
            pytest.fail(f"FACEANON_REQUIRE_DATA=1 but {reason}")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="module")
def gallery(real_video):
    return {person: real_video / f"{person}.png" for person in PEOPLE}


@pytest.mark.realdata
def test_real_clip_header(real_video):
    info = probe_video(real_video / "short_hamilton_clip.mp4")
    assert (info.width, info.height, info.frames) == (640, 360, 275)
    assert info.frame_rate == Fraction(2997, 100) and info.audio == ("aac",)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_clip_start_is_anonymized_and_no_longer_recognised(tmp_path, real_video, gallery):
    from faceanon.detect import get_detector

    source = real_video / "short_hamilton_clip.mp4"
    hog = get_detector("hog")
    calls = []

    class Counting(Detector):
        name = "hog-counted"

        def detect(self, image):
            calls.append(1)
            return hog.detect(image)

    result = anonymize_video(
        source, tmp_path / "clip.mp4", method="blur", k=31, detector=Counting(), max_frames=20
    )
    assert len(calls) == 20 == result.frames
    written = probe_video(result.output)
    assert (written.width, written.height, written.frames) == (640, 360, 20)
    assert written.frame_rate == Fraction(2997, 100) and written.audio == ("aac",)
    copied = audio_packets(result.output)
    assert len(copied) > 20 and copied == audio_packets(source)[: len(copied)]
    assert all(frame.boxes for frame in result.boxes[:19])  # Lin is on stage until the cut

    original = measure_clip(source, gallery=gallery, max_frames=20)
    anonymized = measure_clip(
        result.output,
        gallery=gallery,
        anonymized=[f.regions for f in result.boxes],
        reference=[[b.face for b in f.boxes if b.detected] for f in result.boxes],
    )
    before = summarize(original, people=PEOPLE)
    after = summarize(anonymized, people=PEOPLE, original=original)
    assert before.leak_rate["lin-manuel-miranda"] >= 0.5
    assert after.leak_rate["lin-manuel-miranda"] == 0.0
    assert after.uncovered_face_share == 0.0


@pytest.mark.realdata
def test_attacker_matches_face_recognition_on_a_real_frame(real_video):
    face_recognition = pytest.importorskip("face_recognition")
    frame = next(read_frames(real_video / "short_hamilton_clip.mp4")).image
    ours = DlibAttacker()(frame)
    locations = face_recognition.face_locations(frame)
    theirs = face_recognition.face_encodings(frame, locations)
    assert len(ours) == len(locations) >= 1
    for (box, embedding), (top, right, bottom, left), expected in zip(
        ours, locations, theirs, strict=True
    ):
        assert box == (left, top, right - left, bottom - top)
        np.testing.assert_allclose(embedding, expected, rtol=0, atol=1e-6)


@pytest.mark.realdata
def test_truncated_real_clip_is_refused(tmp_path, real_video):
    data = (real_video / "short_hamilton_clip.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        anonymize_video(cut, tmp_path / "out" / "cut.mp4", method="blur", k=31)
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == []
