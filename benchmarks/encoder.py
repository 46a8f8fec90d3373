"""How fast dlib's face descriptor runs in torch, and how equal to dlib it stays.

Prints, measured in one run on this machine:

1. equality: the largest difference of any embedding component between the torch
   network and dlib's ``compute_face_descriptor`` over N real LFW face chips (default
   500), beside the stated tolerance (``faceanon.resnet_torch.CPU_TOLERANCE`` or, on
   CUDA, ``CUDA_TOLERANCE``);
2. ms per face and faces per second for dlib (a chip per call, and dlib's own batched
   call) and for torch at batch 1, 16 and 64 with 1 and 2 CPU threads, each with its
   speed-up over dlib's one-chip-per-call time. On CUDA: batches 1, 16, 64 and 256.

Timings are the best of ``--rounds`` rounds, every configuration measured once per
round in turn, so a machine shared with other work slows all of them alike; the load
average is printed before and after. Compare CPU figures as ratios.

Usage::

    # on a machine with dlib and LFW: 500 faces, CPU
    FACEANON_DATA=/path/to/datasets python benchmarks/encoder.py

    # prepare files for a machine without dlib, duckdb or data (about 29 MB in all)
    FACEANON_DATA=... python benchmarks/encoder.py --faces 500 \\
        --save-chips gpu/chips.npy --save-count 100 --save-weights gpu/dlib_resnet.pt

    # there: only numpy and torch are needed
    PYTHONPATH=. python3 benchmarks/encoder.py --chips gpu/chips.npy \\
        --weights gpu/dlib_resnet.pt --device cuda

``--save-chips FILE.npy`` also writes dlib's embeddings of those chips to
``FILE.dlib.npy``; ``--chips FILE.npy`` reads them back, when present, for the equality
figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faceanon import resnet_torch  # noqa: E402


def dlib_importable() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


def reference_path(chips_path: Path) -> Path:
    """Where dlib's embeddings of a chips file live: ``X.npy`` -> ``X.dlib.npy``."""
    return chips_path.with_suffix(".dlib.npy")


def lfw_chips(data: str, count: int) -> np.ndarray:
    """dlib's face chips of the first ``count`` LFW images (gallery, then probes) with a face."""
    from faceanon.datasets import protocol_split, resolve_dataset
    from faceanon.imageio import read_image
    from faceanon.recognition import face_chip

    dataset = resolve_dataset(data)
    split = protocol_split(dataset, seed=0)
    chips = []
    for sample in (*split.gallery, *split.probes):
        face = face_chip(read_image(dataset.path(sample)))
        if face.acquired:
            chips.append(face.chip)
            if len(chips) == count:
                return np.array(chips)
    raise SystemExit(f"only {len(chips)} faces found in {dataset.name}; asked for {count}")


def dlib_embeddings(chips: np.ndarray) -> np.ndarray:
    from faceanon.recognition import DlibResNet

    return DlibResNet().encode_chips(chips)


def measure(configs: dict, chips: np.ndarray, rounds: int) -> dict[str, float]:
    """Best seconds per face of each configuration, measured in turn, ``rounds`` times."""
    best = {name: np.inf for name in configs}
    for run in configs.values():  # warm up: load models, allocate, pick kernels
        run(chips[: min(len(chips), 256)])
    for _ in range(rounds):
        for name, run in configs.items():
            start = time.perf_counter()
            run(chips)
            best[name] = min(best[name], (time.perf_counter() - start) / len(chips))
    return best


