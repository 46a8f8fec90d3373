"""Every kind of photo file round-trips: read at its own depth, anonymized, written back the same.

The files are made in ``tmp_path`` from a real LFW face (``FACEANON_DATA``); none is kept.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from image_variants import (
    VARIANTS,
    VARIANTS_BY_NAME,
    Mutation,
    boxes_mask,
    encoded,
    fuzz_corpus,
    mutate,
    mutations,
    reference_view,
    shown_colours,
    variants,
    write_variant,
)
from PIL import Image, ImageOps

from faceanon import formats
from faceanon.formats import (
    DOCUMENT_SUFFIXES,
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    UnsupportedImageError,
    default_max_pixels,
    from_8bit,
    is_document_path,
    merge_anonymized,
    read_document,
    rgb_view,
    to_8bit,
    write_document,
)
from faceanon.imageio import IMAGE_SUFFIXES, read_image, write_image

#: A box over the middle of a deep-funneled LFW face (250 x 250, face centred).
FACE_BOX = (70, 60, 110, 130)
MAX_VALUE = {8: 255, 16: 65535}


@pytest.fixture(scope="module")
def face(lfw) -> np.ndarray:
    return read_image(lfw.path(lfw.samples[0]))


def box_mask(shape) -> np.ndarray:
    return boxes_mask(shape, [FACE_BOX])


def pixelated(document) -> list[np.ndarray]:
    from faceanon.methods import get_method

    method = get_method("pixelate")
    return [
        method.anonymize(view, [FACE_BOX], k=4, rng=np.random.default_rng(0))
        for view in document.rgb_frames()
    ]


#: TIFF tags that describe the pixels (size, layout, compression, sample format, colour
#: profile, resolution) rather than the picture's story.
TIFF_PIXEL_TAGS = frozenset(
    {256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 282, 283, 284, 296, 317, 322, 323,
     324, 325, 338, 339, 34675}
)


def metadata_left(path) -> set[str]:
    """Metadata a written file still carries, other than its colour profile."""
    left = set()
    with Image.open(path) as written:
        if written.format == "TIFF":
            left |= {f"tiff tag {tag}" for tag in written.tag_v2 if tag not in TIFF_PIXEL_TAGS}
        elif written.getexif():
            left.add("exif")
        for key in ("xmp", "XML:com.adobe.xmp", "comment", "exif", "description"):
            if key in written.info:
                left.add(key)
    return left


# ---------------------------------------------------------------------------------------
# Reading


@pytest.mark.realdata
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_each_kind_reads_at_its_own_depth_with_an_8bit_view(face, variant, tmp_path):
    document = read_document(write_variant(face, variant, tmp_path))

    assert document.format == variant.format
    assert tuple(frame.mode for frame in document.frames) == variant.modes
    assert {frame.bit_depth for frame in document.frames} == {variant.depth}
    assert bool(document.icc_profile) == variant.icc
    view = rgb_view(document.frames[0])
    assert view.dtype == np.uint8 and view.shape == face.shape
    expected = reference_view(face, document.frames[0].mode)
    assert np.abs(view.astype(int) - expected).mean() <= variant.view_tolerance


@pytest.mark.realdata
def test_sixteen_bit_grey_face_is_found_where_pillow_clips_it_white(face, tmp_path):
    # The case: Pillow's own conversion of a 16-bit grey PNG clips every value
    # above 255, leaving a white picture with no face in it.
    from faceanon.detect import find_regions

    path = write_variant(face, VARIANTS_BY_NAME["png-grey16"], tmp_path)
    with Image.open(path) as opened:
        assert np.asarray(opened.convert("RGB")).min() == 255
    assert find_regions(rgb_view(read_document(path).frames[0]), detector="hog")
    assert find_regions(read_image(path), detector="hog")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_deep_frames_matches_pillows_exif_transpose(orientation):
    # Pillow cannot hold 16-bit colour, so those frames are turned upright by formats
    # itself; Pillow's exif_transpose on an 8-bit picture is the reference.
    stored = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    picture = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    with Image.open(io.BytesIO(encoded(picture, "PNG", exif=exif.tobytes()))) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened))
    assert np.array_equal(formats._upright(stored, orientation), expected)


def test_8bit_scaling_matches_opencv_and_inverts_exactly():
    import cv2

    every16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(
        to_8bit(every16, (0.0, 65535.0)), cv2.convertScaleAbs(every16, alpha=255 / 65535)
    )
    floats = np.random.default_rng(1).uniform(-3.0, 40.0, (64, 64)).astype(np.float32)
    assert np.array_equal(
        to_8bit(floats, (-3.0, 40.0)),
        cv2.convertScaleAbs(floats, alpha=255 / 43.0, beta=3.0 * 255 / 43.0),
    )
    every8 = np.arange(256, dtype=np.uint8)
    for dtype, value_range in [
        (np.uint16, (0.0, 65535.0)),
        (np.float32, (0.0, 1.0)),
        (np.float32, (-3.0, 40.0)),
        (np.int32, (-70000.0, 90000.0)),
    ]:
        assert np.array_equal(to_8bit(from_8bit(every8, value_range, dtype), value_range), every8)


# ---------------------------------------------------------------------------------------
# Anonymized pixels back at full depth, and the same kind of file written


@pytest.mark.realdata
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_anonymized_round_trip_keeps_the_kind_and_every_pixel_outside_the_face(
    face, variant, tmp_path
):
    path = write_variant(face, variant, tmp_path)
    document = read_document(path)
    anonymized = pixelated(document)
    merged = document.with_anonymized(anonymized, [[FACE_BOX]] * len(document.frames))
    inside = box_mask(face.shape)

    for before, after, image in zip(document.frames, merged.frames, anonymized, strict=True):
        assert after.mode == before.mode and after.pixels.dtype == before.pixels.dtype
        assert np.array_equal(after.pixels[~inside], before.pixels[~inside])
        # Inside: the anonymized pixels, at the frame's depth (palette frames: the nearest
        # palette colour), and opaque.
        expected = reference_view(image, after.mode)[inside].astype(int)
        if after.mode == "1":  # bilevel: the anonymized luma, dithered (same mean)
            assert abs(rgb_view(after)[inside].mean() - expected.mean()) <= 3
        else:
            tolerance = 12 if after.mode == "P" else 1
            assert np.abs(rgb_view(after)[inside].astype(int) - expected).mean() <= tolerance
        if after.mode == "P":
            assert (after.palette[after.pixels[inside], 3] == 255).all()
        elif after.has_alpha:
            assert (after.pixels[inside][..., -1] == MAX_VALUE[after.bit_depth]).all()

    out = tmp_path / "out" / path.name
    write_document(out, merged)
    back = read_document(out)

    assert back.format == document.format
    assert [f.mode for f in back.frames] == [f.mode for f in document.frames]
    assert [f.bit_depth for f in back.frames] == [f.bit_depth for f in document.frames]
    assert [f.duration_ms for f in back.frames] == [f.duration_ms for f in document.frames]
    assert back.loop == document.loop
    assert back.icc_profile == document.icc_profile
    assert back.encoding.get("lossless") == document.encoding.get("lossless")
    assert back.encoding.get("progressive") == document.encoding.get("progressive")
    assert metadata_left(out) == set()
    for written, after, before in zip(back.frames, merged.frames, document.frames, strict=True):
        if variant.lossless:
            assert np.array_equal(shown_colours(written), shown_colours(after))
        else:  # one more generation of JPEG / lossy WebP
            outside = np.abs(rgb_view(written).astype(int) - rgb_view(after))[~inside]
            assert outside.mean() <= 3
        face_change = np.abs(rgb_view(written).astype(int) - rgb_view(before))[inside]
        assert face_change.mean() > 5, "the written face region must differ from the input"


@pytest.mark.realdata
def test_jpeg_keeps_its_quantization_tables_and_subsampling(face, tmp_path):
    path = write_variant(face, VARIANTS_BY_NAME["jpeg-rgb"], tmp_path)
    out = tmp_path / "out.jpg"
    write_document(out, read_document(path))
    with Image.open(path) as original, Image.open(out) as written:
        assert written.quantization == original.quantization
        from PIL import JpegImagePlugin

        assert JpegImagePlugin.get_sampling(written) == JpegImagePlugin.get_sampling(original)


@pytest.mark.realdata
def test_mpo_is_read_as_its_primary_picture_and_written_as_jpeg(face, tmp_path):
    path = tmp_path / "camera.jpg"
    Image.fromarray(face).save(
        path, format="MPO", save_all=True, append_images=[Image.fromarray(face[::2, ::2])]
    )
    document = read_document(path)
    assert document.format == "JPEG" and len(document.frames) == 1
    write_document(tmp_path / "out.jpg", document)
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.format == "JPEG"


def test_merge_refuses_an_image_of_another_shape_and_ignores_boxes_outside():
    frame = formats.Frame(np.zeros((10, 12), np.uint16), "I;16", value_range=(0.0, 65535.0))
    with pytest.raises(ValueError, match="uint8"):
        merge_anonymized(frame, np.zeros((10, 12), np.uint8), [(0, 0, 4, 4)])
    white = np.full((10, 12, 3), 255, np.uint8)
    merged = merge_anonymized(frame, white, [(20, 20, 5, 5), (-4, -4, 6, 6)])
    assert merged.pixels[:2, :2].tolist() == [[65535, 65535], [65535, 65535]]
    assert int(merged.pixels.sum()) == 4 * 65535


def test_several_frames_are_never_written_into_a_one_frame_format(tmp_path):
    frame = formats.Frame(np.zeros((4, 4, 3), np.uint8), "RGB")
    document = formats.ImageDocument(path=None, format="JPEG", frames=(frame, frame))
    with pytest.raises(ImageWriteError, match="JPEG holds one frame"):
        write_document(tmp_path / "x.jpg", document)
    assert not list(tmp_path.iterdir())


ANIMATIONS = [v for v in VARIANTS if v.frames > 1 and v.format != "TIFF"]


@pytest.mark.realdata
@pytest.mark.parametrize("variant", [*ANIMATIONS, "webp-animated-lossy"],
                         ids=lambda v: getattr(v, "name", v))
def test_frames_made_identical_by_anonymizing_are_all_written(face, variant, tmp_path):
    # Blacked out whole (what --on-miss whole does to frames with no face), distinct frames
    # become identical; GIF, APNG and WebP encoders would merge them into one frame.
    if variant == "webp-animated-lossy":
        path = tmp_path / "lossy.webp"
        frames = [Image.fromarray(f) for f in (face, face[:, ::-1], np.roll(face, 9, axis=1))]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=[80, 120, 200],
                       loop=2, quality=90)
    else:
        path = write_variant(face, variant, tmp_path)
    document = read_document(path)
    assert len(document.frames) == 3
    whole = [[(0, 0, *frame.size)] for frame in document.frames]
    black = [np.zeros_like(view) for view in document.rgb_frames()]
    merged = document.with_anonymized(black, whole)
    out = tmp_path / "out" / path.name
    write_document(out, merged)

    back = read_document(out)
    assert len(back.frames) == 3
    assert [f.duration_ms for f in back.frames] == [f.duration_ms for f in document.frames]
    assert back.loop == document.loop
    assert back.encoding.get("lossless") == document.encoding.get("lossless")
    for written, expected in zip(back.frames, merged.frames, strict=True):
        assert written.mode == expected.mode
        assert np.array_equal(shown_colours(written), shown_colours(expected))


@pytest.mark.realdata
def test_repeated_frames_keep_every_pixel_and_transparency(face, tmp_path):
    # Written frame by frame in full: a repeat is kept, and a pixel transparent in a frame
    # stays transparent where the frame before it was opaque (nothing shows through).
    path = write_variant(face, VARIANTS_BY_NAME["gif-animated-transparent"], tmp_path)
    document = read_document(path)
    first = document.frames[0]  # a transparent border on the left
    assert (shown_colours(first)[..., 3] == 0).any()
    mirrored = replace(first, pixels=np.ascontiguousarray(first.pixels[:, ::-1]))
    document = replace(document, frames=(first, first, mirrored))
    anonymized = [view.copy() for view in document.rgb_frames()]
    for image in anonymized:
        image[box_mask(image.shape)] = 0
    merged = document.with_anonymized(anonymized, [[FACE_BOX]] * 3)
    out = tmp_path / "out.gif"
    write_document(out, merged)
    back = read_document(out)
    assert len(back.frames) == 3
    assert [f.duration_ms for f in back.frames] == [f.duration_ms for f in document.frames]
    for written, expected in zip(back.frames, merged.frames, strict=True):
        assert np.array_equal(shown_colours(written), shown_colours(expected))
    assert (shown_colours(back.frames[2])[:, -5:, 3] == 0).all(), "the right border is transparent"


def test_with_anonymized_needs_one_image_and_box_list_per_frame(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    document = read_document(path)
    with pytest.raises(ValueError, match="1 frames but 2 anonymized"):
        document.with_anonymized([np.zeros((8, 8, 3), np.uint8)] * 2, [[], []])


# ---------------------------------------------------------------------------------------
# Writing: atomic, permissions from the umask, nothing left behind on failure


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    source = tmp_path / "in.png"
    Image.new("L", (8, 8), 7).save(source)
    previous = os.umask(umask)
    try:
        write_document(tmp_path / "out" / "doc.png", read_document(source))
        write_image(tmp_path / "out" / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    finally:
        os.umask(previous)
    for name in ("doc.png", "rgb.png"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    source = tmp_path / "in.tif"
    Image.fromarray(np.ones((8, 8), np.float32)).save(source)
    document = read_document(source)
    out = tmp_path / "out" / "x.jpg"
    out.parent.mkdir()
    out.write_bytes(b"previous output")
    unwritable = formats.replace(document, format="JPEG")  # JPEG cannot hold float
    with pytest.raises(ImageWriteError, match=r"x\.jpg: could not write"):
        write_document(out, unwritable)
    assert out.read_bytes() == b"previous output"
    assert [p.name for p in out.parent.iterdir()] == ["x.jpg"]


# ---------------------------------------------------------------------------------------
# Bad input: one clear error naming the file


@pytest.mark.parametrize(
    "content, problem",
    [(b"", "file is empty"), (b"just text\n", "not an image"), (b"\x89PNG\r\n\x1a\n", "corrupt")],
)
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"bad.png: .*{problem}"):
        read_document(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg: file not found"):
        read_document(tmp_path / "nope.jpg")
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageReadError, match="x.jpg: not a file"):
        read_document(tmp_path / "x.jpg")


@pytest.mark.parametrize("fmt, suffix", [("ICO", ".ico"), ("TGA", ".tga"), ("PCX", ".pcx")])
def test_formats_that_cannot_be_written_back_are_refused_by_name(tmp_path, fmt, suffix):
    path = tmp_path / f"icon{suffix}"
    Image.new("RGB", (16, 16), "red").save(path, format=fmt)
    with pytest.raises(UnsupportedImageError, match=f"icon{suffix}: {fmt} images are not"):
        read_document(path)


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written chunk by chunk, for kinds no library here writes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data)
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_sixteen_bit_grey_alpha_png_is_refused_rather_than_reduced(tmp_path):
    row = b"\0" + b"\x12\x34\xff\xff" * 2  # filter byte, two grey+alpha 16-bit pixels
    path = tmp_path / "ga16.png"
    path.write_bytes(_png(2, 2, 16, 4, row * 2))
    with pytest.raises(UnsupportedImageError, match="ga16.png: 16-bit grey\\+alpha"):
        read_document(path)


def test_a_huge_header_is_refused_before_any_pixel_is_decoded(tmp_path):
    # 10000 x 10000 declared (Pillow only warns at 100 MP), one row of data present:
    # decoding would fail as truncated after allocating 100 MB; the limit refuses it first.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(10000, 10000, 8, 0, b"\0" * 10001))
    with pytest.raises(
        ImageTooLargeError, match=r"bomb.png: too large: 10000x10000 \(100.0 MP\) is above"
    ):
        read_document(path, max_pixels=50_000_000)
    # Above twice Pillow's threshold Pillow itself refuses at open: the same error.
    path.write_bytes(_png(40000, 30000, 8, 0, b"\0" * 40001))
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: too large: .*1200000000 pixels"):
        read_document(path)


@pytest.mark.realdata
def test_pillows_warning_range_is_an_error_here(face, tmp_path, monkeypatch):
    path = write_variant(face, VARIANTS_BY_NAME["png-rgba"], tmp_path)
    # Pillow's warning threshold lowered below this face: Pillow alone would warn and read.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", face.shape[0] * face.shape[1] - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError, match="above the limit"):
            read_document(path)
        assert read_document(path, max_pixels=face.shape[0] * face.shape[1]).frames


@pytest.mark.realdata
def test_the_limit_counts_every_frame(face, tmp_path):
    path = write_variant(face, VARIANTS_BY_NAME["gif-animated"], tmp_path)
    one_frame = face.shape[0] * face.shape[1]
    with pytest.raises(ImageTooLargeError, match="pixels in all frames"):
        read_document(path, max_pixels=2 * one_frame)
    assert len(read_document(path, max_pixels=3 * one_frame).frames) == 3
    assert len(read_document(path, max_pixels=one_frame, first_frame_only=True).frames) == 1


def test_a_limit_above_pillows_own_refusal_is_honoured(tmp_path, monkeypatch):
    # Pillow refuses at open above twice its threshold; a larger max_pixels, asked for,
    # lifts that for the read only.
    path = tmp_path / "big.png"
    Image.new("L", (50, 50), 128).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLargeError, match="big.png: too large"):
        read_document(path)
    assert read_document(path, max_pixels=2500).frames[0].size == (50, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_default_limit_is_pillows_lowered_to_half_the_available_memory(monkeypatch):
    monkeypatch.setattr(formats, "available_memory_bytes", lambda: None)
    assert default_max_pixels() == Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(formats, "available_memory_bytes", lambda: 2 * 2**30)
    assert default_max_pixels() == 2**30 // formats.PEAK_BYTES_PER_PIXEL
    monkeypatch.setattr(formats, "available_memory_bytes", lambda: 10**15)
    assert default_max_pixels() == Image.MAX_IMAGE_PIXELS


def test_available_memory_is_measured_on_linux():
    available = formats.available_memory_bytes()
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    assert available is not None and 0 < available < 2**50


@pytest.mark.realdata
def test_a_gif_cut_between_frames_is_an_error_not_fewer_frames(face, tmp_path):
    data = write_variant(face, VARIANTS_BY_NAME["gif-animated"], tmp_path).read_bytes()
    last_frame = data.rindex(b"\x21\xf9\x04")  # the last frame's graphic control block
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[:last_frame])
    with pytest.raises(ImageReadError, match="cut.gif: corrupt or truncated.*trailer"):
        read_document(cut)


@pytest.fixture(scope="module")
def intact_files(face, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("intact")
    files = {}
    for variant in VARIANTS:
        path = write_variant(face, variant, folder)
        files[variant.name] = (path.read_bytes(), read_document(path))
    return files


@pytest.mark.realdata
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_a_truncated_file_is_an_error_or_read_whole(intact_files, variant, tmp_path):
    # Cut anywhere (the last byte included: a JPEG without its end marker, a PNG without
    # IEND), a file either fails with a clear error or still gives every pixel exactly.
    data, intact = intact_files[variant.name]
    for keep in sorted({1, 8, 64, len(data) // 3, len(data) // 2, len(data) - 300,
                        len(data) - 16, len(data) - 2, len(data) - 1}):
        path = tmp_path / f"cut{variant.suffix}"
        path.write_bytes(data[:keep])
        try:
            document = read_document(path)
        except ImageReadError as error:
            assert str(error).startswith(str(path))
            continue
        assert len(document.frames) == len(intact.frames), keep
        for frame, whole in zip(document.frames, intact.frames, strict=True):
            assert np.array_equal(frame.pixels, whole.pixels), keep


@pytest.mark.realdata
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(variant=variants(), mutation=mutations())
def test_damaged_bytes_give_a_clean_error_or_a_readable_image(
    intact_files, variant, mutation, tmp_path_factory
):
    data, intact = intact_files[variant.name]
    path = tmp_path_factory.mktemp("damaged") / f"damaged{variant.suffix}"
    path.write_bytes(mutate(data, mutation))
    try:
        document = read_document(path)
    except ImageReadError as error:
        assert str(error).startswith(f"{path}: ")
        return
    for frame in document.frames:
        view = rgb_view(frame)
        assert view.dtype == np.uint8 and view.ndim == 3 and view.shape[2] == 3


@pytest.mark.realdata
def test_fuzz_corpus_is_seeded_and_every_intact_file_reads(face, tmp_path):
    first = fuzz_corpus([face], tmp_path / "a", seed=3, damaged_per_file=2)
    second = fuzz_corpus([face], tmp_path / "b", seed=3, damaged_per_file=2)
    assert len(first) == 3 * len(VARIANTS)
    assert len({entry.path.name for entry in first}) == len(first)
    for one, two in zip(first, second, strict=True):
        assert one.path.read_bytes() == two.path.read_bytes()
        assert one.path.suffix == one.variant.suffix
        if one.mutation is None:
            assert len(read_document(one.path).frames) == one.variant.frames


def test_mutations_always_change_the_bytes():
    data = bytes(range(256)) * 4
    for mutation in (
        Mutation("truncate", fraction=1.0),
        Mutation("flip", positions=(0.0, 0.999), bit=7),
        Mutation("zero", fraction=0.0, length=1),
    ):
        assert mutate(data, mutation) != data


# ---------------------------------------------------------------------------------------
# Which files are images


def test_document_suffixes_widen_the_dataset_list_with_every_supported_kind():
    assert IMAGE_SUFFIXES < DOCUMENT_SUFFIXES
    assert IMAGE_SUFFIXES == {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp"}, (
        "dataset fingerprints depend on this list; widen DOCUMENT_SUFFIXES instead"
    )
    for variant in VARIANTS:
        assert is_document_path(f"x{variant.suffix.upper()}"), variant.name
    assert not is_document_path("notes.txt") and not is_document_path("raw.cr2")



@pytest.mark.realdata
def test_detect_blur_write_on_a_fuzz_corpus_fails_closed(face, tmp_path):
    # What ``faceanon anonymize --on-miss whole`` does with each file, on intact and
    # damaged copies of every kind: each file is a read error naming it, or is written
    # with every anonymized region changed and every frame kept.
    from faceanon.detect import find_regions, get_detector
    from faceanon.methods import get_method

    detector, blur = get_detector("hog"), get_method("blur")
    corpus = fuzz_corpus([face], tmp_path / "in", seed=0, damaged_per_file=1)
    outcomes = {"read error": 0, "faces": 0, "whole": 0}
    for entry in corpus:
        try:
            document = read_document(entry.path)
        except ImageReadError as error:
            assert entry.mutation is not None, f"intact file unreadable: {error}"
            assert str(error).startswith(str(entry.path))
            outcomes["read error"] += 1
            continue
        views = document.rgb_frames()
        boxes = [find_regions(view, detector=detector) for view in views]
        if entry.mutation is None:
            assert all(boxes), f"{entry.variant.name}: a face in every intact frame"
        missed = not all(boxes)
        boxes = [
            found or [(0, 0, view.shape[1], view.shape[0])]
            for found, view in zip(boxes, views, strict=True)
        ]
        anonymized = [
            blur.anonymize(view, found, k=31, rng=np.random.default_rng(0))
            for view, found in zip(views, boxes, strict=True)
        ]
        out = tmp_path / "out" / entry.path.name
        write_document(out, document.with_anonymized(anonymized, boxes))
        back = read_document(out)
        assert len(back.frames) == len(document.frames)
        frames = zip(document.frames, back.frames, anonymized, boxes, strict=True)
        for before, written, blurred, found in frames:
            shown_before, shown_after = rgb_view(before).astype(int), rgb_view(written)
            for x, y, w, h in found:
                region = (slice(y, y + h), slice(x, x + w))
                if np.abs(blurred[region] - shown_before[region]).mean() < 2:
                    # Smooth content (a damaged file decoded to grey mush) barely changes
                    # under a blur: there is no face in it to hide.
                    continue
                assert np.abs(shown_after[region] - shown_before[region]).mean() >= 2, (
                    f"{entry.path.name}: region {(x, y, w, h)} written unchanged"
                )
        outcomes["whole" if missed else "faces"] += 1
    assert outcomes["faces"] >= len(VARIANTS), outcomes
    assert sum(outcomes.values()) == len(corpus)
