"""Training the DeepPrivacy-style GAN on lfw-singletons: ``faceanon train-gan``.

Pipeline
--------
1. Preprocess once (cached in ``OUT/faces.npz``): dlib HOG finds the largest face in each
   image, the 68-point predictor gives the seven keypoints, and a ``96x96`` crop spanning
   three box sides around the box is stored with the box and keypoints in crop pixels.
2. Each step samples a batch, jitters each crop (context 1.8-2.2 box sides, shifts up to
   4 px, horizontal flip with left/right keypoints swapped) and cuts the model's ``64x64``
   context crop, so that the 4069 faces go further.
3. Losses: non-saturating adversarial loss, an L1 reconstruction term on the box (it keeps a
   small-data GAN near faces early on), lazy R1 gradient penalty on real images, and an EMA
   copy of the generator that is what ships.

Every ``--checkpoint-every`` steps the full state goes to ``OUT/checkpoint.pt`` (atomically),
a sample grid to ``OUT/samples.png`` and the EMA generator to ``OUT/deepprivacy64.pt``;
rerunning the same command resumes. Each step's batch and noise derive from ``(seed, step)``,
so a resumed run draws the same data as an uninterrupted one. SIGTERM/SIGINT stop cleanly
after the current step, with a checkpoint.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import click
import cv2
import numpy as np

from faceanon.landmarks import (
    KEYPOINT_FLIP,
    LandmarkError,
    hog_boxes,
    keypoints_from_landmarks,
    landmarks68,
)

#: Side of the stored crops and how many box sides they span.
STORE_SIZE = 96
STORE_CONTEXT = 3.0


def preprocess(data: Path, cache: Path, *, log=print) -> dict:
    """Detect, landmark and crop every image of ``data`` once; cached in ``cache`` (npz)."""
    from faceanon.datasets import load_dataset
    from faceanon.deepprivacy import context_crop, transform_points
    from faceanon.imageio import read_image

    if cache.is_file():
        with np.load(cache) as stored:
            return {name: stored[name] for name in stored.files}
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
            image, box, STORE_SIZE, context=STORE_CONTEXT, interpolation=cv2.INTER_AREA
        )
        crops.append(crop)
        boxes.append(corners.ravel())
        keypoints.append(transform_points(matrix, keypoints_from_landmarks(points)))
        names.append(sample.relpath)
        if (i + 1) % 500 == 0:
            log(f"preprocess: {i + 1}/{len(dataset.samples)} images, {time.time() - start:.0f}s")
    arrays = {
        "crops": np.stack(crops).astype(np.uint8),
        "boxes": np.stack(boxes).astype(np.float32),
        "keypoints": np.stack(keypoints).astype(np.float32),
        "names": np.array(names),
        "skipped": np.array(skipped),
        "fingerprint": np.array(dataset.fingerprint),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(cache)
    log(f"preprocess: {len(crops)} faces kept, {skipped} skipped, {time.time() - start:.0f}s")
    return arrays


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
    box_side = STORE_SIZE / STORE_CONTEXT
    for row, i in enumerate(index):
        context = rng.uniform(1.8, 2.2) if augment else CONTEXT
        shift = rng.uniform(-4, 4, size=2) if augment else np.zeros(2)
        flip = augment and rng.random() < 0.5
        scale = resolution / (context * box_side)
        centre = STORE_SIZE / 2.0 - shift / scale
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
        array = ((row[:columns].clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
        tiles.append(np.concatenate(list(array.transpose(0, 2, 3, 1)), axis=1))
    grid = np.concatenate(tiles, axis=0)
    grid = cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)


def train(
    *,
    data: Path,
    out: Path,
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    threads: int = 1,
    lr: float = 2e-4,
    recon_weight: float = 5.0,
    r1_gamma: float = 1.0,
    r1_every: int = 4,
    ema_decay: float = 0.999,
    checkpoint_every: int = 500,
    log_every: int = 50,
    echo=print,
) -> dict:
    """Train (or resume) and return the summary written to ``OUT/summary.json``."""
    import torch
    from torch.nn import functional as F

    from faceanon.deepprivacy import (
        Discriminator,
        Generator,
        GeneratorConfig,
        count_parameters,
        generator_input,
        save_generator,
    )

    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    out.mkdir(parents=True, exist_ok=True)
    faces = preprocess(data, out / "faces.npz", log=echo)
    n_faces = len(faces["crops"])
    config = GeneratorConfig()
    resolution = config.resolution

    torch.manual_seed(seed)
    generator, discriminator = Generator(config), Discriminator(config)
    ema = Generator(config)
    ema.load_state_dict(generator.state_dict())
    ema.requires_grad_(False)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.99))
    # Lazy R1 runs every r1_every steps; StyleGAN2's correction keeps Adam's moments right.
    c = r1_every / (r1_every + 1)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr * c, betas=(0.5**c, 0.99**c))

    hyper = {
        "data": str(data),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "threads": threads,
        "lr": lr,
        "recon_weight": recon_weight,
        "r1_gamma": r1_gamma,
        "r1_every": r1_every,
        "ema_decay": ema_decay,
        "resolution": resolution,
    }
    checkpoint = out / "checkpoint.pt"
    start_step, history, elapsed = 0, [], 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start_step, elapsed = int(state["step"]), float(state["elapsed"])
        history = json.loads(state["history"])
        echo(f"resumed from {checkpoint} at step {start_step}")

    # Fixed faces and noise for the sample grid: every grid shows the same inputs.
    grid_rng = np.random.default_rng([seed, 2**31])
    grid_index = grid_rng.choice(n_faces, size=8, replace=False)
    grid_images, grid_masks, grid_kp = (
        torch.from_numpy(a)
        for a in make_batch(faces, grid_index, grid_rng, resolution, augment=False)
    )
    grid_cond = generator_input(grid_images, grid_masks, grid_kp, resolution)
    grid_z = torch.from_numpy(grid_rng.standard_normal((3, 8, config.z_dim)).astype(np.float32))

    stop = {"now": False}

    def _stop(signum, frame):
        stop["now"] = True
        echo(f"signal {signum}: stopping after this step")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def write_outputs(step: int) -> None:
        with torch.no_grad():
            rows = [grid_images * (1 - grid_masks)]
            for z in grid_z:
                fake = ema(grid_cond, z)
                rows.append(fake * grid_masks + grid_images * (1 - grid_masks))
        # Private grid with the real faces for the engineer; the shipped one omits them.
        save_grid(out / "samples_with_originals.png", [grid_images, *rows], columns=8)
        save_grid(out / "samples.png", rows, columns=8)
        metadata = {
            **hyper,
            "step": step,
            "elapsed_s": round(elapsed, 1),
            "faces": int(n_faces),
            "fingerprint": str(faces["fingerprint"]),
        }
        save_generator(out / "deepprivacy64.pt", ema, metadata=metadata)
        state = {
            "generator": generator.state_dict(),
            "discriminator": discriminator.state_dict(),
            "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "history": json.dumps(history),
        }
        tmp = checkpoint.with_name("checkpoint.tmp.pt")
        torch.save(state, tmp)
        tmp.replace(checkpoint)
        summary = {
            **hyper,
            "step": step,
            "elapsed_s": round(elapsed, 1),
            "images_per_s": round(step * batch_size / elapsed, 2) if elapsed else None,
            "faces": int(n_faces),
            "skipped": int(faces["skipped"]),
            "generator_parameters": count_parameters(generator),
            "discriminator_parameters": count_parameters(discriminator),
            "last_losses": history[-1] if history else None,
            "data_fingerprint": str(faces["fingerprint"]),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "history.json").write_text(json.dumps(history) + "\n")

    echo(
        f"training {count_parameters(generator):,}-parameter generator on {n_faces} faces, "
        f"{resolution}x{resolution}, steps {start_step}->{steps}, batch {batch_size}, "
        f"{threads} thread(s)"
    )
    running: dict[str, float] = {}
    tick = time.time()
    step = start_step
    while step < steps and not stop["now"]:
        rng = np.random.default_rng([seed, step])
        index = rng.choice(n_faces, size=batch_size, replace=False)
        images, masks, kps = (
            torch.from_numpy(a) for a in make_batch(faces, index, rng, resolution)
        )
        cond = generator_input(images, masks, kps, resolution)
        noise = torch.Generator().manual_seed(seed * 1_000_003 + step)
        z = torch.randn(batch_size, config.z_dim, generator=noise)

        # Discriminator: real crops against generated faces pasted into the box.
        fake = generator(cond, z)
        composite = fake * masks + images * (1 - masks)
        regularise = r1_gamma > 0 and step % r1_every == 0
        real = images.detach().requires_grad_(regularise)
        d_real = discriminator(real, cond)
        d_fake = discriminator(composite.detach(), cond)
        loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        r1 = torch.zeros(())
        if regularise:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + 0.5 * r1_gamma * r1_every * r1
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: fool the discriminator, and stay near the face on the box early on.
        d_fake_g = discriminator(composite, cond)
        adv = F.softplus(-d_fake_g).mean()
        recon = (torch.abs(fake - images) * masks).sum() / (masks.sum() * 3 + 1e-8)
        loss_g = adv + recon_weight * recon
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)

        step += 1
        for name, value in (
            ("loss_d", loss_d),
            ("loss_g_adv", adv),
            ("recon_l1", recon),
            ("d_real", d_real.mean()),
            ("d_fake", d_fake.mean()),
        ):
            running[name] = running.get(name, 0.0) + float(value.detach())
        if regularise:
            running["r1"] = running.get("r1", 0.0) + float(r1.detach()) * r1_every
        if step % log_every == 0 or step == steps or stop["now"]:
            now = time.time()
            elapsed += now - tick
            tick = now
            n = log_every if step % log_every == 0 else max(step % log_every, 1)
            entry = {"step": step, "elapsed_s": round(elapsed, 1)}
            entry.update({k: round(v / n, 4) for k, v in running.items()})
            history.append(entry)
            running = {}
            rate = step * batch_size / elapsed if elapsed else math.nan
            echo(json.dumps(entry) + f"  ({rate:.1f} img/s overall)")
        if step % checkpoint_every == 0 or step == steps or stop["now"]:
            write_outputs(step)
    if step != start_step and step % checkpoint_every != 0 and step != steps:
        write_outputs(step)
    return json.loads((out / "summary.json").read_text())


@click.command("train-gan")
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Training faces laid out <identity>/<image> (lfw-singletons).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the cache, checkpoints, samples and exported weights.",
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
    """
    summary = train(
        data=data,
        out=out,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        threads=threads,
        lr=lr,
        recon_weight=recon_weight,
        r1_gamma=r1_gamma,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        echo=lambda line: click.echo(line, err=True),
    )
    click.echo(json.dumps(summary, indent=2))
