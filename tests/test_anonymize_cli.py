"""``faceanon anonymize`` end to end: real LFW faces, broken files, unsafe output plans."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from image_variants import (
    VARIANTS,
    VARIANTS_BY_NAME,
    boxes_mask,
    shown_colours,
    write_variant,
)
from PIL import Image

from faceanon.cli import main
from faceanon.detect import find_regions
from faceanon.formats import read_document, rgb_view
from faceanon.imageio import read_image
from faceanon.methods import Method, get_method
from faceanon.protocol import image_rng

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


def assert_blacked_out(image: np.ndarray, box) -> None:
    """Black inside the box, but for the ringing a JPEG re-encoded with its own
    quantization tables (LFW's: quality about 75) leaves near the box's edges."""
    x, y, w, h = box
    inside = image[y + 2 : y + h - 2, x + 2 : x + w - 2]
    assert inside.mean() < 5 and inside.max() < 40


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
        assert_blacked_out(anonymized, (x, y, w, h))
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
    e = tmp_path / "e"
    assert invoke(*files, "-o", e, *noise[:-1], "8").exit_code == 0
    first = images_in(a)[0]
    assert (a / first).read_bytes() != (e / first).read_bytes()


@pytest.mark.realdata
def test_an_image_laid_out_as_in_the_dataset_gets_the_benchmarks_pixels(lfw, tmp_path):
    import faceanon.pipeline
    import faceanon.report.pictures

    # PNG, so that the written pixels are exactly what the method made.
    sample = lfw.images_of()["Aaron_Sorkin"][0]
    key = sample.relpath.replace(".jpg", ".png")
    source = tmp_path / "data" / key
    source.parent.mkdir(parents=True)
    Image.open(lfw.path(sample)).save(source)
    result = invoke(tmp_path / "data", "-o", tmp_path / "out", "--method", "noise",
                    "--k", "30", "--seed", "3")
    assert result.exit_code == 0, result.output
    image = read_image(source)
    expected = get_method("noise").anonymize(image, find_regions(image), k=30,
                                             rng=image_rng(3, "noise", 30, key))
    assert np.array_equal(read_image(tmp_path / "out" / key), expected)
    # The benchmark and the report's pictures draw from the very same rule.
    assert faceanon.pipeline.image_rng is image_rng
    assert faceanon.report.pictures.image_rng is image_rng


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
    (broken / "notes.txt").write_text("not an image type: an error unless --ignore-unknown")
    loose = tmp_path / "readme.md"  # named on the command line: always attempted
    loose.write_text("# not an image")
    problems = [
        ("empty.jpg", "empty"),
        ("text.jpg", "not an image"),
        ("random.png", "not an image"),
        ("truncated.jpg", "truncated"),
        ("readme.md", "not an image"),
    ]

    out = tmp_path / "out"
    result = invoke(photos, loose, "-o", out, "--method", "pixelate", "--k", "8")
    assert result.exit_code == 1
    for name, problem in [*problems, ("notes.txt", "not an image")]:
        lines = error_lines(result, name)
        assert len(lines) == 1, result.stderr
        assert problem in lines[0]
    written = images_in(out)
    assert len(written) == 3 and not any(p.startswith("broken") for p in written)
    assert "3 of 9 files written" in result.stdout
    assert "6 failures" in result.stdout
    assert "ignored" not in result.stdout
    assert "2 of the failed files are not image types by their name; --ignore-unknown" in (
        result.stderr)

    ignoring = invoke(photos, loose, "-o", tmp_path / "out2", "--method", "pixelate",
                      "--k", "8", "--ignore-unknown")
    assert ignoring.exit_code == 1
    for name, problem in problems:
        (line,) = error_lines(ignoring, name)
        assert problem in line
    assert not error_lines(ignoring, "notes.txt")
    assert "3 of 8 files written" in ignoring.stdout
    assert "5 failures" in ignoring.stdout
    assert "1 non-image files ignored" in ignoring.stdout


def test_unreadable_file_alone_fails_cleanly(tmp_path):
    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 nope")
    result = invoke(bad, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert len(error_lines(result, "bad.jpg")) == 1


# ---------------------------------------------------------------------------------------
# Every kind of photo file: the same kind out, every frame anonymized


@pytest.mark.realdata
def test_every_kind_of_file_comes_back_as_the_same_kind(lfw, tmp_path):
    face = read_image(lfw.path(lfw.samples[0]))
    folder = tmp_path / "in"
    for variant in VARIANTS:
        write_variant(face, variant, folder)
    out = tmp_path / "out"
    previous = os.umask(0o002)  # neither 0600 (a temporary file's) nor the usual 0644
    try:
        result = invoke(folder, "-o", out, "--method", "blur", "--k", "31", "--json")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    entries = {Path(entry["input"]).name: entry for entry in json.loads(result.stdout)["files"]}
    assert len(entries) == len(VARIANTS)
    for variant in VARIANTS:
        name = f"face-{variant.name}{variant.suffix}"
        entry = entries[name]
        assert entry["status"] == "ok", (name, entry)
        assert entry["frames"] == variant.frames and len(entry["boxes"]) == variant.frames
        assert entry["faces"] >= variant.frames, "a face in every frame"
        before, after = read_document(folder / name), read_document(out / name)
        assert (out / name).stat().st_mode & 0o777 == 0o664, name
        assert after.format == before.format == variant.format, name
        assert [f.mode for f in after.frames] == list(variant.modes), name
        assert [f.bit_depth for f in after.frames] == [f.bit_depth for f in before.frames]
        assert [f.duration_ms for f in after.frames] == [f.duration_ms for f in before.frames]
        assert after.icc_profile == before.icc_profile
        assert (after.icc_profile is not None) == variant.icc
        for index, (old, new, boxes) in enumerate(
            zip(before.frames, after.frames, entry["boxes"], strict=True)
        ):
            inside = boxes_mask(old.pixels.shape, boxes)
            change = np.abs(rgb_view(new).astype(int) - rgb_view(old))
            assert change[inside].mean() > 5, f"{name} frame {index}: face left as it was"
            if variant.lossless:
                assert np.array_equal(shown_colours(new)[~inside], shown_colours(old)[~inside])
            else:
                assert change[~inside].mean() < 3, (name, index)


def multipage_tiff(face: np.ndarray, path: Path) -> Path:
    """Pages: the face, a flat grey page with no face, the face mirrored."""
    pages = [Image.fromarray(face), Image.new("RGB", face.shape[1::-1], (128, 128, 128)),
             Image.fromarray(np.ascontiguousarray(face[:, ::-1]))]
    path.parent.mkdir(parents=True, exist_ok=True)
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


@pytest.mark.realdata
@pytest.mark.parametrize("on_miss, exit_code", [("fail", 1), ("skip", 0)])
def test_a_frame_without_a_face_keeps_the_whole_file_back(lfw, tmp_path, on_miss, exit_code):
    face = read_image(lfw.path(lfw.samples[0]))
    source = multipage_tiff(face, tmp_path / "in" / "scan.tif")
    result = invoke(source, "-o", tmp_path / "out", "--on-miss", on_miss, "--json")
    assert result.exit_code == exit_code, result.output
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["status"] == {"fail": "miss", "skip": "skipped"}[on_miss]
    assert entry["error"] == "no face found in frame 2 of 3"
    (line,) = error_lines(result, "scan.tif")
    assert "no face found in frame 2 of 3, not written" in line
    assert not (tmp_path / "out" / "scan.tif").exists()


@pytest.mark.realdata
def test_a_frame_without_a_face_is_anonymized_whole_under_on_miss_whole(lfw, tmp_path):
    face = read_image(lfw.path(lfw.samples[0]))
    source = multipage_tiff(face, tmp_path / "in" / "scan.tif")
    result = invoke(source, "-o", tmp_path / "out", "--on-miss", "whole", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["status"] == "whole" and entry["frames"] == 3 and entry["faces"] == 2
    assert entry["boxes"][1] == [[0, 0, 250, 250]]
    pages = read_document(tmp_path / "out" / "scan.tif").frames
    assert len(pages) == 3
    assert (pages[1].pixels == 0).all(), "the faceless page is blacked out whole"
    for page, boxes in ((pages[0], entry["boxes"][0]), (pages[2], entry["boxes"][2])):
        ((x, y, w, h),) = boxes
        assert_blacked_out(page.pixels, (x, y, w, h))
        assert page.pixels[:, : x - 2].mean() > 20, "outside the face is kept"
    assert "1 of 1 files written, 3 frames, 2 faces, 1 anonymized whole" in (
        invoke(source, "-o", tmp_path / "again", "--on-miss", "whole").stdout)


@pytest.mark.realdata
def test_max_pixels_refuses_a_larger_file_and_the_rest_is_written(photos, tmp_path):
    one = sorted(photos.rglob("*.jpg"))[0]
    big = photos / "big.png"
    Image.open(one).resize((500, 500)).save(big)
    result = invoke(photos, "-o", tmp_path / "out", "--max-pixels", 250 * 250)
    assert result.exit_code == 1
    (line,) = error_lines(result, "big.png")
    assert "too large: 500x500 (0.2 MP) is above the limit of 0.1 MP" in line
    assert len(images_in(tmp_path / "out")) == 3
    assert not (tmp_path / "out" / "big.png").exists()


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


def test_an_unknown_miss_policy_is_refused_by_the_library_before_any_file(tmp_path):
    from faceanon.anonymize import anonymize_files, plan_jobs
    from faceanon.protocol import OnMissError, Variant

    grey_png(tmp_path / "in" / "flat.png")
    jobs, _ = plan_jobs([tmp_path / "in"], tmp_path / "out")
    with pytest.raises(OnMissError, match="unknown on_miss 'keep'"):
        anonymize_files(jobs, method=get_method("blackout"), variant=Variant("blackout"),
                        detector="hog", on_miss="keep")
    assert not (tmp_path / "out").exists()
    # the command line offers only the known policies
    result = invoke(tmp_path / "in", "-o", tmp_path / "out", "--on-miss", "keep")
    assert result.exit_code == 2 and "'keep' is not one of" in result.output


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
    assert all(len(f["boxes"]) == f["frames"] == 1 and len(f["boxes"][0]) == 1
               and Path(f["output"]).exists() for f in ok)
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
    needs_set = True
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
def test_a_set_based_method_gets_every_frame_of_every_file(photos, tmp_path, monkeypatch):
    import faceanon.methods

    monkeypatch.setattr(RecordingSet, "calls", [])
    monkeypatch.setattr(faceanon.methods, "get_method", lambda name, **_: RecordingSet())
    face = read_image(sorted(photos.rglob("*.jpg"))[0])
    write_variant(face, VARIANTS_BY_NAME["gif-animated"], photos)
    result = invoke(photos, "-o", tmp_path / "out", "--method", "recording-set", "--json")
    assert result.exit_code == 0, result.output
    assert RecordingSet.calls == [3 + 3]  # three photos and the three frames of the GIF
    (gif,) = [f for f in json.loads(result.stdout)["files"] if f["input"].endswith(".gif")]
    frames = read_document(gif["output"]).frames
    for frame, boxes in zip(frames, gif["boxes"], strict=True):
        ((x, y, w, h),) = boxes
        # Painted with the set's size (6), mapped to the GIF's nearest palette colour.
        painted = rgb_view(frame)[y : y + h, x : x + w].reshape(-1, 3)
        assert len(np.unique(painted, axis=0)) == 1 and painted.max() < 40


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
    assert entry["status"] == "ok" and entry["faces"] == 1 and entry["frames"] == 1
    ((x, y, w, h),) = entry["boxes"][0]  # the boxes of the one frame
    assert_blacked_out(read_image(out / source.name), (x, y, w, h))
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
