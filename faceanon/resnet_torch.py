"""dlib's face recognition ResNet in torch, with dlib's own weights.

The network is the one of dlib's ``dnn_face_recognition_ex.cpp`` (the model behind
``face_recognition``): a 150 x 150 RGB face chip, a 7 x 7 stride-2 convolution, max
pooling, 14 residual blocks (32, 64, 128 and 256 channels) and a 128-d linear layer,
29 convolutions in all. Every layer is reproduced as dlib computes it:

- input: ``(pixel - mean colour) / 256`` per channel, the mean colours read from the file;
- convolutions with stride 2 have no padding, those with stride 1 pad by 1 (dlib's
  default ``padding = stride != 1 ? 0 : size / 2``), and so do the pooling layers;
- the batch normalization of training is stored as dlib's ``affine_`` layer (a scale and
  a shift per channel) and applied after the convolution, not folded into it, so every
  intermediate value is rounded as dlib rounds it;
- a down-sampling block adds the 2 x 2 average pool of its input to its output. The two
  can differ in size (8 x 8 pools to 4 x 4 while the stride-2 convolution gives 3 x 3)
  and in channels; dlib's ``add_prev`` then adds them as if the smaller were padded
  with zeros at the bottom, right and in the extra channels, and so does
  :func:`_add_zero_padded`.

The weights come from ``dlib_face_recognition_resnet_model_v1.dat``, read by
:mod:`faceanon.dlib_dat` and checked layer by layer against this architecture
(:func:`convert`); :func:`cached_state_dict` keeps the converted state dict in the user
cache folder, keyed by the ``.dat``'s sha256, so the file is parsed once per machine.
:func:`save_weights` / :func:`load_weights` write and read that state dict to a file of
your choice, so a machine without dlib can run the network (``benchmarks/encoder.py
--weights``).

Equality with dlib is the contract: on 500 LFW faces the largest difference of any
embedding component is at most :data:`CPU_TOLERANCE` (``benchmarks/encoder.py`` prints
the measured figure, ``tests/test_recognition_torch.py`` checks real faces). On CUDA
the convolutions use other algorithms and summation orders, so the stated tolerance is
:data:`CUDA_TOLERANCE` (a bound chosen before any GPU measurement: ``benchmarks/encoder.py
--device cuda`` prints the measured figure against it); TF32 is switched off whenever a
CUDA encoder is made, because TF32 rounds every product's inputs to a 10-bit mantissa,
far coarser than either tolerance.

This module imports torch; ``import faceanon`` and the CLI never import it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceanon.recognition import CHIP_SIZE, check_chips, file_sha256

#: Largest allowed difference, per embedding component, from dlib's CPU descriptor when
#: this network runs on the CPU in float32.
CPU_TOLERANCE = 1e-5
#: The same on CUDA (TF32 off). cuDNN picks other convolution algorithms (Winograd,
#: FFT, split reductions), each rounding differently from dlib's im2col + GEMM.
CUDA_TOLERANCE = 1e-4

EMBEDDING_SIZE = 128

#: (output channels, stride) of the 14 residual blocks, from the input outwards: dlib's
#: ``alevel4`` (3 blocks of 32), ``alevel3`` (4 of 64), ``alevel2`` (3 of 128), ``alevel1``
#: (3 of 256), each of these three starting with a down-sampling block, and ``alevel0``
#: (one 256 down-sampling block).
RESIDUAL_BLOCKS = (
    ((32, 1),) * 3
    + ((64, 2),) + ((64, 1),) * 3
    + ((128, 2),) + ((128, 1),) * 2
    + ((256, 2),) + ((256, 1),) * 2
    + ((256, 2),)
)

_WEIGHTS_FORMAT = "faceanon-dlib-resnet-torch/1"
_CACHE_SUBFOLDER = "dlib-resnet-torch"


class WeightsError(ValueError):
    """A ``.dat`` or converted weights file does not hold this network (names the file)."""


class DeviceUnavailable(RuntimeError):
    """The asked-for device (CUDA) is not there."""


class ChannelAffine(nn.Module):
    """dlib's ``affine_`` layer in conv mode: ``x * gamma[c] + beta[c]`` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` where the smaller is padded with zeros at the end of each axis (dlib's ``add``)."""
    if a.shape == b.shape:
        return a + b
    channels = max(a.shape[1], b.shape[1])
    rows = max(a.shape[2], b.shape[2])
    cols = max(a.shape[3], b.shape[3])

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, cols - t.shape[3], 0, rows - t.shape[2], 0, channels - t.shape[1]))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (stride 1) or ``ares_down`` (stride 2) block.

    ``relu(affine(conv(relu(affine(conv(x))))) + shortcut(x))``, the shortcut being ``x``
    or, down-sampling, its 2 x 2 average pool.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride,
                               padding=0 if stride != 1 else 1)
        self.affine1 = ChannelAffine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = ChannelAffine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, stride=2) if self.stride != 1 else x
        return F.relu(_add_zero_padded(y, shortcut))


class FaceResNet(nn.Module):
    """dlib's 128-d face descriptor network (``anet_type`` of ``dnn_face_recognition_ex``).

    :meth:`forward` takes face chips as a ``uint8`` tensor of shape ``(n, 150, 150, 3)``
    (RGB, made by ``dlib.get_face_chip``) and returns float32 embeddings ``(n, 128)``.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(3))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.stem_affine = ChannelAffine(32)
        blocks, channels = [], 32
        for out_channels, stride in RESIDUAL_BLOCKS:
            blocks.append(ResidualBlock(channels, out_channels, stride))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, EMBEDDING_SIZE, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        # The permuted view keeps the chips' channels-last layout, which torch's CPU
        # convolutions run about 1.5x faster than a contiguous NCHW copy (measured).
        x = chips.permute(0, 3, 1, 2).to(torch.float32)
        # Dividing by 256 is exact in binary, so this rounds as dlib's input layer does.
        x = (x - self.input_mean.view(1, 3, 1, 1)) / 256.0
        x = F.relu(self.stem_affine(self.stem(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def conv_affine_pairs(self) -> Iterator[tuple[nn.Conv2d, ChannelAffine]]:
        """Each convolution with the affine layer after it, from the input outwards."""
        yield self.stem, self.stem_affine
        for block in self.blocks:
            yield block.conv1, block.affine1
            yield block.conv2, block.affine2


# --------------------------------------------------------------------------------------
# Converting dlib's file


def _expected_layers() -> list[tuple[str, dict] | None]:
    """The layers of dlib's network from the input outwards; ``None`` is a tag or skip.

    Each computational layer is ``(kind, settings)`` with the settings the file must
    carry; this is dlib's template ``anet_type`` unrolled.
    """

    def con(filters: int, size: int, stride: int) -> tuple[str, dict]:
        pad = 0 if stride != 1 else size // 2
        return ("con_4", {"num_filters": filters, "nr": size, "nc": size,
                          "stride": (stride, stride), "padding": (pad, pad)})

    def pool(kind: str, size: int, stride: int) -> tuple[str, dict]:
        pad = 0 if stride != 1 else size // 2
        return (kind, {"nr": size, "nc": size, "stride": (stride, stride),
                       "padding": (pad, pad)})

    affine, relu, add = ("affine_", {"mode": "conv"}), ("relu_", {}), ("add_prev_", {})
    layers: list[tuple[str, dict] | None] = [con(32, 7, 2), affine, relu,
                                             pool("max_pool_2", 3, 2)]
    for channels, stride in RESIDUAL_BLOCKS:
        body = [None, con(channels, 3, stride), affine, relu, con(channels, 3, 1), affine]
        if stride == 1:  # relu<add_prev1<block<tag1<x>>>>
            layers += body + [add, relu]
        else:  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<tag1<x>>>>>>>
            layers += body + [None, None, pool("avg_pool_2", 2, 2), add, relu]
    layers += [pool("avg_pool_2", 0, 1), ("fc_2", {"num_outputs": EMBEDDING_SIZE,
                                                   "num_inputs": 256, "bias": False})]
    return layers


def _expected_nesting() -> str:
    """The file's version digits, outermost first, for the network of :func:`_expected_layers`."""
    digits = ["1" if layer is None else "2" for layer in reversed(_expected_layers())]
    digits[-1] = "3"
    return "".join(digits)


def default_dat_path() -> Path:
    """Where ``face_recognition_models`` installed dlib's ResNet model file."""
    import face_recognition_models

    return Path(face_recognition_models.face_recognition_model_location())


def convert(dat_path: os.PathLike | str | None = None) -> dict[str, torch.Tensor]:
    """Read dlib's ``.dat`` and return a state dict for :class:`FaceResNet`.

    Parameters
    ----------
    dat_path : path-like, optional
        dlib's model file; by default the one ``face_recognition_models`` installed.

    Raises
    ------
    faceanon.dlib_dat.DlibFormatError
        The file is not in dlib's serialization format.
    WeightsError
        The file is a dlib network, but not this one (the nesting of layers, a layer's
        kind, size, stride or padding, or the input differs).
    """
    from faceanon.dlib_dat import read_network

    path = Path(dat_path) if dat_path is not None else default_dat_path()
    network = read_network(path)
    if network.input.attributes.get("rows") != CHIP_SIZE or \
            network.input.attributes.get("cols") != CHIP_SIZE:
        raise WeightsError(f"{path}: input is {network.input.attributes}, expected 150 x 150")
    if network.nesting != _expected_nesting():
        raise WeightsError(f"{path}: the layers do not nest as dlib's face ResNet does")
    expected = [layer for layer in _expected_layers() if layer is not None]
    if len(network.layers) != len(expected):
        raise WeightsError(f"{path}: {len(network.layers)} layers, expected {len(expected)}")
    for index, (found, (kind, settings)) in enumerate(zip(network.layers, expected, strict=True)):
        mismatched = {k: found.attributes.get(k) for k, v in settings.items()
                      if found.attributes.get(k) != v}
        if found.kind != kind or mismatched:
            raise WeightsError(
                f"{path}: layer {index} (from the input) is {found.kind} {found.attributes}, "
                f"expected {kind} {settings}"
            )

    model = FaceResNet()
    convs = [layer for layer in network.layers if layer.kind == "con_4"]
    affines = [layer for layer in network.layers if layer.kind == "affine_"]
    state: dict[str, torch.Tensor] = {
        "input_mean": torch.tensor(network.input.attributes["mean_rgb"], dtype=torch.float32)
    }
    names = {module: name for name, module in model.named_modules()}
    for (conv, affine), con_layer, affine_layer in zip(
        model.conv_affine_pairs(), convs, affines, strict=True
    ):
        filters = con_layer.params["filters"]
        if tuple(filters.shape) != tuple(conv.weight.shape):
            raise WeightsError(f"{path}: filters {filters.shape} where {conv.weight.shape} fit")
        state[f"{names[conv]}.weight"] = torch.from_numpy(filters.copy())
        state[f"{names[conv]}.bias"] = torch.from_numpy(con_layer.params["biases"].copy())
        state[f"{names[affine]}.gamma"] = torch.from_numpy(
            affine_layer.params["gamma"].reshape(-1).copy())
        state[f"{names[affine]}.beta"] = torch.from_numpy(
            affine_layer.params["beta"].reshape(-1).copy())
    # dlib's fc computes x @ W with W (inputs, outputs); torch's Linear keeps W.T.
    state["fc.weight"] = torch.from_numpy(network.layers[-1].params["weights"].T.copy())
    model.load_state_dict(state, strict=True)  # raises if any name or shape is off
    return state


def save_weights(path: os.PathLike | str, state: dict[str, torch.Tensor], *, dat_sha256: str):
    """Write a converted state dict (and the ``.dat``'s sha256) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": _WEIGHTS_FORMAT, "dat_sha256": dat_sha256,
               "state_dict": {k: v.contiguous() for k, v in state.items()}}
    # A temporary file in the same folder, renamed over the target only once complete,
    # so a crash never leaves a half-written weights file that looks whole.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            torch.save(payload, out)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_weights(path: os.PathLike | str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a file written by :func:`save_weights`: ``(state_dict, dat_sha256)``.

    Raises
    ------
    WeightsError
        The file cannot be read as such a file, or its tensors do not fit :class:`FaceResNet`.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise WeightsError(f"{path}: not a converted weights file ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != _WEIGHTS_FORMAT:
        raise WeightsError(f"{path}: not a {_WEIGHTS_FORMAT} weights file")
    state = payload.get("state_dict")
    try:
        FaceResNet().load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise WeightsError(f"{path}: tensors do not fit the network ({error})") from error
    return state, str(payload["dat_sha256"])


def cache_folder() -> Path:
    """The user cache folder for converted weights (``$XDG_CACHE_HOME/faceanon/...``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "faceanon" / _CACHE_SUBFOLDER


def cached_state_dict(
    dat_path: os.PathLike | str | None = None, *, cache: os.PathLike | str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """The converted state dict of ``dat_path``, read from the cache or converted once.

    Returns ``(state_dict, dat_sha256)``. The cache file is named by the ``.dat``'s
    sha256, so another model file never reads a stale conversion. A cache file that
    cannot be read is converted again and replaced (it is derived data), with a warning.
    """
    path = Path(dat_path) if dat_path is not None else default_dat_path()
    sha = file_sha256(path)
    target = Path(cache) if cache is not None else cache_folder()
    cached = target / f"{sha}.pt"
    if cached.exists():
        try:
            state, recorded = load_weights(cached)
            if recorded == sha:
                return state, sha
            warnings.warn(f"{cached} records sha256 {recorded}; converting {path} again",
                          stacklevel=2)
        except WeightsError as error:
            warnings.warn(f"{error}; converting {path} again", stacklevel=2)
    state = convert(path)
    save_weights(cached, state, dat_sha256=sha)
    return state, sha


class TorchFaceEncoder:
    """Batched embeddings of face chips with :class:`FaceResNet` on a CPU or a GPU.

    Parameters
    ----------
    state_dict : dict
        Converted weights (:func:`cached_state_dict` or :func:`load_weights`).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Making a CUDA encoder switches TF32 off for
        the whole process (``torch.backends.cudnn.allow_tf32`` and
        ``torch.backends.cuda.matmul.allow_tf32``), since both are global flags.
    batch_size : int
        Chips per forward pass; larger batches amortize per-layer overhead.

    Notes
    -----
    The CPU threads used are torch's (``torch.set_num_threads``), which the caller sets
    for its worker; this class does not change them.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], *, device: str = "cpu",
                 batch_size: int = 64):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise DeviceUnavailable(f"device {device!r} asked for; torch sees no CUDA device")
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        elif self.device.type != "cpu":
            raise ValueError(f"unsupported device {device!r}; use 'cpu' or 'cuda'")
        self.batch_size = int(batch_size)
        self.model = FaceResNet()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.eval().to(self.device)

    @property
    def tolerance(self) -> float:
        """The stated largest difference from dlib's descriptor on this device."""
        return CUDA_TOLERANCE if self.device.type == "cuda" else CPU_TOLERANCE

    def encode_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, 128)`` of ``uint8`` chips ``(n, 150, 150, 3)``.

        float64, as dlib returns them (the network computes in float32).
        """
        chips = check_chips(chips)
        out = np.empty((len(chips), EMBEDDING_SIZE), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(chips[start:start + self.batch_size]))
                embeddings = self.model(batch.to(self.device, non_blocking=True))
                out[start:start + len(batch)] = embeddings.cpu().numpy()
        return out

