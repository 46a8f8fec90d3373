"""Image documents: every frame of a photo file at its own depth, written back as the same kind.

``faceanon anonymize`` must hand back the kind of file it was given: a 16-bit grey PNG stays
a 16-bit grey PNG, a multi-page TIFF keeps every page, an animated GIF keeps its frames,
timing and loop, a CMYK JPEG stays CMYK. This module reads such a file into an
:class:`ImageDocument` (the frames as arrays at their own depth and mode, plus what is needed
to write the same kind back), gives an 8-bit RGB view of each frame for detection and the
anonymization methods (:func:`rgb_view`), puts the anonymized 8-bit pixels back at the
frame's own depth (:func:`merge_anonymized`), and writes the document (:func:`write_document`).

Guarantees
----------
* Outside the anonymized boxes a merged frame equals the input frame exactly, at full depth.
  Lossless formats (PNG, TIFF other than JPEG-compressed, BMP, PPM, GIF, lossless WebP)
  keep those values in the file; JPEG and lossy WebP re-encode them (JPEG with the input's
  quantization tables and chroma subsampling, so the loss is one generation).
* Inside the boxes every pixel comes from the anonymized 8-bit image, scaled to the frame's
  depth; alpha is made opaque there, so the alpha channel cannot carry the face's outline
  and what a viewer sees is the anonymized face.
* EXIF orientation is applied when reading (frames are upright) and no metadata is written
  except the ICC colour profile: no EXIF, XMP, comments, text chunks or TIFF tags.
* Every frame is written, with its duration: GIF, APNG and WebP encoders merge identical
  consecutive frames into one (the animation plays the same but the frame count drops),
  and anonymizing makes such frames (two frames whose only difference was the face), so
  the writers here keep them apart (see :func:`write_document`).
* Files are written through :func:`faceanon.imageio.atomic_output`: a temporary file renamed
  into place once complete, with the permissions the umask gives.
* Reading refuses, with :class:`ImageReadError` naming the file: missing, empty, truncated or
  corrupt files, formats outside :data:`SUPPORTED_FORMATS`, modes it cannot write back, and
  images above the pixel limit (:func:`default_max_pixels`) *before* decoding them.

Which files are images
----------------------
:data:`DOCUMENT_SUFFIXES` (this module) is wider than :data:`faceanon.imageio.IMAGE_SUFFIXES`
(TIFF, GIF and the PNM family added). The narrow list still decides what a dataset holds
(:mod:`faceanon.datasets`) and what the LFW download keeps (:mod:`faceanon.fetch`), so no
dataset fingerprint changes. A caller walking a folder tries every file by default (a file it
cannot read is an error naming it) and skips files failing :func:`is_document_path` only when
its user asks to ignore unknown files.

Known limits
------------
* An animated GIF frame that composites to more than 256 colours (frames with different
  local palettes) is held as RGB and re-quantized on writing: outside the faces it is then
  close to, not equal to, the input.
* 16-bit colour TIFF is written by tifffile, which compresses with deflate only: an LZW or
  JPEG-compressed input comes back deflate-compressed (lossless). A TIFF compression
  Pillow cannot write for a page's mode falls back to deflate as well.
* 16-bit grey+alpha PNG is refused: neither Pillow nor OpenCV writes it back.
* Decoders of damaged files (libpng, libtiff, OpenCV) print their own lines on stderr
  before the error is raised here.
* The view of a CMYK frame uses Pillow's naive conversion (no colour management); the ICC
  profile is written back unchanged.
"""

from __future__ import annotations

import io
import itertools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError

from faceanon.imageio import IMAGE_SUFFIXES, ImageReadError, atomic_output

#: Pillow format names read and written back. MPO (a JPEG with extra pictures, as cameras
#: write) is read as its primary picture and written back as a plain JPEG.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "GIF", "WEBP", "BMP", "PPM"})

#: Suffixes ``faceanon anonymize`` treats as images when walking a folder.
DOCUMENT_SUFFIXES = IMAGE_SUFFIXES | frozenset(
    {".jpe", ".jfif", ".tif", ".tiff", ".gif", ".ppm", ".pnm", ".pbm"}
)

#: Frame modes: Pillow's names, plus ``RGB;16`` and ``RGBA;16`` for 16 bits per channel
#: colour, which Pillow cannot hold (it silently reduces them to 8 bits; OpenCV reads them).
FRAME_MODES = frozenset(
    {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "RGB;16", "RGBA;16"}
)

#: Peak resident memory of ``faceanon anonymize`` per input pixel (bytes) for one RGB JPEG
#: with HOG detection and blur. ``python benchmarks/image_memory.py`` measured a
#: least-squares slope of 46.9 and 48.7-49.6 bytes per pixel at 9-36 MP (1.7 GB at 36 MP;
#: the HOG detector's upsampled copy dominates; reading, blurring and writing alone cost
#: 13.4); rerun it when the pipeline changes: it prints the ratio of this value to the
#: measurement, which must stay at or above 1.
PEAK_BYTES_PER_PIXEL = 50

Box = tuple[int, int, int, int]


class UnsupportedImageError(ImageReadError):
    """A readable image this module cannot write back as the same kind (format or mode)."""


class ImageTooLargeError(ImageReadError):
    """An image above the pixel limit, refused before its pixels are decoded."""


