"""Attackers: how the recognizer is pointed at an anonymized face.

The seed study measured one attacker: the recognizer's own face detector, then its
descriptor, on the anonymized image. When the detector finds no face, that attacker has
nothing, and the method looks private. A slightly smarter attacker knows where the face is
(the anonymized region is plain to see), knows the method and its strength (Kerckhoffs:
the algorithm is public, only a secret such as a noise seed is not), and undoes what can be
undone before encoding. Privacy is what the strongest of them achieves.

Every attack is an :class:`Attack`. The pipeline calls, once per anonymized image::

    encoding = attack.encode(anonymized, original_box=box, method="noise", k=30,
                             backend=backend)

which is two separable steps, so that a filter costs one encoding and results can be cached
by pixels:

1. :meth:`Attack.restore`: undo the method on the anonymized region (a filter attack) or
   leave the image as it is. Cheap (milliseconds); returns a new image.
2. :meth:`Attack.encode_restored`: find the face and run the descriptor. The ``detect``
   attack runs the backend's detector, as today; the located and filter attacks put the
   descriptor straight into the original's face box (no detection, so a face never
   "disappears", and it is cheaper than ``detect``); ``detect:retinaface`` and
   ``detect:cnn`` use a stronger detector, then the descriptor in the box it found.
   :meth:`Attack.cache_key` says under which (encoder, key) the result may be cached: the
   located encoders depend on the box as well as on the pixels. The benchmark's pipeline
   splits this step once more: :meth:`Attack.chip` finds the face and cuts the backend's
   face chip, and the chips of many images (and attacks) go through the network in one
   batch (``backend.encode_chips``).

An attack that must learn something first (a trained attacker) does it in
:meth:`Attack.prepare`, which the pipeline calls in its main process once per (method, k)
before asking for any attacked image; :meth:`Attack.training_record` says what the
training was, and the benchmark stores it (table ``attack_trainings``).

Attacks
-------
``detect``
    The recognizer's own detector on the anonymized image (the seed study's attacker, the
    default, so the study's numbers stay reproducible).
``located``
    Landmarks and descriptor in the original's face box. It is the face box, not the
    anonymized region, also for the eye mask (whose region is the eye band).
``median``
    5 x 5 median filter over the region (removes salt-and-pepper pixel noise), then located.
``deblur``
    Wiener deconvolution with the Gaussian kernel of that blur ``k`` (the kernel and sigma
    rule of :class:`faceanon.methods.Blur`), then located. Blur only.
``unpixelate``
    Reads back the block grid of that pixelate ``k`` and resamples it bicubically to the
    region's size (smooth instead of blocky), then located. Pixelate only.
``sharpen``
    Unsharp mask over the region (radius: the blur's sigma for blur, else 2 px), then
    located.
``detect:retinaface``
    RetinaFace-MobileNet (:mod:`faceanon.retinaface`) finds the face, the descriptor runs
    in its largest box.
``detect:cnn``
    dlib's CNN face detector (about a second per LFW image on one core: not in the cheap
    set), then the descriptor in its largest box.

:data:`CHEAP_ATTACKS` is the default set the benchmark runs. The filter parameters were
chosen on ``lfw-singletons`` (never on benchmark identities) by the mean descriptor
distance between an original and its attacked anonymized version:
``benchmarks/attack_tuning.py`` measures the alternatives.

Sides (the pipeline's business)
-------------------------------
An attack processes exactly the images a mode anonymizes: the probes in ``naive``, the
gallery in ``reverse``, both in ``parrot``; originals, and the ``clear`` baseline, are
encoded as always (``detect``). A case is (method, k, mode, attack).

When the original had no face
-----------------------------
The pipeline then anonymizes the whole image and has no face box (``original_box=None``).
The attacker knows only that the whole image was anonymized: filters run over the whole
image and the face is searched with the backend's detector.

Third-party packages add attacks through the ``faceanon.attacks`` entry-point group, the
entry point's name being the attack name and its object an :class:`Attack` subclass.
"""

from __future__ import annotations

import abc
import functools
import importlib
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import ClassVar

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.recognition import Encoding, FaceChip, image_sha256

Box = tuple[int, int, int, int]

ENTRY_POINT_GROUP = "faceanon.attacks"

#: The attacks the benchmark runs by default: every one costs at most one encoding per
#: anonymized image, and none but ``detect`` runs a detector.
CHEAP_ATTACKS: tuple[str, ...] = ("detect", "located", "median", "deblur", "unpixelate", "sharpen")

