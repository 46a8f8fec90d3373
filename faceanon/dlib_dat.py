"""Read a network that dlib's DNN toolkit serialized to a ``.dat`` file, in Python.

dlib writes a network with its own ``serialize`` functions (``dlib/serialize.h``,
``dlib/dnn/core.h``, ``dlib/dnn/layers.h``, ``dlib/dnn/input.h``, ``dlib/dnn/loss.h``).
This module reads that stream without dlib, so that the weights of
``dlib_face_recognition_resnet_model_v1.dat`` can be handed to another framework. The
format, as dlib 19.x writes it:

integers
    One control byte, then the value's bytes, little-endian. The control byte's low
    nibble is the number of value bytes (1 to 8), its top bit the sign; bits 4-6 are 0.
    Zero is written with one value byte, ``01 00``.
strings
    An integer length, then that many bytes (version tags such as ``"con_4"`` are strings).
bools
    One ASCII byte, ``'1'`` or ``'0'``.
floats and doubles (outside tensors)
    An integer mantissa and an integer exponent: the value is ``mantissa * 2**exponent``.
    Exponents 32000, 32001 and 32002 mean +inf, -inf and NaN.
tensors
    Version 2 (every file since dlib 19.2): integer version, the four dimensions
    ``num_samples, k, nr, nc``, then the values as little-endian IEEE float32. Version 1
    stored each value as a mantissa/exponent float.
alias tensors
    Integer version 1, then the four dimensions; no values (a view into a layer's params).

A network ``loss<L_n<...<L_1<input>>>>`` is written outside in. The loss layer writes
its version (1), then the loss details, then its sub-network. Each computational layer
(``add_layer``) writes its version (2) and its sub-network *before* its own details, so
the file holds every layer's version first, outermost to innermost, then the input and
the layers' details innermost to outermost. Tag and skip layers write only their
version (1): the file does not say which tag a layer uses, so the caller checks the
nesting against the architecture it expects (:func:`faceanon.resnet_torch.convert`).
The innermost ``add_layer`` (the one that holds the input layer) has version 3 and writes
its input layer first.

Only the layer kinds of dlib's face recognition ResNet are read (convolution, affine,
ReLU, max and average pooling, ``add_prev``, fully connected, ``input_rgb_image_sized``,
``loss_metric``); anything else raises :class:`DlibFormatError` naming the file, the
byte offset and what was found, rather than guessing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Exponents that dlib's float serialization reserves for the special values.
_SPECIAL_EXPONENTS = {32000: np.inf, 32001: -np.inf, 32002: np.nan}

#: ``add_layer`` versions dlib writes: 2 for a layer over a layer, 3 (or 2 in older
#: files) for the innermost layer, which holds the input layer.
_LAYER_VERSION = 2
_INPUT_LAYER_VERSIONS = (2, 3)
#: ``add_tag_layer`` and ``add_skip_layer`` both write version 1 and nothing else.
_TAG_OR_SKIP_VERSION = 1


class DlibFormatError(ValueError):
    """The file is not a dlib network this reader understands (names file and offset)."""


@dataclass(frozen=True)
class Layer:
    """One computational layer's details, as serialized.

    ``kind`` is dlib's version tag for the layer (``"con_4"``, ``"affine_"``, ...),
    ``attributes`` its scalar settings (filter counts, strides, paddings, mode) and
    ``params`` its learned tensors as float32 arrays: ``filters`` (num_filters, k, nr, nc)
    and ``biases`` for a convolution, ``gamma`` and ``beta`` (per channel) for an affine
    layer, ``weights`` (num_inputs, num_outputs) for a fully connected layer.
    """

    kind: str
    attributes: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNetwork:
    """A dlib network read from a file.

    Attributes
    ----------
    loss, input : Layer
        The loss layer's and the input layer's details.
    nesting : str
        The ``add_layer``/tag/skip versions from the outermost layer inwards, one digit
        each (``"2"`` computational, ``"1"`` tag or skip, ``"3"`` the innermost
        computational layer). This is the only record of where tags and skips sit.
    layers : tuple of Layer
        The computational layers' details, from the input outwards (execution order).
    """

    loss: Layer
    input: Layer
    nesting: str
    layers: tuple[Layer, ...]


class _Reader:
    """Cursor over the file's bytes that reads dlib's primitive encodings."""

    def __init__(self, data: bytes, path: str):
        self.data = data
        self.path = path
        self.offset = 0

    def fail(self, problem: str, at: int | None = None) -> DlibFormatError:
        return DlibFormatError(
            f"{self.path}: {problem} at byte {self.offset if at is None else at}"
        )

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise self.fail(f"file ends early: needed {count} more bytes")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def integer(self) -> int:
        start = self.offset
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise self.fail(f"bad integer control byte {control:#04x}", at=start)
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def string(self) -> str:
        start = self.offset
        length = self.integer()
        if not 0 <= length <= 1024:
            raise self.fail(f"implausible string length {length}", at=start)
        try:
            return self.take(length).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a version string that is not ASCII", at=start) from None

    def expect_string(self, expected: str) -> None:
        start = self.offset
        found = self.string()
        if found != expected:
            raise self.fail(f"expected {expected!r} but found {found!r}", at=start)

    def peek_string(self) -> str | None:
        """The string at the cursor, if one is there, without moving the cursor."""
        start = self.offset
        try:
            return self.string()
        except DlibFormatError:
            return None
        finally:
            self.offset = start

    def boolean(self) -> bool:
        start = self.offset
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {byte!r}", at=start)
        return byte == b"1"

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent in _SPECIAL_EXPONENTS:
            return float(_SPECIAL_EXPONENTS[exponent])
        # Exact: Python ints and ldexp keep every bit of an int64 mantissa that fits a
        # double, which every float32 and float64 dlib writes does.
        return float(np.ldexp(float(mantissa), exponent))

    def dims(self) -> tuple[int, int, int, int]:
        start = self.offset
        shape = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor dimension in {shape}", at=start)
        return shape

    def tensor(self) -> np.ndarray:
        start = self.offset
        version = self.integer()
        shape = self.dims()
        count = int(np.prod(shape))
        if version == 2:
            raw = self.take(4 * count)
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif version == 1:
            values = np.array([self.real() for _ in range(count)], dtype=np.float32)
        else:
            raise self.fail(f"unknown tensor version {version}", at=start)
        return values.reshape(shape)

    def alias_dims(self) -> tuple[int, int, int, int]:
        start = self.offset
        version = self.integer()
        if version != 1:
            raise self.fail(f"unknown alias_tensor version {version}", at=start)
        return self.dims()


def _split_params(
    reader: _Reader, params: np.ndarray, views: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Cut a layer's flat ``params`` tensor into its named views, in order, exactly."""
    flat = params.reshape(-1)
    out, start = {}, 0
    for name, shape in views.items():
        size = int(np.prod(shape))
        out[name] = flat[start : start + size].reshape(shape).copy()
        start += size
    if start != flat.size:
        raise reader.fail(f"params hold {flat.size} values but the views need {start}")
    return out


