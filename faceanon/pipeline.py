"""Run (method, k, mode, attack) cases end to end: anonymize, attack, encode, compare, store.

The expensive steps are dlib's face detection and the ResNet descriptor. The descriptor
runs in torch by default (``dlib-resnet-torch``, equal to dlib's within 1e-5, about ten
times faster batched), which leaves dlib's HOG detector as the larger cost. The pipeline
is built around doing each as few times as possible and on every core:

- Originals are encoded once per run; their embeddings and the anonymization regions found
  in them are reused by every method, strength and mode.
- Each anonymized variant (method, k) is made once, in the worker task that also attacks
  it: every planned attack (:mod:`faceanon.attacks`) restores the anonymized image in the
  original's anonymization regions and cuts its face chip (``detect`` with the backend's
  detector, the located attacks in the original's face box), and the chips of all attacks
  go through the network in one batch. Each attack processes only the sides its modes
  anonymize (naive: probes, reverse: gallery, parrot: both); the encodings are shared by
  the modes. Attacks that learn (:meth:`faceanon.attacks.Attack.prepare`) are prepared
  here, in the main process, once per variant, and sent to the workers with their tasks.
- The embedding cache (keyed by encoder and pixel sha256, plus the face box for the
  located attacks: :meth:`faceanon.attacks.Attack.cache_key`) skips every image already
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

import copy
import functools
import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from faceanon import utility
from faceanon.attacks import Attack, get_attack
from faceanon.datasets import Dataset, Sample, Split
from faceanon.errors import FaceanonError
from faceanon.executors import Executor, LocalPool
from faceanon.imageio import read_image
from faceanon.methods import Method, get_method, needs_whole_set
from faceanon.protocol import DEFAULT_ATTACK, Case, OnMiss, Variant, image_rng, set_rng
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
    #: Measure each anonymized image's utility (:mod:`faceanon.utility`) where it is made.
    utility: bool = True

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
            "utility": self.utility,
        }


@dataclass
class Encoded:
    """One image as an attacker's recognizer saw it, plus the cost of producing it.

    ``sha256`` is the (published) image's; ``encoder`` and ``cache_key`` are where its
    embedding is cached (:meth:`faceanon.attacks.Attack.cache_key`: the backend's name
    and ``sha256`` for ``detect`` and the originals). ``encode_seconds`` includes the
    attack's restoration.
    """

    key: str
    sha256: str
    encoding: Encoding
    anonymize_seconds: float = 0.0
    encode_seconds: float = 0.0
    boxes: tuple = ()
    attack: str = DEFAULT_ATTACK
    encoder: str = ""
    cache_key: str = ""
    #: An original's :func:`faceanon.utility.detached` reference; an anonymized image's
    #: :func:`faceanon.utility.image_record` (None when utility is not measured, and on
    #: all but one of the attacks of an image: utility belongs to the image).
    utility: object = None


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


def _init_worker(settings: Settings, known: Mapping[str, frozenset[str]],
                 methods: Mapping[str, Method], backend=None) -> None:
    """Load what a worker keeps: settings, the backend, the methods, the cache snapshot
    (encoder name -> cached keys).

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
    _WORKER["attacks"] = OrderedDict()


def _worker_method(name: str) -> Method:
    methods = _WORKER["methods"]
    if name not in methods:  # a variant nobody planned: made here, by name
        methods[name] = get_method(name)
    return methods[name]


def _regions(image: np.ndarray, settings: Settings):
    from faceanon.detect import anonymization_regions

    return anonymization_regions(image, detector=settings.detector, region=settings.region,
                                 margin=settings.margin, on_miss=settings.on_miss)


@dataclass
class _Chipped:
    """One image after the per-image step: its key, hash and face chip (None: cached)."""

    key: str
    sha256: str
    face: FaceChip | None
    anonymize_seconds: float
    chip_seconds: float
    boxes: tuple
    attack: str = DEFAULT_ATTACK
    encoder: str = ""
    cache_key: str = ""
    #: The attack whose ``encode_chips`` describes the chip (its own network, or the
    #: recognizer's by default); None for an original, which the recognizer describes.
    encoded_by: Attack | None = None
    utility: object = None