#: The attack that reproduces the seed study (the recognizer's own detector).
DEFAULT_ATTACK = "detect"


class AttackError(FaceanonError, ValueError):
    """An attack was asked for something it cannot do (unknown name, wrong method, bad box)."""


def css_box(box: Sequence[int]) -> Box:
    """``(x, y, w, h)`` as ``(top, right, bottom, left)``, the order of :class:`Encoding`."""
    x, y, w, h = (int(v) for v in box)
    return (y, x + w, y + h, x)


def largest_box(boxes: Iterable[Sequence[int]]) -> Box | None:
    """The largest ``(x, y, w, h)`` box (ties: the upper, then the left one), or ``None``.

    The rule :class:`faceanon.recognition.DlibResNet` applies to its detections, so a
    located attack describes the face the recognizer encoded in the original.
    """
    boxes = [tuple(int(v) for v in b) for b in boxes]
    if not boxes:
        return None
    return max(boxes, key=lambda b: (b[2] * b[3], -b[1], -b[0]))  # type: ignore[return-value]


def _region(box: Sequence[int] | None, shape: Sequence[int], what: str) -> Box | None:
    from faceanon.detect import clip_box

    if box is None:
        return None
    if len(box) != 4:
        raise AttackError(f"{what} must be (x, y, w, h), got {box!r}")
    clipped = clip_box(box, shape)
    if clipped is None:
        raise AttackError(
            f"{what} {tuple(box)} lies outside the {shape[1]}x{shape[0]} image or has no area"
        )
    return clipped


def _rgb(image: np.ndarray) -> np.ndarray:
    from faceanon.imageio import to_rgb

    try:
        return to_rgb(np.asarray(image))
    except (TypeError, ValueError) as error:
        raise AttackError(f"anonymized image: {error}") from None


@functools.lru_cache(maxsize=256)
def _checked_k(method: str, k: int | None) -> int | None:
    # Called once per anonymized image: creating the method (the GAN's imports torch) and
    # checking k once per (method, k) is enough.
    from faceanon.methods import get_method

    return get_method(method).check_k(k)


