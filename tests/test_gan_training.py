"""``faceanon train-gan``: option checks, packs, resuming, stopping, training without dlib."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from faceanon.gan_training import (
    STORE_CONTEXT,
    TrainingError,
    TrainingOptions,
    load_pack,
    store_size,
    write_pack,
)

torch = pytest.importorskip("torch")


def synthetic_pack(resolution: int, n: int = 6, seed: int = 0) -> dict:
    """Random crops with a centred box and keypoints where a face's would be."""
    rng = np.random.default_rng(seed)
    side = store_size(resolution)
    box = side / STORE_CONTEXT
    lo, hi = side / 2 - box / 2, side / 2 + box / 2
    layout = np.array(
        [[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.33, 0.72], [0.66, 0.72], [0.0, 0.3], [1.0, 0.3]]
    )
    keypoints = layout * box + lo + rng.normal(0, 1, (n, 7, 2))
    # Smooth crops (as photographs are), so that JPEG keeps them well.
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    crops = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_LINEAR) for c in small])
    return {
        "crops": crops,
        "boxes": np.tile([lo, lo, hi, hi], (n, 1)).astype(np.float32),
        "keypoints": keypoints.astype(np.float32),
        "names": np.array([f"person{i}/image.jpg" for i in range(n)]),
        "skipped": np.array(1),
        "fingerprint": np.array("synthetic"),
        "resolution": np.array(resolution),
    }


def quiet(line: str) -> None:
    pass


# ----------------------------------------------------------------------------------------
# Options are checked first.


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": -1}, r"--seed must be between 0 and 4294967295, got -1"),
        ({"seed": 2**32}, r"--seed must be between"),
        ({"seed": 1.5}, r"--seed must be a whole number"),
        ({"log_every": 0}, r"--log-every must be a whole number >= 1, got 0"),
        ({"checkpoint_every": 0}, r"--checkpoint-every must be a whole number >= 1, got 0"),
        ({"steps": 0}, r"--steps must be"),
        ({"batch_size": -2}, r"--batch-size must be"),
        ({"resolution": 96}, r"--resolution must be one of 64, 128, got 96"),
        ({"precision": "fp16"}, r"--precision must be one of auto, fp32, bf16"),
        ({"device": "tpu"}, r"--device must be cpu, cuda or cuda:N"),
        ({"max_minutes": 0}, r"--max-minutes must be > 0"),
        ({"max_minutes": float("nan")}, r"--max-minutes must be > 0"),
        ({"lr": 0.0}, r"--lr must be a finite number > 0"),
        ({"r1_gamma": -1.0}, r"--r1-gamma must be a finite number >= 0"),
        ({"ema_decay": 1.0}, r"--ema-decay must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(change, message):
    with pytest.raises(TrainingError, match=message):
        TrainingOptions(**change)


def test_precision_auto_is_bf16_on_cuda_only():
    assert not TrainingOptions().bf16
    assert TrainingOptions(device="cuda").bf16
    assert TrainingOptions(precision="bf16").bf16
    assert not TrainingOptions(device="cuda", precision="fp32").bf16


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--seed", "-1"], "--seed must be between 0"),
        (["--log-every", "0"], "--log-every must be a whole number >= 1, got 0"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be a whole number >= 1, got 0"),
        (["--resolution", "256"], "--resolution must be one of 64, 128"),
        (["--jpeg-quality", "0"], "--jpeg-quality must be 1 to 100"),
    ],
)
def test_cli_refuses_bad_options_before_the_slow_preparation(
    tmp_path, monkeypatch, arguments, message
):
    import faceanon.gan_training as gan_training
    from faceanon.cli import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("preparation started before the options were checked")

    monkeypatch.setattr(gan_training, "prepare_pack", must_not_run)
    result = CliRunner().invoke(
        main, ["train-gan", "--data", str(tmp_path), "--out", str(tmp_path / "out"), *arguments]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_gpu_it_does_not_have(tmp_path, monkeypatch):
    import faceanon.gan_training as gan_training
    from faceanon.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gan_training, "prepare_pack", lambda *a, **k: pytest.fail("prepared"))
    result = CliRunner().invoke(
        main, ["train-gan", "--data", str(tmp_path), "--out", str(tmp_path), "--device", "cuda"]
    )
    assert result.exit_code == 2
    assert "--device cuda" in result.output and "no CUDA GPU" in result.output


def test_prepare_only_never_overwrites_a_pack(tmp_path):
    from faceanon.cli import main

    pack = tmp_path / "faces.npz"
    pack.write_bytes(b"keep me")
    result = CliRunner().invoke(
        main, ["train-gan", "--data", str(tmp_path), "--pack", str(pack), "--prepare-only"]
    )
    assert result.exit_code == 2 and "exists" in result.output
    assert pack.read_bytes() == b"keep me"


# ----------------------------------------------------------------------------------------
# Packs.


