"""Face recognition backends: an image in, a face embedding (or "no face") out.

Two backends compute the same descriptor, the 128-d ResNet of dlib behind the
``face_recognition`` package (which the seed study used), compared by Euclidean distance:

``dlib-resnet`` (:class:`DlibResNet`)
    dlib's HOG face detector, the 5-point shape predictor and the ResNet face descriptor,
    called with the same model files and steps as ``face_recognition`` 1.3.0, so it gives
    the same boxes, encodings and distances (a test checks this on real faces), without
    that package's dependency on a source build of dlib.
``dlib-resnet-torch`` (:class:`DlibResNetTorch`)
    The same detection, landmarks and face chip (made by dlib), then the ResNet in torch
    with the weights read from dlib's own model file (:mod:`faceanon.resnet_torch`):
    equal to dlib's descriptor within 1e-5 per component on the CPU, about ten times
    faster when chips are batched, and able to run on CUDA. Needs torch (the ``gan``
    extra). :func:`torch_backend_status` says whether it is available and equal here.

Both split encoding in two steps, so that a pipeline can detect in many workers and
encode in batches, sending small chips rather than whole images:

1. ``backend.face_chip(image, *, box=None) -> FaceChip``: per image. Detects the faces
   (or takes the given ``box``), runs the 5-point landmarks on the largest and cuts dlib's
   aligned 150 x 150 face chip (``dlib.get_face_chip``, padding 0.25, exactly the chip
   dlib's ``compute_face_descriptor`` makes). ``FaceChip.chip`` is ``None`` when no face
   was found; ``faces_found`` and ``box`` are as in :class:`Encoding`.
2. ``backend.encode_chips(chips) -> ndarray (n, 128)``: batched, chips stacked as a
   ``uint8`` array ``(n, 150, 150, 3)``.

``backend.encode(image, *, box=None) -> Encoding`` does both for one image. Only the
first step needs dlib's detector; with dlib's descriptor the second is the expensive
one, with the torch descriptor the first.

Which backend a run uses: ``auto`` (the default of :class:`faceanon.pipeline.Settings`
and of ``pytest bench --bench-backend``) is ``dlib-resnet-torch`` where torch imports and
equals dlib on this machine, else ``dlib-resnet`` (:func:`resolve_backend`); naming a
backend forces it. Each backend says what computes its embeddings: ``name`` (backend,
weights and options, the embedding cache's backend key) and ``model_fingerprint`` (the
sha256 of the model files and the versions of the libraries that run them).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

#: Side, in pixels, and padding of dlib's face chip for the ResNet descriptor.
CHIP_SIZE = 150
CHIP_PADDING = 0.25


@dataclass(frozen=True)
class Encoding:
    """What a backend made of one image.

    ``embedding`` is ``None`` when no face was found (a failure to acquire or to enrol).
    ``faces_found`` counts every face the detector saw; the embedding is of the largest.
    ``box`` is that face as ``(top, right, bottom, left)`` clipped to the image, the order
    ``face_recognition`` uses.
    """

    embedding: np.ndarray | None
    faces_found: int
    box: tuple[int, int, int, int] | None = None

    @property
    def acquired(self) -> bool:
        return self.embedding is not None


@dataclass(frozen=True)
class FaceChip:
    """The per-image step of encoding: dlib's aligned face chip of the largest face.

    ``chip`` is a ``uint8`` RGB array ``(150, 150, 3)``, or ``None`` when no face was
    found; ``faces_found`` and ``box`` mean what they mean in :class:`Encoding`.
    """

    chip: np.ndarray | None
    faces_found: int
    box: tuple[int, int, int, int] | None = None

    @property
    def acquired(self) -> bool:
        return self.chip is not None


def image_sha256(image: np.ndarray) -> str:
    """sha256 of an image's pixels and shape: the cache key of its embedding.

    Hashing decoded pixels rather than file bytes means the same picture saved twice, or
    an anonymized image that never touched disk, gets one key.
    """
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()


def file_sha256(path: os.PathLike | str) -> str:
    """sha256 of a file's bytes, hashed once per process while its size and time hold."""
    stat = os.stat(path)
    return _file_sha256(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key: a file replaced in place is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(files: Sequence[str | os.PathLike], *,
                      versions: Mapping[str, str]) -> str:
    """A key that changes whenever a model file or a library that runs it changes.

    Parameters
    ----------
    files : sequence of path
        The model files (weights, detectors) that compute an embedding.
    versions : mapping of str to str
        Versions of the libraries that run them, e.g. ``{"dlib": "19.24.6"}``, and any
        other value the embeddings depend on.

    Returns
    -------
    str
        ``"sha256:"`` and the hex sha256 over each file's name and sha256 and each
        ``name==version``, sorted. Where the files lie does not matter, their bytes do.
    """
    return _fingerprint({Path(file).name: file_sha256(file) for file in files}, versions)


def _fingerprint(file_hashes: Mapping[str, str], versions: Mapping[str, str]) -> str:
    """``"sha256:"`` + sha256 of sorted ``name<TAB>sha256`` and ``library==version`` lines.

    File names, not paths: where a model file lies does not matter, its bytes do.
    """
    lines = [f"{name}\t{sha}" for name, sha in file_hashes.items()]
    lines += [f"{library}=={version}" for library, version in versions.items()]
    return "sha256:" + hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def _dlib_model_files() -> dict[str, str]:
    """The model files the dlib steps load, by file name: the 5-point landmarks, the
    ResNet descriptor and the CNN face detector (the HOG detector is compiled into dlib)."""
    import face_recognition_models as models

    paths = (models.pose_predictor_five_point_model_location(),
             models.face_recognition_model_location(),
             models.cnn_face_detector_model_location())
    return {Path(path).name: file_sha256(path) for path in paths}


@functools.cache
def _dlib_models(detector: str):
    import dlib
    import face_recognition_models as models

    from faceanon.detect import cnn_model, hog_model

    if detector == "hog":
        find_faces = hog_model()
    elif detector == "cnn":
        find_faces = cnn_model()
    else:
        raise ValueError(f"unknown detector {detector!r}; use 'hog' or 'cnn'")
    landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    descriptor = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    return find_faces, landmarks, descriptor


def face_chip(
    image: np.ndarray,
    *,
    detector: str = "hog",
    upsample: int = 1,
    box: tuple[int, int, int, int] | None = None,
) -> FaceChip:
    """Find the largest face of an RGB ``uint8`` image and cut dlib's 150 px face chip.

    Parameters
    ----------
    image : ndarray
        RGB ``uint8`` image ``(rows, cols, 3)``.
    detector : {"hog", "cnn"}
        Face detector.
    upsample : int
        Times the image is up-sampled before detection.
    box : tuple of int, optional
        A face as ``(top, right, bottom, left)``: skips detection and cuts the chip of the
        face in that box (``faces_found`` is then 1), as
        ``face_recognition.face_encodings(image, [box])`` does.

    Returns
    -------
    FaceChip
        The chip is what dlib's ``compute_face_descriptor(image, shape)`` feeds its
        network: ``dlib.get_face_chip`` of the 5-point landmarks, 150 px, padding 0.25.

    Notes
    -----
    When several faces are found the largest box is taken (ties: the topmost, then the
    leftmost), and ``faces_found`` records how many there were.
    """
    import dlib

    find_faces, landmarks, _ = _dlib_models(detector)
    image = np.ascontiguousarray(image)
    if box is not None:
        top, right, bottom, left = (int(v) for v in box)
        if right <= left or bottom <= top:
            raise ValueError(f"face box {box} has no area (expected top, right, bottom, left)")
        shape = landmarks(image, dlib.rectangle(left, top, right, bottom))
        chip = dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING)
        return FaceChip(chip=chip, faces_found=1, box=(top, right, bottom, left))
    found = find_faces(image, upsample)
    rects = [f.rect for f in found] if detector == "cnn" else list(found)
    if not rects:
        return FaceChip(chip=None, faces_found=0)
    largest = max(rects, key=lambda r: (r.width() * r.height(), -r.top(), -r.left()))
    shape = landmarks(image, largest)
    chip = dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING)
    height, width = image.shape[:2]
    clipped = (
        max(largest.top(), 0),
        min(largest.right(), width),
        min(largest.bottom(), height),
        max(largest.left(), 0),
    )
    return FaceChip(chip=chip, faces_found=len(rects), box=clipped)


