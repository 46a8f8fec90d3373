"""Training the DeepPrivacy-style GAN on lfw-singletons: ``faceanon train-gan``.

Pipeline
--------
1. Prepare once, on the CPU: a *pack* of training faces (``OUT/faces-{R}px.npz``, or the
   file ``--pack`` names). dlib HOG finds the largest face in each image, the 68-point
   predictor gives the seven keypoints, and a crop of ``1.5 R`` pixels spanning three box
   sides around the box is stored with the box and keypoints in crop pixels, so that the
   model's context crop (two box sides, ``R`` pixels) is cut at the stored scale. The pack
   is all that training reads: with ``--pack`` naming an existing pack, training needs
   neither dlib nor the dataset (a GPU machine with torch, numpy, OpenCV, Pillow and click
   runs it from the working tree). ``--jpeg-quality`` stores the crops as JPEG instead of
   raw pixels, which is what makes a 128 px pack small enough to carry (4055 faces of
   192 px at quality 90: about 33 MiB instead of 450).
2. Each step samples a batch, jitters each crop (context 1.8-2.2 box sides, shifts up to
   4 px, horizontal flip with left/right keypoints swapped) and cuts the model's ``R x R``
   context crop, so that the 4069 faces go further. The next batch is cut on a CPU thread
   while the current step runs.
3. Losses: non-saturating adversarial loss, an L1 reconstruction term on the box (it keeps a
   small-data GAN near faces early on), lazy R1 gradient penalty on real images, and an EMA
   copy of the generator that is what ships.

``--device cuda`` trains on a GPU, in bf16 autocast by default (``--precision``); the R1
penalty's double backward always runs in fp32. ``--max-minutes`` bounds the training loop's
wall time: when it is spent the run stops after the current step, like on a signal.

Every ``--checkpoint-every`` steps, and once when the run ends or is stopped, the full state
goes to ``OUT/checkpoint.pt`` (atomically), a sample grid to ``OUT/samples.png`` and the
EMA generator to ``OUT/deepprivacy{R}.pt``; rerunning the same command resumes. Each step's
batch and noise derive from ``(seed, step)``, so a resumed run draws the same data as an
uninterrupted one (and on the CPU in fp32 gives bit-identical weights). SIGTERM/SIGINT stop
cleanly after the current step, with a checkpoint; the previous handlers are restored when
training returns.

Options are checked (:class:`TrainingOptions`) before anything slow starts. This module
imports torch and dlib only inside functions, so ``faceanon --help`` stays light.
"""

from __future__ import annotations

import json
import math
import numbers
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import cv2
import numpy as np

from faceanon.landmarks import KEYPOINT_FLIP

#: Stored crops span this many box sides, at ``1.5 x resolution`` pixels.
STORE_CONTEXT = 3.0
#: Marks a pack written by :func:`write_pack`.
PACK_FORMAT = "faceanon-gan-pack"
PACK_VERSION = 1
#: What every pack holds besides its crops (raw ``crops`` or ``jpeg`` with offsets).
PACK_KEYS = ("boxes", "keypoints", "names", "skipped", "fingerprint", "resolution")
#: Network sizes by resolution: generator (channels per level, bottleneck) and
#: discriminator channels. 64 is the shipped model. 128 adds one level and keeps the widths
#: of the 64 px model's levels, so the finest level costs what it does at 64 px per pixel;
#: its fp16 weights (4.9 M parameters) stay under 10 MiB and one face takes about 80 ms on
#: one CPU thread (the 64 px model: 20 ms), which is what the benchmark pays.
ARCHITECTURES: dict[int, dict] = {
    64: {
        "channels": (32, 64, 128, 192),
        "bottleneck": 192,
        "discriminator": (32, 64, 128, 256, 256),
    },
    128: {
        "channels": (32, 64, 128, 192, 192),
        "bottleneck": 192,
        "discriminator": (32, 64, 128, 256, 256, 256),
    },
}
PRECISIONS = ("auto", "fp32", "bf16")
#: numpy and torch both take seeds in this range.
MAX_SEED = 2**32 - 1


