"""Run (method, k, mode) cases end to end: anonymize, encode, compare, store.

The expensive step is dlib (detection and the ResNet descriptor, about 70 ms per image
on one core, single-threaded), so the pipeline is built around doing it as few times as
possible and on every core:

- Originals are encoded once per run; their embeddings and the anonymization regions found
  in them are reused by every method, strength and mode.
- Each anonymized variant (method, k) is made and encoded once and shared by the naive,
  reverse and parrot modes.
- The embedding cache (keyed by backend and pixel sha256) skips every image already
  encoded in this run or an earlier one.
- Worker processes each keep their models loaded, take work in chunks, and send back only
  embeddings, never images, so memory stays bounded however large the dataset.
- Distances are one numpy matrix per case, written to DuckDB in one bulk insert.

Recognition modes (Newton, Sweeney and Malin 2005):

``clear``    gallery originals, probes originals (the baseline)
``naive``    gallery originals, probes anonymized
``reverse``  gallery anonymized, probes originals
``parrot``   gallery anonymized, probes anonymized
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from faceanon.datasets import Dataset, Sample, Split
from faceanon.imageio import read_image
from faceanon.methods import Method, get_method
from faceanon.recognition import Encoding, distance_matrix, get_backend, image_sha256

MODES = ("clear", "naive", "reverse", "parrot")
#: Which side of each mode sees anonymized images: (gallery, probes).
MODE_SIDES = {
    "clear": (False, False),
    "naive": (False, True),
    "reverse": (True, False),
    "parrot": (True, True),
}


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a run measures; stored with the run as its config."""

    backend: str = "dlib-resnet"
    backend_options: dict = field(default_factory=dict)
    detector: str = "hog"
    region: str = "face"
    margin: float = 0.0
    #: What gets anonymized when the detector finds no face in an original: "whole" (the
    #: whole image, as a careful publisher would) or "none" (published as it is).
    on_miss: str = "whole"
    seed: int = 0

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "backend_options": dict(self.backend_options),
            "detector": self.detector,
            "region": self.region,
            "margin": self.margin,
            "on_miss": self.on_miss,
            "seed": self.seed,
        }


@dataclass
class Encoded:
    """One image as the recognizer saw it, plus the cost of producing it."""

    key: str
    sha256: str
    encoding: Encoding
    anonymize_seconds: float = 0.0
    encode_seconds: float = 0.0
    region_found: bool = True
    boxes: tuple = ()


