"""The vocabulary of a measurement: modes, variants, cases, seeds, misses, the threshold.

Every other module speaks these terms instead of spelling them again:

``Mode``
    The four recognition modes of Newton, Sweeney and Malin (2005), each saying which side
    of a comparison sees anonymized images:

    ============  ===========  ===========
    mode          gallery      probes
    ============  ===========  ===========
    ``clear``     originals    originals    (the baseline)
    ``naive``     originals    anonymized
    ``reverse``   anonymized   originals
    ``parrot``    anonymized   anonymized
    ============  ===========  ===========

``Variant``
    One way of anonymizing: a method at a strength ``k`` (``blur-k15``, ``blackout``).
    Its images are made once and shared by every mode.

``Case``
    One measured cell: a variant (none for the clear baseline) in one mode, seen by one
    attacker (:mod:`faceanon.attacks`). Its :attr:`Case.label` is the benchmark test id
    and the name bounds match: ``clear``, ``blur-k15-naive``, ``blackout-parrot``. The
    attack is appended when it is not the default ``detect``, so
    ``noise-k30-naive-median`` reads like the others and every existing label stays as
    it is.

``image_rng`` / ``set_rng``
    THE per-image seed rule: the generator depends only on (seed, method, k, image key),
    never on order, process or machine. The benchmark, the report's pictures and
    ``faceanon anonymize`` all use it, so each can re-create the others' images.

``OnMiss``
    What happens to an image in which the detector finds no face.

``DECISION_THRESHOLD``
    The distance at or below which two faces are called the same person.

Nothing here imports more than the standard library (numpy only inside the seed rule),
so the pytest plugin and ``faceanon --help`` can use it at no cost.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DECISION_THRESHOLD",
    "DEFAULT_ATTACK",
    "MODES",
    "NO_METHOD",
    "Case",
    "CaseError",
    "Mode",
    "OnMiss",
    "OnMissError",
    "Variant",
    "image_rng",
    "set_rng",
]

#: ``face_recognition``'s default tolerance, the decision threshold of the seed study's
#: figures: a comparison whose distance is at or below it is a match.
DECISION_THRESHOLD = 0.6

#: What the results database records as the method of the clear baseline.
NO_METHOD = "none"

#: The attack of a case that names none: the recognizer's own detector on the published
#: image, the seed study's attacker (:data:`faceanon.attacks.DEFAULT_ATTACK`).
DEFAULT_ATTACK = "detect"


class CaseError(FaceanonError, ValueError):
    """A case that cannot be measured: an unknown mode, or a mode and method that disagree."""


class Mode(enum.StrEnum):
    """A recognition mode: which side of each comparison sees anonymized images."""

    CLEAR = "clear"
    NAIVE = "naive"
    REVERSE = "reverse"
    PARROT = "parrot"

    @property
    def gallery_anonymized(self) -> bool:
        """True when the enrolled (gallery) images are the anonymized ones."""
        return self in (Mode.REVERSE, Mode.PARROT)

    @property
    def probes_anonymized(self) -> bool:
        """True when the searched (probe) images are the anonymized ones."""
        return self in (Mode.NAIVE, Mode.PARROT)

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        """The mode called ``value``.

        Raises
        ------
        CaseError
            When ``value`` names no mode; the message lists the modes.
        """
        try:
            return cls(value)
        except ValueError:
            raise CaseError(f"unknown mode {value!r}; use one of {', '.join(MODES)}") from None


#: The mode names in their canonical order (clear first).
MODES: tuple[str, ...] = tuple(mode.value for mode in Mode)


class OnMiss(enum.StrEnum):
    """What happens to an image in which the detector finds no face.

    ``whole``
        The whole image is anonymized, as a careful publisher would. The benchmark always
        does this, so that every probe has an anonymized image to be searched with.
    ``skip``
        The image is not published; that is not an error.
    ``fail``
        The image is not published, and that is an error (``faceanon anonymize``'s
        default: nobody should believe a photo was anonymized when it was not).

    No policy publishes an image unchanged: a face the detector missed is still a face.
    """

    WHOLE = "whole"
    SKIP = "skip"
    FAIL = "fail"

    @classmethod
    def parse(cls, value: str | OnMiss) -> OnMiss:
        """The policy called ``value``.

        Raises
        ------
        OnMissError
            When ``value`` names no policy: an unknown policy would leave a missed face
            unanonymized, so it is refused wherever a policy is taken.
        """
        try:
            return cls(value)
        except ValueError:
            raise OnMissError(f"unknown on_miss {value!r}; use one of "
                              f"{', '.join(m.value for m in cls)}") from None


class OnMissError(FaceanonError, ValueError):
    """An ``on_miss`` value that names no :class:`OnMiss` policy."""


def _k_part(k: int | None) -> list[str]:
    return [] if k is None else [f"k{k}"]


@dataclass(frozen=True)
class Variant:
    """A method at a strength: one set of anonymized images.

    Parameters
    ----------
    method : str
        Registry name of the method.
    k : int or None
        Its strength; None for methods that take none.
    """

    method: str
    k: int | None = None

    @property
    def label(self) -> str:
        """``blur-k15``, ``blackout``: the id of the variant's speed test."""
        return "-".join([self.method, *_k_part(self.k)])