def _chip(key: str, image: np.ndarray, anonymize_seconds: float = 0.0,
          boxes: tuple = (), *, need_box: bool = False) -> _Chipped:
    """The backend's own detection and chip (originals; ``need_box``: even when cached,
    because the located attacks need the face box, which the cache does not keep)."""
    sha = image_sha256(image)
    encoder = _WORKER["backend"].name
    if sha in _WORKER["known"].get(encoder, ()) and not need_box:
        # Already in the cache: the main process fills the embedding in from DuckDB.
        return _Chipped(key, sha, None, anonymize_seconds, 0.0, boxes, DEFAULT_ATTACK,
                        encoder, sha)
    start = time.perf_counter()
    face = _WORKER["backend"].face_chip(image)
    return _Chipped(key, sha, face, anonymize_seconds, time.perf_counter() - start, boxes,
                    DEFAULT_ATTACK, encoder, sha)


#: Variants whose attack objects a worker keeps: the one being made and the next one,
#: which the pool starts while the first is compared.
KEPT_ATTACK_VARIANTS = 2


def _worker_attack(attack: Attack, variant: Variant) -> Attack:
    """The worker's copy of ``attack`` for ``variant``, kept across tasks: an attack that
    loads something lazily (a detector) loads it once per worker and variant."""
    kept: OrderedDict = _WORKER["attacks"]
    if variant not in kept:
        kept[variant] = {}
        while len(kept) > KEPT_ATTACK_VARIANTS:
            kept.popitem(last=False)
    return kept[variant].setdefault(attack.name, attack)


def _attacked_chips(key: str, anonymized: np.ndarray, anonymize_seconds: float, *,
                    variant: Variant, job: _AttackTask) -> list[_Chipped]:
    """Every attack of one anonymized image: restore in the regions, then its face chip.

    The attacks restore the regions the method anonymized (the original's anonymization
    regions, clipped to the image) and find the face in ``job.face_box``, the original's
    face box ``(x, y, w, h)`` (None: the original had no face, and the attack's chip
    falls back to detection). With ``job.utility`` (the original's reference), the
    image's utility is measured here too, once, on the first attack's row.
    """
    from faceanon.detect import clip_box

    regions, face_box, attacks = job.regions, job.face_box, job.attacks

    backend = _WORKER["backend"]
    sha = image_sha256(anonymized)
    clipped = [box for box in (clip_box(b, anonymized.shape) for b in regions) if box]
    out = []
    for attack in attacks:
        attack = _worker_attack(attack, variant)
        start = time.perf_counter()
        restored = anonymized
        for region in clipped or [None]:
            restored = attack.restore(restored, region=region, method=variant.method,
                                      k=variant.k)
        encoder, cache = attack.cache_key(restored, original_box=face_box, backend=backend)
        if cache in _WORKER["known"].get(encoder, ()):
            out.append(_Chipped(key, sha, None, anonymize_seconds, 0.0, regions, attack.name,
                                encoder, cache))
            continue
        face = attack.chip(restored, original_box=face_box, backend=backend)
        out.append(_Chipped(key, sha, face, anonymize_seconds, time.perf_counter() - start,
                            regions, attack.name, encoder, cache, attack))
    if job.utility is not None and out:
        # The detect attack's chip is the recognizer's detection on the published image:
        # the utility measure reuses it rather than running HOG again.
        detected = next((c.face for c in out if c.attack == DEFAULT_ATTACK), None)
        out[0].utility = utility.image_record(
            job.utility, anonymized, regions, original=_WORKER["images"].read(job.original),
            detections=utility.recognizer_detections(detected, backend))
    return out


