"""Small LFW-like archives for the download tests, served by the ``server`` fixture."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
from PIL import Image


def jpeg_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_archive(path, files, links=()) -> str:
    """Write a .tgz of ``files`` (name -> bytes) and symbolic ``links``; return its sha256."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


GOOD = {
    "lfw-deepfunneled/Ann_A/Ann_A_0001.jpg": jpeg_bytes(10),
    "lfw-deepfunneled/Ann_A/Ann_A_0002.jpg": jpeg_bytes(20),
    "lfw-deepfunneled/Bob_B/Bob_B_0001.jpg": jpeg_bytes(30),
    "lfw-deepfunneled/Bob_B/notes.txt": b"dropped: not an image",
    "lfw-deepfunneled/README": b"dropped: not <identity>/<image>",
}