def image_rng(seed: int, method: str, k: int | None, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, method, k, image), not on order or worker."""
    digest = hashlib.sha256(f"{seed}\x1f{method}\x1f{k}\x1f{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def is_set_method(method: Method) -> bool:
    """True when a method needs the whole set at once (k-Same)."""
    return type(method).anonymize_set is not Method.anonymize_set


# --- worker side -------------------------------------------------------------------------

#: Decoded originals a worker keeps, so that each variant does not decode every JPEG again.
IMAGE_CACHE_BYTES = 256 * 2**20


class DecodedImages:
    """Originals decoded once per worker, oldest dropped past a byte budget.

    The budget, not a count, bounds memory whatever the size of the photographs.
    """

    def __init__(self, *, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self.images: OrderedDict[str, np.ndarray] = OrderedDict()

    def read(self, path: str) -> np.ndarray:
        if path in self.images:
            self.images.move_to_end(path)
            return self.images[path]
        image = read_image(path)
        image.setflags(write=False)  # methods must copy, never change a shared original
        self.images[path] = image
        self.used += image.nbytes
        while self.used > self.budget and len(self.images) > 1:
            _, dropped = self.images.popitem(last=False)
            self.used -= dropped.nbytes
        return image


_WORKER: dict = {}


def _init_worker(settings: Settings, known: frozenset[str]) -> None:
    import cv2

    # dlib is single-threaded and we run one worker per core; OpenCV's own threads
    # would only fight the other workers for the same cores.
    cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER["settings"] = settings
    _WORKER["backend"] = get_backend(settings.backend, **settings.backend_options)
    _WORKER["known"] = known
    _WORKER["methods"] = {}
    _WORKER["images"] = DecodedImages(budget_bytes=IMAGE_CACHE_BYTES)


def _regions(image: np.ndarray, settings: Settings) -> tuple[list, bool]:
    from faceanon.detect import find_regions

    boxes = find_regions(
        image, detector=settings.detector, region=settings.region, margin=settings.margin
    )
    if boxes:
        return [tuple(int(v) for v in b) for b in boxes], True
    if settings.on_miss == "whole":
        return [(0, 0, image.shape[1], image.shape[0])], False
    return [], False


def _encode(key: str, image: np.ndarray, anonymize_seconds: float = 0.0, **extra) -> Encoded:
    sha = image_sha256(image)
    if sha in _WORKER["known"]:
        # Already in the cache: the main process fills the embedding in from DuckDB.
        return Encoded(key, sha, Encoding(None, -1), anonymize_seconds, 0.0, **extra)
    start = time.perf_counter()
    encoding = _WORKER["backend"].encode(image)
    return Encoded(key, sha, encoding, anonymize_seconds, time.perf_counter() - start, **extra)


def _original_task(task: tuple[str, str]) -> Encoded:
    key, path = task
    settings = _WORKER["settings"]
    image = _WORKER["images"].read(path)
    boxes, found = _regions(image, settings)
    return _encode(key, image, region_found=found, boxes=tuple(boxes))


def _variant_task(task: tuple[str, str, tuple, str, int | None]) -> Encoded:
    key, path, boxes, method_name, k = task
    settings = _WORKER["settings"]
    methods = _WORKER["methods"]
    if method_name not in methods:
        methods[method_name] = get_method(method_name)
    image = _WORKER["images"].read(path)
    start = time.perf_counter()
    anonymized = methods[method_name].anonymize(
        image, list(boxes), k=k, rng=image_rng(settings.seed, method_name, k, key)
    )
    return _encode(key, anonymized, time.perf_counter() - start)


def _array_task(task: tuple[str, np.ndarray, float]) -> Encoded:
    key, image, seconds = task
    return _encode(key, image, seconds)


# --- main side ----------------------------------------------------------------------------


class Evaluation:
    """Measure anonymization methods against a recognizer on one dataset split.

    Parameters
    ----------
    dataset, split
        The images and which of them are gallery and probes.
    db : faceanon.store.ResultsDB
        Where cases, scores, images and the embedding cache go.
    run_id : int
        The run the cases belong to (``db.start_run``).
    settings : Settings
        Backend, detector, region, seed.
    workers : int, optional
        Worker processes; default one per core. ``1`` runs everything in this process
        (the serial path, used to check that the parallel one gives the same scores).
    """

    def __init__(
        self,
        dataset: Dataset,
        split: Split,
        *,
        db,
        run_id: int,
        settings: Settings | None = None,
        workers: int | None = None,
        chunksize: int = 8,
    ):
        self.dataset = dataset
        self.split = split
        self.db = db
        self.run_id = run_id
        self.settings = settings or Settings()
        self.workers = workers or os.cpu_count() or 1
        self.chunksize = chunksize
        self.backend = get_backend(self.settings.backend, **self.settings.backend_options)
        self.samples: dict[str, Sample] = {s.key: s for s in (*split.gallery, *split.probes)}
        self._originals: dict[str, Encoded] | None = None
        self._variants: dict[tuple[str, int | None], dict[str, Encoded]] = {}
        self._plan: list[tuple[str, int | None]] = []
        self._pending: dict[tuple[str, int | None], Iterator[Encoded]] = {}
        self._pool: ProcessPoolExecutor | None = None

    # The pool is made lazily and reused across cases so models load once per worker.
    def _map(self, function, tasks: Sequence) -> Iterator[Encoded]:
        if self.workers <= 1 or len(tasks) < 2:
            _init_worker(self.settings, self._known_keys())
            return map(function, tasks)
        # Workers keep the cache snapshot they started with; a stale snapshot only costs a
        # re-encode, never a wrong result, because keys are pixel hashes.
        if self._pool is None:
            known = self._known_keys()
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker,
                initargs=(self.settings, known),
            )
        return self._pool.map(function, tasks, chunksize=self.chunksize)

    def _known_keys(self) -> frozenset[str]:
        return frozenset(self.db.cached_embedding_keys(self.backend.name))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _finish(self, results: Iterable[Encoded], *, role: str, method: str | None,
                k: int | None) -> dict[str, Encoded]:
        results = list(results)
        missing = [r.sha256 for r in results if r.encoding.faces_found < 0]
        cached = self.db.cached_embeddings(self.backend.name, missing) if missing else {}
        fresh: dict[str, Encoded] = {}
        for result in results:
            if result.encoding.faces_found < 0:
                embedding, faces = cached[result.sha256]
                result.encoding = Encoding(embedding, faces)
            else:
                fresh.setdefault(result.sha256, result)
        if fresh:
            self.db.store_embeddings(
                self.backend.name,
                list(fresh),
                [r.encoding.embedding for r in fresh.values()],
                [r.encoding.faces_found for r in fresh.values()],
            )
        self.db.add_images(
            self.run_id,
            {
                "key": [r.key for r in results],
                "role": [role] * len(results),
                "method": [method] * len(results),
                "k": [k] * len(results),
                "sha256": [r.sha256 for r in results],
                "acquired": [r.encoding.acquired for r in results],
                "faces_found": [r.encoding.faces_found for r in results],
                "backend": [self.backend.name] * len(results),
            },
        )
        return {r.key: r for r in results}

    def originals(self) -> dict[str, Encoded]:
        """Encode every original once (and find the regions to anonymize in it)."""
        if self._originals is None:
            tasks = [(key, str(self.dataset.path(s))) for key, s in self.samples.items()]
            results = self._map(_original_task, tasks)
            self._originals = self._finish(results, role="original", method=None, k=None)
        return self._originals

    def plan(self, variants: Iterable[tuple[str, int | None]]) -> None:
        """Say which (method, k) variants will be asked for, in order.

        While the results of one variant are being stored and compared, the workers
        already anonymize and encode the next one instead of waiting.
        """
        self._plan = list(dict.fromkeys(
            (name, get_method(name).check_k(k)) for name, k in variants))

    def _start_variant(self, method_name: str, k: int | None) -> Iterator[Encoded]:
        method = get_method(method_name)
        if is_set_method(method):
            return self._map(_array_task, self._anonymize_sets(method, method_name, k))
        originals = self.originals()
        tasks = [
            (key, str(self.dataset.path(s)), originals[key].boxes, method_name, k)
            for key, s in self.samples.items()
        ]
        return self._map(_variant_task, tasks)

    def _prefetch_after(self, current: tuple[str, int | None]) -> None:
        if current not in self._plan or self.workers <= 1:
            return
        following = self._plan[self._plan.index(current) + 1 :]
        if not following or following[0] in self._pending:
            return
        name, k = following[0]
        # Set methods anonymize in this process; starting them early would only block.
        if not is_set_method(get_method(name)):
            self._pending[following[0]] = self._start_variant(name, k)

    def variant(self, method_name: str, k: int | None) -> dict[str, Encoded]:
        """Anonymize every image with (method, k) once, and encode the results."""
        k = get_method(method_name).check_k(k)
        if (method_name, k) in self._variants:
            return self._variants[(method_name, k)]
        self.originals()
        results = self._pending.pop((method_name, k), None)
        if results is None:
            results = self._start_variant(method_name, k)
        self._prefetch_after((method_name, k))
        encoded = self._finish(results, role="anonymized", method=method_name, k=k)
        self._variants = {(method_name, k): encoded}  # keep one variant: bounded memory
        return encoded

    def _anonymize_sets(self, method: Method, method_name: str, k: int | None) -> list:
        # A set method sees the gallery and the probes as two separate sets, as a
        # publisher would de-identify one collection at a time.
        originals = self.originals()
        tasks = []
        for group in (self.split.gallery, self.split.probes):
            images = [read_image(self.dataset.path(s)) for s in group]
            boxes = [list(originals[s.key].boxes) for s in group]
            rng = image_rng(self.settings.seed, method_name, k, "|".join(s.key for s in group))
            start = time.perf_counter()
            anonymized = method.anonymize_set(images, boxes, k=k, rng=rng)
            per_image = (time.perf_counter() - start) / max(1, len(group))
            tasks.extend((s.key, a, per_image) for s, a in zip(group, anonymized, strict=True))
        return tasks

    def run_case(self, method_name: str | None, k: int | None, mode: str) -> tuple[int, dict]:
        """Compare every probe with every gallery image for one case and store the scores.

        Returns the case id and timing figures (seconds per image).
        """
        if mode not in MODE_SIDES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if (mode == "clear") != (method_name is None):
            raise ValueError("the clear mode takes no method, and every other mode needs one")
        originals = self.originals()
        anonymized = self.variant(method_name, k) if method_name else originals
        if method_name:
            k = get_method(method_name).check_k(k)
        gallery_anonymized, probes_anonymized = MODE_SIDES[mode]
        gallery_side = anonymized if gallery_anonymized else originals
        probe_side = anonymized if probes_anonymized else originals
        gallery, probes = self.split.gallery, self.split.probes
        distances = distance_matrix(
            [probe_side[p.key].encoding.embedding for p in probes],
            [gallery_side[g.key].encoding.embedding for g in gallery],
        )
        probe_ids = np.array([p.identity for p in probes])
        gallery_ids = np.array([g.identity for g in gallery])
        mated = probe_ids[:, None] == gallery_ids[None, :]
        case_id = self.db.add_case(
            self.run_id,
            method=method_name or "none",
            k=k,
            mode=mode,
            detector=self.settings.detector,
            backend=self.backend.name,
            options={"region": self.settings.region, "margin": self.settings.margin},
        )
        n_p, n_g = len(probes), len(gallery)
        self.db.add_scores(
            case_id,
            probe=np.repeat([p.key for p in probes], n_g),
            gallery=np.tile([g.key for g in gallery], n_p),
            mated=mated.ravel(),
            distance=distances.ravel(),
            probe_acquired=np.repeat([probe_side[p.key].encoding.acquired for p in probes], n_g),
            gallery_enrolled=np.tile([gallery_side[g.key].encoding.acquired for g in gallery], n_p),
        )
        used = [*(probe_side[p.key] for p in probes), *(gallery_side[g.key] for g in gallery)]
        timing = {
            "anonymize": [r.anonymize_seconds for r in anonymized.values()] if method_name else [],
            "recognize": [r.encode_seconds for r in used if r.encode_seconds > 0],
        }
        return case_id, timing