def torch_config(encoder: resnet_torch.TorchFaceEncoder, *, batch: int, threads: int | None):
    def run(chips: np.ndarray) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        encoder.batch_size = batch
        encoder.encode_chips(chips)
    return run


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=500,
                        help="real LFW chips for the equality figure (default 500)")
    parser.add_argument("--data", default="lfw", help="dataset name or path (default lfw)")
    parser.add_argument("--chips", type=Path, help="load prepared chips (uint8 .npy) instead")
    parser.add_argument("--save-chips", type=Path, help="save chips (and dlib's embeddings)")
    parser.add_argument("--save-count", type=int, default=100,
                        help="how many chips --save-chips keeps (default 100, 6.75 MB)")
    parser.add_argument("--weights", type=Path, help="converted weights (else from the .dat)")
    parser.add_argument("--save-weights", type=Path, help="save the converted weights here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts (default 1,2)")
    parser.add_argument("--batches", help="batch sizes (default 1,16,64; cuda 1,16,64,256)")
    parser.add_argument("--timing-chips", type=int, default=64,
                        help="chips encoded per timed pass (default 64; cuda: 1024, repeated)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--no-dlib", action="store_true", help="skip dlib's timings")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")

    if args.weights:
        state, sha = resnet_torch.load_weights(args.weights)
    else:
        state, sha = resnet_torch.cached_state_dict()
    if args.save_weights:
        resnet_torch.save_weights(args.save_weights, state, dat_sha256=sha)
        print(f"saved weights to {args.save_weights} "
              f"({args.save_weights.stat().st_size / 1e6:.1f} MB)")

    have_dlib = not args.no_dlib and dlib_importable()
    reference = None
    if args.chips:
        chips = resnet_torch.check_chips(np.load(args.chips))
        if reference_path(args.chips).exists():
            reference = np.load(reference_path(args.chips))
        source = f"{len(chips)} chips from {args.chips}"
    else:
        chips = lfw_chips(args.data, args.faces)
        source = f"{len(chips)} real {args.data} face chips"
    if reference is None and have_dlib:
        reference = dlib_embeddings(chips)
    if args.save_chips:
        keep = chips[: args.save_count]
        args.save_chips.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.save_chips, keep)
        if reference is not None:
            np.save(reference_path(args.save_chips), reference[: len(keep)])
        print(f"saved {len(keep)} chips to {args.save_chips} "
              f"({args.save_chips.stat().st_size / 1e6:.1f} MB)"
              + (f" and dlib's embeddings to {reference_path(args.save_chips)}"
                 if reference is not None else ""))

    try:
        encoder = resnet_torch.TorchFaceEncoder(state, device=args.device, batch_size=64)
    except (resnet_torch.DeviceUnavailable, ValueError) as error:
        raise SystemExit(f"encoder.py: {error}") from None
    device_name = torch.cuda.get_device_name(encoder.device) if cuda else cpu_name()
    print(f"# dlib face ResNet in torch {torch.__version__} on {args.device} ({device_name}); "
          f"weights from .dat sha256 {sha[:12]}; {source}")
    print(f"{os.cpu_count()} CPUs; load average before: {load_average()}")

    if cuda:
        print(f"TF32: cudnn {torch.backends.cudnn.allow_tf32}, "
              f"matmul {torch.backends.cuda.matmul.allow_tf32}")
    if reference is not None:
        torch.set_num_threads(1)
        ours = encoder.encode_chips(chips)
        difference = float(np.abs(ours - reference[: len(chips)]).max())
        verdict = "within" if difference <= encoder.tolerance else "EXCEEDS"
        print(f"equality: max |torch - dlib| over {len(chips)} faces x 128 = "
              f"{difference:.3g} ({verdict} the stated {args.device} tolerance "
              f"{encoder.tolerance:g})")
    else:
        print("equality: no dlib embeddings for these chips (run with dlib, or give "
              "--chips whose .dlib.npy exists)")

    batches = [int(b) for b in (args.batches or ("1,16,64,256" if cuda else "1,16,64")).split(",")]
    count = 1024 if cuda and args.timing_chips == 64 else args.timing_chips
    timing = np.resize(chips, (count, *chips.shape[1:]))  # repeats chips when too few
    configs = {}
    if have_dlib and not cuda:
        from faceanon.recognition import DlibResNet

        dlib_backend = DlibResNet()
        configs["dlib, a chip per call"] = lambda c: [dlib_backend.encode_chips(x[None]) for x in c]
        configs["dlib, batched call"] = dlib_backend.encode_chips
    threads = [None] if cuda else [int(t) for t in args.threads.split(",")]
    for thread_count in threads:
        for batch in batches:
            label = f"torch {args.device}, batch {batch}" + (
                f", {thread_count} thread{'s' if thread_count > 1 else ''}" if thread_count else "")
            configs[label] = torch_config(encoder, batch=batch, threads=thread_count)
    seconds = measure(configs, timing, args.rounds)

    baseline = seconds.get("dlib, a chip per call")
    print(f"timing: best of {args.rounds} rounds, {count} chips per pass")
    print(f"{'configuration':<34}{'ms/face':>9}{'faces/s':>10}{'vs dlib':>9}")
    for name, per_face in seconds.items():
        ratio = f"{baseline / per_face:8.1f}x" if baseline else f"{'n/a':>9}"
        print(f"{name:<34}{per_face * 1e3:9.2f}{1 / per_face:10.1f}{ratio}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