class _TwoStepBackend:
    """:meth:`encode` from :meth:`face_chip` and :meth:`encode_chips` (see the module doc)."""

    detector: str
    upsample: int

    def face_chip(
        self, image: np.ndarray, *, box: tuple[int, int, int, int] | None = None
    ) -> FaceChip:
        """The per-image step: see :func:`face_chip`."""
        return face_chip(image, detector=self.detector, upsample=self.upsample, box=box)

    def encode_chips(self, chips: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def model_fingerprint(self) -> str:
        """What computes this backend's embeddings: see :func:`model_fingerprint`."""
        raise NotImplementedError

    def encode(
        self, image: np.ndarray, *, box: tuple[int, int, int, int] | None = None
    ) -> Encoding:
        """Encode the largest face of an RGB ``uint8`` image, or report that none was found.

        ``box``, a face as ``(top, right, bottom, left)`` (the order of :attr:`Encoding.box`
        and of ``face_recognition``'s ``known_face_locations``), skips detection: the
        landmarks and descriptor are computed in that box, as
        ``face_recognition.face_encodings(image, [box])`` does, and ``faces_found`` is 1.
        """
        face = self.face_chip(image, box=box)
        if face.chip is None:
            return Encoding(embedding=None, faces_found=face.faces_found)
        embedding = self.encode_chips(face.chip[np.newaxis])[0]
        return Encoding(embedding=embedding, faces_found=face.faces_found, box=face.box)


def _check_options(detector: str, upsample: int, jitters: int) -> None:
    if upsample < 0 or jitters < 1:
        raise ValueError("upsample must be >= 0 and jitters >= 1")
    _dlib_models(detector)  # fail early on a bad detector name or missing model files


class DlibResNet(_TwoStepBackend):
    """dlib's 128-d ResNet face descriptor, as ``face_recognition`` 1.3.0 computes it.

    Parameters
    ----------
    detector : {"hog", "cnn"}
        Face detector run before encoding.
    upsample : int
        Times the image is up-sampled before detection (``face_recognition``'s default 1
        finds faces down to about 40 px).
    jitters : int
        Random re-crops averaged into the descriptor; 1 is ``face_recognition``'s default.

    Notes
    -----
    When several faces are found the largest box is encoded and ``faces_found`` records
    how many there were. The options are part of :attr:`name`, so embeddings made with
    other options never mix in the cache.
    """

    def __init__(self, *, detector: str = "hog", upsample: int = 1, jitters: int = 1):
        _check_options(detector, upsample, jitters)
        self.detector = detector
        self.upsample = int(upsample)
        self.jitters = int(jitters)

    #: Options a pipeline worker adds: none, dlib is single-threaded.
    worker_options: Mapping[str, object] = MappingProxyType({})

    @property
    def name(self) -> str:
        return f"dlib-resnet:{self.detector}:up{self.upsample}:jit{self.jitters}"

    def model_fingerprint(self) -> str:
        """What computes these embeddings: dlib's version and the sha256 of its model files.

        ``"sha256:"`` and the sha256 over the sorted lines ``file name<TAB>sha256`` (the
        5-point landmarks, the ResNet descriptor and the CNN detector) and
        ``dlib==version`` (the HOG detector and the network's code are compiled into
        dlib), as :func:`model_fingerprint` computes it. An embedding cache keyed by it
        never serves an embedding that other model files or another dlib computed.
        """
        import dlib

        return _fingerprint(_dlib_model_files(), {"dlib": dlib.__version__})

    def encode_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, 128)`` of ``uint8`` face chips ``(n, 150, 150, 3)``, by dlib.

        Gives what ``compute_face_descriptor(image, shape, jitters)`` gives for the image
        the chip was cut from: dlib cuts the same chip internally.
        """
        chips = check_chips(chips)
        if not len(chips):
            return np.empty((0, 128))
        _, _, descriptor = _dlib_models(self.detector)
        found = descriptor.compute_face_descriptor(
            [np.ascontiguousarray(c) for c in chips], self.jitters
        )
        return np.array([np.array(e) for e in found], dtype=np.float64)


def check_chips(chips: np.ndarray) -> np.ndarray:
    """``chips`` as an array if it is ``uint8`` ``(n, 150, 150, 3)``; else ``ValueError``."""
    chips = np.asarray(chips)
    if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(
            f"face chips must be uint8 of shape (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) as "
            f"dlib.get_face_chip makes them; got {chips.dtype} {chips.shape}"
        )
    return chips


class DlibResNetTorch(_TwoStepBackend):
    """dlib's ResNet face descriptor computed by torch, with dlib's own weights.

    Detection, landmarks and the face chip are dlib's (:func:`face_chip`); the network is
    :class:`faceanon.resnet_torch.FaceResNet`, batched, on the CPU or CUDA. Its
    embeddings equal :class:`DlibResNet`'s within
    :data:`faceanon.resnet_torch.CPU_TOLERANCE` (1e-5) per component on the CPU and
    :data:`faceanon.resnet_torch.CUDA_TOLERANCE` on CUDA.

    Parameters
    ----------
    detector, upsample
        As for :class:`DlibResNet`.
    jitters : int
        Must be 1. dlib's jittered descriptor draws its random crops from a generator
        held inside dlib's model object, whose state depends on every earlier call, so
        no other implementation can reproduce it; use ``dlib-resnet`` to jitter.
    device : str
        ``"cpu"`` or ``"cuda"``; a CUDA encoder turns TF32 off process-wide.
    batch_size : int
        Chips per forward pass in :meth:`encode_chips`.
    threads : int, optional
        CPU threads torch uses while :meth:`encode_chips` runs (``torch.set_num_threads``,
        restored when it returns); by default the process's setting. Give each of several
        worker processes 1: torch's OpenMP threads spin while they wait for each other,
        and on an oversubscribed machine a batch-1 pass with 2 threads was measured 10
        to 30 times slower than with 1.
    weights : path-like, optional
        A converted weights file (:func:`faceanon.resnet_torch.save_weights`). By default
        the weights are converted from the ``.dat`` that ``face_recognition_models``
        installed, once, and cached in the user cache folder under its sha256.

    Notes
    -----
    :attr:`name` carries the ``.dat``'s sha256 prefix and the device, so the embedding
    cache never mixes embeddings of other weights, of dlib's own code or of a GPU.
    """

    def __init__(
        self,
        *,
        detector: str = "hog",
        upsample: int = 1,
        jitters: int = 1,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int | None = None,
        weights=None,
    ):
        _check_options(detector, upsample, jitters)
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        if jitters != 1:
            raise ValueError(
                "dlib-resnet-torch does not jitter: dlib draws the jitters from a random "
                "generator inside its model object that no other code can reproduce; "
                "use jitters=1, or the dlib-resnet backend to jitter"
            )
        from faceanon import resnet_torch  # imports torch

        self.threads = None if threads is None else int(threads)
        if weights is None:
            state, self.dat_sha256 = resnet_torch.cached_state_dict()
        else:
            state, self.dat_sha256 = resnet_torch.load_weights(weights)
        self.weights = None if weights is None else Path(weights)
        self.detector = detector
        self.upsample = int(upsample)
        self.jitters = 1
        self.encoder = resnet_torch.TorchFaceEncoder(state, device=device, batch_size=batch_size)
        self._weights_sha256: str | None = None  # computed once, by model_fingerprint

    #: Options a pipeline worker adds: one torch thread, because one worker runs per core
    #: and torch's spinning OpenMP threads collapse on a busy machine.
    worker_options: Mapping[str, object] = MappingProxyType({"threads": 1})

    @property
    def name(self) -> str:
        return (
            f"dlib-resnet-torch:{self.dat_sha256[:12]}:{self.detector}:up{self.upsample}"
            f":jit{self.jitters}:{self.encoder.device.type}"
        )

    def model_fingerprint(self) -> str:
        """What computes these embeddings: as :meth:`DlibResNet.model_fingerprint`, with
        the sha256 of the network's weights as loaded and torch's version.

        The detector, landmarks and chip are still dlib's, so dlib's version and model
        files are part of it. The weights are hashed as tensors, not as a file: weights
        converted from the same ``.dat`` give one key wherever they were saved, and any
        changed value, or another ``.dat`` of origin, gives another.
        """
        import dlib
        import face_recognition_models as models
        import torch

        if self._weights_sha256 is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.encoder.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._weights_sha256 = digest.hexdigest()
        files = _dlib_model_files()
        files[Path(models.face_recognition_model_location()).name] = self._weights_sha256
        # The .dat the weights say they were converted from counts too: weights said to
        # come from another model are another model, whatever their values.
        return _fingerprint(files, {"dlib": dlib.__version__, "torch": torch.__version__,
                                    "converted-from": self.dat_sha256})

    def encode_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, 128)`` (float64) of ``uint8`` face chips ``(n, 150, 150, 3)``."""
        chips = check_chips(chips)
        if self.threads is None:
            return self.encoder.encode_chips(chips)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.encoder.encode_chips(chips)
        finally:
            torch.set_num_threads(before)