def _read_con(reader: _Reader) -> Layer:
    params = reader.tensor()
    num_filters, nr, nc = reader.integer(), reader.integer(), reader.integer()
    stride_y, stride_x = reader.integer(), reader.integer()
    padding_y, padding_x = reader.integer(), reader.integer()
    filters = reader.alias_dims()
    biases = reader.alias_dims()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        reader.real()
    if filters[0] != num_filters or filters[2:] != (nr, nc) or biases[1] != num_filters:
        raise reader.fail(f"con_ filters {filters} / biases {biases} disagree with its settings")
    views = {"filters": filters, "biases": (num_filters,)}
    return Layer(
        "con_4",
        {
            "num_filters": num_filters, "nr": nr, "nc": nc,
            "stride": (stride_y, stride_x), "padding": (padding_y, padding_x),
        },
        _split_params(reader, params, views),
    )


def _read_affine(reader: _Reader) -> Layer:
    params = reader.tensor()
    gamma = reader.alias_dims()
    beta = reader.alias_dims()
    mode = reader.integer()
    if gamma != beta:
        raise reader.fail(f"affine_ gamma {gamma} and beta {beta} differ in shape")
    # CONV_MODE (0) scales each channel; FC_MODE (1) each element. Keep the shape without
    # the sample axis so the caller can tell them apart.
    views = {"gamma": gamma[1:], "beta": beta[1:]}
    return Layer("affine_", {"mode": "conv" if mode == 0 else "fc"},
                 _split_params(reader, params, views))


def _read_pool(kind: str):
    def read(reader: _Reader) -> Layer:
        nr, nc = reader.integer(), reader.integer()
        stride_y, stride_x = reader.integer(), reader.integer()
        padding_y, padding_x = reader.integer(), reader.integer()
        return Layer(kind, {"nr": nr, "nc": nc, "stride": (stride_y, stride_x),
                            "padding": (padding_y, padding_x)})
    return read


