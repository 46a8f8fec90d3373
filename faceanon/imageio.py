"""Reading and writing images safely.

Every reader returns an RGB ``uint8`` array of shape ``(height, width, 3)``: grey, palette
and RGBA inputs are converted, and EXIF orientation is applied first, so that a face
detector sees the picture the way a person does. Writers never carry metadata (EXIF, GPS,
ICC comments) and write through a temporary file, so a crash never leaves a half-written
image under the final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from faceanon.errors import FaceanonError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp"})


class ImageReadError(FaceanonError, ValueError):
    """An input file could not be read as an image; the message names the file."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def is_image_path(path: os.PathLike | str) -> bool:
    """True when the file name has one of the image suffixes faceanon reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Convert a grey (H, W), grey (H, W, 1), RGB or RGBA array to RGB ``uint8``.

    Alpha is dropped, not blended: anonymization must not depend on a background colour.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"expected a grey, RGB or RGBA image, got shape {array.shape}")


def read_image(path: os.PathLike | str) -> np.ndarray:
    """Read an image file as RGB ``uint8`` with EXIF orientation applied.

    Raises
    ------
    ImageReadError
        When the file is missing, empty, truncated, corrupt or not an image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    if size == 0:
        raise ImageReadError(path, "file is empty")
    # face_recognition (and other libraries) switch Pillow's process-wide flag that
    # silently pads truncated files; a privacy tool must report those, so force it off.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = upright.convert("RGB")
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"refused: too many pixels ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"corrupt or truncated image ({error})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    return np.asarray(rgb, dtype=np.uint8)


def write_image(path: os.PathLike | str, image: np.ndarray, *, quality: int = 95) -> None:
    """Write an RGB ``uint8`` image without any metadata, atomically.

    The format follows the suffix. The file appears under its final name only once it is
    complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(to_rgb(np.asarray(image)))
    suffix = path.suffix.lower()
    options: dict = {}
    if suffix in {".jpg", ".jpeg"}:
        options = {"quality": quality, "exif": b""}
    elif suffix == ".webp":
        options = {"quality": quality, "exif": b""}
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=suffix)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            picture.save(handle, format=Image.registered_extensions()[suffix], **options)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