def _encode_batch(chipped: list[_Chipped]) -> list[Encoded]:
    """Batched passes of the network over the chips of a task's images (every attack).

    Chips are batched per attack: through the attack's own network where it has one (the
    learned attacker), so a tuned attack is never scored by the plain recognizer, else
    through the recognizer. Batching per attack also keeps a case's scores independent of
    which other attacks run beside it: which chips share a batch moves a torch distance by
    about 1e-8. Each image's ``encode_seconds`` is its own restoration, detection and chip
    plus an equal share of its group's network time.
    """
    backend = _WORKER["backend"]
    groups: dict[int, list[int]] = {}
    for index, c in enumerate(chipped):
        if c.face is not None and c.face.acquired:
            groups.setdefault(id(c.encoded_by), []).append(index)
    vectors: dict[int, np.ndarray] = {}
    shares: dict[int, float] = {}
    for members in groups.values():
        encoder = chipped[members[0]].encoded_by
        chips = np.stack([chipped[i].face.chip for i in members])
        start = time.perf_counter()
        found = (backend.encode_chips(chips) if encoder is None
                 else encoder.encode_chips(chips, backend=backend))
        share = (time.perf_counter() - start) / len(members)
        for i, vector in zip(members, found, strict=True):
            vectors[i], shares[i] = vector, share
    out = []
    for index, c in enumerate(chipped):
        if c.face is None:
            encoding, seconds = Encoding(None, -1), 0.0
        elif c.face.acquired:
            encoding = Encoding(vectors[index], c.face.faces_found, c.face.box)
            seconds = c.chip_seconds + shares[index]
        else:
            encoding, seconds = Encoding(None, c.face.faces_found), c.chip_seconds
        out.append(Encoded(c.key, c.sha256, encoding, c.anonymize_seconds, seconds, c.boxes,
                           c.attack, c.encoder, c.cache_key, c.utility))
    return out


def _original_chip(task: tuple[str, str, bool]) -> list[_Chipped]:
    key, path, need_box = task
    image, settings = _WORKER["images"].read(path), _WORKER["settings"]
    regions = _regions(image, settings)
    chipped = _chip(key, image, boxes=regions.boxes, need_box=need_box)
    if settings.utility:  # the original's faces and landmarks, once for all its variants
        chipped.utility = utility.detached(utility.reference_for_regions(
            image, regions.boxes, found=regions.found,
            regions_are_faces=settings.region == "face" and settings.margin == 0))
    return [chipped]


@dataclass(frozen=True)
class _AttackTask:
    """What a worker does with one anonymized image besides making it: which attacks, in
    which regions, with which face box (see :func:`_attacked_chips`)."""

    regions: tuple
    face_box: tuple | None
    attacks: tuple
    #: The original's utility reference (None: utility is not measured for this image).
    utility: object = None
    #: The original's path (utility compares the anonymized image with it).
    original: str | None = None


def _variant_chip(task: tuple[str, str, Variant, _AttackTask]) -> list[_Chipped]:
    key, path, variant, job = task
    settings = _WORKER["settings"]
    method = _worker_method(variant.method)
    image = _WORKER["images"].read(path)
    start = time.perf_counter()
    anonymized = method.anonymize(
        image, list(job.regions), k=variant.k,
        rng=image_rng(settings.seed, variant.method, variant.k, key),
    )
    return _attacked_chips(key, anonymized, time.perf_counter() - start, variant=variant,
                           job=job)


def _array_chip(task: tuple[str, np.ndarray, float, Variant, _AttackTask]) -> list[_Chipped]:
    key, image, seconds, variant, job = task
    return _attacked_chips(key, image, seconds, variant=variant, job=job)


def _task_files(prepare, task: tuple) -> list[str]:
    """The original image files a task reads in its worker: the image it anonymizes, or,
    for an image a set method made in the main process, the original its utility is
    measured against (if it is)."""
    if prepare is _array_chip:
        job = task[4]
        return [job.original] if job.utility is not None else []
    return [task[1]]


