"""Face datasets laid out ``<identity>/<image>`` and the gallery/probe protocol split.

A dataset is a folder with one sub-folder per person (LFW and ORL are laid out this way).
:func:`load_dataset` lists it, :func:`resolve_dataset` finds one by path or by name, and
:func:`protocol_split` chooses which images are enrolled (gallery) and which are searched
(probes), deterministically for a seed: by sha256 hashes (:func:`split_rank`), so the
split of a dataset is the same on every machine and every Python version.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from faceanon.errors import FaceanonError
from faceanon.imageio import is_image_path

#: Environment variable naming a folder that holds datasets by name (``$FACEANON_DATA/lfw``).
DATA_ENV = "FACEANON_DATA"
#: Where ``faceanon data fetch`` puts datasets when no folder is given.
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faceanon"


class DatasetError(FaceanonError, ValueError):
    """A dataset could not be found or is not laid out ``<identity>/<image>``."""


@dataclass(frozen=True)
class Sample:
    """One image of one identity; ``relpath`` is relative to the dataset root."""

    identity: str
    relpath: str
    size: int

    @property
    def key(self) -> str:
        """A stable name for the image inside its dataset (its relative path)."""
        return self.relpath


@dataclass(frozen=True)
class Dataset:
    """The images of a dataset folder, sorted by identity then file name."""

    name: str
    root: Path
    samples: tuple[Sample, ...]

    @property
    def identities(self) -> list[str]:
        return sorted({sample.identity for sample in self.samples})

    def images_of(self) -> dict[str, list[Sample]]:
        by_identity: dict[str, list[Sample]] = {}
        for sample in self.samples:
            by_identity.setdefault(sample.identity, []).append(sample)
        return by_identity

    def path(self, sample: Sample) -> Path:
        return self.root / sample.relpath

    @property
    def fingerprint(self) -> str:
        """sha256 over the sorted relative paths and file sizes.

        It identifies the exact data a run used without reading every byte: renaming,
        adding, removing or resizing any image changes it.
        """
        digest = hashlib.sha256()
        for sample in sorted(self.samples, key=lambda s: s.relpath):
            digest.update(f"{sample.relpath}\t{sample.size}\n".encode())
        return digest.hexdigest()

    def summary(self) -> dict:
        by_identity = self.images_of()
        return {
            "name": self.name,
            "root": str(self.root),
            "identities": len(by_identity),
            "images": len(self.samples),
            "identities_with_2_or_more": sum(len(v) >= 2 for v in by_identity.values()),
            "fingerprint": self.fingerprint,
        }


def load_dataset(root: os.PathLike | str, *, name: str | None = None) -> Dataset:
    """List a dataset folder laid out ``<identity>/<image>``.

    Files directly under ``root`` and files that are not images (by suffix) are ignored;
    images deeper than one level belong to the identity folder they sit in.

    Raises
    ------
    DatasetError
        When ``root`` is not a folder or holds no identity folder with images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    samples = []
    for identity_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(identity_dir.rglob("*")):
            if image.is_file() and is_image_path(image) and not image.name.startswith("."):
                samples.append(
                    Sample(
                        identity=identity_dir.name,
                        relpath=image.relative_to(root).as_posix(),
                        size=image.stat().st_size,
                    )
                )
    if not samples:
        raise DatasetError(
            f"{root}: no images found; expected one folder per identity holding "
            "jpg, png, pgm, bmp or webp files"
        )
    return Dataset(name=name or root.name, root=root, samples=tuple(samples))