class ImageWriteError(OSError):
    """A document could not be written; the message names the output file."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Frame:
    """One frame (page) of a document, at its own depth.

    Attributes
    ----------
    pixels : ndarray
        ``(H, W)`` for ``1`` (bool), ``L``, ``P`` (palette indices), ``I;16`` (uint16),
        ``I`` (int32) and ``F`` (float32); ``(H, W, C)`` for ``LA``, ``RGB``, ``RGBA``,
        ``CMYK`` (uint8) and ``RGB;16``, ``RGBA;16`` (uint16).
    mode : str
        One of :data:`FRAME_MODES`.
    palette : ndarray or None
        ``(N, 4)`` RGBA uint8 for mode ``P``: alpha is 0 for a transparent entry.
    duration_ms : float or None
        How long the frame shows, for animations.
    value_range : (float, float)
        The pixel values that map to 0 and 255 in the 8-bit view: the type's full range for
        integer depths, ``(0, 1)`` for float data inside it, else the data's own finite
        minimum and maximum (floats and 32-bit integers have no fixed scale).
    """

    pixels: np.ndarray
    mode: str
    palette: np.ndarray | None = None
    duration_ms: float | None = None
    value_range: tuple[float, float] = (0.0, 255.0)

    @property
    def bit_depth(self) -> int:
        """Bits per sample: 1, 8, 16 or 32."""
        if self.mode == "1":
            return 1
        return self.pixels.dtype.itemsize * 8

    @property
    def has_alpha(self) -> bool:
        if self.mode == "P":
            return bool((self.palette[:, 3] < 255).any())
        return self.mode in {"LA", "RGBA", "RGBA;16"}

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.pixels.shape[1], self.pixels.shape[0]


@dataclass(frozen=True)
class ImageDocument:
    """An image file's frames and what is needed to write the same kind of file back.

    Attributes
    ----------
    path : Path or None
        The file it was read from.
    format : str
        Pillow's format name of the file (one of :data:`SUPPORTED_FORMATS`, MPO read as
        JPEG).
    frames : tuple of Frame
        Every frame or page, upright.
    icc_profile : bytes or None
        The colour profile, the only metadata written back.
    loop : int or None
        Animation loop count (0: forever); ``None`` when the file has none.
    encoding : dict
        Format options that make the output the same kind: JPEG ``qtables``,
        ``subsampling``, ``progressive``; TIFF ``compression``; WebP ``lossless``.
    """

    path: Path | None
    format: str
    frames: tuple[Frame, ...]
    icc_profile: bytes | None = None
    loop: int | None = None
    encoding: dict = field(default_factory=dict)

    def rgb_frames(self) -> list[np.ndarray]:
        """The 8-bit RGB view of every frame (see :func:`rgb_view`)."""
        return [rgb_view(frame) for frame in self.frames]

    def with_anonymized(
        self, anonymized: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]
    ) -> ImageDocument:
        """A copy whose frames carry the anonymized pixels inside each frame's boxes.

        Parameters
        ----------
        anonymized : sequence of ndarray
            One RGB ``uint8`` image per frame, as a method returned it.
        boxes : sequence of sequence of (x, y, w, h)
            The boxes anonymized in each frame.
        """
        if not (len(anonymized) == len(boxes) == len(self.frames)):
            raise ValueError(
                f"{self.path}: {len(self.frames)} frames but {len(anonymized)} anonymized "
                f"images and {len(boxes)} box lists"
            )
        frames = tuple(
            merge_anonymized(frame, image, frame_boxes)
            for frame, image, frame_boxes in zip(self.frames, anonymized, boxes, strict=True)
        )
        return replace(self, frames=frames)


def is_document_path(path: os.PathLike | str) -> bool:
    """True when the file name has one of :data:`DOCUMENT_SUFFIXES`."""
    return Path(path).suffix.lower() in DOCUMENT_SUFFIXES


# ---------------------------------------------------------------------------------------
# The pixel limit


def available_memory_bytes() -> int | None:
    """Memory this process can still take: the smaller of the system's and its cgroup's.

    ``None`` where neither can be read (not Linux).
    """
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except OSError:
        pass
    # A container's limit (cgroup v2) kills the process long before the host runs out.
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            candidates.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def default_max_pixels() -> int:
    """The largest image (pixels, all frames together) read without being asked for more.

    Pillow's own threshold (``Image.MAX_IMAGE_PIXELS``, 89.5 MP, above which Pillow only
    warns up to twice that), which implies about 4.2 GiB at :data:`PEAK_BYTES_PER_PIXEL`,
    lowered to what half of the available memory (:func:`available_memory_bytes`) holds at
    that rate: a photo too large for this machine is refused with a message instead of
    ending in an out-of-memory kill (4 GiB available: 42.9 MP, an 8000 x 5000 photo).
    """
    pillow_limit = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
    available = available_memory_bytes()
    if available is None:
        return pillow_limit
    return max(min(pillow_limit, available // 2 // PEAK_BYTES_PER_PIXEL), 1)


def _check_pixels(path: Path, width: int, height: int, total: int, max_pixels: int) -> None:
    if width * height > max_pixels or total > max_pixels:
        needed = total * PEAK_BYTES_PER_PIXEL / 2**30
        what = f"{width}x{height}" if total == width * height else f"{total} pixels in all frames"
        raise ImageTooLargeError(
            path,
            f"too large: {what} ({total / 1e6:.1f} MP) is above the limit of "
            f"{max_pixels / 1e6:.1f} MP (it would need about {needed:.1f} GiB); raise the "
            "pixel limit if this machine has the memory",
        )


# ---------------------------------------------------------------------------------------
# Reading


def read_document(
    path: os.PathLike | str, *, max_pixels: int | None = None, first_frame_only: bool = False
) -> ImageDocument:
    """Read every frame of an image file at its own depth, upright.

    Parameters
    ----------
    path : path-like
        The file; its content, not its suffix, decides the format.
    max_pixels : int, optional
        Refuse images with more pixels than this (per frame and over all frames), checked
        from the header before decoding. Default: :func:`default_max_pixels`.
    first_frame_only : bool
        Read only the first frame (page) of a multi-frame file.

    Returns
    -------
    ImageDocument

    Raises
    ------
    ImageReadError
        The file is missing, empty, truncated, corrupt or not an image.
    UnsupportedImageError
        An image in a format or mode that cannot be written back as the same kind.
    ImageTooLargeError
        More pixels than ``max_pixels``.
    """
    path = Path(path)
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read ({error.strerror})") from None
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    if size == 0:
        raise ImageReadError(path, "file is empty")

    # face_recognition (and other libraries) switch Pillow's process-wide flag that
    # silently pads truncated files; a privacy tool must report those, so force it off.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Pillow refuses images above twice its own threshold when opening them, before the
    # limit here (checked from the header, before decoding) is consulted: raise its
    # threshold to this limit for the read, so that a larger max_pixels is honoured.
    pillow_threshold = Image.MAX_IMAGE_PIXELS
    if pillow_threshold is not None and limit > pillow_threshold:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            # The pixel limit below is the one that counts; Pillow's warning (89-179 MP)
            # would otherwise let a too-large image through with a line on stderr.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow warns about damaged EXIF blocks and reads on; orientation is then
            # taken as upright, and the caller needs no second message about it.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            return _read(path, limit, first_frame_only)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(path, f"too large: {error}") from None
    except MemoryError:
        raise ImageTooLargeError(path, "too large: out of memory while decoding") from None
    except Exception as error:  # noqa: BLE001
        # Decoders fail on damaged bytes with every kind of exception (OSError, SyntaxError,
        # struct.error, EOFError, IndexError, ZeroDivisionError...): all mean the same for
        # the caller, a file that cannot be read, so each becomes one error naming it.
        raise ImageReadError(
            path, f"corrupt or truncated image ({type(error).__name__}: {error})"
        ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
        Image.MAX_IMAGE_PIXELS = pillow_threshold


def _read(path: Path, limit: int, first_frame_only: bool) -> ImageDocument:
    # Pillow reads from the file as it decodes; the file's bytes are held in memory only
    # where another reader needs them (16-bit colour, WebP's encoding).
    with Image.open(path) as opened:
        kind = opened.format
        if kind not in SUPPORTED_FORMATS:
            raise UnsupportedImageError(
                path,
                f"{kind} images are not supported (supported: "
                f"{', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))})",
            )
        width, height = opened.size
        _check_pixels(path, width, height, width * height, limit)
        count = 1 if first_frame_only or kind == "MPO" else getattr(opened, "n_frames", 1)
        if kind in {"GIF", "WEBP"}:  # every frame has the canvas size: refuse up front
            _check_pixels(path, width, height, width * height * count, limit)
        if kind == "GIF":
            _check_gif_complete(path)
        icc_profile = opened.info.get("icc_profile") or None
        loop = opened.info.get("loop") if count > 1 or kind == "GIF" else None
        if kind == "WEBP" and count == 1:
            loop = None  # Pillow reports loop=1 for every still WebP
        encoding = _encoding_of(path, opened)
        wide = _pillow_reduces_depth(opened)
        if wide:
            if wide.startswith("LA"):
                raise UnsupportedImageError(
                    path, "16-bit grey+alpha PNG is not supported (it cannot be written back)"
                )
            frames = _read_wide_colour(path, opened, count, limit)
        else:
            frames = []
            total = 0
            for index in range(count):
                opened.seek(index)
                total += opened.size[0] * opened.size[1]
                _check_pixels(path, *opened.size, total, limit)
                opened.load()
                frames.append(_frame_from_pillow(path, opened, kind))
    return ImageDocument(
        path=path,
        format="JPEG" if kind == "MPO" else kind,
        frames=tuple(frames),
        icc_profile=icc_profile,
        loop=loop,
        encoding=encoding,
    )


def _check_gif_complete(path: Path) -> None:
    # Pillow stops at the last frame it can find and reports no error, so a GIF cut
    # between two frames would lose its later frames silently; a complete GIF ends with
    # the trailer byte 0x3B (some writers pad the file with zeros after it).
    with open(path, "rb") as handle:
        handle.seek(max(path.stat().st_size - 4096, 0))
        tail = handle.read()
    if not tail.rstrip(b"\0").endswith(b";"):
        raise ImageReadError(path, "corrupt or truncated image (GIF trailer missing)")


def _encoding_of(path: Path, opened: Image.Image) -> dict:
    if opened.format in {"JPEG", "MPO"}:
        encoding = {"qtables": getattr(opened, "quantization", None) or None}
        sampling = JpegImagePlugin.get_sampling(opened)
        if sampling != -1:
            encoding["subsampling"] = sampling
        encoding["progressive"] = bool(
            opened.info.get("progressive") or opened.info.get("progression")
        )
        return encoding
    if opened.format == "TIFF":
        return {"compression": opened.info.get("compression", "raw")}
    if opened.format == "WEBP":
        return {"lossless": _webp_is_lossless(path.read_bytes())}
    return {}


def _webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP file's first picture is lossless (VP8L) rather than lossy (VP8).

    Pillow does not report it. A WebP file is a RIFF container: a simple file holds one
    ``VP8 `` or ``VP8L`` chunk; an extended one (``VP8X``) holds them after optional
    ``ICCP``/``ANIM``/``ALPH`` chunks, an animation inside ``ANMF`` frame chunks whose
    payload starts with a 16-byte frame header.
    """
    offset, end = 12, len(data)
    while offset + 8 <= end:
        fourcc = data[offset : offset + 4]
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        if fourcc == b"ANMF":
            offset += 8 + 16  # into the first frame's sub-chunks
            continue
        offset += 8 + length + (length & 1)  # chunks are padded to even length
    return False