def test_raw_pack_round_trips_exactly(tmp_path):
    pack = synthetic_pack(64)
    write_pack(tmp_path / "p.npz", pack)
    loaded = load_pack(tmp_path / "p.npz", resolution=64)
    for key in ("crops", "boxes", "keypoints", "names"):
        assert np.array_equal(loaded[key], pack[key])


def test_jpeg_pack_is_smaller_and_close(tmp_path):
    pack = synthetic_pack(128)
    write_pack(tmp_path / "raw.npz", pack)
    write_pack(tmp_path / "jpeg.npz", pack, jpeg_quality=90)
    assert (tmp_path / "jpeg.npz").stat().st_size < (tmp_path / "raw.npz").stat().st_size / 4
    loaded = load_pack(tmp_path / "jpeg.npz", resolution=128)
    assert loaded["crops"].shape == pack["crops"].shape
    assert np.abs(loaded["crops"].astype(int) - pack["crops"]).mean() < 3
    assert np.array_equal(loaded["keypoints"], pack["keypoints"])


def test_unusable_packs_are_named(tmp_path):
    with pytest.raises(TrainingError, match=r"no pack at .*missing\.npz"):
        load_pack(tmp_path / "missing.npz", resolution=64)
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(TrainingError, match=r"text\.npz: unreadable"):
        load_pack(tmp_path / "text.npz", resolution=64)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(TrainingError, match=r"other\.npz: not a faceanon GAN pack"):
        load_pack(tmp_path / "other.npz", resolution=64)
    write_pack(tmp_path / "p64.npz", synthetic_pack(64))
    with pytest.raises(TrainingError, match=r"p64\.npz: pack made for 64 px, .* 128 px"):
        load_pack(tmp_path / "p64.npz", resolution=128)


# ----------------------------------------------------------------------------------------
# Training.


def _train(out: Path, **options):
    from faceanon.gan_training import train

    lines = []
    pack = out.parent / f"pack{options.get('resolution', 64)}.npz"
    if not pack.exists():
        write_pack(pack, synthetic_pack(options.get("resolution", 64)))
    defaults = {"batch_size": 2, "log_every": 1, "checkpoint_every": 100}
    summary = train(
        TrainingOptions(**{**defaults, **options}), out=out, pack=pack, echo=lines.append
    )
    return summary, lines


def _state_digest(path: Path) -> list:
    state = torch.load(path, weights_only=True)
    return [
        state[part][name].clone()
        for part in ("generator", "discriminator", "ema")
        for name in sorted(state[part])
    ]


def test_resuming_gives_the_same_weights_as_one_run(tmp_path):
    _train(tmp_path / "whole", steps=4)
    _train(tmp_path / "resumed", steps=2)
    summary, lines = _train(tmp_path / "resumed", steps=4)
    assert any("resumed from" in line and "at step 2" in line for line in lines)
    assert summary["step"] == 4
    whole = _state_digest(tmp_path / "whole" / "checkpoint.pt")
    resumed = _state_digest(tmp_path / "resumed" / "checkpoint.pt")
    assert all(torch.equal(a, b) for a, b in zip(whole, resumed, strict=True))
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [entry["step"] for entry in history] == [1, 2, 3, 4]


@pytest.mark.parametrize("signalled_at", [2, 3])
def test_a_stop_signal_writes_one_checkpoint_and_restores_the_handlers(tmp_path, signalled_at):
    from faceanon.gan_training import train

    def previous(signum, frame):
        raise AssertionError("the training's own handler should have caught this")

    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, previous)
    try:
        lines = []

        def echo(line):
            lines.append(line)
            if line.startswith(f'{{"step": {signalled_at},'):
                os.kill(os.getpid(), signal.SIGTERM)

        write_pack(tmp_path / "pack.npz", synthetic_pack(64))
        options = TrainingOptions(steps=10, batch_size=2, log_every=1, checkpoint_every=3)
        summary = train(options, out=tmp_path / "out", pack=tmp_path / "pack.npz", echo=echo)
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is old_int
    finally:
        signal.signal(signal.SIGTERM, old_term)
    assert summary["step"] == signalled_at
    # Step 3 is also a checkpoint step: still written once.
    saves = [line for line in lines if line.startswith("saved step")]
    assert len(saves) == 1 and saves[0].startswith(f"saved step {signalled_at}:")
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert state["step"] == signalled_at


def test_handlers_are_restored_when_training_fails(tmp_path):
    from faceanon.gan_training import train

    before = signal.getsignal(signal.SIGTERM)

    def echo(line):
        if line.startswith('{"step"'):
            raise RuntimeError("boom")

    write_pack(tmp_path / "pack.npz", synthetic_pack(64))
    with pytest.raises(RuntimeError, match="boom"):
        train(
            TrainingOptions(steps=3, batch_size=2),
            out=tmp_path,
            pack=tmp_path / "pack.npz",
            echo=echo,
        )
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_time_budget_stops_after_a_step_with_one_save(tmp_path):
    summary, lines = _train(tmp_path / "out", steps=50, max_minutes=1e-6)
    assert summary["step"] == 1
    assert any("time budget" in line for line in lines)
    assert len([line for line in lines if line.startswith("saved step 1:")]) == 1
    assert (tmp_path / "out" / "deepprivacy64.pt").is_file()


