"""The learned attack: dlib's own network, fine-tuned to read anonymized faces.

A filter attack undoes what a formula can undo. An adaptive attacker (McPherson et al.,
2016; SEBA's retrained recognizers) instead learns the inverse from examples: it knows the
method and its strength (Kerckhoffs), anonymizes faces of its own with them, and trains a
recognizer to put each anonymized face where the clear face lies in the recognizer's space.

Method
------
1. Faces (once, whatever the method): a deterministic subset of ``lfw-singletons``, people
   who appear in no benchmark (:func:`training_samples` checks it against ``lfw``). dlib HOG
   finds each face; the clear chip's embedding by the plain recognizer (and that of its
   mirror image) is the *target*. Cached in ``faces-*.npz``.
2. Pairs (per method and k): each image is anonymized in its HOG boxes with the
   benchmark's seed rule (:func:`faceanon.protocol.image_rng`), restored by the method's
   filter attack (``prefilter="auto"``: deblur, unpixelate, median; undoing what a formula
   can before learning the rest raised held-out rank-1 on pixelate k10 from 9 % to 73 %),
   and the chip is cut from it in the original's face box (the attacker sees where the
   face is: the ``located`` attack's rule, :meth:`Learned.encode_restored`).
3. Training: the torch port of dlib's ResNet (:mod:`faceanon.resnet_torch`) starts from
   dlib's weights; the blocks before ``trainable_from`` stay frozen, so their output is
   computed once per chip and training runs only the last blocks and the final linear layer.
   The loss is the squared distance to the target (the recognizer compares Euclidean
   distances) plus a contrastive term over the batch (every singleton is another person:
   the anonymized face must be nearer its own target than any other), which keeps the
   output an identity metric instead of a regression to the mean face -- the failure of a
   small network trained from scratch. A tenth of the identities is held out; the epoch
   with the lowest held-out loss is kept.
4. The trained block weights go to the cache (``$FACEANON_CACHE`` or
   ``~/.cache/faceanon/attacks/``), named by a key over (method, k, seed, settings, code
   version, the data used and dlib's weights), written atomically and checked by a sha256
   of their tensors when read back.

In the benchmark the gallery of clear faces is encoded by the plain recognizer; only the
anonymized side goes through the fine-tuned network, which was trained to map into that
same space.

torch is imported inside functions (the ``gan`` extra), so listing attacks stays light.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from faceanon.attacks import Attack, AttackError, css_box, largest_box
from faceanon.recognition import CHIP_SIZE, Encoding

CACHE_ENV = "FACEANON_CACHE"
TRAINING_DATASET = "lfw-singletons"
BENCHMARK_DATASET = "lfw"

_WEIGHTS_FORMAT = "faceanon-learned-attack/1"
_FACES_FORMAT = "faceanon-learned-faces/1"

#: Methods whose images are anonymized one by one (k-Same needs sets; the GAN is trained
#: on the same singletons, which would make the attack see its training faces).
TRAINABLE_METHODS = frozenset({"blur", "pixelate", "noise", "blackout", "mask"})

#: Source files whose change changes the trained model: this module, the network and the
#: methods that make the training pairs.
_CODE_FILES = ("attack_learned.py", "resnet_torch.py", "methods.py")

#: The filter attack ``prefilter="auto"`` runs first, per method (others: none).
PREFILTERS = {"blur": "deblur", "pixelate": "unpixelate", "noise": "median"}

#: ``len(faceanon.resnet_torch.RESIDUAL_BLOCKS)``, spelled out so that checking settings
#: does not import torch (a test keeps the two equal).
RESIDUAL_BLOCK_COUNT = 14


class LearnedAttackError(AttackError):
    """The learned attack cannot train or load (names the file or setting at fault)."""


@dataclass(frozen=True)
class LearnedSettings:
    """What the learned attacker trains on and how (all part of the cache key).

    Parameters
    ----------
    images : int
        Singleton images drawn (by a seeded hash order) before faces are detected; the ones
        without a HOG face are dropped. ``lfw-singletons`` holds 4,069.
    validation : float
        Share of the faces held out to choose the epoch and report the held-out loss.
    trainable_from : int
        First residual block trained (0-13; 7 is the first 128-channel block, 10 the first
        256-channel one). Earlier blocks and the stem keep dlib's weights.
    epochs : int
        Passes over the training pairs (each pair is seen as it is and mirrored).
    batch_size : int
        Pairs per step; the contrastive term compares the pairs of one batch.
    learning_rate : float
        Adam's step size (cosine decay to zero over the planned steps).
    contrastive_weight : float
        Weight of the in-batch contrastive term against the squared distance.
    temperature : float
        Scale of squared distances in the contrastive term's softmax.
    max_minutes : float
        Wall-time budget of the training loop (pair making not counted): training stops
        after the step that spends it.
    threads : int
        torch CPU threads while preparing and training.
    prefilter : str
        A filter attack run on the anonymized face before the chip is cut, in training and
        in attack alike (the attacker may undo what a formula can, then learn the rest):
        ``"none"``, a filter attack's name, or ``"auto"``: :data:`PREFILTERS` of the method.
    """

    images: int = 4069
    validation: float = 0.1
    trainable_from: int = 10
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 4e-5
    contrastive_weight: float = 1.0
    temperature: float = 0.1
    max_minutes: float = 10.0
    threads: int = 1
    prefilter: str = "auto"

    def __post_init__(self):
        problems = []
        if self.prefilter not in ("none", "auto", *set(PREFILTERS.values())):
            problems.append(f"prefilter must be none, auto or one of "
                            f"{', '.join(sorted(set(PREFILTERS.values())))}, "
                            f"got {self.prefilter!r}")
        if self.images < 10:
            problems.append(f"images must be >= 10, got {self.images}")
        if not 0 < self.validation < 0.5:
            problems.append(f"validation must be in (0, 0.5), got {self.validation}")
        if not 0 <= self.trainable_from < RESIDUAL_BLOCK_COUNT:
            problems.append(f"trainable_from must be in 0..{RESIDUAL_BLOCK_COUNT - 1}, "
                            f"got {self.trainable_from}")
        if self.epochs < 1 or self.batch_size < 2 or self.threads < 1:
            problems.append("epochs, threads must be >= 1 and batch_size >= 2")
        if not (self.learning_rate > 0 and self.temperature > 0 and self.max_minutes > 0
                and self.contrastive_weight >= 0):
            problems.append("learning_rate, temperature and max_minutes must be > 0, "
                            "contrastive_weight >= 0")
        if problems:
            raise LearnedAttackError("learned attack settings: " + "; ".join(problems))


def cache_folder() -> Path:
    """``$FACEANON_CACHE/attacks`` if set, else ``~/.cache/faceanon/attacks``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "faceanon"
    return base / "attacks"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (first 16 hex digits) of the sources that decide what the attack learns.

    Read once per process: the code that runs is the code imported, even if the files
    change on disk meanwhile."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for name in _CODE_FILES:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()[:16]