class TrainingError(ValueError):
    """Training cannot start or go on: a bad option, a missing or unusable pack."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TrainingOptions:
    """Everything that decides a training run, checked when made.

    Parameters
    ----------
    steps
        Total optimisation steps; resuming continues up to this number.
    batch_size
        Faces per step.
    seed
        Seeds the networks' initialisation, every batch and all noise (0 to 2**32 - 1).
    resolution
        Model resolution, a key of :data:`ARCHITECTURES`.
    device
        torch device: ``cpu``, ``cuda`` or ``cuda:N``.
    precision
        ``fp32``, ``bf16`` (autocast) or ``auto``: bf16 on CUDA, fp32 on the CPU.
    threads
        torch CPU threads.
    lr, recon_weight, r1_gamma, r1_every, ema_decay
        Adam learning rate, L1 weight on the box, R1 weight and interval, EMA decay.
    checkpoint_every, log_every
        Steps between checkpoints and between log lines.
    max_minutes
        Wall-clock budget of the training loop, or ``None`` for none.

    Raises
    ------
    TrainingError
        When an option is out of range; the message names the command-line option.
    """

    steps: int = 20000
    batch_size: int = 32
    seed: int = 0
    resolution: int = 64
    device: str = "cpu"
    precision: str = "auto"
    threads: int = 1
    lr: float = 2e-4
    recon_weight: float = 5.0
    r1_gamma: float = 1.0
    r1_every: int = 4
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    log_every: int = 50
    max_minutes: float | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "threads", "r1_every", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise TrainingError(f"{_flag(name)} must be a whole number >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TrainingError(f"--seed must be a whole number, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise TrainingError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.resolution not in ARCHITECTURES:
            known = ", ".join(map(str, ARCHITECTURES))
            raise TrainingError(f"--resolution must be one of {known}, got {self.resolution!r}")
        if self.precision not in PRECISIONS:
            raise TrainingError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in ("lr", "recon_weight", "r1_gamma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                relation = "> 0" if name == "lr" else ">= 0"
                raise TrainingError(
                    f"{_flag(name)} must be a finite number {relation}, got {value}"
                )
        if not 0 <= self.ema_decay < 1:
            raise TrainingError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.max_minutes is not None and not (self.max_minutes > 0):
            raise TrainingError(f"--max-minutes must be > 0, got {self.max_minutes}")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise TrainingError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def bf16(self) -> bool:
        """Whether the forward passes run in bf16 autocast."""
        if self.precision == "auto":
            return self.device != "cpu"
        return self.precision == "bf16"

    @property
    def weights_name(self) -> str:
        return f"deepprivacy{self.resolution}.pt"


def check_device(device: str):
    """The torch device for ``device``, after checking that it can be used."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise TrainingError(f"--device {device!r} is not a torch device ({error})") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise TrainingError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    return parsed


def model_configs(resolution: int):
    """``(GeneratorConfig, discriminator channels)`` for a resolution of :data:`ARCHITECTURES`."""
    from faceanon.deepprivacy import GeneratorConfig

    arch = ARCHITECTURES[resolution]
    config = GeneratorConfig(
        resolution=resolution, channels=arch["channels"], bottleneck=arch["bottleneck"]
    )
    return config, arch["discriminator"]


# --------------------------------------------------------------------------------------
# Packs: the training faces, prepared once.


def store_size(resolution: int) -> int:
    """Side of a stored crop for a model of ``resolution``: the model's scale at 3 box sides."""
    return int(round(resolution * STORE_CONTEXT / 2))