class Attack(abc.ABC):
    """The interface every attack implements.

    Class attributes:

    ``name``
        Registry name (also the last part of a benchmark case's id).
    ``summary``
        One sentence for the leaderboard and ``--help``.
    ``locator``
        How the face is found for the descriptor: ``"detector"`` (the backend's own),
        ``"box"`` (the original's face box), or the name of another detector.
    ``methods``
        The methods the attack undoes, or ``None`` when it applies to every method.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    locator: ClassVar[str] = "box"
    methods: ClassVar[frozenset[str] | None] = None

    def applies_to(self, method: str) -> bool:
        """Whether the attack makes sense on images anonymized by ``method``."""
        return self.methods is None or method in self.methods

    def check_method(self, method: str, k: int | None) -> int | None:
        """Check that the attack applies to ``method`` and that ``k`` is valid for it."""
        from faceanon.methods import MethodError

        if not self.applies_to(method):
            allowed = ", ".join(sorted(self.methods or ()))
            raise AttackError(f"attack {self.name!r} undoes {allowed} only, not {method!r}")
        try:
            return _checked_k(method, k)
        except MethodError as error:
            raise AttackError(f"attack {self.name!r}: {error}") from None

    def restore(
        self,
        image: np.ndarray,
        *,
        region: Sequence[int] | None,
        method: str,
        k: int | None,
    ) -> np.ndarray:
        """Undo what can be undone of ``method`` at ``k`` inside ``region``.

        Parameters
        ----------
        image : ndarray
            The anonymized RGB ``uint8`` image; it is never modified.
        region : (x, y, w, h) or None
            Where the method was applied; ``None``: the whole image.
        method, k
            The method and strength that made ``image`` (known to the attacker).

        Returns
        -------
        ndarray
            The image to encode. Attacks without a filter return ``image`` itself.
        """
        self.check_method(method, k)
        return image

    @abc.abstractmethod
    def encode_restored(
        self, image: np.ndarray, *, original_box: Sequence[int] | None, backend
    ) -> Encoding:
        """Find the face in a (restored) image and encode it with ``backend``."""

    def encode_chips(self, chips: np.ndarray, *, backend) -> np.ndarray:
        """Embeddings ``(n, 128)`` of the face chips this attack cut (:meth:`chip`).

        The pipeline batches every attack's chips through this method, so an attack with
        its own network (:class:`faceanon.attack_learned.Learned`) overrides it; the
        others describe their chips with the recognizer, ``backend.encode_chips``.
        """
        return backend.encode_chips(chips)

    def chip(
        self, image: np.ndarray, *, original_box: Sequence[int] | None, backend
    ) -> FaceChip:
        """The per-image half of :meth:`encode_restored`: find the face, cut its chip.

        The pipeline batches the chips of many images through ``backend.encode_chips``;
        :meth:`encode_restored` must describe the same face, so an attack that overrides
        one overrides the other.

        Parameters
        ----------
        image : ndarray
            The restored RGB ``uint8`` image (:meth:`restore`'s result).
        original_box : (x, y, w, h) or None
            The original's face box, clipped to the image; ``None``: the original had no
            face, and the backend's detector looks for one.
        backend
            A recognition backend with ``face_chip(image, box=(top, right, bottom, left))``.

        Returns
        -------
        FaceChip
            ``chip`` is ``None`` when the attack found no face.
        """
        if self.locator == "detector" or original_box is None:
            return backend.face_chip(image)
        if self.locator == "box":
            return backend.face_chip(image, box=css_box(original_box))
        raise NotImplementedError(
            f"attack {self.name!r} finds the face with {self.locator!r}: it must implement "
            "chip()")

    def prepare(self, *, method: str, k: int | None, seed: int, data_root) -> None:
        """Get ready to attack ``method`` at ``k`` (default: nothing to do).

        The pipeline calls it in its main process, once per (method, k), on a copy of the
        attack made for that (method, k), before any image of it is attacked. Afterwards
        the attack must be cheap to pickle (a file path, never a model): worker processes
        receive it with their tasks. An attack that learns from data may read only
        ``lfw-singletons`` under ``data_root``, never a benchmark identity.

        Parameters
        ----------
        method : str
            The registry name of the method whose images will be attacked.
        k : int or None
            Its strength.
        seed : int
            The run's seed.
        data_root : path-like or None
            The folder that holds the benchmark's dataset (and ``lfw-singletons``).
        """
        return None  # the filter and detector attacks need no preparation

    def training_record(self) -> dict | None:
        """What :meth:`prepare` learned from, and how (JSON-serializable), or ``None``.

        Recorded by the benchmark per (run, method, k, attack) in ``attack_trainings``:
        e.g. the singleton split, the training settings, the loss curve, the wall time.
        """
        return None

    def encode(
        self,
        image: np.ndarray,
        *,
        original_box: Sequence[int] | None,
        method: str,
        k: int | None,
        backend,
        anonymized_box: Sequence[int] | None = None,
    ) -> Encoding:
        """Attack one anonymized image: restore it, then encode it.

        Parameters
        ----------
        image : ndarray
            The anonymized RGB ``uint8`` image (grey and RGBA are converted); not modified.
        original_box : (x, y, w, h) or None
            The face box found in the original (the face the recognizer encoded there);
            ``None`` when the original had no face.
        method : str
            The registry name of the method that anonymized ``image``.
        k : int or None
            Its strength.
        backend
            A recognition backend whose ``encode`` takes ``box=(top, right, bottom, left)``
            (:class:`faceanon.recognition.DlibResNet`).
        anonymized_box : (x, y, w, h), optional
            Where the method was applied, when that is not the face box (a margin, the eye
            band); filters run there. Default: ``original_box``.

        Returns
        -------
        Encoding
            ``embedding`` is ``None`` when the attack found no face.

        Raises
        ------
        AttackError
            Unknown or inapplicable method, bad ``k``, a box outside the image, or an image
            that is not ``uint8`` grey, RGB or RGBA.
        """
        image = _rgb(image)
        face = _region(original_box, image.shape, "original_box")
        region = face if anonymized_box is None else _region(
            anonymized_box, image.shape, "anonymized_box"
        )
        restored = self.restore(image, region=region, method=method, k=k)
        return self.encode_restored(restored, original_box=face, backend=backend)

    def cache_key(
        self, image: np.ndarray, *, original_box: Sequence[int] | None, backend
    ) -> tuple[str, str]:
        """``(encoder, key)`` under which :meth:`encode_restored`'s result may be cached.

        ``encoder`` names the backend and the way the face is found; ``key`` hashes the
        restored pixels, and the box when the encoding depends on it. The ``detect`` attack
        gives the backend's own name and the pixel hash, so it shares the embeddings the
        benchmark already stores.
        """
        digest = image_sha256(image)
        if self.locator == "detector":
            return backend.name, digest
        if self.locator == "box":
            if original_box is None:  # no box: encoded by detection, as ``detect`` does
                return backend.name, digest
            x, y, w, h = (int(v) for v in original_box)
            return f"{backend.name}+box", f"{digest}:{x},{y},{w},{h}"
        return f"{backend.name}+{self.locator}", digest

    def options(self) -> dict:
        """The attack's settings, for the run's config (empty when it has none)."""
        return {}

    def describe(self) -> dict:
        """What the leaderboard and the command line show about this attack."""
        return {
            "name": self.name,
            "summary": self.summary,
            "locator": self.locator,
            "methods": None if self.methods is None else sorted(self.methods),
            "options": self.options(),
        }


# ---------------------------------------------------------------------------------------
# Where the descriptor goes


def _encode_in_box(image: np.ndarray, box: Sequence[int] | None, backend) -> Encoding:
    if box is None:
        return backend.encode(image)
    return backend.encode(image, box=css_box(box))


class Detect(Attack):
    """The recognizer's own detector on the anonymized image (the seed study's attacker)."""

    name = "detect"
    summary = "the recognizer's own face detector on the anonymized image"
    locator = "detector"

    def encode_restored(self, image, *, original_box, backend):
        return backend.encode(image)


class Located(Attack):
    """Landmarks and descriptor in the original's face box, no detection.

    The attacker sees where the anonymized face is, so the face never "disappears". The box
    is the face box also for the eye mask, whose anonymized region is only the eye band.
    """

    name = "located"
    summary = "the descriptor in the original's face box (the location is visible)"

    def encode_restored(self, image, *, original_box, backend):
        return _encode_in_box(image, original_box, backend)


class DetectorAttack(Attack):
    """A stronger face detector than the recognizer's, then the descriptor in its box.

    The largest box is encoded, as :class:`faceanon.recognition.DlibResNet` does, and
    ``faces_found`` counts every box. Subclasses say which detector
    (:meth:`make_detector`); it is made on first use and kept.
    """

    def __init__(self):
        self._detector = None

    @abc.abstractmethod
    def make_detector(self):
        """A :class:`faceanon.detect.Detector` that finds faces."""

    def __getstate__(self):
        # Sent to worker processes with their tasks: the detector is made there, not sent.
        return {**self.__dict__, "_detector": None}

    def _found(self, image) -> list:
        if self._detector is None:
            self._detector = self.make_detector()
        return [d.box for d in self._detector.detect(image)]

    def chip(self, image, *, original_box, backend):
        found = self._found(image)
        box = largest_box(found)
        if box is None:
            return FaceChip(chip=None, faces_found=0)
        face = backend.face_chip(image, box=css_box(box))
        return FaceChip(face.chip, faces_found=len(found), box=face.box)

    def encode_restored(self, image, *, original_box, backend):
        found = self._found(image)
        box = largest_box(found)
        if box is None:
            return Encoding(embedding=None, faces_found=0)
        encoding = backend.encode(image, box=css_box(box))
        return Encoding(encoding.embedding, faces_found=len(found), box=encoding.box)


class RetinaFaceDetect(DetectorAttack):
    """RetinaFace-MobileNet0.25 finds the face (:mod:`faceanon.retinaface`)."""

    name = "detect:retinaface"
    summary = "RetinaFace-MobileNet finds the face, then the recognizer's descriptor"
    locator = "retinaface"

    def make_detector(self):
        from faceanon.retinaface import RetinaFaceDetector

        return RetinaFaceDetector()


class CnnDetect(DetectorAttack):
    """dlib's MMOD CNN face detector finds the face (slow on a CPU: not in the cheap set)."""

    name = "detect:cnn"
    summary = "dlib's CNN face detector finds the face, then the recognizer's descriptor"
    locator = "cnn"

    def make_detector(self):
        from faceanon.detect import get_detector

        return get_detector("cnn")


