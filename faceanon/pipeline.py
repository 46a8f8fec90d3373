"""Run (method, k, mode) cases end to end: anonymize, encode, compare, store.

The expensive steps are dlib's face detection and the ResNet descriptor. The descriptor
runs in torch by default (``dlib-resnet-torch``, equal to dlib's within 1e-5, about ten
times faster batched), which leaves dlib's HOG detector as the larger cost. The pipeline
is built around doing each as few times as possible and on every core:

- Originals are encoded once per run; their embeddings and the anonymization regions found
  in them are reused by every method, strength and mode.
- Each anonymized variant (method, k) is made and encoded once and shared by the naive,
  reverse and parrot modes.
- The embedding cache (keyed by backend and pixel sha256) skips every image already
  encoded in this run or an earlier one.
- Worker processes each keep their models loaded and take work a batch of images at a
  time: each image is anonymized, detected and cut to dlib's 150 px face chip in turn
  (single-threaded), then the batch's chips go through the network together, with one
  torch thread per worker. Only embeddings come back, never images or chips, so memory
  stays bounded however large the dataset.
- Distances are one numpy matrix per case, written to DuckDB in one bulk insert, in the
  same transaction as the case's row, its images and its timings (:meth:`Evaluation.store`).

Recognition modes, cases and the per-image seed rule are defined in
:mod:`faceanon.protocol`; this module only runs them.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from faceanon.datasets import Dataset, Sample, Split
from faceanon.errors import FaceanonError
from faceanon.executors import Executor, LocalPool
from faceanon.imageio import read_image
from faceanon.methods import Method, get_method, needs_whole_set
from faceanon.protocol import Case, OnMiss, Variant, image_rng, set_rng
from faceanon.recognition import (
    BACKENDS,
    Encoding,
    FaceChip,
    distance_matrix,
    get_backend,
    image_sha256,
    resolve_backend,
)


class EvaluationError(FaceanonError, ValueError):
    """The evaluation was set up in a way that cannot measure what it should."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a run measures; stored with the run as its config."""

    #: A backend of :data:`faceanon.recognition.BACKENDS`, or ``auto``: the torch
    #: descriptor where it runs and equals dlib's, else dlib's (see :meth:`resolved`).
    backend: str = "auto"
    backend_options: dict = field(default_factory=dict)
    detector: str = "hog"
    region: str = "face"
    margin: float = 0.0
    #: What gets anonymized when the detector finds no face in an original. Only
    #: ``whole`` can be measured: every probe needs an anonymized image to be searched with.
    on_miss: OnMiss = OnMiss.WHOLE
    seed: int = 0

    def __post_init__(self) -> None:
        on_miss = OnMiss.parse(self.on_miss)  # an unknown policy: OnMissError
        if on_miss is not OnMiss.WHOLE:
            raise EvaluationError(
                f"on_miss={self.on_miss!r} cannot be measured: every image needs an "
                "anonymized version, so an image without a face is anonymized whole"
            )
        object.__setattr__(self, "on_miss", on_miss)

    def resolved(self) -> Settings:
        """These settings with ``backend="auto"`` replaced by the backend it picks here.

        The choice (:func:`faceanon.recognition.resolve_backend`) imports torch and dlib
        and compares the two once per process, so it is made when a run starts, never
        at import.
        """
        device = self.backend_options.get("device", "cpu")
        return replace(self, backend=resolve_backend(self.backend, device=device))

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "backend_options": dict(self.backend_options),
            "detector": self.detector,
            "region": self.region,
            "margin": self.margin,
            "on_miss": self.on_miss.value,
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
    boxes: tuple = ()


@dataclass(frozen=True)
class ComparedCase:
    """One case measured by :meth:`Evaluation.compare`, not yet stored.

    ``scores`` holds the columns of :meth:`faceanon.store.ResultsDB.write_case`'s
    ``scores``; ``per_image`` maps ``"anonymize"`` and ``"recognize"`` to seconds per
    image (only images that were really anonymized or encoded in this run: cached
    embeddings cost nothing and are left out).
    """

    case: Case
    scores: dict
    per_image: dict[str, list[float]]