def _pillow_reduces_depth(opened: Image.Image) -> str | None:
    """The raw mode of 16-bit-per-channel colour that Pillow would reduce to 8 bits.

    Pillow decodes 16-bit colour (PNG ``RGB;16B``, TIFF ``RGB;16N``...) and 16-bit
    grey+alpha (``LA;16B``, as RGBA) into 8-bit modes without a word; only its raw mode
    still says what the file holds. ``None`` when Pillow keeps the depth.
    """
    for tile in opened.tile or []:
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) else args
        if isinstance(rawmode, str) and ";16" in rawmode and opened.mode not in _GREY16:
            return rawmode
    return None


_GREY16 = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _orientation_of(opened: Image.Image) -> int:
    try:
        return int(opened.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block means "no orientation"
        return 1


def _frame_from_pillow(path: Path, opened: Image.Image, kind: str) -> Frame:
    duration = opened.info.get("duration")
    animated = getattr(opened, "n_frames", 1) > 1
    duration = float(duration) if duration is not None and (animated or kind == "GIF") else None
    upright = ImageOps.exif_transpose(opened) or opened
    mode = upright.mode
    if mode in {"I;16B", "I;16L", "I;16N"}:
        mode = "I;16"
    if mode == "P":
        indices = np.asarray(upright, dtype=np.uint8)
        palette = _palette_of(upright)
        return Frame(indices, "P", palette=palette, duration_ms=duration)
    if mode == "PA" or mode not in FRAME_MODES:
        raise UnsupportedImageError(path, f"{kind} image mode {upright.mode} is not supported")
    if kind == "GIF":
        # Pillow composites GIF frames after the first into RGB(A); they came from
        # palettes, so return them as palette frames when they hold at most 256 colours,
        # which keeps every pixel outside the faces exact when written back.
        frame = _as_palette_frame(np.asarray(upright), duration)
        if frame is not None:
            return frame
    pixels = np.asarray(upright)
    if mode == "I;16":
        pixels = pixels.astype(np.uint16)
    elif mode == "I" and kind == "PPM":
        # Pillow holds a 16-bit PGM in a 32-bit mode; its values fit 16 bits (maxval).
        pixels, mode = pixels.astype(np.uint16), "I;16"
    elif mode == "I":
        pixels = pixels.astype(np.int32)
    elif mode == "F":
        pixels = pixels.astype(np.float32)
    pixels = np.ascontiguousarray(pixels)
    return Frame(pixels, mode, duration_ms=duration, value_range=_value_range(pixels, mode))


def _palette_of(image: Image.Image) -> np.ndarray:
    entries = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    entries = np.concatenate([entries, np.zeros((max(256 - len(entries), 0), 3), np.uint8)])
    alpha = np.full((len(entries), 1), 255, np.uint8)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and transparency < len(entries):
        alpha[transparency] = 0
    elif isinstance(transparency, bytes):
        alpha[: len(transparency), 0] = np.frombuffer(transparency, np.uint8)
    return np.concatenate([entries, alpha], axis=1)


def _as_palette_frame(pixels: np.ndarray, duration: float | None) -> Frame | None:
    channels = pixels.shape[2]
    flat = pixels.reshape(-1, channels)
    colours, indices = np.unique(flat, axis=0, return_inverse=True)
    if len(colours) > 256:
        return None
    if channels == 3:
        colours = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    else:
        colours = colours.copy()
        colours[colours[:, 3] == 0, :3] = 0  # fully transparent: one entry, colour unused
    indices = indices.reshape(pixels.shape[:2]).astype(np.uint8)
    return Frame(indices, "P", palette=colours.astype(np.uint8), duration_ms=duration)


def _value_range(pixels: np.ndarray, mode: str) -> tuple[float, float]:
    if mode in {"I;16", "RGB;16", "RGBA;16"}:
        return (0.0, 65535.0)
    if mode in {"I", "F"}:
        finite = pixels[np.isfinite(pixels)] if mode == "F" else pixels
        if finite.size == 0:
            return (0.0, 1.0)
        low, high = float(finite.min()), float(finite.max())
        if mode == "F" and low >= 0.0 and high <= 1.0:
            return (0.0, 1.0)
        if mode == "I" and low >= 0 and high <= 65535:
            return (0.0, 65535.0)  # 16-bit data in a 32-bit container
        return (low, high if high > low else low + 1.0)
    return (0.0, 255.0)


def _read_wide_colour(
    path: Path, opened: Image.Image, count: int, limit: int
) -> list[Frame]:
    """Frames of a 16-bit-per-channel colour PNG or TIFF, read with OpenCV at full depth."""
    import cv2

    orientations = []
    total = 0
    for index in range(count):
        opened.seek(index)
        total += opened.size[0] * opened.size[1]
        _check_pixels(path, *opened.size, total, limit)
        orientations.append(_orientation_of(opened))
    buffer = np.frombuffer(path.read_bytes(), np.uint8)
    if opened.format == "TIFF":
        ok, pages = cv2.imdecodemulti(buffer, cv2.IMREAD_UNCHANGED)
        if not ok or len(pages) < count:
            raise ImageReadError(path, "corrupt or truncated image (OpenCV could not decode it)")
        pages = list(pages[:count])
    else:
        page = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if page is None:
            raise ImageReadError(path, "corrupt or truncated image (OpenCV could not decode it)")
        pages = [page]
    frames = []
    for page, orientation in zip(pages, orientations, strict=True):
        pixels = _upright(_rgb_order(page), orientation)
        mode = _mode_of_array(path, pixels)
        frames.append(Frame(pixels, mode, value_range=_value_range(pixels, mode)))
    return frames


def _rgb_order(page: np.ndarray) -> np.ndarray:
    import cv2

    if page.ndim == 3 and page.shape[2] == 3:
        return cv2.cvtColor(page, cv2.COLOR_BGR2RGB)
    if page.ndim == 3 and page.shape[2] == 4:
        return cv2.cvtColor(page, cv2.COLOR_BGRA2RGBA)
    return page


def _mode_of_array(path: Path, pixels: np.ndarray) -> str:
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    modes = {
        (np.dtype(np.uint8), 1): "L",
        (np.dtype(np.uint8), 3): "RGB",
        (np.dtype(np.uint8), 4): "RGBA",
        (np.dtype(np.uint16), 1): "I;16",
        (np.dtype(np.uint16), 3): "RGB;16",
        (np.dtype(np.uint16), 4): "RGBA;16",
        (np.dtype(np.float32), 1): "F",
    }
    try:
        return modes[(pixels.dtype, channels)]
    except KeyError:
        raise UnsupportedImageError(
            path, f"{channels}-channel {pixels.dtype} pages are not supported"
        ) from None


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an array, as ``ImageOps.exif_transpose`` does."""
    steps = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    step = steps.get(orientation)
    return pixels if step is None else np.ascontiguousarray(step(pixels))


# ---------------------------------------------------------------------------------------
# The 8-bit view and the way back


def to_8bit(values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Scale values linearly so that ``value_range`` maps to 0..255, rounded and clipped.

    16-bit integers map by ``round(v * 255 / 65535)``, the inverse of :func:`from_8bit`'s
    ``v * 257``; NaN maps to 0.
    """
    if values.dtype == np.uint8:
        return values
    low, high = value_range
    if values.dtype == np.uint16 and (low, high) == (0.0, 65535.0):
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def from_8bit(values: np.ndarray, value_range: tuple[float, float], dtype) -> np.ndarray:
    """The inverse of :func:`to_8bit` for 8-bit values: back to ``dtype`` in ``value_range``."""
    dtype = np.dtype(dtype)
    values = values.astype(np.uint8)
    if dtype == np.uint8:
        return values
    low, high = value_range
    if dtype == np.uint16 and (low, high) == (0.0, 65535.0):
        return values.astype(np.uint16) * np.uint16(257)
    scaled = low + values.astype(np.float64) * ((high - low) / 255.0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        scaled = np.clip(np.rint(scaled), info.min, info.max)
    return scaled.astype(dtype)


def rgb_view(frame: Frame) -> np.ndarray:
    """The frame as RGB ``uint8`` ``(H, W, 3)``, for detection and the methods.

    Deeper frames are scaled by their :attr:`Frame.value_range`; grey is repeated into the
    three channels; alpha is dropped, not blended (as :func:`faceanon.imageio.to_rgb`);
    palette indices are looked up; CMYK is converted as Pillow does.
    """
    pixels, mode = frame.pixels, frame.mode
    if mode == "P":
        return np.ascontiguousarray(frame.palette[pixels][..., :3])
    if mode == "CMYK":
        return np.asarray(Image.fromarray(pixels, mode="CMYK").convert("RGB"))
    if mode == "1":
        grey = pixels.astype(np.uint8) * np.uint8(255)
    elif pixels.ndim == 2:
        grey = to_8bit(pixels, frame.value_range)
    elif mode == "LA":
        grey = pixels[..., 0]
    else:
        return np.ascontiguousarray(to_8bit(pixels[..., :3], frame.value_range))
    return np.repeat(grey[:, :, None], 3, axis=2)


def _luma(rgb: np.ndarray) -> np.ndarray:
    # Pillow's own RGB -> L conversion (ITU-R 601-2 luma), the one a grey file gets when
    # any program saves colour as grey.
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").convert("L"))


def _native(frame: Frame, rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB pixels in the frame's own mode and depth, alpha opaque."""
    mode, dtype = frame.mode, frame.pixels.dtype
    opaque = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    if mode == "1":
        # Dithered (Pillow's Floyd-Steinberg), not thresholded: a threshold of a blurred
        # bilevel face gives back much of its outline, a dither shows the blur itself.
        return np.asarray(Image.fromarray(_luma(rgb), mode="L").convert("1"))
    if mode == "L":
        return _luma(rgb)
    if mode == "LA":
        return np.concatenate([_luma(rgb)[..., None], opaque], axis=2)
    if mode == "RGB":
        return rgb
    if mode == "RGBA":
        return np.concatenate([rgb, opaque], axis=2)
    if mode == "CMYK":
        return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").convert("CMYK"))
    if mode in {"I;16", "I", "F"}:
        return from_8bit(_luma(rgb), frame.value_range, dtype)
    if mode == "RGB;16":
        return from_8bit(rgb, frame.value_range, dtype)
    if mode == "RGBA;16":
        return from_8bit(np.concatenate([rgb, opaque], axis=2), frame.value_range, dtype)
    if mode == "P":
        return _nearest_opaque_entry(frame.palette, rgb)
    raise ValueError(f"unknown frame mode {mode}")


def _nearest_opaque_entry(palette: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Index of the nearest fully opaque palette colour for each pixel (Pillow's quantizer).

    Transparent entries are left out so that no anonymized pixel turns transparent.
    """
    opaque = np.flatnonzero(palette[:, 3] == 255)
    if opaque.size == 0:
        raise ValueError("the palette has no opaque colour to draw the anonymized face with")
    reference = Image.new("P", (1, 1))
    reference.putpalette(palette[opaque, :3].ravel().tobytes())
    mapped = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").quantize(
        palette=reference, dither=Image.Dither.NONE
    )
    return opaque[np.asarray(mapped)].astype(np.uint8)


def merge_anonymized(frame: Frame, anonymized: np.ndarray, boxes: Sequence[Box]) -> Frame:
    """The frame with the anonymized 8-bit pixels put back inside ``boxes``, at full depth.

    Parameters
    ----------
    frame : Frame
        The input frame.
    anonymized : ndarray
        RGB ``uint8`` ``(H, W, 3)``: what a method made of ``rgb_view(frame)``.
    boxes : sequence of (x, y, w, h)
        The anonymized regions; clipped to the frame, empty ones ignored.

    Returns
    -------
    Frame
        Outside the boxes, the input's values exactly; inside, every pixel converted from
        ``anonymized`` to the frame's mode and depth (grey by Pillow's luma, deeper frames
        by :func:`from_8bit`, palette frames to the nearest opaque palette colour, bilevel
        frames dithered), with alpha opaque.
    """
    from faceanon.detect import clip_box

    anonymized = np.asarray(anonymized)
    height, width = frame.pixels.shape[:2]
    if anonymized.shape != (height, width, 3) or anonymized.dtype != np.uint8:
        raise ValueError(
            f"anonymized image must be uint8 {(height, width, 3)}, got "
            f"{anonymized.dtype} {anonymized.shape}"
        )
    pixels = frame.pixels.copy()
    for box in boxes:
        clipped = clip_box(box, pixels.shape)
        if clipped is None:
            continue
        x, y, w, h = clipped
        pixels[y : y + h, x : x + w] = _native(frame, anonymized[y : y + h, x : x + w])
    return replace(frame, pixels=pixels)


# ---------------------------------------------------------------------------------------
# Writing

#: Quality of lossy WebP outputs (Pillow cannot tell a lossy WebP's quality; 95 keeps
#: the generation loss small).
WEBP_QUALITY = 95


def write_document(path: os.PathLike | str, document: ImageDocument) -> None:
    """Write a document as the same kind of file it was read from, atomically.

    Format, frame modes, bit depth, frame count, durations, loop and ICC profile are kept;
    no other metadata is written. See the module documentation for what is exact.

    Animations keep every frame even where consecutive frames are identical, which
    Pillow's GIF and APNG writers and libwebp's animation encoder would merge: an APNG
    gives such frames different disposal methods (the picture shown is the same, Pillow
    accounts for the disposal when it computes each frame's changes); a GIF with such
    frames is written frame by frame in full through Pillow's GIF frame writer
    (``GifImagePlugin.getheader``/``getdata``); an animated WebP is always assembled
    from frames encoded one by one (lossy encoding merges frames that are merely
    similar), each a complete frame in an ``ANMF`` chunk of the WebP container.

    Raises
    ------
    ImageWriteError
        When the file cannot be encoded or written; nothing is left under ``path`` and no
        temporary file remains.
    """
    path = Path(path)
    try:
        encoded = _encode(document)
        with atomic_output(path) as handle:
            handle.write(encoded)
    except ImageWriteError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ImageWriteError(path, f"could not write ({type(error).__name__}: {error})") from None


def _encode(document: ImageDocument) -> bytes:
    modes = {frame.mode for frame in document.frames}
    if modes & {"RGB;16", "RGBA;16"}:
        return _encode_wide_colour(document)
    if len(document.frames) > 1 and document.format not in {"TIFF", "GIF", "WEBP", "PNG"}:
        # Pillow would write the first frame and drop the others without a word.
        raise ValueError(f"{document.format} holds one frame, the document has several")
    pictures = [_to_pillow(frame) for frame in document.frames]
    if len(pictures) > 1 and document.format == "WEBP":
        return _encode_webp_animation(document, pictures)
    if len(pictures) > 1 and document.format == "GIF" and _repeats_a_frame(document.frames):
        return _encode_gif_frame_by_frame(document, pictures)
    options = _save_options(document, pictures)
    buffer = io.BytesIO()
    first, rest = pictures[0], pictures[1:]
    if rest:
        options.update(save_all=True, append_images=rest)
    try:
        first.save(buffer, format=document.format, **options)
    except (OSError, ValueError) as error:
        compression = options.get("compression")
        if document.format != "TIFF" or compression in {None, "raw", "tiff_adobe_deflate"}:
            raise
        # Pillow cannot write every TIFF compression it reads (JPEG for deep or alpha
        # pages, CCITT for grey...): keep the file lossless instead.
        del error
        options["compression"] = "tiff_adobe_deflate"
        buffer = io.BytesIO()
        first.save(buffer, format=document.format, **options)
    return buffer.getvalue()


def _to_pillow(frame: Frame) -> Image.Image:
    pixels = np.ascontiguousarray(frame.pixels)
    if frame.mode == "P":
        picture = Image.frombytes("P", frame.size, pixels.tobytes())
        picture.putpalette(frame.palette[:, :3].ravel().tobytes())
        alpha = frame.palette[:, 3]
        if (alpha < 255).any():
            picture.info["transparency"] = alpha.tobytes()
        return picture
    if frame.mode == "CMYK":
        return Image.frombytes("CMYK", frame.size, pixels.tobytes())
    if frame.mode == "1":
        return Image.fromarray(pixels.astype(bool))
    return Image.fromarray(pixels)


def _save_options(document: ImageDocument, pictures: list[Image.Image]) -> dict:
    kind, encoding = document.format, document.encoding
    options: dict = {}
    if document.icc_profile and kind in {"JPEG", "PNG", "TIFF", "WEBP"}:
        options["icc_profile"] = document.icc_profile
    if kind == "JPEG":
        options["exif"] = b""
        if encoding.get("qtables"):
            options["qtables"] = encoding["qtables"]
        else:
            options["quality"] = 95
        if "subsampling" in encoding and pictures[0].mode != "L":
            options["subsampling"] = encoding["subsampling"]
        options["progressive"] = encoding.get("progressive", False)
    elif kind == "TIFF":
        options["compression"] = encoding.get("compression", "raw")
    elif kind == "WEBP":
        options["exif"] = b""
        options["lossless"] = encoding.get("lossless", False)
        options["quality"] = 100 if options["lossless"] else WEBP_QUALITY
        # libwebp's lossless mode rewrites colours under fully transparent pixels unless
        # asked to keep them; the pixels outside the faces must come back exactly.
        options["exact"] = options["lossless"]
    elif kind == "PNG":
        _palette_transparency(pictures, as_bytes=True)
    elif kind == "GIF":
        _palette_transparency(pictures, as_bytes=False)
    if kind in {"GIF", "WEBP", "PNG"} and len(pictures) > 1:  # PNG: animated (APNG)
        options["duration"] = [round(frame.duration_ms or 0) for frame in document.frames]
        if kind == "PNG":
            options["disposal"] = _apng_disposals(document.frames)
        if document.loop is not None:
            options["loop"] = document.loop
    elif kind == "GIF" and document.frames[0].duration_ms:
        options["duration"] = round(document.frames[0].duration_ms)
    if kind == "GIF" and document.loop is not None:
        options["loop"] = document.loop
    return options


def _palette_transparency(pictures: list[Image.Image], *, as_bytes: bool) -> None:
    # PNG keeps one alpha per palette entry (tRNS); GIF only one transparent index.
    for picture in pictures:
        alpha = picture.info.pop("transparency", None)
        if picture.mode != "P" or alpha is None:
            continue
        if as_bytes:
            picture.info["transparency"] = alpha
        else:
            transparent = [index for index, value in enumerate(alpha) if value == 0]
            if transparent:
                picture.info["transparency"] = transparent[0]


def _shown(frame: Frame) -> np.ndarray:
    """A frame's values as an encoder compares them: palette frames looked up (RGBA, the
    colour under full transparency ignored)."""
    if frame.mode != "P":
        return frame.pixels
    rgba = frame.palette[frame.pixels]
    rgba[rgba[..., 3] == 0] = 0
    return rgba


def _same_picture(a: Frame, b: Frame) -> bool:
    return a.mode == b.mode and np.array_equal(_shown(a), _shown(b))


def _repeats_a_frame(frames: Sequence[Frame]) -> bool:
    """Whether two consecutive frames show the same: an encoder would merge them."""
    return any(_same_picture(a, b) for a, b in itertools.pairwise(frames))


def _apng_disposals(frames: Sequence[Frame]) -> list[int]:
    """APNG disposal per frame: a frame shown the same as the one before it gets another
    disposal method than that one, since Pillow merges a repeat with the same method."""
    from PIL.PngImagePlugin import Disposal

    disposals = [Disposal.OP_NONE]
    for previous, current in itertools.pairwise(frames):
        if _same_picture(previous, current) and disposals[-1] == Disposal.OP_NONE:
            disposals.append(Disposal.OP_BACKGROUND)
        else:
            disposals.append(Disposal.OP_NONE)
    return [int(disposal) for disposal in disposals]


def _encode_gif_frame_by_frame(document: ImageDocument, pictures: list[Image.Image]) -> bytes:
    """An animated GIF written with every frame complete, none merged into another.

    Each frame is drawn whole over a cleared canvas (disposal 2 of the frame before it), so
    its transparent pixels show nothing of the earlier frames, as in the document.
    """
    from PIL import GifImagePlugin

    frames = [_gif_palette_picture(picture) for picture in pictures]
    first = frames[0].copy()
    first.info["version"] = b"89a"  # graphic control extensions (timing) need GIF89a
    info = {} if document.loop is None else {"loop": document.loop}
    header, _ = GifImagePlugin.getheader(first, info=info)
    parts = list(header)
    for picture, frame in zip(frames, document.frames, strict=True):
        params = {"duration": round(frame.duration_ms or 0), "disposal": 2,
                  "include_color_table": True}
        if "transparency" in picture.info:
            params["transparency"] = picture.info["transparency"]
        parts.extend(GifImagePlugin.getdata(picture, **params))
    parts.append(b";")  # the trailer
    return b"".join(bytes(part) for part in parts)


def _gif_palette_picture(picture: Image.Image) -> Image.Image:
    """A picture in GIF's palette mode, with at most one transparent palette index."""
    if picture.mode != "P":
        # Frames held as RGB(A) (more than 256 colours): quantized as Pillow's GIF writer
        # does; a transparent palette colour becomes the transparent index.
        converted = picture.convert("P", palette=Image.Palette.ADAPTIVE)
        if converted.palette.mode == "RGBA":
            for colour, index in converted.palette.colors.items():
                if colour[3] == 0:
                    converted.info["transparency"] = index
                    break
        return converted
    alpha = picture.info.pop("transparency", None)
    if alpha is not None:
        transparent = [index for index, value in enumerate(alpha) if value == 0]
        if transparent:
            picture.info["transparency"] = transparent[0]
    return picture


#: Largest frame duration an animated WebP holds (24 bits of milliseconds).
_WEBP_MAX_DURATION_MS = 2**24 - 1


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    # RIFF chunks are padded to an even length; the size field does not count the pad.
    padding = b"\0" if len(payload) % 2 else b""
    return fourcc + len(payload).to_bytes(4, "little") + payload + padding


def _webp_frame_chunks(data: bytes) -> bytes:
    """The picture chunks (``ALPH``, ``VP8 ``, ``VP8L``) of a one-frame WebP file."""
    chunks, offset = [], 12
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if fourcc in {b"ALPH", b"VP8 ", b"VP8L"}:
            chunks.append(_riff_chunk(fourcc, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length + (length & 1)
    return b"".join(chunks)


def _encode_webp_animation(document: ImageDocument, pictures: list[Image.Image]) -> bytes:
    """An animated WebP assembled from frames encoded one by one with Pillow.

    Follows the WebP container specification: ``VP8X`` (canvas size, flags), ``ICCP``,
    ``ANIM`` (background, loop count), then one ``ANMF`` per frame holding the complete
    frame at offset (0, 0), not blended with and not disposed after the frame before.
    """
    lossless = document.encoding.get("lossless", False)
    width, height = pictures[0].size
    frames = []
    has_alpha = False
    for picture, frame in zip(pictures, document.frames, strict=True):
        duration = round(frame.duration_ms or 0)
        if duration > _WEBP_MAX_DURATION_MS:
            raise ValueError(f"a WebP frame cannot last {duration} ms")
        has_alpha = has_alpha or picture.mode in {"RGBA", "LA", "PA"}
        single = io.BytesIO()
        picture.save(single, format="WEBP", lossless=lossless, exact=lossless,
                     quality=100 if lossless else WEBP_QUALITY)
        header = (
            (0).to_bytes(3, "little") + (0).to_bytes(3, "little")  # x / 2, y / 2
            + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
            + duration.to_bytes(3, "little")
            + bytes([0b10])  # do not blend, do not dispose
        )
        frames.append(_riff_chunk(b"ANMF", header + _webp_frame_chunks(single.getvalue())))
    flags = 0b10 | (0b1_0000 if has_alpha else 0) | (0b10_0000 if document.icc_profile else 0)
    chunks = [_riff_chunk(b"VP8X", bytes([flags]) + bytes(3)
                          + (width - 1).to_bytes(3, "little")
                          + (height - 1).to_bytes(3, "little"))]
    if document.icc_profile:
        chunks.append(_riff_chunk(b"ICCP", document.icc_profile))
    loop = 0 if document.loop is None else document.loop
    chunks.append(_riff_chunk(b"ANIM", bytes(4) + loop.to_bytes(2, "little")))
    body = b"WEBP" + b"".join(chunks) + b"".join(frames)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _encode_wide_colour(document: ImageDocument) -> bytes:
    """16-bit-per-channel colour: PNG through OpenCV, TIFF through tifffile (with ICC)."""
    import cv2

    if document.format == "PNG":
        frame = document.frames[0]
        pixels = _bgr_order(frame.pixels)
        if not document.icc_profile:
            ok, encoded = cv2.imencode(".png", pixels)
            if not ok:
                raise ValueError("OpenCV could not encode the 16-bit PNG")
            return encoded.tobytes()
        ok, encoded = False, None
        if hasattr(cv2, "imencodeWithMetadata"):
            profile = [np.frombuffer(document.icc_profile, np.uint8)]
            ok, encoded = cv2.imencodeWithMetadata(
                ".png", pixels, [cv2.IMAGE_METADATA_ICCP], profile
            )
        # OpenCV writes PNG colour profiles only since its metadata API (4.12/4.13); an
        # older one would drop the profile silently, so check that it is there.
        if ok:
            with Image.open(io.BytesIO(encoded.tobytes())) as written:
                ok = written.info.get("icc_profile") == document.icc_profile
        if not ok:
            raise ValueError(
                f"OpenCV {cv2.__version__} cannot write the colour profile of a 16-bit PNG"
            )
        return encoded.tobytes()
    if document.format == "TIFF":
        import tifffile

        compression = document.encoding.get("compression", "raw")
        # tifffile compresses with zlib by itself; the input's LZW or JPEG would need
        # imagecodecs, so every compressed input becomes deflate (lossless).
        compress = None if compression == "raw" else "zlib"
        buffer = io.BytesIO()
        with tifffile.TiffWriter(buffer) as writer:
            for frame in document.frames:
                pixels = frame.pixels
                if frame.mode == "F":
                    pixels = pixels.astype(np.float32)
                colour = pixels.ndim == 3
                writer.write(
                    pixels,
                    photometric="rgb" if colour else "minisblack",
                    extrasamples=["unassalpha"] if colour and pixels.shape[2] == 4 else None,
                    compression=compress,
                    iccprofile=document.icc_profile,
                    metadata=None,  # no ImageDescription
                    software=False,  # no Software tag
                )
        return buffer.getvalue()
    raise ValueError(f"16-bit colour {document.format} cannot be written")


def _bgr_order(pixels: np.ndarray) -> np.ndarray:
    import cv2

    if pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)


__all__ = [
    "DOCUMENT_SUFFIXES",
    "FRAME_MODES",
    "PEAK_BYTES_PER_PIXEL",
    "SUPPORTED_FORMATS",
    "Frame",
    "ImageDocument",
    "ImageReadError",
    "ImageTooLargeError",
    "ImageWriteError",
    "UnsupportedImageError",
    "available_memory_bytes",
    "default_max_pixels",
    "from_8bit",
    "is_document_path",
    "merge_anonymized",
    "read_document",
    "rgb_view",
    "to_8bit",
    "write_document",
]