BACKENDS = {"dlib-resnet": DlibResNet, "dlib-resnet-torch": DlibResNetTorch}
#: What a run may ask for: ``auto`` (:func:`resolve_backend`) or a backend by name.
BACKEND_CHOICES = ("auto", *BACKENDS)


def resolve_backend(name: str = "auto", *, device: str = "cpu") -> str:
    """The backend a run asking for ``name`` uses.

    Parameters
    ----------
    name : str
        ``"auto"``: ``dlib-resnet-torch`` when torch imports and its embeddings equal
        dlib's here (:func:`torch_backend_status`, checked once per process), else
        ``dlib-resnet``. A backend name is taken as it is, unchecked: the way to force
        one.
    device : str
        The device the torch backend would run on, for ``"auto"``.

    Returns
    -------
    str
        A key of :data:`BACKENDS`.

    Raises
    ------
    ValueError
        When ``name`` is neither ``"auto"`` nor a backend.
    """
    if name == "auto":
        return preferred_backend(device=device)
    if name not in BACKENDS:
        raise ValueError(f"unknown recognition backend {name!r}; choose one of "
                         f"{', '.join(BACKEND_CHOICES)}")
    return name


def get_backend(name: str = "auto", **options):
    """Create a recognition backend by name (or ``"auto"``: :func:`resolve_backend`)."""
    name = resolve_backend(name, device=options.get("device", "cpu"))
    return BACKENDS[name](**options)


