"""Anonymization methods behind one interface, and the registry that names them.

Every method, ad-hoc (blur, pixelate, ...) or generative (k-Same, the GAN), is a
:class:`Method`: it takes an RGB ``uint8`` image, the face boxes ``(x, y, w, h)``, a
strength ``k`` and a seeded :class:`numpy.random.Generator`, and returns a new image in
which only pixels inside the boxes may differ. A method that needs a whole set of faces at
once (k-Same) says so with ``needs_set = True`` and implements
:meth:`Method.anonymize_set`; the benchmark and the command line then hand it each set in
one call, and every other method one image at a time (in parallel).

Third-party packages add methods through the ``faceanon.methods`` entry-point group; the
entry point's name is the method name and its object a :class:`Method` subclass.
"""

from __future__ import annotations

import abc
import importlib
import warnings
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import ClassVar

import numpy as np

from faceanon.errors import FaceanonError

Box = tuple[int, int, int, int]

ENTRY_POINT_GROUP = "faceanon.methods"


class MethodError(FaceanonError, ValueError):
    """A method was asked for something it cannot do (unknown name, bad k, set too small)."""


class Method(abc.ABC):
    """The interface every anonymization method implements.

    Class attributes document the strength ``k``:

    ``name``
        Registry name.
    ``k_meaning``
        One sentence: what ``k`` is for this method.
    ``k_range``
        Inclusive ``(low, high)`` of valid ``k``; ``high`` may be ``None`` (unbounded).
        ``None`` when the method takes no ``k``.
    ``neutral_k``
        The ``k`` that leaves the image unchanged, or ``None`` if there is none.
    ``stronger``
        ``"higher"`` when a larger ``k`` hides more, ``"lower"`` when a smaller one does,
        ``"none"`` when ``k`` is ignored.
    ``needs_set``
        ``True`` when an image can only be anonymized together with the rest of its set
        (k-Same averages faces across it): callers then pass each set to
        :meth:`anonymize_set` in one call, with one generator for the set, and cannot
        re-create a single image on its own. ``False`` (the default) when each image is
        anonymized on its own, even if :meth:`anonymize_set` is overridden to batch work.
    """

    name: ClassVar[str]
    k_meaning: ClassVar[str]
    k_range: ClassVar[tuple[int, int | None] | None]
    neutral_k: ClassVar[int | None] = None
    stronger: ClassVar[str] = "higher"
    needs_set: ClassVar[bool] = False

    @property
    def uses_k(self) -> bool:
        return self.k_range is not None

    def check_k(self, k: int | None) -> int | None:
        """Return ``k`` as an int after checking its range; ``None`` for methods without k."""
        if not self.uses_k:
            return None
        if k is None:
            raise MethodError(f"{self.name}: k is required ({self.k_meaning})")
        if isinstance(k, bool) or int(k) != k:
            raise MethodError(f"{self.name}: k must be an integer, got {k!r}")
        low, high = self.k_range  # type: ignore[misc]
        if k < low or (high is not None and k > high):
            upper = "" if high is None else f"..{high}"
            raise MethodError(f"{self.name}: k={k} out of range {low}{upper or '..'}")
        return int(k)

    @abc.abstractmethod
    def anonymize(
        self,
        image: np.ndarray,
        boxes: Sequence[Box],
        *,
        k: int | None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Return a new image with the faces in ``boxes`` hidden; ``image`` is not modified."""

    def anonymize_set(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[Sequence[Box]],
        *,
        k: int | None,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        """Anonymize a set of images; the default treats each image on its own."""
        if len(images) != len(boxes):
            raise MethodError(f"{len(images)} images but {len(boxes)} box lists")
        return [
            self.anonymize(image, b, k=k, rng=rng) for image, b in zip(images, boxes, strict=True)
        ]

    def describe(self) -> dict:
        """What the leaderboard and the CLI show about this method."""
        return {
            "name": self.name,
            "k_meaning": self.k_meaning,
            "k_range": self.k_range,
            "neutral_k": self.neutral_k,
            "stronger": self.stronger,
            "needs_set": needs_whole_set(self),
        }


_WARNED_UNDECLARED: set[type] = set()


def needs_whole_set(method: Method) -> bool:
    """Whether ``method`` must be given each set of images in one call.

    The method's :attr:`Method.needs_set`, when its class (or a base other than
    :class:`Method`) declares it. A class that overrides :meth:`Method.anonymize_set`
    without declaring it is judged the old way, as needing the set, with a
    ``DeprecationWarning`` (once per class): that guess treats a method that overrides it
    only to batch work as k-Same (serial, one generator for the set, no pictures).

    Parameters
    ----------
    method : Method

    Returns
    -------
    bool
    """
    cls = type(method)
    if any("needs_set" in vars(base) for base in cls.__mro__ if base is not Method):
        return bool(cls.needs_set)
    overridden = cls.anonymize_set is not Method.anonymize_set
    if overridden and cls not in _WARNED_UNDECLARED:
        _WARNED_UNDECLARED.add(cls)
        warnings.warn(
            f"method {cls.__module__}.{cls.__qualname__} overrides anonymize_set but does "
            "not declare needs_set; it is treated as needing the whole set. Declare "
            "needs_set = True (or False when anonymize_set only batches work).",
            DeprecationWarning,
            stacklevel=2,
        )
    return overridden


# Built-in methods are named by import path so that listing them imports nothing heavy
# (the GAN pulls in torch only when it is used).
BUILTIN_METHODS: dict[str, str] = {
    "blur": "faceanon.methods:Blur",
    "pixelate": "faceanon.methods:Pixelate",
    "noise": "faceanon.methods:Noise",
    "blackout": "faceanon.methods:Blackout",
    "mask": "faceanon.methods:EyeMask",
    "ksame": "faceanon.ksame:KSame",
    "deepprivacy": "faceanon.deepprivacy:DeepPrivacy",
}


def _load(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _plugin_entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_methods() -> list[str]:
    """Names of every method: the built-in ones, then those added by plugins."""
    plugins = [name for name in _plugin_entry_points() if name not in BUILTIN_METHODS]
    return list(BUILTIN_METHODS) + sorted(plugins)


def get_method(name: str, **options) -> Method:
    """Create the method registered under ``name`` with keyword ``options``."""
    if name in BUILTIN_METHODS:
        cls = _load(BUILTIN_METHODS[name])
    else:
        plugins = _plugin_entry_points()
        if name not in plugins:
            known = ", ".join(available_methods())
            raise MethodError(f"unknown method {name!r}; known methods: {known}")
        cls = plugins[name].load()
    return cls(**options)


# ---------------------------------------------------------------------------------------
# Ad-hoc methods
#
# They share three rules: boxes are clipped to the image and a box wholly outside it (or
# with no area) is ignored; each box is processed on its own crop, so only pixels inside
# the box are read and written; boxes are processed in order, so where boxes overlap a
# later box works on the result of an earlier one. OpenCV is imported inside the methods
# so that listing the registry stays cheap.


def _prepare(image: np.ndarray) -> np.ndarray:
    """A private RGB ``uint8`` copy of ``image`` (grey and RGBA are converted first)."""
    from faceanon.imageio import to_rgb

    return np.array(to_rgb(np.asarray(image)), dtype=np.uint8, copy=True)


def _clipped(boxes: Sequence[Box], shape: Sequence[int]) -> list[Box]:
    from faceanon.detect import clip_box

    return [box for box in (clip_box(b, shape) for b in boxes) if box is not None]


def _gaussian_sigma(k: int) -> float:
    # OpenCV's rule for sigma from the kernel size (getGaussianKernel with sigma <= 0),
    # applied to k itself, so an even k is slightly weaker than k + 1 and k = 2 still blurs.
    return 0.3 * ((k - 1) * 0.5 - 1) + 0.8


class Blur(Method):
    """Gaussian smoothing of each box with a ``k x k`` kernel.

    For odd ``k`` this is ``cv2.GaussianBlur(crop, (k, k), 0)``. A centred kernel needs an
    odd size, so an even ``k`` uses a ``(k + 1) x (k + 1)`` kernel with the sigma OpenCV
    would derive for ``k``: strength still grows with every step of ``k``. The crop is
    padded by repeating its edge pixels, so only pixels inside the box are used (as in the
    seed study). ``k = 1`` leaves the image unchanged.
    """

    name = "blur"
    k_meaning = "side of the Gaussian kernel in pixels (1 = unchanged; larger hides more)"
    k_range = (1, None)
    neutral_k = 1
    stronger = "higher"

    def anonymize(self, image, boxes, *, k, rng):
        import cv2

        k = self.check_k(k)
        out = _prepare(image)
        if k == 1:
            return out
        size = k if k % 2 else k + 1
        sigma = _gaussian_sigma(k)
        for x, y, w, h in _clipped(boxes, out.shape):
            crop = out[y : y + h, x : x + w]
            out[y : y + h, x : x + w] = cv2.GaussianBlur(
                crop, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE
            )
        return out


class Pixelate(Method):
    """Down-sample each box to ``k x k`` pixels and scale it back up.

    The seed study's definition: a SMALLER ``k`` hides more. Down-sampling averages
    (``INTER_AREA``), up-sampling repeats (``INTER_NEAREST``), giving flat blocks. A side of
    the box that is ``k`` pixels or shorter is kept at full resolution, so ``k`` at or
    above the box's size leaves it unchanged; there is no fixed neutral ``k``.
    """

    name = "pixelate"
    k_meaning = (
        "blocks per side of the face box (smaller hides more; k >= the box size leaves it "
        "unchanged)"
    )
    k_range = (1, None)
    neutral_k = None
    stronger = "lower"

    def anonymize(self, image, boxes, *, k, rng):
        import cv2

        k = self.check_k(k)
        out = _prepare(image)
        for x, y, w, h in _clipped(boxes, out.shape):
            small_w, small_h = min(k, w), min(k, h)
            if (small_w, small_h) == (w, h):
                continue
            crop = out[y : y + h, x : x + w]
            small = cv2.resize(crop, (small_w, small_h), interpolation=cv2.INTER_AREA)
            out[y : y + h, x : x + w] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return out


class Noise(Method):
    """Replace ``k`` % of the pixels of each box with uniformly random RGB colours.

    Exactly ``round(k / 100 * n)`` of a box's ``n`` pixels are drawn, without replacement.
    For a given seed the pixels chosen at a lower ``k`` are a subset of those at a higher
    ``k`` and get the same colours (one permutation and one colour per pixel are drawn
    whatever ``k`` is, and the first ones are used), so a stronger ``k`` never changes
    fewer pixels. Where boxes overlap, a pixel belongs to the first box that holds it, so
    no pixel is drawn twice.
    """

    name = "noise"
    k_meaning = "percentage of the face box's pixels replaced by random colours (0 = unchanged)"
    k_range = (0, 100)
    neutral_k = 0
    stronger = "higher"

    def anonymize(self, image, boxes, *, k, rng):
        k = self.check_k(k)
        out = _prepare(image)
        taken = np.zeros(out.shape[:2], dtype=bool)
        for x, y, w, h in _clipped(boxes, out.shape):
            free = ~taken[y : y + h, x : x + w]
            rows, cols = np.nonzero(free)
            taken[y : y + h, x : x + w] = True
            n = rows.size
            if n == 0:
                continue
            order = rng.permutation(n)
            colours = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
            count = round(k / 100 * n)
            chosen = order[:count]
            out[rows[chosen] + y, cols[chosen] + x] = colours[:count]
        return out


def _parse_colour(colour) -> tuple[int, int, int]:
    values = tuple(int(c) for c in colour)
    if len(values) != 3 or not all(0 <= c <= 255 for c in values):
        raise MethodError(f"colour must be three values 0..255, got {colour!r}")
    return values  # type: ignore[return-value]


class Blackout(Method):
    """Fill each box with one colour (black unless ``colour`` says otherwise).

    There is no strength: ``k`` is ignored (``k_range`` is ``None``), and the command line
    and the benchmark record it as ignored.
    """

    name = "blackout"
    k_meaning = "ignored: the box is always filled completely"
    k_range = None
    neutral_k = None
    stronger = "none"

    def __init__(self, *, colour: Sequence[int] = (0, 0, 0)):
        self.colour = _parse_colour(colour)

    def anonymize(self, image, boxes, *, k, rng):
        out = _prepare(image)
        for x, y, w, h in _clipped(boxes, out.shape):
            out[y : y + h, x : x + w] = self.colour
        return out


class EyeMask(Method):
    """A bar over the eyes of each face box (the classic "black bar").

    Inside each face box the eyes are searched with the Haar eye cascade, then with the
    eye-glasses cascade when the first finds none (:func:`faceanon.detect.eye_band`). The
    bar spans the eyes found, padded by ``padding`` times the eye size, and is widened to
    the full face width when only one eye was found. When no eye is found, the bar is
    placed from the face box's geometry (15-50 % of its height, full width). The bar is
    always kept inside the face box. There is no strength: ``k`` is ignored.
    """

    name = "mask"
    k_meaning = "ignored: the bar always covers both eyes"
    k_range = None
    neutral_k = None
    stronger = "none"

    def __init__(self, *, colour: Sequence[int] = (0, 0, 0), padding: float = 0.25):
        self.colour = _parse_colour(colour)
        if padding < 0:
            raise MethodError(f"padding must be >= 0, got {padding}")
        self.padding = float(padding)

    def bars(self, image: np.ndarray, boxes: Sequence[Box]) -> list[tuple[Box, bool]]:
        """The bar of every face box that lies in the image, with whether eyes were found."""
        from faceanon.detect import eye_band, to_grey

        rgb = _prepare(image)
        grey = to_grey(rgb)
        found = (eye_band(rgb, box, padding=self.padding, grey=grey) for box in boxes)
        return [band for band in found if band is not None]

    def anonymize(self, image, boxes, *, k, rng):
        out = _prepare(image)
        for (x, y, w, h), _ in self.bars(out, boxes):
            out[y : y + h, x : x + w] = self.colour
        return out