# ---------------------------------------------------------------------------------------
# Filters: undo the method in the region, then encode in the original's face box


def _to_ubyte(image: np.ndarray) -> np.ndarray:
    from skimage.util import img_as_ubyte

    return img_as_ubyte(np.clip(image, 0.0, 1.0))


class FilterAttack(Located):
    """A restoration filter over the anonymized region, then the located descriptor.

    Subclasses implement :meth:`filter_region` on one crop; :meth:`restore` copies the image
    and writes the filtered crop back, so only the region's pixels change.
    """

    @abc.abstractmethod
    def filter_region(self, crop: np.ndarray, *, method: str, k: int | None) -> np.ndarray:
        """Return the restored ``crop`` (RGB ``uint8``, same shape); ``crop`` is read-only."""

    def restore(self, image, *, region, method, k):
        k = self.check_method(method, k)
        out = np.array(image, dtype=np.uint8, copy=True)
        x, y, w, h = region if region is not None else (0, 0, out.shape[1], out.shape[0])
        crop = np.ascontiguousarray(out[y : y + h, x : x + w])
        crop.setflags(write=False)
        restored = self.filter_region(crop, method=method, k=k)
        if restored.shape != crop.shape or restored.dtype != np.uint8:
            raise AttackError(
                f"attack {self.name!r} returned a {restored.dtype} {restored.shape} crop "
                f"for a uint8 {crop.shape} one"
            )
        out[y : y + h, x : x + w] = restored
        return out


