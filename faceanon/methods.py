"""Anonymization methods behind one interface, and the registry that names them.

Every method, ad-hoc (blur, pixelate, ...) or generative (k-Same, the GAN), is a
:class:`Method`: it takes an RGB ``uint8`` image, the face boxes ``(x, y, w, h)``, a
strength ``k`` and a seeded :class:`numpy.random.Generator`, and returns a new image in
which only pixels inside the boxes may differ. Methods that need a whole set of faces at once
(k-Same) override :meth:`Method.anonymize_set`; the benchmark always calls that one, so
ad-hoc and set-based methods are interchangeable.

Third-party packages add methods through the ``faceanon.methods`` entry-point group; the
entry point's name is the method name and its object a :class:`Method` subclass.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import ClassVar

import numpy as np

Box = tuple[int, int, int, int]

ENTRY_POINT_GROUP = "faceanon.methods"


class MethodError(ValueError):
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
    """

    name: ClassVar[str]
    k_meaning: ClassVar[str]
    k_range: ClassVar[tuple[int, int | None] | None]
    neutral_k: ClassVar[int | None] = None
    stronger: ClassVar[str] = "higher"

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
        return [self.anonymize(image, b, k=k, rng=rng) for image, b in zip(images, boxes)]

    def describe(self) -> dict:
        """What the leaderboard and the CLI show about this method."""
        return {
            "name": self.name,
            "k_meaning": self.k_meaning,
            "k_range": self.k_range,
            "neutral_k": self.neutral_k,
            "stronger": self.stronger,
        }


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