@dataclass(frozen=True)
class TorchBackendStatus:
    """Whether ``dlib-resnet-torch`` can run here and gives dlib's embeddings.

    ``available`` says torch imported and the weights loaded; ``equal`` that on the probe
    chips every embedding component is within ``tolerance`` of dlib's
    (``max_abs_difference`` is the measured figure); ``reason`` says why not, if not.
    """

    available: bool
    equal: bool
    max_abs_difference: float | None
    tolerance: float | None
    device: str
    reason: str = ""


def probe_chips() -> np.ndarray:
    """Four deterministic 150 px chips that exercise the whole network.

    Seeded noise, its blurred copy, colour ramps and mid grey: no face data needed, and
    the network's every layer sees large, small, smooth and flat inputs.
    """
    import cv2

    rng = np.random.default_rng(20240514)
    noise = rng.integers(0, 256, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, CHIP_SIZE)
    ramps = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], ramp[::-1, None]), -1)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=3)
    grey = np.full((CHIP_SIZE, CHIP_SIZE, 3), 128, np.uint8)
    return np.stack([noise, smooth, ramps.round().astype(np.uint8), grey])


def torch_backend_status(*, device: str = "cpu") -> TorchBackendStatus:
    """Check once per process that ``dlib-resnet-torch`` runs on ``device`` and equals dlib.

    Encodes :func:`probe_chips` with dlib and with torch and compares every component.
    Never raises for a missing torch, missing CUDA or unreadable weights: those are
    reported in ``reason`` with ``available`` false.
    """
    return _torch_backend_status(device)


