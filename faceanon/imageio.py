"""Reading and writing images safely.

Every reader returns an RGB ``uint8`` array of shape ``(height, width, 3)``: grey, palette
and RGBA inputs are converted, and EXIF orientation is applied first, so that a face
detector sees the picture the way a person does. Writers never carry metadata (EXIF, GPS,
ICC comments) and write through a temporary file, so a crash never leaves a half-written
image under the final name. Output files get the permissions the user's umask gives a new
file (0644 under the usual umask 022), like any file a program creates.

:mod:`faceanon.formats` reads and writes whole documents (every frame, at its own depth) for
``faceanon anonymize``; this module is the 8-bit RGB reader the benchmark and the methods
use, and the atomic writer both share.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

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
    """Read an image file's first frame as RGB ``uint8`` with EXIF orientation applied.

    Deeper images (16-bit, float) are scaled to 8 bits, not clipped (see
    :func:`faceanon.formats.rgb_view`); images above the pixel limit are refused before
    they are decoded (:func:`faceanon.formats.default_max_pixels`).

    Raises
    ------
    ImageReadError
        When the file is missing, empty, truncated, corrupt, not an image, in a format
        :mod:`faceanon.formats` does not support, or too large.
    """
    from faceanon.formats import read_document, rgb_view

    return rgb_view(read_document(path, first_frame_only=True).frames[0])


def write_image(path: os.PathLike | str, image: np.ndarray, *, quality: int = 95) -> None:
    """Write an RGB ``uint8`` image without any metadata, atomically.

    The format follows the suffix. The file appears under its final name only once it is
    complete.
    """
    path = Path(path)
    picture = Image.fromarray(to_rgb(np.asarray(image)))
    suffix = path.suffix.lower()
    options: dict = {}
    if suffix in {".jpg", ".jpeg"}:
        options = {"quality": quality, "exif": b""}
    elif suffix == ".webp":
        options = {"quality": quality, "exif": b""}
    with atomic_output(path) as handle:
        picture.save(handle, format=Image.registered_extensions()[suffix], **options)


def create_partial(path: os.PathLike | str) -> tuple[int, Path]:
    """Create a new, empty hidden file beside ``path`` to be renamed to it once complete.

    Returns its open descriptor (write only) and its path. The mode is 0666 filtered by the
    process umask, as ``open()`` would create ``path`` itself: ``tempfile.mkstemp`` would
    force 0600 and leave published files unreadable to anyone else. The name starts with
    ``.partial-``: anonymize's folder walk skips hidden files, so a leftover from a killed
    run never becomes an input.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = path.parent / f".partial-{secrets.token_hex(6)}-{path.name}"
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_output(path: os.PathLike | str) -> Iterator[BinaryIO]:
    """Open a hidden temporary file beside ``path``; rename it to ``path`` once complete.

    The temporary file is created with mode 0666 filtered by the process umask, as
    ``open()`` would create ``path`` itself (``tempfile.mkstemp`` would force 0600, leaving
    published images unreadable to anyone else). Its content is flushed to disk before the
    rename, so a crash leaves either the old file or the complete new one under ``path``;
    any error removes the temporary file and re-raises.
    """
    path = Path(path)
    descriptor, temporary = create_partial(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