@dataclass(frozen=True)
class CaseResult:
    """What :meth:`Evaluation.store` stored (its case id), and what the images cost.

    ``per_image`` is :attr:`ComparedCase.per_image`.
    """

    case_id: int
    case: Case
    per_image: dict[str, list[float]]


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


#: Images per unit of worker work: each is detected and cut to a chip in turn, then the
#: chips go through the network in one batch (torch: about 5 ms per face at 16, 11 ms
#: one by one, on one core; see benchmarks/encoder.py).
ENCODE_BATCH = 16

_WORKER: dict = {}


def worker_backend(settings: Settings):
    """The backend a pipeline worker encodes with.

    The options of ``settings`` over the backend's ``worker_options`` (for the torch
    descriptor one thread, as one worker runs per core). ``settings.backend`` must be
    resolved (:meth:`Settings.resolved`).
    """
    options = {**BACKENDS[settings.backend].worker_options, **settings.backend_options}
    return get_backend(settings.backend, **options)


def _init_worker(settings: Settings, known: frozenset[str], methods: Mapping[str, Method],
                 backend=None) -> None:
    """Load what a worker keeps: settings, the backend, the methods, the cache snapshot.

    ``backend`` is given on the serial path, which reuses the evaluation's own; a pool
    process makes its own (:func:`worker_backend`).
    """
    import cv2

    # dlib is single-threaded and we run one worker per core; OpenCV's own threads
    # would only fight the other workers for the same cores.
    cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER["settings"] = settings
    _WORKER["backend"] = worker_backend(settings) if backend is None else backend
    _WORKER["known"] = known
    _WORKER["methods"] = dict(methods)
    _WORKER["images"] = DecodedImages(budget_bytes=IMAGE_CACHE_BYTES)


def _worker_method(name: str) -> Method:
    methods = _WORKER["methods"]
    if name not in methods:  # a variant nobody planned: made here, by name
        methods[name] = get_method(name)
    return methods[name]


def _regions(image: np.ndarray, settings: Settings) -> tuple:
    from faceanon.detect import anonymization_regions

    return anonymization_regions(image, detector=settings.detector, region=settings.region,
                                 margin=settings.margin, on_miss=settings.on_miss).boxes


@dataclass
class _Chipped:
    """One image after the per-image step: its key, hash and face chip (None: cached)."""

    key: str
    sha256: str
    face: FaceChip | None
    anonymize_seconds: float
    chip_seconds: float
    boxes: tuple


def _chip(key: str, image: np.ndarray, anonymize_seconds: float = 0.0,
          boxes: tuple = ()) -> _Chipped:
    sha = image_sha256(image)
    if sha in _WORKER["known"]:
        # Already in the cache: the main process fills the embedding in from DuckDB.
        return _Chipped(key, sha, None, anonymize_seconds, 0.0, boxes)
    start = time.perf_counter()
    face = _WORKER["backend"].face_chip(image)
    return _Chipped(key, sha, face, anonymize_seconds, time.perf_counter() - start, boxes)


def _encode_batch(chipped: list[_Chipped]) -> list[Encoded]:
    """One batched pass of the network over the chips of a task's images.

    Each image's ``encode_seconds`` is its own detection and chip plus an equal share of
    the batch's network time.
    """
    chips = [c.face.chip for c in chipped if c.face is not None and c.face.acquired]
    vectors = iter(())
    share = 0.0
    if chips:
        start = time.perf_counter()
        vectors = iter(_WORKER["backend"].encode_chips(np.stack(chips)))
        share = (time.perf_counter() - start) / len(chips)
    out = []
    for c in chipped:
        if c.face is None:
            encoding, seconds = Encoding(None, -1), 0.0
        elif c.face.acquired:
            encoding = Encoding(next(vectors), c.face.faces_found, c.face.box)
            seconds = c.chip_seconds + share
        else:
            encoding, seconds = Encoding(None, c.face.faces_found), c.chip_seconds
        out.append(Encoded(c.key, c.sha256, encoding, c.anonymize_seconds, seconds, c.boxes))
    return out


