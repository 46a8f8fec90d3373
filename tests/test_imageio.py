"""Reading refuses broken files with their name; writing strips metadata atomically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from faceanon.imageio import ImageReadError, read_image, to_rgb, write_image


def jpeg(path, size=(32, 24)):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8)).save(
        path, quality=90
    )
    return path


def test_truncated_file_is_refused_even_when_pillow_is_lenient(tmp_path, monkeypatch):
    data = jpeg(tmp_path / "full.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="cut.jpg: corrupt or truncated"):
        read_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the global flag is restored"


@pytest.mark.parametrize("content, problem", [(b"", "empty"), (b"hello", "not an image")])
def test_empty_and_non_image_files(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"bad.png: .*{problem}"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


def test_write_strips_exif_and_leaves_no_partial_file(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    source = tmp_path / "in.jpg"
    Image.new("RGB", (10, 10), "red").save(source, exif=exif.tobytes())
    out = tmp_path / "out" / "o.jpg"
    write_image(out, read_image(source))
    with Image.open(out) as written:
        assert not written.getexif()
        assert "exif" not in written.info
    assert [p.name for p in out.parent.iterdir()] == ["o.jpg"]


def test_to_rgb_converts_grey_and_rgba():
    assert to_rgb(np.zeros((3, 4), np.uint8)).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb(rgba).shape == (3, 4, 3)
    with pytest.raises(TypeError):
        to_rgb(np.zeros((3, 4), np.float32))