def _atomic_write(path: Path, write) -> None:
    """Call ``write(temporary_path)`` and move the result onto ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _list_hash(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# Data: the singleton faces, never a benchmark identity


def training_samples(data_root: os.PathLike | str, *, images: int, seed: int) -> list:
    """The ``lfw-singletons`` samples the attacker may train on, in a seeded order.

    Parameters
    ----------
    data_root : path-like
        The folder holding ``lfw-singletons`` (and ``lfw``, when present, to check against).
    images : int
        How many to take (all when there are fewer).
    seed : int
        Orders the samples by ``sha256(seed, path)`` (:func:`faceanon.datasets.split_rank`).

    Raises
    ------
    LearnedAttackError
        When ``lfw-singletons`` is missing, or when one of its identities also appears in
        ``lfw``: the attacker must never see a benchmark person.
    """
    from faceanon.datasets import DatasetError, load_dataset, split_rank

    root = Path(data_root).expanduser()
    try:
        singletons = load_dataset(root / TRAINING_DATASET, name=TRAINING_DATASET)
    except DatasetError as error:
        raise LearnedAttackError(f"learned attack trains on {TRAINING_DATASET}: {error}") from None
    benchmark = root / BENCHMARK_DATASET
    if benchmark.is_dir():
        people = {p.name for p in benchmark.iterdir() if p.is_dir()}
        shared = sorted(people.intersection(singletons.identities))
        if shared:
            raise LearnedAttackError(
                f"{root / TRAINING_DATASET} shares {len(shared)} identities with {benchmark} "
                f"(e.g. {shared[0]}); the learned attack must never train on a benchmark person"
            )
    ordered = sorted(singletons.samples, key=lambda s: split_rank(seed, "learned", s.relpath))
    return [(singletons.root, s) for s in ordered[:images]]


def _faces(data_root, *, images: int, seed: int, base) -> dict:
    """Boxes and target embeddings of the singleton faces, from the cache or made once."""
    from faceanon.detect import find_regions
    from faceanon.imageio import read_image

    samples = training_samples(data_root, images=images, seed=seed)
    keys = [s.relpath for _, s in samples]
    key = hashlib.sha256(
        json.dumps([_FACES_FORMAT, _list_hash(keys), base.model_fingerprint()]).encode()
    ).hexdigest()[:20]
    path = cache_folder() / f"faces-{TRAINING_DATASET}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                faces = {name: stored[name] for name in stored.files}
            if str(faces["format"]) == _FACES_FORMAT and list(faces["all_keys"]) == keys:
                return faces
            warnings.warn(f"{path}: made for other data; detecting the faces again",
                          stacklevel=2)
        except (OSError, ValueError, KeyError) as error:
            warnings.warn(f"{path}: unreadable ({error}); detecting the faces again",
                          stacklevel=2)
    kept_keys, boxes, regions, region_counts, targets, mirrored = [], [], [], [], [], []
    for root, sample in samples:
        image = read_image(root / sample.relpath)
        found = [tuple(int(v) for v in b) for b in find_regions(image, detector="hog")]
        face = largest_box(found)
        if face is None:
            continue
        chip = base.face_chip(image, box=css_box(face)).chip
        kept_keys.append(sample.relpath)
        boxes.append(face)
        regions.extend(found)
        region_counts.append(len(found))
        targets.append(chip)
        mirrored.append(chip[:, ::-1])
    if len(kept_keys) < 10:
        raise LearnedAttackError(f"only {len(kept_keys)} faces found in {len(samples)} "
                                 f"{TRAINING_DATASET} images; too few to train on")
    faces = {
        "format": np.array(_FACES_FORMAT),
        "all_keys": np.array(keys),
        "keys": np.array(kept_keys),
        "boxes": np.array(boxes, dtype=np.int64),
        "regions": np.array(regions, dtype=np.int64),
        "region_counts": np.array(region_counts, dtype=np.int64),
        "targets": base.encode_chips(np.stack(targets)).astype(np.float32),
        "mirrored_targets": base.encode_chips(np.ascontiguousarray(np.stack(mirrored)))
        .astype(np.float32),
    }

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **faces)

    _atomic_write(path, write)
    return faces


def prefilter_attack(prefilter: str, method: str) -> Attack | None:
    """The filter attack that ``prefilter`` means for ``method``, or ``None``."""
    from faceanon.attacks import get_attack

    name = PREFILTERS.get(method, "none") if prefilter == "auto" else prefilter
    if name == "none":
        return None
    attack = get_attack(name)
    return attack if attack.applies_to(method) else None


def _anonymized_chips(faces: dict, data_root, *, method: str, k: int | None, seed: int,
                      base, prefilter: str = "none") -> np.ndarray:
    """The chip of each face, cut from its anonymized (and prefiltered) image in the
    original's face box, as :meth:`Learned.encode` cuts it."""
    from faceanon.detect import clip_box
    from faceanon.imageio import read_image
    from faceanon.methods import get_method
    from faceanon.protocol import image_rng

    anonymizer = get_method(method)
    restorer = prefilter_attack(prefilter, method)
    root = Path(data_root).expanduser() / TRAINING_DATASET
    chips = np.empty((len(faces["keys"]), CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(faces["region_counts"])])
    for index, key in enumerate(faces["keys"]):
        image = read_image(root / str(key))
        regions = [tuple(r) for r in faces["regions"][starts[index]:starts[index + 1]]]
        anonymized = anonymizer.anonymize(image, regions, k=k,
                                          rng=image_rng(seed, method, k, str(key)))
        if restorer is not None:
            region = clip_box(faces["boxes"][index], anonymized.shape)
            anonymized = restorer.restore(anonymized, region=region, method=method, k=k)
        chips[index] = base.face_chip(anonymized, box=css_box(faces["boxes"][index])).chip
    return chips