class Median(FilterAttack):
    """A ``size x size`` median filter (``cv2.medianBlur``) against pixel noise.

    Each pixel takes the median of its neighbourhood, so isolated random pixels vanish
    while edges stay sharp. 5 x 5 beats 3 x 3 and 7 x 7 on noise k30 and k50.
    """

    name = "median"
    summary = "5x5 median filter over the face (removes pixel noise), located descriptor"

    def __init__(self, *, size: int = 5):
        if isinstance(size, bool) or int(size) != size or size < 3 or size % 2 == 0:
            raise AttackError(f"median: size must be an odd integer >= 3, got {size!r}")
        self.size = int(size)

    def options(self):
        return {"size": self.size}

    def filter_region(self, crop, *, method, k):
        import cv2

        return cv2.medianBlur(crop, self.size)


def blur_kernel(k: int) -> np.ndarray:
    """The 2-D Gaussian kernel :class:`faceanon.methods.Blur` convolves with at strength ``k``.

    Same rules as the method: a ``k x k`` kernel (the next odd size for an even ``k``) with
    the sigma OpenCV derives for ``k``. Sums to 1.
    """
    import cv2

    from faceanon.methods import _gaussian_sigma

    size = k if k % 2 else k + 1
    column = cv2.getGaussianKernel(size, _gaussian_sigma(k))
    return column @ column.T