def _read_fc(reader: _Reader) -> Layer:
    num_outputs, num_inputs = reader.integer(), reader.integer()
    params = reader.tensor()
    weights = reader.alias_dims()
    biases = reader.alias_dims()
    bias_mode = reader.integer()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        reader.real()
    if weights != (num_inputs, num_outputs, 1, 1):
        raise reader.fail(f"fc_ weights {weights} disagree with {num_inputs} -> {num_outputs}")
    views = {"weights": (num_inputs, num_outputs)}
    if bias_mode == 0:
        if biases != (1, num_outputs, 1, 1):
            raise reader.fail(f"fc_ biases {biases} disagree with {num_outputs} outputs")
        views["biases"] = (num_outputs,)
    return Layer("fc_2", {"num_outputs": num_outputs, "num_inputs": num_inputs,
                          "bias": bias_mode == 0}, _split_params(reader, params, views))


def _read_no_settings(kind: str):
    return lambda reader: Layer(kind)


_LAYER_READERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": _read_no_settings("relu_"),
    "add_prev_": _read_no_settings("add_prev_"),
    "max_pool_2": _read_pool("max_pool_2"),
    "avg_pool_2": _read_pool("avg_pool_2"),
    "fc_2": _read_fc,
}


def _read_layer_details(reader: _Reader) -> Layer:
    start = reader.offset
    kind = reader.string()
    if kind not in _LAYER_READERS:
        raise reader.fail(
            f"layer kind {kind!r} is not one this reader knows ({', '.join(_LAYER_READERS)})",
            at=start,
        )
    return _LAYER_READERS[kind](reader)


def _skip_layer_state(reader: _Reader, *, innermost_version: int | None) -> None:
    """Read the training state ``add_layer`` writes after its details, and check it."""
    for _ in range(3):  # setup called, gradient input stale, output getters disabled
        reader.boolean()
    reader.tensor()  # x_grad
    reader.tensor()  # cached_output
    reader.tensor()  # params_grad, or grad_final for the innermost layer
    if innermost_version == 3:
        reader.integer()  # _sample_expansion_factor


def _read_input(reader: _Reader) -> Layer:
    reader.expect_string("input_rgb_image_sized")
    means = [reader.real() for _ in range(3)]
    rows, cols = reader.integer(), reader.integer()
    return Layer("input_rgb_image_sized",
                 {"mean_rgb": tuple(means), "rows": rows, "cols": cols})


def _read_loss(reader: _Reader) -> Layer:
    start = reader.offset
    kind = reader.string()
    if kind != "loss_metric_2":
        raise reader.fail(f"loss {kind!r} is not dlib's loss_metric_2", at=start)
    margin, distance_threshold = reader.real(), reader.real()
    return Layer(kind, {"margin": margin, "distance_threshold": distance_threshold})


def read_network(path: os.PathLike | str) -> DlibNetwork:
    """Read a dlib metric-learning network (``loss_metric``) from a ``.dat`` file.

    Parameters
    ----------
    path : path-like
        A file written by dlib's ``serialize(net)``, such as
        ``dlib_face_recognition_resnet_model_v1.dat``.

    Returns
    -------
    DlibNetwork
        The loss, the input layer, the nesting of layers and every computational
        layer's details and parameters.

    Raises
    ------
    DlibFormatError
        When the file is not in the format above, holds a layer kind this reader does
        not know, or has bytes left over after the network (all name the file and the
        byte offset).
    """
    path = Path(path)
    reader = _Reader(path.read_bytes(), str(path))
    version = reader.integer()
    if version != 1:
        raise reader.fail(f"loss layer version {version}, expected 1", at=0)
    loss = _read_loss(reader)

    versions = []
    while True:
        start = reader.offset
        version = reader.integer()
        if version not in (_TAG_OR_SKIP_VERSION, _LAYER_VERSION, 3):
            raise reader.fail(f"unexpected layer version {version}", at=start)
        versions.append(version)
        if version == 3:
            break
        if version == 2 and reader.peek_string() == "input_rgb_image_sized":
            break  # files from dlib before 19.7 write the innermost layer as version 2
        if len(versions) > 10_000:
            raise reader.fail("no input layer after 10000 nested layers")
    innermost_version = versions[-1]
    if innermost_version not in _INPUT_LAYER_VERSIONS:
        raise reader.fail(f"innermost layer version {innermost_version}")
    versions[-1] = 3  # one spelling for "innermost", whatever the file's dlib version
    input_layer = _read_input(reader)

    layers = []
    for index, version in enumerate(reversed(versions)):
        if version == _TAG_OR_SKIP_VERSION:
            continue
        layers.append(_read_layer_details(reader))
        _skip_layer_state(reader, innermost_version=innermost_version if index == 0 else None)
    if reader.offset != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.offset} bytes left after the network")
    return DlibNetwork(
        loss=loss,
        input=input_layer,
        nesting="".join(str(v) for v in versions),
        layers=tuple(layers),
    )
