"""Reading dlib's .dat serialization in Python (no dlib, no torch needed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from faceanon.dlib_dat import DlibFormatError, _Reader, read_network

models = pytest.importorskip("face_recognition_models")


@pytest.fixture(scope="module")
def dat_path():
    return models.face_recognition_model_location()


@pytest.fixture(scope="module")
def network(dat_path):
    return read_network(dat_path)


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x07", 7),
        (b"\x02\x80\x12", 4736),  # the first convolution's parameter count in the file
        (b"\x81\x1c", -28),
        (b"\x04\xff\xff\xff\x7f", 2**31 - 1),
    ],
)
def test_integers_decode_as_dlib_packs_them(encoded, value):
    # dlib's pack_int: control byte = byte count | 0x80 if negative, then little-endian.
    reader = _Reader(encoded, "mem")
    assert reader.integer() == value
    assert reader.offset == len(encoded)


def test_floats_are_mantissa_times_two_to_the_exponent():
    # 0.04 as dlib writes a float: mantissa 0xa3d70a, exponent -28 (the loss margin).
    reader = _Reader(b"\x03\x0a\xd7\xa3\x81\x1c" + b"\x01\x00\x03\x00\x7d\x00", "mem")
    assert reader.real() == float(np.float32(0.04))
    # exponent 32000 is dlib's +inf marker
    assert reader.real() == np.inf


def test_bad_bytes_name_the_offset():
    with pytest.raises(DlibFormatError, match=r"mem: bad integer control byte 0x31 at byte 0"):
        _Reader(b"1", "mem").integer()
    with pytest.raises(DlibFormatError, match="file ends early"):
        _Reader(b"\x02\x01", "mem").integer()
    with pytest.raises(DlibFormatError, match="bad bool byte"):
        _Reader(b"\x01", "mem").boolean()


def test_reads_dlibs_face_resnet(network):
    # Outside references: dlib's loss_metric_ defaults (margin 0.04, distance threshold
    # 0.6) and input_rgb_image's default mean colours (122.782, 117.001, 104.298), which
    # the face model was trained with; dnn_face_recognition_ex.cpp's 29 convolutions.
    assert network.loss.kind == "loss_metric_2"
    assert network.loss.attributes["margin"] == pytest.approx(0.04, abs=1e-7)
    assert network.loss.attributes["distance_threshold"] == pytest.approx(0.6, abs=1e-7)
    assert network.input.attributes["mean_rgb"] == pytest.approx(
        (122.782, 117.001, 104.298), abs=1e-4
    )
    assert (network.input.attributes["rows"], network.input.attributes["cols"]) == (150, 150)
    kinds = Counter(layer.kind for layer in network.layers)
    assert kinds == {"con_4": 29, "affine_": 29, "relu_": 29, "add_prev_": 14,
                     "avg_pool_2": 5, "max_pool_2": 1, "fc_2": 1}
    first, last = network.layers[0], network.layers[-1]
    assert first.kind == "con_4" and first.params["filters"].shape == (32, 3, 7, 7)
    assert first.attributes["stride"] == (2, 2) and first.attributes["padding"] == (0, 0)
    assert last.kind == "fc_2" and last.params["weights"].shape == (256, 128)
    assert not last.attributes["bias"]
    # 130 nested layers: 14 add_prev blocks, 4 of them down-sampling (tag2 + skip1).
    assert len(network.nesting) == 130 and network.nesting.endswith("3")
    assert network.nesting.count("1") == 14 + 2 * 4
    parameters = sum(p.size for layer in network.layers for p in layer.params.values())
    # Worked out from the architecture: stem 3*32*49 + 32 + 2*32; each block
    # cin*cout*9 + cout*cout*9 + 2*cout biases + 4*cout affine; fc 256*128.
    assert parameters == 5_614_592
    assert all(np.isfinite(p).all() for layer in network.layers for p in layer.params.values())


def test_truncated_file_is_refused_with_its_name(dat_path, tmp_path):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(open(dat_path, "rb").read()[:100_000])
    with pytest.raises(DlibFormatError, match=r"cut\.dat: file ends early"):
        read_network(cut)


def test_trailing_bytes_are_refused(dat_path, tmp_path):
    longer = tmp_path / "longer.dat"
    longer.write_bytes(open(dat_path, "rb").read() + b"\x00")
    with pytest.raises(DlibFormatError, match=r"longer\.dat: 1 bytes left after the network"):
        read_network(longer)


def test_unknown_layer_kind_is_named(dat_path, tmp_path):
    data = open(dat_path, "rb").read()
    assert b"\x01\x05relu_" in data
    odd = tmp_path / "odd.dat"
    odd.write_bytes(data.replace(b"\x01\x05relu_", b"\x01\x05selu_", 1))
    with pytest.raises(DlibFormatError, match=r"odd\.dat: layer kind 'selu_' is not one"):
        read_network(odd)


def test_another_file_type_is_refused(tmp_path):
    other = tmp_path / "image.dat"
    other.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(DlibFormatError, match=r"image\.dat"):
        read_network(other)