@dataclass(frozen=True)
class Case:
    """One measured cell: a method at a strength, in one recognition mode, one attack.

    Parameters
    ----------
    method : str or None
        None for the clear baseline, which anonymizes nothing.
    k : int or None
        The method's strength; None for methods without one (and for the baseline).
    mode : Mode or str
        Converted to :class:`Mode`.
    attack : str
        The :mod:`faceanon.attacks` name of what the attacker runs on the anonymized
        images; default :data:`DEFAULT_ATTACK`. The clear baseline anonymizes nothing, so
        it has only the default.

    Raises
    ------
    CaseError
        When the mode is unknown, or the clear mode is given a method or an attack, or
        another mode no method, or the attack is not a non-empty name.
    """

    method: str | None
    k: int | None
    mode: Mode
    attack: str = DEFAULT_ATTACK

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode.parse(self.mode))
        if not isinstance(self.attack, str) or not self.attack:
            raise CaseError(f"a case's attack must be a non-empty name, got {self.attack!r}")
        if self.mode is Mode.CLEAR and self.attack != DEFAULT_ATTACK:
            raise CaseError(f"the clear baseline attacks nothing: its attack is "
                            f"{DEFAULT_ATTACK!r}, not {self.attack!r}")
        if (self.mode is Mode.CLEAR) != (self.method is None):
            raise CaseError("the clear mode takes no method, and every other mode needs one")
        if self.method is None and self.k is not None:
            raise CaseError("the clear baseline takes no k")

    @classmethod
    def clear(cls) -> Case:
        """The baseline: originals against originals."""
        return cls(None, None, Mode.CLEAR)

    @property
    def variant(self) -> Variant | None:
        """The anonymized images the case compares; None for the baseline."""
        return None if self.method is None else Variant(self.method, self.k)

    @property
    def stored_method(self) -> str:
        """The method as the results database records it (:data:`NO_METHOD` for clear)."""
        return NO_METHOD if self.method is None else self.method

    def label_parts(self) -> list[str]:
        """The parts of :attr:`label`, one per axis that has a value, in axis order."""
        variant = self.variant
        attack = [] if self.attack == DEFAULT_ATTACK else [self.attack]
        return [*([] if variant is None else [variant.label]), self.mode.value, *attack]

    @property
    def label(self) -> str:
        """The readable id: ``clear``, ``blur-k15-naive``, ``noise-k30-naive-median``."""
        return "-".join(self.label_parts())


def image_rng(seed: int, method: str, k: int | None, key: str) -> np.random.Generator:
    """The random generator of one image anonymized by ``method`` at ``k``.

    It depends only on its arguments, never on the order images are processed in or on
    the process doing it: the benchmark's workers, the report's pictures and
    ``faceanon anonymize`` get the same pixels for the same (seed, method, k, key).

    Parameters
    ----------
    seed : int
        The run's seed.
    method : str
        Registry name of the method.
    k : int or None
        The strength (None is part of the rule as the text ``None``).
    key : str
        The image's name: its path relative to the dataset root (benchmark) or to the
        output folder (``faceanon anonymize``), POSIX style.

    Returns
    -------
    numpy.random.Generator
        Seeded from the first 8 bytes (little-endian) of
        ``sha256(f"{seed}\\x1f{method}\\x1f{k}\\x1f{key}")``.
    """
    import numpy as np

    digest = hashlib.sha256(f"{seed}\x1f{method}\x1f{k}\x1f{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def set_rng(seed: int, method: str, k: int | None, keys: Sequence[str]) -> np.random.Generator:
    """The generator of a set of images anonymized together (k-Same).

    :func:`image_rng` of the keys joined by ``|``, in the order the set is given.
    """
    return image_rng(seed, method, k, "|".join(keys))