def prepare_pack(
    data: Path,
    path: Path,
    *,
    resolution: int,
    jpeg_quality: int | None = None,
    log=print,
) -> dict:
    """Detect, landmark and crop every image of ``data``; write the pack to ``path``.

    Needs dlib (HOG detector and 68-point predictor). Images without a face, or whose
    landmarks fail, are skipped and counted. Returns the pack as :func:`load_pack` does.
    """
    from faceanon.datasets import load_dataset
    from faceanon.deepprivacy import context_crop, transform_points
    from faceanon.imageio import read_image
    from faceanon.landmarks import LandmarkError, hog_boxes, keypoints_from_landmarks, landmarks68

    side = store_size(resolution)
    dataset = load_dataset(data)
    crops, boxes, keypoints, names = [], [], [], []
    skipped = 0
    start = time.time()
    for i, sample in enumerate(dataset.samples):
        image = read_image(dataset.path(sample))
        found = hog_boxes(image, upsample=0) or hog_boxes(image, upsample=1)
        if not found:
            skipped += 1
            continue
        box = found[0]
        try:
            points = landmarks68(image, box)
        except LandmarkError:
            skipped += 1
            continue
        crop, matrix, corners = context_crop(
            image, box, side, context=STORE_CONTEXT, interpolation=cv2.INTER_AREA
        )
        crops.append(crop)
        boxes.append(corners.ravel())
        keypoints.append(transform_points(matrix, keypoints_from_landmarks(points)))
        names.append(sample.relpath)
        if (i + 1) % 500 == 0:
            log(f"prepare: {i + 1}/{len(dataset.samples)} images, {time.time() - start:.0f}s")
    if not crops:
        raise TrainingError(f"{data}: no face found in {len(dataset.samples)} image(s)")
    pack = {
        "crops": np.stack(crops).astype(np.uint8),
        "boxes": np.stack(boxes).astype(np.float32),
        "keypoints": np.stack(keypoints).astype(np.float32),
        "names": np.array(names),
        "skipped": np.array(skipped),
        "fingerprint": np.array(dataset.fingerprint),
        "resolution": np.array(resolution),
    }
    write_pack(path, pack, jpeg_quality=jpeg_quality)
    log(
        f"prepare: {len(crops)} faces kept, {skipped} skipped, {time.time() - start:.0f}s; "
        f"pack {path} ({path.stat().st_size / 2**20:.1f} MiB)"
    )
    return pack