# ---------------------------------------------------------------------------------------
# The network: dlib's, split into a frozen front and a trained tail


def _front_features(model, chips: np.ndarray, *, trainable_from: int, batch: int = 64):
    """The frozen part's output for ``uint8`` chips (stem, pooling, blocks before the tail)."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for start in range(0, len(chips), batch):
            x = torch.from_numpy(np.ascontiguousarray(chips[start:start + batch]))
            x = x.permute(0, 3, 1, 2).to(torch.float32)
            x = (x - model.input_mean.view(1, 3, 1, 1)) / 256.0
            x = F.max_pool2d(F.relu(model.stem_affine(model.stem(x))), 3, stride=2)
            out.append(model.blocks[:trainable_from](x).contiguous())
    return torch.cat(out)


def _tail_forward(model, features, *, trainable_from: int):
    return model.fc(model.blocks[trainable_from:](features).mean(dim=(2, 3)))


def _tail_names(model, trainable_from: int) -> list[str]:
    prefixes = tuple(f"blocks.{i}." for i in range(trainable_from, len(model.blocks)))
    return [n for n in model.state_dict() if n.startswith(prefixes) or n.startswith("fc.")]


def _tensors_sha256(state: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _loss(predicted, target, *, weight: float, temperature: float):
    """Mean squared distance to the targets + in-batch contrastive term; also the parts."""
    import torch
    import torch.nn.functional as F

    squared = torch.cdist(predicted, target).pow(2)  # (n, n): prediction i to target j
    distance = squared.diagonal().mean()
    labels = torch.arange(len(predicted))
    contrastive = F.cross_entropy(-squared / temperature, labels)
    return distance + weight * contrastive, distance, contrastive


def train(faces: dict, chips: np.ndarray, *, settings: LearnedSettings, seed: int,
          base_state: dict, echo=None) -> tuple[dict, dict]:
    """Fine-tune the network's tail on (anonymized chip, clear embedding) pairs.

    Returns ``(tail_state_dict, record)``; the record holds the loss curve (per epoch:
    training and held-out loss, held-out rank-1), steps, wall time and the split.
    """
    import torch

    from faceanon.resnet_torch import FaceResNet

    started = time.perf_counter()
    torch.manual_seed(seed)
    model = FaceResNet()
    model.load_state_dict(base_state, strict=True)
    model.eval()  # dlib's network has no batch statistics; eval only fixes the mode
    cut = settings.trainable_from
    names = _tail_names(model, cut)
    tail = [p for n, p in model.named_parameters() if n in names]
    for _, parameter in model.named_parameters():
        parameter.requires_grad_(False)
    for parameter in tail:
        parameter.requires_grad_(True)

    # Identities, not images, are held out (here one image each); by hash, seeded.
    count = len(chips)
    order = np.random.default_rng(seed).permutation(count)
    held = max(2, int(round(settings.validation * count)))
    valid, fit = np.sort(order[:held]), np.sort(order[held:])
    mirrored_chips = np.ascontiguousarray(chips[:, :, ::-1])
    features = torch.cat([
        _front_features(model, chips[fit], trainable_from=cut),
        _front_features(model, mirrored_chips[fit], trainable_from=cut),
    ])
    targets = torch.from_numpy(np.concatenate([faces["targets"][fit],
                                               faces["mirrored_targets"][fit]]))
    valid_features = _front_features(model, chips[valid], trainable_from=cut)
    valid_targets = torch.from_numpy(faces["targets"][valid])
    prepare_seconds = time.perf_counter() - started

    def evaluate() -> dict:
        with torch.no_grad():
            predicted = _tail_forward(model, valid_features, trainable_from=cut)
            total, distance, contrastive = _loss(
                predicted, valid_targets, weight=settings.contrastive_weight,
                temperature=settings.temperature)
            nearest = torch.cdist(predicted, valid_targets).argmin(dim=1)
            rank1 = (nearest == torch.arange(len(predicted))).float().mean()
        return {"loss": float(total), "distance": float(distance),
                "contrastive": float(contrastive), "rank1": float(rank1)}

    optimizer = torch.optim.Adam(tail, lr=settings.learning_rate)
    steps_per_epoch = math.ceil(len(features) / settings.batch_size)
    planned = steps_per_epoch * settings.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, planned) / planned)))
    generator = torch.Generator().manual_seed(seed)
    curve = [{"epoch": 0, "step": 0, "train_loss": None, **_prefixed(evaluate())}]
    best = (curve[0]["valid_loss"], 0, {n: t.clone() for n, t in model.state_dict().items()
                                        if n in names})
    budget = settings.max_minutes * 60
    step, stopped = 0, False
    loop_start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        permutation = torch.randperm(len(features), generator=generator)
        losses = []
        for start in range(0, len(features), settings.batch_size):
            index = permutation[start:start + settings.batch_size]
            if len(index) < 2:
                continue
            predicted = _tail_forward(model, features[index], trainable_from=cut)
            total, _, _ = _loss(predicted, targets[index], weight=settings.contrastive_weight,
                                temperature=settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(total.detach()))
            step += 1
            if time.perf_counter() - loop_start > budget:
                stopped = True
                break
        model.eval()
        point = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                 **_prefixed(evaluate())}
        curve.append(point)
        if echo is not None:
            echo(f"epoch {epoch}: train {point['train_loss']:.4f} held-out "
                 f"{point['valid_loss']:.4f} rank-1 {point['valid_rank1']:.2f}")
        if point["valid_loss"] < best[0]:
            best = (point["valid_loss"], epoch,
                    {n: t.clone() for n, t in model.state_dict().items() if n in names})
        if stopped:
            break
    record = {
        "curve": curve,
        "best_epoch": best[1],
        "steps": step,
        "stopped_by_budget": stopped,
        "prepare_seconds": prepare_seconds,
        "train_seconds": time.perf_counter() - loop_start,
        "pairs": {"train": int(len(fit)), "held_out": int(len(valid)),
                  "train_with_mirrors": int(len(features))},
    }
    return best[2], record


def _prefixed(metrics: dict) -> dict:
    return {f"valid_{name}": value for name, value in metrics.items()}


# ---------------------------------------------------------------------------------------
# The attack


class Learned(Attack):
    """dlib's network fine-tuned on anonymized ``lfw-singletons`` faces (per method and k).

    :meth:`prepare` trains (or loads from the cache) once per (method, k) in the main
    process; afterwards the object holds only the weights file's path and is cheap to
    pickle to workers, which load the network on first use with one torch thread.

    Parameters
    ----------
    settings : LearnedSettings, optional
        Training data and budget; keyword options of :class:`LearnedSettings` may be given
        instead (``Learned(max_minutes=2, images=400)``).
    """

    name = "learned"
    summary = ("dlib's network fine-tuned on anonymized lfw-singletons faces, "
               "descriptor in the original's face box")
    methods = TRAINABLE_METHODS

    def __init__(self, *, settings: LearnedSettings | None = None, **options):
        if settings is not None and options:
            raise LearnedAttackError("give settings or keyword options, not both")
        known = {f.name for f in fields(LearnedSettings)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise LearnedAttackError(f"learned attack: unknown option(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(sorted(known))}")
        self.settings = settings if settings is not None else LearnedSettings(**options)
        self.prepared: tuple[str, int | None] | None = None
        self.weights_path: Path | None = None
        self._record: dict | None = None
        self._model = None

    def options(self):
        return asdict(self.settings)

    # -- training and the cache ------------------------------------------------------

    def cache_path(self, *, method: str, k: int | None, seed: int, data_root) -> Path:
        """Where the weights for (method, k, seed) and these settings are cached."""
        from faceanon.recognition import file_sha256
        from faceanon.resnet_torch import default_dat_path

        samples = training_samples(data_root, images=self.settings.images, seed=seed)
        key = json.dumps({
            "format": _WEIGHTS_FORMAT, "method": method, "k": k, "seed": int(seed),
            "settings": asdict(self.settings), "code": code_version(),
            "data": _list_hash([s.relpath for _, s in samples]),
            "dat": file_sha256(default_dat_path()),
        }, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return cache_folder() / f"learned-{method}-k{k}-{digest}.pt"

    def prepare(self, *, method: str, k: int | None, seed: int, data_root,
                echo=None) -> None:
        """Train for (method, k), or load the cached weights; run once, in the main process.

        A cache file that cannot be read, or whose tensors do not match the sha256 stored
        with them, is retrained and replaced, with a warning: it is derived data, and a
        silently wrong model would overstate privacy.
        """
        k = self.check_method(method, k)
        path = self.cache_path(method=method, k=k, seed=seed, data_root=data_root)
        record = None
        if path.exists():
            try:
                record = _read_weights(path)[1]
            except LearnedAttackError as error:
                warnings.warn(f"{error}; training again", stacklevel=2)
        if record is None:
            record = self._train(path, method=method, k=k, seed=seed, data_root=data_root,
                                 echo=echo)
        self.prepared = (method, k)
        self.weights_path = path
        self._record = record
        self._model = None

    def _train(self, path: Path, *, method, k, seed, data_root, echo) -> dict:
        import torch

        from faceanon.recognition import DlibResNetTorch
        from faceanon.resnet_torch import cached_state_dict

        before = torch.get_num_threads()
        torch.set_num_threads(self.settings.threads)
        try:
            started = time.perf_counter()
            base = DlibResNetTorch(threads=self.settings.threads)
            faces = _faces(data_root, images=self.settings.images, seed=seed, base=base)
            faces_seconds = time.perf_counter() - started
            chips = _anonymized_chips(faces, data_root, method=method, k=k, seed=seed,
                                      base=base, prefilter=self.settings.prefilter)
            pairs_seconds = time.perf_counter() - started - faces_seconds
            base_state, dat_sha256 = cached_state_dict()
            tail, record = train(faces, chips, settings=self.settings, seed=seed,
                                 base_state=base_state, echo=echo)
        finally:
            torch.set_num_threads(before)
        keys = [str(key) for key in faces["keys"]]
        record.update({
            "method": method, "k": k, "seed": int(seed), "settings": asdict(self.settings),
            "code_version": code_version(), "dat_sha256": dat_sha256,
            "split": {"dataset": TRAINING_DATASET, "drawn": int(len(faces["all_keys"])),
                      "faces": len(keys), "files_sha256": _list_hash(keys)},
            "faces_seconds": faces_seconds, "pairs_seconds": pairs_seconds,
            "wall_seconds": time.perf_counter() - started,
        })
        payload = {"format": _WEIGHTS_FORMAT, "tail": tail, "tail_sha256": _tensors_sha256(tail),
                   "record_json": json.dumps(record), "files": keys}
        _atomic_write(path, lambda temporary: torch.save(payload, temporary))
        return record

    def training_record(self) -> dict | None:
        """The loss curve, steps, wall time, settings, split and code version; ``None``
        before :meth:`prepare`. Loaded from the cache it is the record of the run that
        trained the weights."""
        return self._record

    def training_files(self) -> list[str]:
        """The ``lfw-singletons`` files (relative paths) the prepared model was trained on."""
        if self.weights_path is None:
            raise LearnedAttackError("learned attack: call prepare() first")
        return _read_weights(self.weights_path)[2]

    # -- encoding -------------------------------------------------------------------

    def restore(self, image, *, region, method, k):
        """The prefilter's restoration (:class:`LearnedSettings`), else ``image`` itself."""
        self.check_method(method, k)
        restorer = prefilter_attack(self.settings.prefilter, method)
        if restorer is None:
            return image
        return restorer.restore(image, region=region, method=method, k=k)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None  # workers load the weights from the file themselves
        return state

    def _network(self):
        if self._model is None:
            if self.weights_path is None:
                raise LearnedAttackError("learned attack: call prepare(method=..., k=...) "
                                         "before encoding")
            import torch

            from faceanon.resnet_torch import FaceResNet, cached_state_dict

            torch.set_num_threads(1)  # one worker per core, as the torch backend does
            state, _ = cached_state_dict()
            state.update(_read_weights(self.weights_path)[0])
            model = FaceResNet()
            model.load_state_dict(state, strict=True)
            self._model = model.eval()
        return self._model

    def encode_chips(self, chips: np.ndarray, *, backend=None) -> np.ndarray:
        """Embeddings ``(n, 128)`` (float64) of anonymized ``uint8`` chips by the tuned net.

        ``backend`` is accepted and ignored: a pipeline that batches chips per attack can
        call ``attack.encode_chips(chips, backend=backend)`` for every attack alike, and
        this attack's chips must never go through the backend's own network.
        """
        import torch

        from faceanon.recognition import check_chips

        chips = check_chips(chips)
        model = self._network()
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(chips))).numpy().astype(
                np.float64)

    def chip(self, image: np.ndarray, *, original_box: Sequence[int] | None, backend):
        """The face chip the attack encodes: in the original's box, else by detection."""
        if original_box is None:
            return backend.face_chip(image)
        return backend.face_chip(image, box=css_box(original_box))

    def encode_restored(self, image, *, original_box, backend):
        face = self.chip(image, original_box=original_box, backend=backend)
        if face.chip is None:
            return Encoding(embedding=None, faces_found=face.faces_found)
        embedding = self.encode_chips(face.chip[np.newaxis])[0]
        return Encoding(embedding=embedding, faces_found=face.faces_found, box=face.box)

    def encode(self, image, *, original_box, method, k, backend, anonymized_box=None):
        if self.prepared is None:
            raise LearnedAttackError("learned attack: call prepare(method=..., k=...) first")
        if self.prepared != (method, self.check_method(method, k)):
            raise LearnedAttackError(
                f"learned attack prepared for {self.prepared[0]} k={self.prepared[1]}, "
                f"asked to attack {method} k={k}")
        return super().encode(image, original_box=original_box, method=method, k=k,
                              backend=backend, anonymized_box=anonymized_box)

    def cache_key(self, image, *, original_box, backend):
        encoder, key = super().cache_key(image, original_box=original_box, backend=backend)
        if self._record is None:
            raise LearnedAttackError("learned attack: call prepare() first")
        return f"learned:{self.weights_path.stem}+{encoder}", key


def _read_weights(path: Path) -> tuple[dict, dict, list[str]]:
    """``(tail state, record, training files)`` of a weights file; checked, else an error."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _WEIGHTS_FORMAT:
            raise ValueError(f"not a {_WEIGHTS_FORMAT} file")
        tail = payload["tail"]
        if _tensors_sha256(tail) != payload["tail_sha256"]:
            raise ValueError("its tensors do not match the sha256 stored with them")
        return tail, json.loads(payload["record_json"]), list(payload["files"])
    except Exception as error:  # torch raises many kinds on a damaged zip or pickle
        raise LearnedAttackError(f"{path}: corrupt learned-attack weights ({error})") from None