class Deblur(FilterAttack):
    """Wiener deconvolution (``skimage.restoration.wiener``) with the blur's own kernel.

    The attacker knows ``k``, hence the exact point-spread function. The method blurred
    the crop alone with its edges repeated, so the crop is padded the same way before
    deconvolving (the FFT would otherwise wrap one edge onto the other), per channel.

    Parameters
    ----------
    balance : float
        Wiener regularisation: the noise-to-signal ratio assumed. Larger is smoother;
        0.1 restored blur k30 best on lfw-singletons (0.3 is as good at k50).
    """

    name = "deblur"
    summary = "Wiener deconvolution with the blur's Gaussian kernel, located descriptor"
    methods = frozenset({"blur"})

    def __init__(self, *, balance: float = 0.1):
        if not balance > 0:
            raise AttackError(f"deblur: balance must be > 0, got {balance!r}")
        self.balance = float(balance)

    def options(self):
        return {"balance": self.balance}

    def filter_region(self, crop, *, method, k):
        from skimage.restoration import wiener
        from skimage.util import img_as_float

        if k == 1:  # the neutral strength blurs nothing
            return crop.copy()
        kernel = blur_kernel(k)
        pad = kernel.shape[0] // 2
        padded = np.pad(img_as_float(crop), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        channels = [
            wiener(padded[:, :, c], kernel, self.balance, clip=True) for c in range(3)
        ]
        restored = np.stack(channels, axis=2)[pad:-pad, pad:-pad]
        return _to_ubyte(restored)


class Unpixelate(FilterAttack):
    """Read the block grid of that pixelate ``k`` back and resample it bicubically.

    :class:`faceanon.methods.Pixelate` shrinks a region to ``k x k`` (each side at most
    its length) and blows it up again with nearest-neighbour blocks. Knowing ``k``, the
    attacker reads one pixel from the middle of each block, which gives the shrunken image
    exactly, and enlarges it with bicubic interpolation (``cv2.INTER_CUBIC``) instead:
    smooth shading in place of block edges, which the descriptor reads better than blocks.
    """

    name = "unpixelate"
    summary = "the pixelation's block grid resampled bicubically, located descriptor"
    methods = frozenset({"pixelate"})

    def filter_region(self, crop, *, method, k):
        import cv2

        h, w = crop.shape[:2]
        blocks_w, blocks_h = min(k, w), min(k, h)
        if (blocks_w, blocks_h) == (w, h):
            return crop.copy()
        # INTER_NEAREST sends output pixel x to block floor(x * blocks / w), so block i
        # spans [i * w / blocks, (i + 1) * w / blocks): its middle pixel is inside it.
        columns = ((np.arange(blocks_w) + 0.5) * w / blocks_w).astype(int)
        rows = ((np.arange(blocks_h) + 0.5) * h / blocks_h).astype(int)
        grid = np.ascontiguousarray(crop[rows][:, columns])
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


class Sharpen(FilterAttack):
    """Unsharp mask (``skimage.filters.unsharp_mask``) over the region.

    The radius is the blur's sigma when the method is blur (the attacker knows ``k``),
    else ``radius``.

    Parameters
    ----------
    amount : float
        How much of the detail (image minus its blur) is added back. 2 restored blur k30
        and k50 better than 1 or 4 on lfw-singletons.
    radius : float
        Gaussian sigma of the mask for methods other than blur, in pixels.
    """

    name = "sharpen"
    summary = "unsharp mask over the face (radius: the blur's sigma), located descriptor"

    def __init__(self, *, amount: float = 2.0, radius: float = 2.0):
        if not amount > 0 or not radius > 0:
            raise AttackError(f"sharpen: amount and radius must be > 0, got {amount}, {radius}")
        self.amount = float(amount)
        self.radius = float(radius)

    def options(self):
        return {"amount": self.amount, "radius": self.radius}

    def filter_region(self, crop, *, method, k):
        from skimage.filters import unsharp_mask

        from faceanon.methods import _gaussian_sigma

        radius = _gaussian_sigma(k) if method == "blur" and k and k > 1 else self.radius
        # channel_axis=2, not -1: unsharp_mask slices the wrong axis for a negative one
        # and returns a black image (scikit-image issue 7264, open in 0.26).
        return _to_ubyte(unsharp_mask(crop, radius=radius, amount=self.amount, channel_axis=2))


# ---------------------------------------------------------------------------------------
# Registry

# Named by import path so that listing attacks imports nothing heavy.
BUILTIN_ATTACKS: dict[str, str] = {
    "detect": "faceanon.attacks:Detect",
    "located": "faceanon.attacks:Located",
    "median": "faceanon.attacks:Median",
    "deblur": "faceanon.attacks:Deblur",
    "unpixelate": "faceanon.attacks:Unpixelate",
    "sharpen": "faceanon.attacks:Sharpen",
    "detect:retinaface": "faceanon.attacks:RetinaFaceDetect",
    "detect:cnn": "faceanon.attacks:CnnDetect",
    "learned": "faceanon.attack_learned:Learned",
}


def _load(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _plugin_entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_attacks() -> list[str]:
    """Names of every attack: the built-in ones, then those added by plugins."""
    plugins = [name for name in _plugin_entry_points() if name not in BUILTIN_ATTACKS]
    return list(BUILTIN_ATTACKS) + sorted(plugins)


def get_attack(name: str, **options) -> Attack:
    """Create the attack registered under ``name`` with keyword ``options``."""
    if name in BUILTIN_ATTACKS:
        cls = _load(BUILTIN_ATTACKS[name])
    else:
        plugins = _plugin_entry_points()
        if name not in plugins:
            known = ", ".join(available_attacks())
            raise AttackError(f"unknown attack {name!r}; known attacks: {known}")
        cls = plugins[name].load()
    try:
        return cls(**options)
    except TypeError as error:
        raise AttackError(f"attack {name!r}: {error}") from None


def parse_attacks(spec: str | Iterable[str]) -> list[str]:
    """The attack names a ``--bench-attacks`` value means, in order, without repeats.

    ``"all"`` is every registered attack; ``"cheap"`` is :data:`CHEAP_ATTACKS`; otherwise a
    comma-separated list (or an iterable) of names, each checked against the registry.
    """
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    known = available_attacks()
    chosen: list[str] = []
    for name in names:
        if name == "all":
            chosen.extend(known)
        elif name == "cheap":
            chosen.extend(CHEAP_ATTACKS)
        elif name in known:
            chosen.append(name)
        elif name:
            raise AttackError(f"unknown attack {name!r}; known attacks: {', '.join(known)}")
    if not chosen:
        raise AttackError("no attack named; use a comma-separated list, 'cheap' or 'all'")
    return list(dict.fromkeys(chosen))