def write_pack(path: Path, pack: dict, *, jpeg_quality: int | None = None) -> None:
    """Write ``pack`` (crops, boxes, keypoints, names, ...) to ``path`` through a temporary file.

    With ``jpeg_quality`` the crops are stored as JPEG (lossy, much smaller), else as raw
    pixels.
    """
    arrays = {k: v for k, v in pack.items() if k != "crops"}
    arrays["format"] = np.array(PACK_FORMAT)
    arrays["version"] = np.array(PACK_VERSION)
    arrays["store_context"] = np.array(STORE_CONTEXT)
    crops = pack["crops"]
    if jpeg_quality is None:
        arrays["crops"] = crops
    else:
        if not 1 <= jpeg_quality <= 100:
            raise TrainingError(f"--jpeg-quality must be 1 to 100, got {jpeg_quality}")
        encoded = []
        for crop in crops:
            bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
            ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
                raise TrainingError(f"{path}: JPEG encoding of a crop failed")
            encoded.append(buffer.ravel())
        arrays["jpeg"] = np.concatenate(encoded)
        arrays["jpeg_offsets"] = np.cumsum([0] + [len(b) for b in encoded]).astype(np.int64)
        arrays["crop_shape"] = np.array(crops.shape[1:])
        arrays["jpeg_quality"] = np.array(jpeg_quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_pack(path: Path, *, resolution: int) -> dict:
    """Read a pack written by :func:`write_pack` for a model of ``resolution``.

    Needs numpy and OpenCV only. JPEG crops are decoded here, once.

    Raises
    ------
    TrainingError
        When the file is missing, unreadable, not a pack, made for another resolution, or
        inconsistent.
    """
    if not path.is_file():
        raise TrainingError(f"no pack at {path}; make one with --data (and --prepare-only)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            pack = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError) as error:
        raise TrainingError(f"{path}: unreadable, not an .npz pack ({error})") from None
    if str(pack.get("format", "")) != PACK_FORMAT:
        raise TrainingError(f"{path}: not a faceanon GAN pack")
    missing = [key for key in PACK_KEYS if key not in pack]
    if missing or ("crops" not in pack and "jpeg" not in pack):
        raise TrainingError(f"{path}: pack lacks {', '.join(missing) or 'crops'}")
    made_for = int(pack["resolution"])
    if made_for != resolution:
        raise TrainingError(
            f"{path}: pack made for {made_for} px, training asked for {resolution} px "
            f"(make a pack with --resolution {resolution})"
        )
    n = len(pack["boxes"])
    if "jpeg" in pack:
        offsets, buffer = pack.pop("jpeg_offsets"), pack.pop("jpeg")
        shape = tuple(int(v) for v in pack["crop_shape"])
        crops = np.empty((n, *shape), np.uint8)
        for i in range(n):
            bgr = cv2.imdecode(buffer[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != shape:
                raise TrainingError(f"{path}: crop {i} ({pack['names'][i]}) does not decode")
            crops[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pack["crops"] = crops
    side = store_size(resolution)
    if pack["crops"].shape[1:] != (side, side, 3) or not (
        len(pack["crops"]) == n == len(pack["keypoints"]) == len(pack["names"])
    ):
        raise TrainingError(f"{path}: crops, boxes, keypoints and names do not match")
    return pack


# --------------------------------------------------------------------------------------
# Batches.


def make_batch(
    faces: dict,
    index: np.ndarray,
    rng: np.random.Generator,
    resolution: int,
    *,
    augment: bool = True,
):
    """Cut model crops for ``index`` with jitter; returns images, masks, keypoints (numpy).

    images ``(B, 3, R, R)`` float32 in ``[-1, 1]``, masks ``(B, 1, R, R)``, keypoints
    ``(B, 7, 2)`` in model pixels.
    """
    from faceanon.deepprivacy import CONTEXT, box_mask, transform_points

    images = np.empty((len(index), 3, resolution, resolution), np.float32)
    masks = np.empty((len(index), 1, resolution, resolution), np.float32)
    kps = np.empty((len(index), faces["keypoints"].shape[1], 2), np.float32)
    side = faces["crops"].shape[1]
    box_side = side / STORE_CONTEXT
    for row, i in enumerate(index):
        context = rng.uniform(1.8, 2.2) if augment else CONTEXT
        shift = rng.uniform(-4, 4, size=2) if augment else np.zeros(2)
        flip = augment and rng.random() < 0.5
        scale = resolution / (context * box_side)
        centre = side / 2.0 - shift / scale
        matrix = np.array(
            [
                [scale, 0, resolution / 2 - scale * centre[0]],
                [0, scale, resolution / 2 - scale * centre[1]],
            ],
            np.float64,
        )
        if flip:
            matrix[0] = -matrix[0]
            matrix[0, 2] += resolution
        crop = cv2.warpAffine(
            faces["crops"][i],
            matrix,
            (resolution, resolution),
            flags=cv2.INTER_AREA,
            borderMode=cv2.BORDER_REPLICATE,
        )
        x0, y0, x1, y1 = faces["boxes"][i]
        corners = transform_points(matrix, np.array([[x0, y0], [x1, y1]], np.float32))
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        kp = transform_points(matrix, faces["keypoints"][i])
        if flip:
            kp = kp[list(KEYPOINT_FLIP)]
        images[row] = crop.transpose(2, 0, 1) / 127.5 - 1.0
        masks[row, 0] = box_mask((lo[0], lo[1], hi[0], hi[1]), resolution)
        kps[row] = kp
    return images, masks, kps


def save_grid(path: Path, rows: list, *, columns: int) -> None:
    """Save rows of ``(B, 3, R, R)`` tensors in ``[-1, 1]`` as one PNG grid."""
    from PIL import Image

    tiles = []
    for row in rows:
        array = row[:columns].detach().float().cpu().clamp(-1, 1).numpy()
        array = ((array + 1) * 127.5).round().astype(np.uint8)
        tiles.append(np.concatenate(list(array.transpose(0, 2, 3, 1)), axis=1))
    grid = np.concatenate(tiles, axis=0)
    grid = cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------------------
# Training.


def _install_stop_handlers(stop: dict, echo) -> dict:
    """Make SIGTERM/SIGINT set ``stop["reason"]``; returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal handlers can only be set from the main thread

    def _stop(signum, frame):
        stop["reason"] = f"signal {signum}"
        echo(f"signal {signum}: stopping after this step")

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _stop)
    return previous


def _restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        # getsignal gives None for a handler not installed from Python: restore the default.
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def train(
    options: TrainingOptions,
    *,
    out: Path,
    data: Path | None = None,
    pack: Path | None = None,
    jpeg_quality: int | None = None,
    echo=print,
) -> dict:
    """Train (or resume) and return the summary written to ``OUT/summary.json``.

    ``pack`` (default ``OUT/faces-{R}px.npz``) is read when it exists, else prepared from
    ``data`` (needs dlib), with crops stored as JPEG when ``jpeg_quality`` is given.

    Raises
    ------
    TrainingError
        For a device that cannot be used, a missing or unusable pack, a batch larger than
        the pack, or a checkpoint made for another resolution.
    """
    import torch
    from torch.nn import functional as F

    from faceanon.deepprivacy import (
        Discriminator,
        Generator,
        count_parameters,
        generator_input,
        save_generator,
    )

    device = check_device(options.device)
    resolution = options.resolution
    pack = pack or out / f"faces-{resolution}px.npz"
    if pack.is_file():
        faces = load_pack(pack, resolution=resolution)
    elif data is None:
        raise TrainingError(f"no pack at {pack}; pass --data to prepare it")
    else:
        faces = prepare_pack(data, pack, resolution=resolution, jpeg_quality=jpeg_quality, log=echo)
    n_faces = len(faces["crops"])
    if options.batch_size > n_faces:
        raise TrainingError(
            f"--batch-size {options.batch_size} is larger than the {n_faces} faces in {pack}"
        )

    torch.set_num_threads(options.threads)
    cv2.setNumThreads(1)
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config, discriminator_channels = model_configs(resolution)
    seed = options.seed

    torch.manual_seed(seed)
    generator = Generator(config)
    discriminator = Discriminator(config, channels=discriminator_channels)
    ema = Generator(config)
    ema.load_state_dict(generator.state_dict())
    ema.requires_grad_(False)
    for module in (generator, discriminator, ema):
        module.to(device)
    lr, r1_every = options.lr, options.r1_every
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.99))
    # Lazy R1 runs every r1_every steps; StyleGAN2's correction keeps Adam's moments right.
    c = r1_every / (r1_every + 1)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr * c, betas=(0.5**c, 0.99**c))

    hyper = {"data": str(data) if data else None, "pack": str(pack), **asdict(options)}
    checkpoint = out / "checkpoint.pt"
    start_step, history, elapsed_before = 0, [], 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        made_for = json.loads(state.get("options", "{}")).get("resolution", 64)
        if made_for != resolution:
            raise TrainingError(
                f"{checkpoint} is a {made_for} px run; use another --out for {resolution} px"
            )
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start_step, elapsed_before = int(state["step"]), float(state["elapsed"])
        history = json.loads(state["history"])
        echo(f"resumed from {checkpoint} at step {start_step}")

    def to_device(arrays):
        return tuple(torch.from_numpy(a).to(device) for a in arrays)

    # Fixed faces and noise for the sample grid: every grid shows the same inputs.
    grid_rng = np.random.default_rng([seed, 2**31])
    grid_index = grid_rng.choice(n_faces, size=min(8, n_faces), replace=False)
    grid_images, grid_masks, grid_kp = to_device(
        make_batch(faces, grid_index, grid_rng, resolution, augment=False)
    )
    grid_cond = generator_input(grid_images, grid_masks, grid_kp, resolution)
    grid_z = torch.from_numpy(
        grid_rng.standard_normal((3, len(grid_index), config.z_dim)).astype(np.float32)
    ).to(device)

    session_start = time.monotonic()

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - session_start

    def summary(step: int) -> dict:
        seconds = elapsed()
        return {
            **hyper,
            "step": step,
            "elapsed_s": round(seconds, 1),
            "images_per_s": round(step * options.batch_size / seconds, 2) if seconds else None,
            "faces": int(n_faces),
            "skipped": int(faces["skipped"]),
            "generator_parameters": count_parameters(generator),
            "discriminator_parameters": count_parameters(discriminator),
            "device": str(device),
            "bf16": options.bf16,
            "torch": torch.__version__,
            "last_losses": history[-1] if history else None,
            "data_fingerprint": str(faces["fingerprint"]),
        }

    def write_outputs(step: int) -> None:
        with torch.no_grad():
            rows = [grid_images * (1 - grid_masks)]
            for z in grid_z:
                fake = ema(grid_cond, z)
                rows.append(fake * grid_masks + grid_images * (1 - grid_masks))
        # Private grid with the real faces for the engineer; the shipped one omits them.
        save_grid(out / "samples_with_originals.png", [grid_images, *rows], columns=8)
        save_grid(out / "samples.png", rows, columns=8)
        info = summary(step)
        metadata = {k: info[k] for k in ("step", "elapsed_s", "faces", "device", "bf16")}
        metadata.update(asdict(options), fingerprint=info["data_fingerprint"])
        save_generator(out / options.weights_name, ema, metadata=metadata)
        state = {
            "generator": generator.state_dict(),
            "discriminator": discriminator.state_dict(),
            "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "step": step,
            "elapsed": elapsed(),
            "history": json.dumps(history),
            "options": json.dumps(asdict(options)),
        }
        tmp = checkpoint.with_name("checkpoint.tmp.pt")
        torch.save(state, tmp)
        tmp.replace(checkpoint)
        (out / "summary.json").write_text(json.dumps(info, indent=2) + "\n")
        (out / "history.json").write_text(json.dumps(history) + "\n")
        echo(f"saved step {step}: {out / options.weights_name}, {checkpoint}")

    def batch_for(step: int):
        rng = np.random.default_rng([seed, step])
        index = rng.choice(n_faces, size=options.batch_size, replace=False)
        return make_batch(faces, index, rng, resolution)

    def autocast(enabled: bool = True):
        return torch.autocast(
            device_type=device.type, dtype=torch.bfloat16, enabled=enabled and options.bf16
        )

    echo(
        f"training {count_parameters(generator):,}-parameter generator on {n_faces} faces, "
        f"{resolution}x{resolution}, steps {start_step}->{options.steps}, batch "
        f"{options.batch_size}, {device}{' bf16' if options.bf16 else ''}, "
        f"{options.threads} thread(s)"
        + (f", at most {options.max_minutes:g} min" if options.max_minutes else "")
    )
    deadline = (
        session_start + 60.0 * options.max_minutes if options.max_minutes is not None else None
    )
    stop: dict = {"reason": None}
    previous_handlers = _install_stop_handlers(stop, echo)
    # The next step's batch is cut on a CPU thread while this step runs; batches depend
    # only on (seed, step), so this changes no number.
    prefetch = ThreadPoolExecutor(max_workers=1)
    running: dict = {}
    logged_at = start_step
    step = last_saved = start_step
    try:
        upcoming = prefetch.submit(batch_for, step) if step < options.steps else None
        while step < options.steps and stop["reason"] is None:
            images, masks, kps = to_device(upcoming.result())
            if step + 1 < options.steps:
                upcoming = prefetch.submit(batch_for, step + 1)
            cond = generator_input(images, masks, kps, resolution)
            noise = torch.Generator().manual_seed(seed * 1_000_003 + step)
            z = torch.randn(options.batch_size, config.z_dim, generator=noise).to(device)

            # Discriminator: real crops against generated faces pasted into the box.
            with autocast():
                fake = generator(cond, z).float()
            composite = fake * masks + images * (1 - masks)
            regularise = options.r1_gamma > 0 and step % r1_every == 0
            real = images.detach().requires_grad_(regularise)
            # R1's gradient of a gradient is taken in fp32.
            with autocast(enabled=not regularise):
                d_real = discriminator(real, cond).float()
            with autocast():
                d_fake = discriminator(composite.detach(), cond).float()
            loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
            r1 = torch.zeros((), device=device)
            if regularise:
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
                loss_d = loss_d + 0.5 * options.r1_gamma * r1_every * r1
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # Generator: fool the discriminator, and stay near the face on the box early on.
            with autocast():
                d_fake_g = discriminator(composite, cond).float()
            adv = F.softplus(-d_fake_g).mean()
            recon = (torch.abs(fake - images) * masks).sum() / (masks.sum() * 3 + 1e-8)
            loss_g = adv + options.recon_weight * recon
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            with torch.no_grad():
                decay = min(options.ema_decay, (1 + step) / (10 + step))
                for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)

            step += 1
            # Sums stay on the device: reading a value every step would stall a GPU.
            for name, value in (
                ("loss_d", loss_d),
                ("loss_g_adv", adv),
                ("recon_l1", recon),
                ("d_real", d_real.mean()),
                ("d_fake", d_fake.mean()),
            ):
                running[name] = running.get(name, 0.0) + value.detach().double()
            if regularise:
                running["r1"] = running.get("r1", 0.0) + r1.detach().double() * r1_every
            if deadline is not None and time.monotonic() >= deadline and step < options.steps:
                stop["reason"] = f"time budget of {options.max_minutes:g} min spent"
                echo(f"{stop['reason']}: stopping at step {step}")
            last = step == options.steps or stop["reason"] is not None
            if step % options.log_every == 0 or last:
                entry = {"step": step, "elapsed_s": round(elapsed(), 1)}
                n = step - logged_at
                entry.update({k: round(float(v) / n, 4) for k, v in running.items()})
                history.append(entry)
                running, logged_at = {}, step
                rate = step * options.batch_size / elapsed()
                echo(json.dumps(entry) + f"  ({rate:.1f} img/s overall)")
            if step % options.checkpoint_every == 0 and not last:
                write_outputs(step)
                last_saved = step
        # The end of the run, by steps, budget or signal: written once.
        if step != last_saved:
            write_outputs(step)
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
        _restore_handlers(previous_handlers)
    return summary(step)


@click.command("train-gan")
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Training faces laid out <identity>/<image> (lfw-singletons); needed to make the pack.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for checkpoints, samples and exported weights (and the pack by default).",
)
@click.option(
    "--pack",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Prepared training faces (.npz): read if it exists, else made from --data. "
    "Default OUT/faces-{R}px.npz.",
)
@click.option(
    "--prepare-only",
    is_flag=True,
    help="Make the pack from --data and stop (the CPU half of training on a GPU machine).",
)
@click.option(
    "--jpeg-quality",
    type=int,
    help="Store the pack's crops as JPEG of this quality (1-100) instead of raw pixels.",
)
@click.option(
    "--resolution",
    type=int,
    default=64,
    show_default=True,
    help=f"Model resolution: {', '.join(map(str, ARCHITECTURES))}.",
)
@click.option(
    "--device", default="cpu", show_default=True, help="torch device: cpu, cuda or cuda:N."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: bf16 autocast on CUDA, fp32 on the CPU.",
)
@click.option(
    "--max-minutes",
    type=float,
    help="Wall-clock budget of the training loop; stops cleanly, with a checkpoint.",
)
@click.option(
    "--steps",
    type=int,
    default=20000,
    show_default=True,
    help="Total optimisation steps (resuming continues up to this number).",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="torch CPU threads; 1 leaves the other cores free.",
)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--recon-weight", type=float, default=5.0, show_default=True)
@click.option("--r1-gamma", type=float, default=1.0, show_default=True)
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--log-every", type=int, default=50, show_default=True)
def train_gan_command(
    data,
    out,
    pack,
    prepare_only,
    jpeg_quality,
    resolution,
    device,
    precision,
    max_minutes,
    steps,
    batch_size,
    seed,
    threads,
    lr,
    recon_weight,
    r1_gamma,
    checkpoint_every,
    log_every,
):
    """Train the DeepPrivacy-style GAN on faces in DATA; rerun to resume.

    Train only on lfw-singletons: LFW benchmark identities must never be seen in training.
    To train on a GPU machine without dlib or the data, make the pack here
    (--prepare-only --pack FILE) and train there from it (--pack FILE --device cuda).
    """
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        options = TrainingOptions(
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            resolution=resolution,
            device=device,
            precision=precision,
            threads=threads,
            lr=lr,
            recon_weight=recon_weight,
            r1_gamma=r1_gamma,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            max_minutes=max_minutes,
        )
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise TrainingError(f"--jpeg-quality must be 1 to 100, got {jpeg_quality}")
        if prepare_only:
            if data is None:
                raise TrainingError("--prepare-only needs --data")
            if pack is None and out is None:
                raise TrainingError("--prepare-only needs --pack or --out")
            target = pack or out / f"faces-{resolution}px.npz"
            if target.exists():
                raise TrainingError(f"{target} exists; remove it or name another --pack")
            prepare_pack(data, target, resolution=resolution, jpeg_quality=jpeg_quality, log=echo)
            return
        if out is None:
            raise TrainingError("--out is required to train")
        check_device(device)
        summary = train(
            options, out=out, data=data, pack=pack, jpeg_quality=jpeg_quality, echo=echo
        )
    except TrainingError as error:
        raise click.UsageError(str(error)) from None
    click.echo(json.dumps(summary, indent=2))