def resolve_dataset(name_or_path: os.PathLike | str, *, cache: Path | None = None) -> Dataset:
    """Find a dataset by path, or by name under ``$FACEANON_DATA`` then the cache folder.

    A name that is found nowhere gives an error that says how to fetch it.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return load_dataset(candidate)
    name = str(name_or_path)
    searched = []
    if os.environ.get(DATA_ENV):
        searched.append(Path(os.environ[DATA_ENV]) / name)
    searched.append((cache or DEFAULT_CACHE) / name)
    for folder in searched:
        if folder.is_dir():
            return load_dataset(folder, name=name)
    looked = ", ".join(str(p) for p in searched)
    raise DatasetError(
        f"dataset {name!r} not found (looked in {looked}); set {DATA_ENV} to a folder that "
        f"holds it, pass a path, or run `faceanon data fetch {name}`"
    )


@dataclass(frozen=True)
class Split:
    """Which images are enrolled (gallery) and which are searched (probes)."""

    gallery: tuple[Sample, ...]
    probes: tuple[Sample, ...]
    identities: tuple[str, ...] = field(default=())

    def summary(self) -> dict:
        return {
            "identities": len(self.identities),
            "gallery": len(self.gallery),
            "probes": len(self.probes),
        }


def split_rank(seed: int, *parts: str) -> str:
    """The sort key of the protocol split: ``sha256(seed \x1f part \x1f ...)``, hex.

    Ordering by a cryptographic hash gives a seeded, uniformly random order that is fixed
    by this definition alone: the same on every machine, Python and numpy version (unlike
    ``random.shuffle`` and ``random.sample``, whose algorithms Python may change, or
    ``hash()``, which is salted per process). Parts are joined by the unit separator
    ``\x1f``, which no identity or file name holds.
    """
    return hashlib.sha256("\x1f".join((str(seed), *parts)).encode()).hexdigest()


def protocol_split(
    dataset: Dataset,
    *,
    identities: int | None = None,
    n_gallery: int = 1,
    max_probes: int = 1,
    seed: int = 0,
) -> Split:
    """Choose gallery and probe images for every identity with enough images.

    Parameters
    ----------
    dataset : Dataset
        The images to split.
    identities : int, optional
        Keep only this many identities, chosen at random (seeded) among those with at least
        ``n_gallery + 1`` images. ``None`` keeps them all.
    n_gallery : int
        Images enrolled per identity.
    max_probes : int
        At most this many of the remaining images are probes, so that nobody dominates
        (LFW has one man with 530 images).
    seed : int
        The same seed, dataset and options give the same split on every machine.

    Returns
    -------
    Split
        Gallery and probe samples, each sorted by identity then path. Gallery and probe
        images of an identity are always different images.

    Notes
    -----
    The split is defined by hashes (:func:`split_rank`), not by a random generator:

    - identities: the ``identities`` eligible ones with the smallest
      ``sha256(f"{seed}\x1f{identity}")``;
    - images of an identity: ordered by ``sha256(f"{seed}\x1f{identity}\x1f{key}")``
      (``key`` is the path relative to the dataset root); the first ``n_gallery`` are
      enrolled, the next ``max_probes`` are probes.

    Choosing more identities keeps the ones a smaller number chose, and adding images
    to a person changes no other person's split.
    """
    if n_gallery < 1 or max_probes < 1:
        raise ValueError("n_gallery and max_probes must be at least 1")
    by_identity = dataset.images_of()
    eligible = sorted(name for name, images in by_identity.items() if len(images) > n_gallery)
    if identities is not None:
        if identities < 1:
            raise ValueError("identities must be at least 1")
        if identities > len(eligible):
            raise DatasetError(
                f"{dataset.name}: asked for {identities} identities but only {len(eligible)} "
                f"have at least {n_gallery + 1} images"
            )
        eligible = sorted(sorted(eligible, key=lambda name: split_rank(seed, name))[:identities])
    gallery: list[Sample] = []
    probes: list[Sample] = []
    for name in eligible:
        images = sorted(by_identity[name], key=lambda s: split_rank(seed, name, s.key))
        gallery.extend(sorted(images[:n_gallery], key=lambda s: s.relpath))
        probes.extend(sorted(images[n_gallery : n_gallery + max_probes], key=lambda s: s.relpath))
    return Split(gallery=tuple(gallery), probes=tuple(probes), identities=tuple(eligible))
