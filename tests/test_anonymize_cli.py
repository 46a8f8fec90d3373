"""``faceanon anonymize`` end to end: real LFW faces, broken files, unsafe output plans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceanon.anonymize import image_rng
from faceanon.cli import main
from faceanon.detect import find_regions
from faceanon.imageio import read_image
from faceanon.methods import Method

PEOPLE = ("Aaron_Peirsol", "Aaron_Sorkin", "Abdullah_Gul")


def invoke(*args):
    """Run ``faceanon anonymize``; blackout unless ``--method`` is given (it needs no k)."""
    args = [str(a) for a in args]
    if "--method" not in args:
        args += ["--method", "blackout"]
    return CliRunner().invoke(main, ["anonymize", *args])


def error_lines(result, needle: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if needle in line]


@pytest.fixture
def photos(lfw, tmp_path) -> Path:
    """A temporary copy of three LFW images, one in a sub-folder: photos/<person>/..."""
    folder = tmp_path / "photos"
    by_identity = lfw.images_of()
    for person in PEOPLE:
        sample = by_identity[person][0]
        target = folder / sample.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw.path(sample), target)
    return folder


def images_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))


def grey_png(path: Path, size: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------
# Real faces, every method


@pytest.mark.realdata
@pytest.mark.parametrize(
    "method, k",
    [("blur", "21"), ("pixelate", "8"), ("noise", "60"), ("blackout", None), ("mask", None)],
)
def test_every_method_anonymizes_real_faces(photos, tmp_path, method, k):
    out = tmp_path / "out"
    result = invoke(photos, "-o", out, "--method", method, *(["--k", k] if k else []))
    assert result.exit_code == 0, result.output
    assert images_in(out) == images_in(photos), "the folder structure is mirrored"
    for relative in images_in(photos):
        original = read_image(photos / relative)
        anonymized = read_image(out / relative)
        assert anonymized.shape == original.shape
        ((x, y, w, h),) = find_regions(original)
        diff = np.abs(anonymized.astype(int) - original.astype(int))
        face = np.zeros(original.shape[:2], bool)
        face[y : y + h, x : x + w] = True
        # Outside the face only JPEG re-encoding differs; inside, the method does.
        assert diff[~face].mean() < 3
        assert diff[face].mean() > 8
    assert "3 of 3 files written, 3 faces, 0 misses" in result.stdout
    assert "0 failures" in result.stdout


@pytest.mark.realdata
def test_eyes_region_changes_only_the_eye_band(photos, tmp_path):
    out = tmp_path / "out"
    result = invoke(photos, "-o", out, "--method", "blackout", "--region", "eyes", "--quiet")
    assert result.exit_code == 0, result.output
    for relative in images_in(photos):
        original = read_image(photos / relative)
        ((x, y, w, h),) = find_regions(original, region="eyes")
        anonymized = read_image(out / relative)
        assert anonymized[y + 2 : y + h - 2, x + 2 : x + w - 2].max() < 20
        assert np.abs(anonymized[: y - 4].astype(int) - original[: y - 4]).mean() < 3


@pytest.mark.realdata
def test_same_seed_same_bytes_and_order_does_not_matter(photos, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    noise = ("--method", "noise", "--k", "50", "--seed", "7")
    files = sorted(photos.rglob("*.jpg"))
    assert invoke(*files, "-o", a, *noise).exit_code == 0
    assert invoke(*reversed(files), "-o", b, *noise).exit_code == 0
    for relative in images_in(a):
        assert (a / relative).read_bytes() == (b / relative).read_bytes()
    assert image_rng(7, "x.jpg").integers(1 << 30) == image_rng(7, "x.jpg").integers(1 << 30)
    assert image_rng(7, "x.jpg").integers(1 << 30) != image_rng(8, "x.jpg").integers(1 << 30)
    e = tmp_path / "e"
    assert invoke(*files, "-o", e, *noise[:-1], "8").exit_code == 0
    first = images_in(a)[0]
    assert (a / first).read_bytes() != (e / first).read_bytes()


# ---------------------------------------------------------------------------------------
# EXIF: orientation applied, nothing kept


@pytest.mark.realdata
def test_exif_orientation_is_applied_and_all_metadata_dropped(lfw, tmp_path):
    sample = lfw.images_of()["Aaron_Sorkin"][0]
    upright = Image.open(lfw.path(sample)).convert("RGB").crop((25, 0, 225, 250))  # 200x250
    # Stored lying on its side; orientation 6 tells viewers to turn it upright again.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "Camera maker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 12.0), 3: "E", 4: (4.0, 53.0, 28.0)}  # GPS
    source = tmp_path / "in" / "sideways.jpg"
    source.parent.mkdir()
    stored.save(source, exif=exif)
    assert Image.open(source).getexif().get_ifd(0x8825), "the test input must carry GPS"

    out = tmp_path / "out"
    result = invoke(source, "-o", out, "--method", "pixelate", "--k", "8", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["files"][0]["status"] == "ok"  # HOG finds the face only when upright
    with Image.open(out / "sideways.jpg") as written:
        assert written.size == upright.size
        assert len(written.getexif()) == 0
        assert "exif" not in written.info
        assert not any(key in written.info for key in ("icc_profile", "comment", "xmp"))
    assert b"Camera maker" not in (out / "sideways.jpg").read_bytes()


# ---------------------------------------------------------------------------------------
# Inputs are never overwritten


@pytest.mark.parametrize("where", ["same", "inside", "deeper"])
def test_output_folder_in_an_input_folder_is_refused(tmp_path, where):
    source = grey_png(tmp_path / "in" / "a.png")
    outdir = {
        "same": tmp_path / "in",
        "inside": tmp_path / "in" / "out",
        "deeper": tmp_path / "in" / "x" / "out",
    }[where]
    before = source.read_bytes()
    result = invoke(tmp_path / "in", "-o", outdir, "--on-miss", "whole")
    assert result.exit_code == 2
    assert "inside input folder" in result.output
    assert "Traceback" not in result.output
    assert source.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == ["a.png"]


def test_output_file_equal_to_an_input_file_is_refused(tmp_path):
    source = grey_png(tmp_path / "out" / "a.png")
    before = source.read_bytes()
    result = invoke(source, "-o", tmp_path / "out", "--on-miss", "whole")
    assert result.exit_code == 2
    assert "would overwrite input" in result.output
    assert source.read_bytes() == before


def test_two_inputs_writing_the_same_output_are_refused(tmp_path):
    one = grey_png(tmp_path / "a" / "same.png")
    two = grey_png(tmp_path / "b" / "same.png")
    result = invoke(one, two, "-o", tmp_path / "out", "--on-miss", "whole")
    assert result.exit_code == 2
    assert "would both be written" in result.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# Broken files: one line each, the rest still processed, non-zero exit


@pytest.mark.realdata
def test_broken_files_get_one_line_each_and_the_rest_is_processed(photos, tmp_path):
    good = next(photos.rglob("*.jpg"))
    broken = photos / "broken"
    broken.mkdir()
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "text.jpg").write_text("this is not an image\n")
    (broken / "random.png").write_bytes(np.random.default_rng(0).bytes(2000))
    (broken / "truncated.jpg").write_bytes(good.read_bytes()[:2500])
    (broken / "notes.txt").write_text("ignored: not an image suffix")
    loose = tmp_path / "readme.md"  # named on the command line: attempted, and reported
    loose.write_text("# not an image")

    out = tmp_path / "out"
    result = invoke(photos, loose, "-o", out, "--method", "pixelate", "--k", "8")
    assert result.exit_code == 1
    for name, problem in [
        ("empty.jpg", "empty"),
        ("text.jpg", "not an image"),
        ("random.png", "not an image"),
        ("truncated.jpg", "truncated"),
        ("readme.md", "not an image"),
    ]:
        lines = error_lines(result, name)
        assert len(lines) == 1, result.stderr
        assert problem in lines[0]
    assert not error_lines(result, "notes.txt")
    written = images_in(out)
    assert len(written) == 3 and not any(p.startswith("broken") for p in written)
    assert "3 of 8 files written" in result.stdout
    assert "5 failures" in result.stdout
    assert "1 non-image files ignored" in result.stdout


def test_unreadable_file_alone_fails_cleanly(tmp_path):
    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 nope")
    result = invoke(bad, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert len(error_lines(result, "bad.jpg")) == 1


# ---------------------------------------------------------------------------------------
# No face found: --on-miss


def test_on_miss_fail_is_the_default(tmp_path):
    grey_png(tmp_path / "in" / "flat.png")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "--method", "blackout")
    assert result.exit_code == 1
    (line,) = error_lines(result, "flat.png")
    assert "no face found" in line
    assert not (tmp_path / "out" / "flat.png").exists()
    assert "1 misses" in result.stdout


def test_on_miss_skip_lists_without_failing(tmp_path):
    grey_png(tmp_path / "in" / "flat.png")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "--on-miss", "skip", "--json")
    assert result.exit_code == 0, result.output
    assert len(error_lines(result, "flat.png")) == 1
    assert not (tmp_path / "out" / "flat.png").exists()
    document = json.loads(result.stdout)
    assert document["files"][0]["status"] == "skipped"
    assert document["totals"]["skipped"] == 1 and document["ok"]


def test_on_miss_whole_anonymizes_the_whole_image(tmp_path):
    grey_png(tmp_path / "in" / "flat.png", size=64)
    result = invoke(
        tmp_path / "in", "-o", tmp_path / "out", "--method", "blackout", "--on-miss", "whole"
    )
    assert result.exit_code == 0, result.output
    assert (read_image(tmp_path / "out" / "flat.png") == 0).all()
    assert "1 anonymized whole" in result.stdout


# ---------------------------------------------------------------------------------------
# --json, options, set-based methods, method errors


@pytest.mark.realdata
def test_json_document(photos, tmp_path):
    grey_png(photos / "flat.png")
    result = invoke(photos, "-o", tmp_path / "out", "--method", "blackout", "--k", "5", "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["method"]["name"] == "blackout"
    assert document["k"] is None and document["k_ignored"] is True
    assert document["detector"] == "hog" and document["region"] == "face"
    assert document["ok"] is False
    totals = document["totals"]
    assert totals["files"] == 4 and totals["written"] == 3 and totals["faces"] == 3
    assert totals["misses"] == 1 and totals["failures"] == 0
    assert totals["seconds"] >= 0
    by_status = {f["status"] for f in document["files"]}
    assert by_status == {"ok", "miss"}
    ok = [f for f in document["files"] if f["status"] == "ok"]
    assert all(len(f["boxes"]) == 1 and Path(f["output"]).exists() for f in ok)
    assert "takes no k" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "blur"], "k is required"),
        (["--method", "noise", "--k", "101"], "out of range"),
        (["--method", "nope"], "unknown method"),
        (["--detector", "nope"], "unknown detector"),
        (["--detector", "haar-eyes"], "--region eyes"),
        (["--method", "mask", "--region", "eyes"], "--region face"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message):
    source = grey_png(tmp_path / "in" / "a.png")
    result = invoke(source, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


class RecordingSet(Method):
    """A set-based method that paints every box with the number of images it got."""

    name = "recording-set"
    k_meaning = "ignored"
    k_range = None
    stronger = "none"
    calls: list = []

    def anonymize(self, image, boxes, *, k, rng):
        raise AssertionError("a set-based method must get the whole set")

    def anonymize_set(self, images, boxes, *, k, rng):
        RecordingSet.calls.append(len(images))
        outputs = []
        for image, image_boxes in zip(images, boxes, strict=True):
            out = image.copy()
            for x, y, w, h in image_boxes:
                out[y : y + h, x : x + w] = len(images)
            outputs.append(out)
        return outputs


class Refusing(RecordingSet):
    def anonymize_set(self, images, boxes, *, k, rng):
        from faceanon.methods import MethodError

        raise MethodError(f"needs at least 10 faces, got {len(images)}")


@pytest.mark.realdata
def test_set_based_method_gets_all_faces_in_one_call(photos, tmp_path, monkeypatch):
    import faceanon.methods

    monkeypatch.setattr(RecordingSet, "calls", [])
    monkeypatch.setattr(faceanon.methods, "get_method", lambda name, **_: RecordingSet())
    grey_png(photos / "flat.png")
    result = invoke(
        photos, "-o", tmp_path / "out", "--method", "recording-set", "--on-miss", "skip"
    )
    assert result.exit_code == 0, result.output
    assert RecordingSet.calls == [3]  # the faceless image is not part of the set
    assert len(images_in(tmp_path / "out")) == 3


@pytest.mark.realdata
def test_method_error_is_a_clean_message(photos, tmp_path, monkeypatch):
    import faceanon.methods

    monkeypatch.setattr(faceanon.methods, "get_method", lambda name, **_: Refusing())
    result = invoke(photos, "-o", tmp_path / "out", "--method", "ksame")
    assert result.exit_code == 1
    assert "needs at least 10 faces, got 3" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not images_in(tmp_path / "out")


@pytest.mark.realdata
@pytest.mark.parametrize(
    "detector, region",
    [
        ("hog", "face"),
        ("haar-face", "face"),
        ("hog", "eyes"),
        ("haar-eyes", "eyes"),
        ("haar-glasses", "eyes"),
        pytest.param("cnn", "face", marks=pytest.mark.slow),
    ],
)
def test_every_detector_through_the_command_line(photos, tmp_path, detector, region):
    # One image each: the CNN takes about a second per image on a CPU.
    source = sorted(photos.rglob("*.jpg"))[0]
    out = tmp_path / "out"
    result = invoke(source, "-o", out, "--detector", detector, "--region", region, "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["status"] == "ok" and entry["faces"] == 1
    x, y, w, h = entry["boxes"][0]
    anonymized = read_image(out / source.name)
    assert anonymized[y + 2 : y + h - 2, x + 2 : x + w - 2].max() < 20  # blacked out
    assert 110 < x + w / 2 < 140, "the box sits on the centred LFW face"


def test_weights_option_reaches_the_generative_method(photos, tmp_path):
    from faceanon.deepprivacy import DEFAULT_WEIGHTS

    missing = invoke(photos, "-o", tmp_path / "a", "--method", "deepprivacy", "--quiet",
                     "--weights", tmp_path / "none.pt")
    assert missing.exit_code != 0 and "none.pt" in missing.output
    assert not (tmp_path / "a").exists() or not images_in(tmp_path / "a")
    given = invoke(photos, "-o", tmp_path / "b", "--method", "deepprivacy", "--quiet",
                   "--weights", DEFAULT_WEIGHTS)
    assert given.exit_code == 0, given.output
    assert len(images_in(tmp_path / "b")) == len(images_in(photos))
    refused = invoke(photos, "-o", tmp_path / "c", "--method", "blur", "--k", "5",
                     "--weights", DEFAULT_WEIGHTS)
    assert refused.exit_code == 2 and "blur takes no --weights" in refused.output
