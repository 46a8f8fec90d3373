"""Image files of every supported kind made from a real face, and damaged copies of them.

Shared by the format tests (``tests/test_formats.py``) and the command's fuzz test: give
:func:`write_variant` an RGB ``uint8`` face (read from ``FACEANON_DATA``, never from the
repository) and a :class:`Variant`, and it writes that kind of file into a temporary folder;
:func:`mutate` damages a file's bytes the way disks, downloads and truncating copies do.
The Hypothesis strategies :func:`variants` and :func:`mutations` draw from both::

    @given(variant=variants(), mutation=mutations())
    def test_...(variant, mutation, tmp_path_factory): ...

For a command that is costly to start (detection models), :func:`fuzz_corpus` writes one
folder holding every variant of several faces plus seeded damaged copies, and lists what
each file is, so that one run of the command can be checked file by file.

Every variant's frames hold the face (shifted or mirrored in later frames), so a detector
finds a face in each frame of an intact file.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image, ImageCms


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile built by LittleCMS, to check profiles survive.

    Cached: LittleCMS stamps each new profile with the time it was made.
    """
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _frames(face: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` distinct frames that all show the face: as is, shifted, mirrored."""
    frames = [face]
    if count > 1:
        frames.append(np.roll(face, face.shape[1] // 12, axis=1))
    if count > 2:
        frames.append(np.ascontiguousarray(face[:, ::-1]))
    return [np.ascontiguousarray(f) for f in frames[:count]]


def deep(channel: np.ndarray, seed: int = 0) -> np.ndarray:
    """8-bit values spread to 16 bits with random low bits, so depth loss is visible."""
    low = np.random.default_rng(seed).integers(0, 256, channel.shape, dtype=np.uint16)
    return channel.astype(np.uint16) * np.uint16(256) + low


def _grey(face: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(face).convert("L"))


def _save(picture: Image.Image, path: Path, **options) -> None:
    picture.save(path, **options)


def _opencv(pixels: np.ndarray, path: Path, *, icc: bytes | None = None) -> None:
    import cv2

    if pixels.ndim == 3:
        code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        pixels = cv2.cvtColor(pixels, code)
    if icc:
        profile = [np.frombuffer(icc, np.uint8)]
        ok, encoded = cv2.imencodeWithMetadata(
            path.suffix, pixels, [cv2.IMAGE_METADATA_ICCP], profile
        )
    else:
        ok, encoded = cv2.imencode(path.suffix, pixels)
    assert ok, f"OpenCV could not write {path.suffix}"
    path.write_bytes(encoded.tobytes())


def _tifffile(pixels: np.ndarray, path: Path, **options) -> None:
    import tifffile

    tifffile.imwrite(path, pixels, photometric="rgb", **options)


def _rotated_for_exif(face: np.ndarray, path: Path) -> None:
    # Stored turned a quarter to the left with orientation 6 ("rotate 90 degrees clockwise
    # to view"), as a phone held sideways writes it: the upright picture is the face.
    stored = Image.fromarray(np.rot90(face, 1))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "private description"
    stored.save(path, quality=92, exif=exif.tobytes())


def _alpha(face: np.ndarray) -> np.ndarray:
    """An alpha channel with a transparent border and a soft gradient, opaque in the middle."""
    height, width = face.shape[:2]
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, : width // 10] = 0
    alpha[: height // 10, :] = np.linspace(0, 255, width, dtype=np.uint8)
    return alpha


def _palette_with_transparency(face: np.ndarray, path: Path) -> None:
    picture = Image.fromarray(face).quantize(255, dither=Image.Dither.NONE)
    indices = np.asarray(picture).copy()
    indices[:, : face.shape[1] // 10] = 255  # a transparent border, entry 255
    palette = picture.getpalette("RGB")[: 255 * 3] + [0, 255, 0]
    out = Image.frombytes("P", picture.size, indices.tobytes())
    out.putpalette(palette)
    out.save(path, transparency=255)


def _animated(face: np.ndarray, path: Path, fmt: str, **options) -> None:
    pictures = [Image.fromarray(f) for f in _frames(face, 3)]
    if fmt == "GIF":
        pictures = [p.quantize(256, dither=Image.Dither.NONE) for p in pictures]
    pictures[0].save(
        path, format=fmt, save_all=True, append_images=pictures[1:],
        duration=[80, 120, 200], loop=0, **options,
    )


def _animated_transparent_gif(face: np.ndarray, path: Path) -> None:
    # The transparent border moves from the left to the right edge and back, so a pixel
    # opaque in one frame is transparent in the next: the encoder must dispose, not
    # draw over the previous frame.
    pictures = []
    for index, frame in enumerate(_frames(face, 3)):
        alpha = np.full(frame.shape[:2], 255, np.uint8)
        border = frame.shape[1] // 10
        if index == 1:
            alpha[:, -border:] = 0
        else:
            alpha[:, :border] = 0
        pictures.append(Image.fromarray(np.dstack([frame, alpha])))
    pictures[0].save(
        path, format="GIF", save_all=True, append_images=pictures[1:],
        duration=[100, 100, 150], loop=3,
    )


def _multipage_tiff(face: np.ndarray, path: Path) -> None:
    rgb, shifted, mirrored = (Image.fromarray(f) for f in _frames(face, 3))
    rgb.save(
        path, save_all=True, append_images=[shifted.convert("L"), mirrored],
        compression="tiff_lzw", description="scanner notes",
    )


def _float_tiff(scale: float) -> Callable[[np.ndarray, Path], None]:
    def make(face: np.ndarray, path: Path) -> None:
        values = _grey(face).astype(np.float32) / 255.0 * scale
        Image.fromarray(values).save(path, compression="tiff_adobe_deflate")

    return make


@dataclass(frozen=True)
class Variant:
    """One kind of image file and what reading it must give.

    ``modes`` are the frame modes of :mod:`faceanon.formats` reading must give (one per
    frame), ``depth`` bits per sample, ``lossless`` whether pixel values survive writing
    exactly, ``view_tolerance`` the largest mean absolute difference between the 8-bit view
    of the first frame and :func:`reference_view` of the face.
    """

    name: str
    suffix: str
    format: str
    modes: tuple[str, ...]
    depth: int
    make: Callable[[np.ndarray, Path], None]
    lossless: bool = True
    view_tolerance: float = 1.0
    icc: bool = False

    @property
    def frames(self) -> int:
        return len(self.modes)

    def __repr__(self) -> str:  # Hypothesis and pytest show this
        return f"Variant({self.name})"


def _pil(mode_of: Callable[[np.ndarray], Image.Image], **options):
    def make(face: np.ndarray, path: Path) -> None:
        _save(mode_of(face), path, **options)

    return make


def _rgb(face):
    return Image.fromarray(face)


def _la(face):
    return Image.fromarray(np.dstack([_grey(face), _alpha(face)]))


def _rgba(face):
    return Image.fromarray(np.dstack([face, _alpha(face)]))


VARIANTS: tuple[Variant, ...] = (
    Variant("jpeg-rgb", ".jpg", "JPEG", ("RGB",), 8, _pil(_rgb, quality=90),
            lossless=False, view_tolerance=3),
    Variant("jpeg-grey", ".jpg", "JPEG", ("L",), 8, _pil(lambda f: _rgb(f).convert("L")),
            lossless=False, view_tolerance=3),
    Variant("jpeg-cmyk", ".jpg", "JPEG", ("CMYK",), 8,
            _pil(lambda f: _rgb(f).convert("CMYK"), quality=95), lossless=False,
            view_tolerance=3),
    Variant("jpeg-progressive-icc", ".jpeg", "JPEG", ("RGB",), 8,
            _pil(_rgb, quality=85, progressive=True, icc_profile=srgb_profile()),
            lossless=False, view_tolerance=4, icc=True),
    Variant("jpeg-exif-rotated", ".jpg", "JPEG", ("RGB",), 8, _rotated_for_exif,
            lossless=False, view_tolerance=3),
    Variant("png-grey", ".png", "PNG", ("L",), 8, _pil(lambda f: _rgb(f).convert("L")),
            view_tolerance=0),
    Variant("png-grey-alpha", ".png", "PNG", ("LA",), 8, _pil(_la), view_tolerance=0),
    Variant("png-rgb-icc", ".png", "PNG", ("RGB",), 8, _pil(_rgb, icc_profile=srgb_profile()),
            view_tolerance=0, icc=True),
    Variant("png-rgba", ".png", "PNG", ("RGBA",), 8, _pil(_rgba), view_tolerance=0),
    Variant("png-palette", ".png", "PNG", ("P",), 8,
            _pil(lambda f: _rgb(f).quantize(256, dither=Image.Dither.NONE)), view_tolerance=4),
    Variant("png-palette-transparent", ".png", "PNG", ("P",), 8, _palette_with_transparency,
            view_tolerance=40),
    Variant("png-animated", ".png", "PNG", ("RGB", "RGB", "RGB"), 8,
            lambda f, p: _animated(f, p, "PNG"), view_tolerance=0),
    Variant("png-grey16", ".png", "PNG", ("I;16",), 16,
            _pil(lambda f: Image.fromarray(deep(_grey(f)))), view_tolerance=1),
    Variant("png-rgb16-icc", ".png", "PNG", ("RGB;16",), 16,
            lambda f, p: _opencv(deep(f), p, icc=srgb_profile()), view_tolerance=1, icc=True),
    Variant("png-rgba16", ".png", "PNG", ("RGBA;16",), 16,
            lambda f, p: _opencv(deep(np.dstack([f, _alpha(f)])), p), view_tolerance=1),
    Variant("tiff-multipage", ".tif", "TIFF", ("RGB", "L", "RGB"), 8, _multipage_tiff,
            view_tolerance=0),
    Variant("tiff-grey16", ".tiff", "TIFF", ("I;16",), 16,
            _pil(lambda f: Image.fromarray(deep(_grey(f))), compression="tiff_lzw"),
            view_tolerance=1),
    Variant("tiff-rgb16", ".tif", "TIFF", ("RGB;16",), 16, lambda f, p: _opencv(deep(f), p),
            view_tolerance=1),
    Variant("tiff-float", ".tif", "TIFF", ("F",), 32, _float_tiff(1.0), view_tolerance=1),
    Variant("tiff-float-wide", ".tif", "TIFF", ("F",), 32, _float_tiff(1000.0),
            view_tolerance=6),
    Variant("tiff-rgba16-icc", ".tif", "TIFF", ("RGBA;16",), 16,
            lambda f, p: _tifffile(deep(np.dstack([f, _alpha(f)])), p, extrasamples=["unassalpha"],
                                   compression="zlib", iccprofile=srgb_profile()),
            view_tolerance=1, icc=True),
    Variant("tiff-cmyk", ".tif", "TIFF", ("CMYK",), 8,
            _pil(lambda f: _rgb(f).convert("CMYK"), compression="packbits"), view_tolerance=0),
    Variant("tiff-bilevel-g4", ".tif", "TIFF", ("1",), 1,
            _pil(lambda f: _rgb(f).convert("1"), compression="group4"), view_tolerance=130),
    Variant("gif", ".gif", "GIF", ("P",), 8,
            _pil(lambda f: _rgb(f).quantize(256, dither=Image.Dither.NONE)), view_tolerance=4),
    Variant("gif-animated", ".gif", "GIF", ("P", "P", "P"), 8,
            lambda f, p: _animated(f, p, "GIF"), view_tolerance=4),
    Variant("gif-animated-transparent", ".gif", "GIF", ("P", "P", "P"), 8,
            _animated_transparent_gif, view_tolerance=40),
    Variant("webp-lossy", ".webp", "WEBP", ("RGB",), 8, _pil(_rgb, quality=90),
            lossless=False, view_tolerance=4),
    Variant("webp-lossless-alpha", ".webp", "WEBP", ("RGBA",), 8,
            _pil(_rgba, lossless=True), view_tolerance=5),
    Variant("webp-animated", ".webp", "WEBP", ("RGBA", "RGBA", "RGBA"), 8,
            lambda f, p: _animated(f, p, "WEBP", lossless=True), view_tolerance=0),
    Variant("bmp", ".bmp", "BMP", ("RGB",), 8, _pil(_rgb), view_tolerance=0),
    Variant("ppm", ".ppm", "PPM", ("RGB",), 8, _pil(_rgb), view_tolerance=0),
    Variant("pgm16", ".pgm", "PPM", ("I;16",), 16,
            _pil(lambda f: Image.fromarray(deep(_grey(f)))), view_tolerance=1),
)

GREY_MODES = frozenset({"1", "L", "LA", "I;16", "I", "F"})


def reference_view(face: np.ndarray, mode: str) -> np.ndarray:
    """What the 8-bit view of a frame of ``mode`` made from ``face`` should look like."""
    if mode in GREY_MODES:
        return np.repeat(_grey(face)[:, :, None], 3, axis=2)
    return face


VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}


def shown_colours(frame) -> np.ndarray:
    """A :class:`faceanon.formats.Frame`'s values as shown, at full depth: palette frames
    looked up (RGBA, the colour under full transparency ignored), since an encoder may
    renumber a palette."""
    if frame.mode != "P":
        return frame.pixels
    shown = frame.palette[frame.pixels].copy()
    shown[shown[..., 3] == 0] = 0
    return shown


def boxes_mask(shape: tuple[int, ...], boxes) -> np.ndarray:
    """True inside any of the ``(x, y, w, h)`` boxes."""
    mask = np.zeros(shape[:2], bool)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = True
    return mask


def write_variant(face: np.ndarray, variant: Variant, folder: Path, *, stem: str = "face") -> Path:
    """Write ``face`` (RGB ``uint8``) as ``variant`` into ``folder``; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{variant.name}{variant.suffix}"
    variant.make(np.ascontiguousarray(face), path)
    return path


# ---------------------------------------------------------------------------------------
# Damage


@dataclass(frozen=True)
class Mutation:
    """A way to damage a file's bytes.

    ``kind``: ``truncate`` keeps the first ``fraction`` of the bytes; ``flip`` inverts one
    bit at each of ``positions`` (fractions of the length, bit ``bit``); ``zero`` clears
    ``length`` bytes from ``fraction`` on (a lost disk block).
    """

    kind: str
    fraction: float = 0.5
    positions: tuple[float, ...] = ()
    bit: int = 0
    length: int = 512

    def __repr__(self) -> str:
        if self.kind == "truncate":
            return f"truncate({self.fraction:.3f})"
        if self.kind == "flip":
            return f"flip(bit {self.bit} at {', '.join(f'{p:.3f}' for p in self.positions)})"
        return f"zero({self.length} bytes at {self.fraction:.3f})"


def mutate(data: bytes, mutation: Mutation) -> bytes:
    """The damaged copy of ``data``; never equal to ``data`` when ``data`` is not empty."""
    if not data:
        return data
    size = len(data)
    if mutation.kind == "truncate":
        return data[: min(int(size * mutation.fraction), size - 1)]
    damaged = bytearray(data)
    if mutation.kind == "flip":
        for position in mutation.positions or (0.5,):
            damaged[min(int(size * position), size - 1)] ^= 1 << mutation.bit
        return bytes(damaged)
    if mutation.kind == "zero":
        start = min(int(size * mutation.fraction), size - 1)
        end = min(start + mutation.length, size)
        damaged[start:end] = b"\0" * (end - start)
        if bytes(damaged) == data:  # the span was already zero: flip its first byte
            damaged[start] ^= 0xFF
        return bytes(damaged)
    raise ValueError(f"unknown mutation {mutation.kind}")


def variants() -> st.SearchStrategy[Variant]:
    """Any supported kind of file."""
    return st.sampled_from(VARIANTS)


def mutations() -> st.SearchStrategy[Mutation]:
    """Truncations, bit flips (headers included: positions near 0) and zeroed blocks."""
    fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
    return st.one_of(
        st.builds(Mutation, kind=st.just("truncate"), fraction=fraction),
        st.builds(
            Mutation,
            kind=st.just("flip"),
            positions=st.lists(
                st.one_of(fraction, st.floats(min_value=0.0, max_value=0.02)),
                min_size=1, max_size=8,
            ).map(tuple),
            bit=st.integers(min_value=0, max_value=7),
        ),
        st.builds(
            Mutation, kind=st.just("zero"), fraction=fraction,
            length=st.integers(min_value=1, max_value=4096),
        ),
    )


@dataclass(frozen=True)
class FuzzInput:
    """One file of a fuzz corpus: which face, which kind, and the damage (``None``: intact)."""

    path: Path
    face: int
    variant: Variant
    mutation: Mutation | None


def random_mutation(rng: random.Random) -> Mutation:
    """A mutation drawn from ``rng``, covering the same kinds as :func:`mutations`."""
    kind = rng.choice(["truncate", "flip", "zero"])
    if kind == "truncate":
        return Mutation("truncate", fraction=rng.random())
    if kind == "flip":
        positions = tuple(
            rng.random() * (0.02 if rng.random() < 0.5 else 1.0)
            for _ in range(rng.randint(1, 8))
        )
        return Mutation("flip", positions=positions, bit=rng.randint(0, 7))
    return Mutation("zero", fraction=rng.random(), length=rng.randint(1, 4096))


def fuzz_corpus(
    faces: Sequence[np.ndarray], folder: Path, *, seed: int = 0, damaged_per_file: int = 2
) -> list[FuzzInput]:
    """Write every variant of every face, and ``damaged_per_file`` damaged copies of each.

    The damage is drawn from ``random.Random(seed)``: the same seed damages the same
    places on every machine. File names are unique in ``folder`` and keep the variant's
    suffix.
    """
    rng = random.Random(seed)
    corpus: list[FuzzInput] = []
    for face_index, face in enumerate(faces):
        for variant in VARIANTS:
            intact = write_variant(face, variant, folder, stem=f"face{face_index}")
            corpus.append(FuzzInput(intact, face_index, variant, None))
            data = intact.read_bytes()
            for copy in range(damaged_per_file):
                mutation = random_mutation(rng)
                damaged = intact.with_name(f"{intact.stem}-damaged{copy}{variant.suffix}")
                damaged.write_bytes(mutate(data, mutation))
                corpus.append(FuzzInput(damaged, face_index, variant, mutation))
    return corpus


def encoded(picture: Image.Image, fmt: str, **options) -> bytes:
    """A picture's bytes in ``fmt``: for building odd files by hand in tests."""
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()