def _original_chip(task: tuple[str, str]) -> _Chipped:
    key, path = task
    image = _WORKER["images"].read(path)
    return _chip(key, image, boxes=_regions(image, _WORKER["settings"]))


def _variant_chip(task: tuple[str, str, tuple, Variant]) -> _Chipped:
    key, path, boxes, variant = task
    settings = _WORKER["settings"]
    method = _worker_method(variant.method)
    image = _WORKER["images"].read(path)
    start = time.perf_counter()
    anonymized = method.anonymize(
        image, list(boxes), k=variant.k,
        rng=image_rng(settings.seed, variant.method, variant.k, key),
    )
    return _chip(key, anonymized, time.perf_counter() - start)


def _array_chip(task: tuple[str, np.ndarray, float]) -> _Chipped:
    key, image, seconds = task
    return _chip(key, image, seconds)


def _batch_task(prepare, tasks: Sequence) -> list[Encoded]:
    """A worker's unit of work: each image to its chip (``prepare``), then one batch."""
    return _encode_batch([prepare(task) for task in tasks])


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
        Backend, detector, region, seed; a backend of ``auto`` is resolved here
        (:meth:`Settings.resolved`), and :attr:`settings` holds the backend used.
    workers : int, optional
        Worker processes of the default executor (:class:`faceanon.executors.LocalPool`);
        default one per core. ``1`` runs everything in this process (the serial path,
        used to check that the parallel one gives the same scores).
    batch_size : int, optional
        Images a worker takes at a time; their face chips are encoded in one batch.
    methods : mapping of str to Method, optional
        Method objects to use by name (e.g. made with options); any other method is made
        by :func:`faceanon.methods.get_method` the first time it is needed. Each method
        is made once per evaluation; the methods known when the worker pool starts
        (:meth:`plan` says which) are copied to every worker once.
    executor : faceanon.executors.Executor, optional
        Where the per-image work runs (:func:`faceanon.executors.get_executor`); default
        a local process pool of ``workers``. The evaluation starts it when work first
        needs it and closes it in :meth:`close`. Set methods (k-Same) anonymize each set
        in this process whatever the executor; their images are encoded by its workers.
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
        batch_size: int = ENCODE_BATCH,
        methods: Mapping[str, Method] | None = None,
        executor: Executor | None = None,
    ):
        self.dataset = dataset
        self.split = split
        self.db = db
        self.run_id = run_id
        self.settings = (settings or Settings()).resolved()
        self.executor = executor if executor is not None else LocalPool(workers=workers)
        self.workers = getattr(self.executor, "workers", None) or workers
        self.batch_size = batch_size
        self.backend = worker_backend(self.settings)  # the serial path encodes with it
        #: What computes the embeddings: the key of the embedding cache besides the name.
        self.model = self.backend.model_fingerprint()
        self.samples: dict[str, Sample] = {s.key: s for s in (*split.gallery, *split.probes)}
        self._methods: dict[str, Method] = dict(methods or {})
        self._originals: dict[str, Encoded] | None = None
        self._variants: dict[Variant, dict[str, Encoded]] = {}
        self._plan: list[Variant] = []
        self._pending: dict[Variant, Iterator[Encoded]] = {}
        # Image rows made but not yet stored: they go with the next case stored, in its
        # transaction, so that no image row exists without a case that used it.
        self._unstored_images: list[dict[str, list]] = []

    def method(self, name: str) -> Method:
        """The method called ``name``, made on first use and kept for the evaluation."""
        if name not in self._methods:
            self._methods[name] = get_method(name)
        return self._methods[name]

    def canonical(self, variant: Variant) -> Variant:
        """``variant`` with its ``k`` checked by its method (None for methods without k)."""
        return Variant(variant.method, self.method(variant.method).check_k(variant.k))

    # The executor is started lazily and reused across cases so models load once per worker.
    def _map(self, prepare, tasks: Sequence) -> Iterator[Encoded]:
        """Each task to its image's chip (``prepare``), encoded a batch of tasks at a time.

        Batches are cut the same way on the serial and the parallel path, so both pass
        the same chips through the network together.
        """
        work = functools.partial(_batch_task, prepare)
        batches = [tasks[i:i + self.batch_size] for i in range(0, len(tasks), self.batch_size)]
        if not self.executor.parallel or len(tasks) < 2:
            _init_worker(self.settings, self._known_keys(), self._methods, self.backend)
            return itertools.chain.from_iterable(map(work, batches))
        # Workers keep the cache snapshot they started with; a stale snapshot only costs a
        # re-encode, never a wrong result, because keys are pixel hashes.
        if not self.executor.started:
            self.executor.start(_init_worker,
                                (self.settings, self._known_keys(), dict(self._methods)))
        # The original files each batch reads: an executor whose workers may see other
        # files than this process checks their pixels.
        files = None if prepare is _array_chip else [[t[1] for t in b] for b in batches]
        return itertools.chain.from_iterable(self.executor.map(work, batches, files=files))

    def _known_keys(self) -> frozenset[str]:
        return frozenset(self.db.cached_embedding_keys(self.backend.name, model=self.model))

    def close(self) -> None:
        self._pending.clear()  # results still on the way are dropped with the workers
        self.executor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _finish(self, results: Iterable[Encoded], *, role: str,
                variant: Variant | None) -> dict[str, Encoded]:
        results = list(results)
        missing = [r.sha256 for r in results if r.encoding.faces_found < 0]
        cached = (self.db.cached_embeddings(self.backend.name, missing, model=self.model)
                  if missing else {})
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
                model=self.model,
            )
        self._unstored_images.append({
            "key": [r.key for r in results],
            "role": [role] * len(results),
            "method": [None if variant is None else variant.method] * len(results),
            "k": [None if variant is None else variant.k] * len(results),
            "sha256": [r.sha256 for r in results],
            "acquired": [r.encoding.acquired for r in results],
            "faces_found": [r.encoding.faces_found for r in results],
            "backend": [self.backend.name] * len(results),
        })
        return {r.key: r for r in results}

    def originals(self) -> dict[str, Encoded]:
        """Encode every original once (and find the regions to anonymize in it)."""
        if self._originals is None:
            tasks = [(key, str(self.dataset.path(s))) for key, s in self.samples.items()]
            results = self._map(_original_chip, tasks)
            self._originals = self._finish(results, role="original", variant=None)
        return self._originals

    def plan(self, cases: Iterable[Case | Variant]) -> None:
        """Say which cases (or variants) will be asked for, in order.

        Their methods are made now, so that the worker pool starts with all of them; and
        while the results of one variant are being stored and compared, the workers
        already anonymize and encode the next one instead of waiting.
        """
        variants = (c.variant if isinstance(c, Case) else c for c in cases)
        self._plan = list(dict.fromkeys(self.canonical(v) for v in variants if v is not None))

    def _start_variant(self, variant: Variant) -> Iterator[Encoded]:
        method = self.method(variant.method)
        if needs_whole_set(method):
            return self._map(_array_chip, self._anonymize_sets(method, variant))
        originals = self.originals()
        tasks = [
            (key, str(self.dataset.path(s)), originals[key].boxes, variant)
            for key, s in self.samples.items()
        ]
        return self._map(_variant_chip, tasks)

    def _prefetch_after(self, current: Variant) -> None:
        if current not in self._plan or not self.executor.parallel:
            return
        following = self._plan[self._plan.index(current) + 1 :]
        if not following or following[0] in self._pending:
            return
        upcoming = following[0]
        # Set methods anonymize in this process; starting them early would only block.
        if not needs_whole_set(self.method(upcoming.method)):
            self._pending[upcoming] = self._start_variant(upcoming)

    def variant(self, variant: Variant) -> dict[str, Encoded]:
        """Anonymize every image with ``variant`` once, and encode the results."""
        variant = self.canonical(variant)
        if variant in self._variants:
            return self._variants[variant]
        self.originals()
        results = self._pending.pop(variant, None)
        if results is None:
            results = self._start_variant(variant)
        self._prefetch_after(variant)
        encoded = self._finish(results, role="anonymized", variant=variant)
        self._variants = {variant: encoded}  # keep one variant: bounded memory
        return encoded

    def _anonymize_sets(self, method: Method, variant: Variant) -> list:
        # A set method sees the gallery and the probes as two separate sets, as a
        # publisher would de-identify one collection at a time.
        originals = self.originals()
        tasks = []
        for group in (self.split.gallery, self.split.probes):
            images = [read_image(self.dataset.path(s)) for s in group]
            boxes = [list(originals[s.key].boxes) for s in group]
            rng = set_rng(self.settings.seed, variant.method, variant.k, [s.key for s in group])
            start = time.perf_counter()
            anonymized = method.anonymize_set(images, boxes, k=variant.k, rng=rng)
            per_image = (time.perf_counter() - start) / max(1, len(group))
            tasks.extend((s.key, a, per_image) for s, a in zip(group, anonymized, strict=True))
        return tasks

    def compare(self, case: Case) -> ComparedCase:
        """Compare every probe with every gallery image for one case (nothing is stored).

        Parameters
        ----------
        case : Case
            The case to measure; its ``k`` is checked by its method first.

        Returns
        -------
        ComparedCase
            The case with its ``k`` as checked by its method, its scores, and the seconds
            per image it took to anonymize and encode.
        """
        originals = self.originals()
        variant = None if case.variant is None else self.canonical(case.variant)
        anonymized = originals if variant is None else self.variant(variant)
        case = Case(case.method, None if variant is None else variant.k, case.mode)
        gallery_side = anonymized if case.mode.gallery_anonymized else originals
        probe_side = anonymized if case.mode.probes_anonymized else originals
        gallery, probes = self.split.gallery, self.split.probes
        distances = distance_matrix(
            [probe_side[p.key].encoding.embedding for p in probes],
            [gallery_side[g.key].encoding.embedding for g in gallery],
        )
        probe_ids = np.array([p.identity for p in probes])
        gallery_ids = np.array([g.identity for g in gallery])
        mated = probe_ids[:, None] == gallery_ids[None, :]
        n_p, n_g = len(probes), len(gallery)
        scores = {
            "probe": np.repeat([p.key for p in probes], n_g),
            "gallery": np.tile([g.key for g in gallery], n_p),
            "mated": mated.ravel(),
            "distance": distances.ravel(),
            "probe_acquired": np.repeat([probe_side[p.key].encoding.acquired for p in probes],
                                        n_g),
            "gallery_enrolled": np.tile([gallery_side[g.key].encoding.acquired
                                         for g in gallery], n_p),
        }
        used = [*(probe_side[p.key] for p in probes), *(gallery_side[g.key] for g in gallery)]
        per_image = {
            "anonymize": [] if variant is None else [r.anonymize_seconds
                                                     for r in anonymized.values()],
            "recognize": [r.encode_seconds for r in used if r.encode_seconds > 0],
        }
        return ComparedCase(case, scores, per_image)

    def store(self, compared: ComparedCase, *, timings=()) -> CaseResult:
        """Store a compared case in ONE transaction (:meth:`ResultsDB.write_case`).

        The case's row, its scores, its timings and the image rows made since the last
        case was stored (the originals with the first case, a variant's images with its
        first case) are written together: a process killed at any moment leaves the case
        complete or absent.

        Parameters
        ----------
        compared : ComparedCase
            From :meth:`compare`.
        timings : sequence of dict, optional
            Timing rows of the case (``ResultsDB.add_timings``).

        Returns
        -------
        CaseResult
        """
        case = compared.case
        images = None
        if self._unstored_images:
            images = {column: [value for rows in self._unstored_images
                               for value in rows[column]]
                      for column in self._unstored_images[0]}
        case_id = self.db.write_case(
            self.run_id,
            method=case.stored_method,
            k=case.k,
            mode=case.mode.value,
            detector=self.settings.detector,
            backend=self.backend.name,
            options={"region": self.settings.region, "margin": self.settings.margin},
            scores=compared.scores,
            images=images,
            timings=list(timings) or None,
        )
        self._unstored_images = []
        return CaseResult(case_id, case, compared.per_image)

    def run_case(self, case: Case, *, timings=()) -> CaseResult:
        """:meth:`compare` a case and :meth:`store` it (with ``timings``, if given)."""
        return self.store(self.compare(case), timings=timings)