def test_a_batch_larger_than_the_pack_is_refused(tmp_path):
    with pytest.raises(TrainingError, match=r"--batch-size 7 is larger than the 6 faces"):
        _train(tmp_path / "out", steps=1, batch_size=7)


def test_a_checkpoint_of_another_resolution_is_not_resumed(tmp_path):
    _train(tmp_path / "out", steps=1)
    with pytest.raises(TrainingError, match=r"checkpoint\.pt is a 64 px run"):
        _train(tmp_path / "out", steps=1, resolution=128)


# ----------------------------------------------------------------------------------------
# The GPU machine's setting: the working tree and a pack, no dlib, no duckdb, no data.


BLOCKED = ("dlib", "duckdb", "face_recognition", "face_recognition_models")


@pytest.fixture(scope="module")
def trained_without_dlib(tmp_path_factory):
    """Two bf16 steps at 128 px in a fresh interpreter where dlib and duckdb cannot import."""
    folder = tmp_path_factory.mktemp("gpu_like")
    write_pack(folder / "faces-128px.npz", synthetic_pack(128, n=4), jpeg_quality=90)
    script = textwrap.dedent(
        f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # import raises ImportError, as where it is missing
        from faceanon.cli import main
        main(["train-gan", "--pack", {str(folder / "faces-128px.npz")!r},
              "--out", {str(folder / "out")!r}, "--resolution", "128", "--steps", "2",
              "--batch-size", "2", "--precision", "bf16", "--max-minutes", "5"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    return folder / "out", result


def test_training_runs_from_a_pack_without_dlib_duckdb_or_data(trained_without_dlib):
    out, result = trained_without_dlib
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["step"] == 2 and summary["resolution"] == 128 and summary["bf16"]
    assert summary["generator_parameters"] > 4_000_000
    for name in ("deepprivacy128.pt", "samples.png", "summary.json", "history.json"):
        assert (out / name).is_file(), name
    # What comes back from the GPU machine is at most 16 MiB a file; the weights must.
    assert (out / "deepprivacy128.pt").stat().st_size < 10 * 2**20


def test_weights_trained_at_128_px_anonymize_like_the_shipped_ones(trained_without_dlib):
    from faceanon.deepprivacy import DeepPrivacy

    out, result = trained_without_dlib
    assert result.returncode == 0, result.stderr[-3000:]
    method = DeepPrivacy(weights=out / "deepprivacy128.pt")
    assert method.generator.config.resolution == 128
    image = np.random.default_rng(0).integers(0, 256, (220, 200, 3), dtype=np.uint8)
    box = (50, 60, 90, 100)
    anonymized = method.anonymize(image, [box], k=None, rng=np.random.default_rng(0))
    outside = np.ones(image.shape[:2], bool)
    outside[60:160, 50:140] = False
    assert np.array_equal(anonymized[outside], image[outside])
    assert not np.array_equal(anonymized[60:160, 50:140], image[60:160, 50:140])


def test_the_command_and_its_help_import_without_torch_or_dlib():
    # `faceanon --help` imports every command's module to show its help line.
    script = textwrap.dedent(
        """
        import sys
        from faceanon.gan_training import train_gan_command
        try:
            train_gan_command(["--help"])
        except SystemExit:
            pass
        heavy = sorted({"torch", "dlib", "duckdb"} & set(sys.modules))
        print("HEAVY", heavy)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "--max-minutes" in result.stdout and "--resolution" in result.stdout


# ----------------------------------------------------------------------------------------
# Preparing a pack from real faces (dlib).


@pytest.mark.realdata
def test_a_pack_from_real_faces_holds_boxes_and_keypoints_inside_the_crops(
    lfw_singletons, tmp_path
):
    import shutil

    from faceanon.gan_training import prepare_pack

    folder = tmp_path / "faces"
    for sample in lfw_singletons.samples[::700]:
        target = folder / sample.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lfw_singletons.path(sample), target)
    n_images = len(lfw_singletons.samples[::700])
    pack_path = tmp_path / "pack.npz"
    prepare_pack(folder, pack_path, resolution=128, jpeg_quality=90, log=quiet)
    pack = load_pack(pack_path, resolution=128)
    n = len(pack["crops"])
    assert n + int(pack["skipped"]) == n_images and n >= n_images - 1
    assert pack["crops"].shape[1:] == (192, 192, 3)
    # The box spans a third of the crop, centred; the keypoints fall near or in it.
    widths = pack["boxes"][:, 2] - pack["boxes"][:, 0]
    assert np.allclose(widths, 192 / STORE_CONTEXT, rtol=0.05)
    inner = pack["keypoints"][:, :5]
    assert ((inner > 192 / 4) & (inner < 3 * 192 / 4)).all()
    assert pack_path.stat().st_size < 15_000 * n