def _batch_task(prepare, tasks: Sequence) -> list[Encoded]:
    """A worker's unit of work: each image to its chips (``prepare``: one per attack),
    then one batch through the network."""
    return _encode_batch([chip for task in tasks for chip in prepare(task)])


# --- main side ----------------------------------------------------------------------------

#: The two sides of a split, as the attack plan names them.
SIDES = ("gallery", "probes")


def mode_sides(mode) -> set[str]:
    """The sides a mode anonymizes, hence the ones its attack processes (naive: probes,
    reverse: gallery, parrot: both, clear: none)."""
    return ({"gallery"} if mode.gallery_anonymized else set()) | \
        ({"probes"} if mode.probes_anonymized else set())


def _xywh(css: Sequence[int] | None) -> tuple[int, int, int, int] | None:
    """A ``(top, right, bottom, left)`` face box as ``(x, y, w, h)``."""
    if css is None:
        return None
    top, right, bottom, left = (int(v) for v in css)
    return (left, top, right - left, bottom - top)


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
    attacks : mapping of str to Attack, optional
        Attack objects to use by name (e.g. made with options); any other attack is made
        by :func:`faceanon.attacks.get_attack` the first time a case names it.
    data_root : path-like, optional
        Given to :meth:`faceanon.attacks.Attack.prepare`: the folder that holds the
        benchmark's dataset (and ``lfw-singletons``, what a learning attack may train on).
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
        attacks: Mapping[str, Attack] | None = None,
        data_root=None,
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
        self.data_root = data_root
        self.backend = worker_backend(self.settings)  # the serial path encodes with it
        #: What computes the embeddings: the key of the embedding cache besides the name.
        self.model = self.backend.model_fingerprint()
        self.samples: dict[str, Sample] = {s.key: s for s in (*split.gallery, *split.probes)}
        self._side_keys = {"gallery": [s.key for s in split.gallery],
                           "probes": [s.key for s in split.probes]}
        self._methods: dict[str, Method] = dict(methods or {})
        self._attacks: dict[str, Attack] = dict(attacks or {})
        self._originals: dict[str, Encoded] | None = None
        self._boxes_known = False
        # variant -> attack -> image key -> encoding; one variant at a time (bounded memory)
        self._variants: dict[Variant, dict[str, dict[str, Encoded]]] = {}
        self._plan: list[Variant] = []
        # variant -> attack -> the sides it processes, in the order the cases came
        self._plan_sides: dict[Variant, dict[str, set[str]]] = {}
        self._pending: dict[Variant, Iterator[Encoded]] = {}
        self._prepared: dict[tuple[Variant, str], Attack] = {}
        # Image rows (and attack training records) made but not yet stored: they go with
        # the next case stored, in its transaction, so that no image row exists without a
        # case that used it.
        self._unstored_images: list[dict[str, list]] = []
        self._unstored_trainings: list[dict] = []
        self._unstored_utility: list[dict] = []  # the same for image_utility rows
        # (variant, image key) whose utility is measured: once per image, whichever
        # attacks and sides ask for it later
        self._utility_measured: set[tuple[Variant, str]] = set()

    def method(self, name: str) -> Method:
        """The method called ``name``, made on first use and kept for the evaluation."""
        if name not in self._methods:
            self._methods[name] = get_method(name)
        return self._methods[name]

    def attack(self, name: str) -> Attack:
        """The attack called ``name``, made on first use and kept for the evaluation."""
        if name not in self._attacks:
            self._attacks[name] = get_attack(name)
        return self._attacks[name]

    def canonical(self, variant: Variant) -> Variant:
        """``variant`` with its ``k`` checked by its method (None for methods without k)."""
        return Variant(variant.method, self.method(variant.method).check_k(variant.k))

    # The executor is started lazily and reused across cases so models load once per worker.
    def _map(self, prepare, tasks: Sequence) -> Iterator[Encoded]:
        """Each task to its image's chips (``prepare``), encoded a batch of tasks at a time.

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
        files = [[path for task in batch for path in _task_files(prepare, task)]
                 for batch in batches]
        return itertools.chain.from_iterable(self.executor.map(work, batches, files=files))

    def _encoders(self) -> list[str]:
        """The cache's encoder names the known attacks use (:meth:`Attack.cache_key`)."""
        name = self.backend.name
        locators = {a.locator for a in self._attacks.values()} - {"detector", "box"}
        return [name, f"{name}+box", *(f"{name}+{locator}" for locator in sorted(locators))]

    def _known_keys(self) -> dict[str, frozenset[str]]:
        return {encoder: frozenset(self.db.cached_embedding_keys(encoder, model=self.model))
                for encoder in self._encoders()}

    def close(self) -> None:
        self._pending.clear()  # results still on the way are dropped with the workers
        self.executor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _finish(self, results: Iterable[Encoded], *, role: str, variant: Variant | None,
                record: bool = True) -> list[Encoded]:
        """Fill cached embeddings in, cache the new ones, queue the image rows."""
        results = list(results)
        missing: dict[str, list[str]] = {}
        for result in results:
            if result.encoding.faces_found < 0:
                missing.setdefault(result.encoder, []).append(result.cache_key)
        cached = {encoder: self.db.cached_embeddings(encoder, keys, model=self.model)
                  for encoder, keys in missing.items()}
        fresh: dict[str, dict[str, Encoded]] = {}
        for result in results:
            if result.encoding.faces_found < 0:
                embedding, faces = cached[result.encoder][result.cache_key]
                result.encoding = Encoding(embedding, faces)
            else:
                fresh.setdefault(result.encoder, {}).setdefault(result.cache_key, result)
        for encoder, made in fresh.items():
            self.db.store_embeddings(
                encoder,
                list(made),
                [r.encoding.embedding for r in made.values()],
                [r.encoding.faces_found for r in made.values()],
                model=self.model,
            )
        if record:
            self._unstored_images.append({
                "key": [r.key for r in results],
                "role": [role] * len(results),
                "method": [None if variant is None else variant.method] * len(results),
                "k": [None if variant is None else variant.k] * len(results),
                "sha256": [r.sha256 for r in results],
                "acquired": [r.encoding.acquired for r in results],
                "faces_found": [r.encoding.faces_found for r in results],
                "backend": [self.backend.name] * len(results),
                "attack": [r.attack for r in results],
            })
        if variant is not None:
            self._unstored_utility.extend(
                {"method": variant.method, "k": variant.k, "key": r.key, **r.utility}
                for r in results if r.utility is not None)
        return results

    def _needs_boxes(self) -> bool:
        # the plan says which attacks run; without one, any attack given may
        planned = {a for sides in self._plan_sides.values() for a in sides} \
            if self._plan_sides else set(self._attacks)
        return bool(planned - {DEFAULT_ATTACK})

    def originals(self, *, need_boxes: bool | None = None) -> dict[str, Encoded]:
        """Encode every original once (and find the regions to anonymize in it).

        Parameters
        ----------
        need_boxes : bool, optional
            Whether the originals' face boxes are needed (by a located attack): the
            embedding cache keeps no box, so the originals are then encoded even when
            cached. Default: when an attack other than ``detect`` is planned (without a
            plan: given). An attack asked for later gets them then.
        """
        need_boxes = self._needs_boxes() if need_boxes is None else need_boxes
        if self._originals is None or (need_boxes and not self._boxes_known):
            tasks = [(key, str(self.dataset.path(s)), need_boxes)
                     for key, s in self.samples.items()]
            results = self._finish(self._map(_original_chip, tasks), role="original",
                                   variant=None, record=self._originals is None)
            self._originals = {r.key: r for r in results}
            self._boxes_known = need_boxes
        return self._originals

    def _face_box(self, key: str) -> tuple[int, int, int, int] | None:
        """The original's face box ``(x, y, w, h)`` (the face the recognizer encoded)."""
        return _xywh(self.originals()[key].encoding.box)

    def plan(self, cases: Iterable[Case | Variant]) -> None:
        """Say which cases (or variants) will be asked for, in order.

        Their methods and attacks are made now, so that the worker pool starts with all
        of them; each variant's images are attacked by every attack of its cases in the
        task that makes them, each attack on the sides its modes anonymize; and while the
        results of one variant are being stored and compared, the workers already
        anonymize and attack the next one instead of waiting. A bare variant means the
        ``detect`` attack on both sides.
        """
        plan: dict[Variant, dict[str, set[str]]] = {}
        for item in cases:
            if isinstance(item, Case):
                if item.variant is None:
                    continue
                variant, attack, sides = item.variant, item.attack, mode_sides(item.mode)
            else:
                variant, attack, sides = item, DEFAULT_ATTACK, set(SIDES)
            self.attack(attack)
            plan.setdefault(self.canonical(variant), {}).setdefault(attack, set()).update(sides)
        self._plan_sides = plan
        self._plan = list(plan)

    def _jobs(self, sides_by_attack: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
        """image key -> the attacks that process it, from attack -> sides."""
        jobs: dict[str, list[str]] = {}
        for attack, sides in sides_by_attack.items():
            for side in SIDES:
                if side in sides:
                    for key in self._side_keys[side]:
                        jobs.setdefault(key, []).append(attack)
        return jobs

    def _prepared_attack(self, variant: Variant, name: str) -> Attack:
        """The attack called ``name``, prepared for ``variant`` (in this process, once)."""
        if (variant, name) not in self._prepared:
            attack = copy.copy(self.attack(name))  # prepare() may keep per-variant state
            attack.check_method(variant.method, variant.k)
            attack.prepare(method=variant.method, k=variant.k, seed=self.settings.seed,
                           data_root=self.data_root)
            record = attack.training_record()
            if record is not None:
                self._unstored_trainings.append({"method": variant.method, "k": variant.k,
                                                 "attack": name, "record": record})
            self._prepared[(variant, name)] = attack
        return self._prepared[(variant, name)]

    def _start_variant(self, variant: Variant,
                       jobs: Mapping[str, Sequence[str]]) -> Iterator[Encoded]:
        """Make ``variant``'s images of the keys in ``jobs`` and attack each with its
        attacks, in the worker pool."""
        method = self.method(variant.method)
        originals = self.originals()
        prepared = {name: self._prepared_attack(variant, name)
                    for name in dict.fromkeys(itertools.chain.from_iterable(jobs.values()))}

        def job(key: str) -> _AttackTask:
            reference = None
            if self.settings.utility and (variant, key) not in self._utility_measured:
                self._utility_measured.add((variant, key))
                reference = originals[key].utility
            return _AttackTask(tuple(originals[key].boxes), self._face_box(key),
                               tuple(prepared[name] for name in jobs[key]), reference,
                               str(self.dataset.path(self.samples[key])))

        if needs_whole_set(method):
            return self._map(_array_chip, [
                (key, image, seconds, variant, job(key))
                for key, image, seconds in self._anonymize_sets(method, variant)
                if key in jobs])
        tasks = [(key, str(self.dataset.path(self.samples[key])), variant, job(key))
                 for key in self.samples if key in jobs]
        return self._map(_variant_chip, tasks)

    def _planned_jobs(self, variant: Variant) -> dict[str, list[str]]:
        return self._jobs(self._plan_sides.get(variant) or {DEFAULT_ATTACK: SIDES})

    def _prefetch_after(self, current: Variant) -> None:
        if current not in self._plan or not self.executor.parallel:
            return
        following = self._plan[self._plan.index(current) + 1 :]
        if not following or following[0] in self._pending:
            return
        upcoming = following[0]
        # Set methods anonymize in this process; starting them early would only block.
        if not needs_whole_set(self.method(upcoming.method)):
            self._pending[upcoming] = self._start_variant(upcoming,
                                                          self._planned_jobs(upcoming))

    def _encodings(self, variant: Variant, results: Iterable[Encoded],
                   into: dict[str, dict[str, Encoded]]) -> None:
        for result in self._finish(results, role="anonymized", variant=variant):
            into.setdefault(result.attack, {})[result.key] = result

    def variant(self, variant: Variant, *, attack: str = DEFAULT_ATTACK,
                sides: Iterable[str] = SIDES) -> dict[str, Encoded]:
        """``variant``'s images on ``sides`` as ``attack`` encoded them.

        The first call for a variant anonymizes its images once and runs every attack
        planned for it (:meth:`plan`) in the same worker task; an attack or a side that
        was not planned is made when asked for (the same pixels again: the seed rule).

        Returns
        -------
        dict
            image key -> :class:`Encoded`, for the images of ``sides`` (and any other
            side the attack already processed).
        """
        variant = self.canonical(variant)
        made = self._variants.get(variant)
        if made is None:
            self.originals()
            results = self._pending.pop(variant, None)
            if results is None:
                results = self._start_variant(variant, self._planned_jobs(variant))
            self._prefetch_after(variant)
            made = {}
            self._encodings(variant, results, made)
            self._variants = {variant: made}  # keep one variant: bounded memory
            # prepared attacks are kept for the variants still to come only
            self._prepared = {key: value for key, value in self._prepared.items()
                              if key[0] == variant or key[0] in self._pending}
        have = made.get(attack, {})
        wanted = {attack: [side for side in SIDES if side in set(sides)
                           and any(k not in have for k in self._side_keys[side])]}
        if wanted[attack]:
            if attack != DEFAULT_ATTACK:
                self.originals(need_boxes=True)
            self._encodings(variant, self._start_variant(variant, self._jobs(wanted)), made)
        return made.get(attack, {})

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
        variant = None if case.variant is None else self.canonical(case.variant)
        if variant is not None:  # an inapplicable attack fails before any work
            self.attack(case.attack).check_method(variant.method, variant.k)
        originals = self.originals()
        anonymized = originals if variant is None else self.variant(
            variant, attack=case.attack, sides=mode_sides(case.mode))
        case = Case(case.method, None if variant is None else variant.k, case.mode,
                    case.attack)
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
            "anonymize": [] if variant is None else [anonymized[key].anonymize_seconds
                                                     for key in self._anonymized_keys(case)],
            "recognize": [r.encode_seconds for r in used if r.encode_seconds > 0],
        }
        return ComparedCase(case, scores, per_image)

    def _anonymized_keys(self, case: Case) -> list[str]:
        """The images a case's attack processed: those of the sides its mode anonymizes."""
        sides = mode_sides(case.mode)
        return [key for side in SIDES if side in sides for key in self._side_keys[side]]

    def store(self, compared: ComparedCase, *, timings=()) -> CaseResult:
        """Store a compared case in ONE transaction (:meth:`ResultsDB.write_case`).

        The case's row, its scores, its timings, the image rows made since the last case
        was stored (the originals with the first case, a variant's images with its first
        case) and the training records of attacks prepared since then are written
        together: a process killed at any moment leaves the case complete or absent.

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
            attack=case.attack,
            detector=self.settings.detector,
            backend=self.backend.name,
            options={"region": self.settings.region, "margin": self.settings.margin},
            scores=compared.scores,
            images=images,
            timings=list(timings) or None,
            attack_trainings=self._unstored_trainings or None,
            utility=self._unstored_utility or None,
        )
        self._unstored_images, self._unstored_trainings, self._unstored_utility = [], [], []
        return CaseResult(case_id, case, compared.per_image)

    def run_case(self, case: Case, *, timings=()) -> CaseResult:
        """:meth:`compare` a case and :meth:`store` it (with ``timings``, if given)."""
        return self.store(self.compare(case), timings=timings)