@functools.cache  # positional, so every way of asking for a device shares one check
def _torch_backend_status(device: str) -> TorchBackendStatus:
    try:
        import torch  # noqa: F401
    except ImportError:
        return TorchBackendStatus(False, False, None, None, device,
                                  "torch is not installed (pip install 'faceanon[gan]')")
    try:
        torch_backend = DlibResNetTorch(device=device)
    except Exception as error:  # report, do not raise: the caller falls back to dlib
        return TorchBackendStatus(False, False, None, None, device,
                                  f"{type(error).__name__}: {error}")
    chips = probe_chips()
    difference = float(np.abs(
        torch_backend.encode_chips(chips) - DlibResNet().encode_chips(chips)
    ).max())
    tolerance = torch_backend.encoder.tolerance
    equal = difference <= tolerance
    reason = "" if equal else f"largest difference {difference:.3g} exceeds {tolerance:g}"
    return TorchBackendStatus(True, equal, difference, tolerance, device, reason)


def preferred_backend(*, device: str = "cpu") -> str:
    """``"dlib-resnet-torch"`` if available and equal on ``device``, else ``"dlib-resnet"``."""
    return "dlib-resnet-torch" if torch_backend_status(device=device).equal else "dlib-resnet"


def distance_matrix(
    probes: Sequence[np.ndarray | None], gallery: Sequence[np.ndarray | None]
) -> np.ndarray:
    """Euclidean distances between every probe and every gallery embedding.

    Rows are probes, columns gallery images. A missing embedding (``None``) gives a NaN
    row or column: the comparison exists but has no score. Computed as the norm of the
    difference, exactly as ``face_recognition.face_distance`` does, not through the
    ``|a|^2 + |b|^2 - 2ab`` shortcut, which loses about 1e-8 to cancellation.
    """
    dims = next((e.shape[0] for e in (*probes, *gallery) if e is not None), 128)
    p = np.array([e if e is not None else np.full(dims, np.nan) for e in probes]).reshape(-1, dims)
    g = np.array([e if e is not None else np.full(dims, np.nan) for e in gallery]).reshape(-1, dims)
    out = np.empty((len(p), len(g)))
    # Chunks keep the (chunk, gallery, dims) difference array near 32 MB.
    step = max(1, 32_000_000 // max(1, 8 * dims * len(g)))
    for start in range(0, len(p), step):
        diff = p[start : start + step, None, :] - g[None, :, :]
        out[start : start + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out
