"""Face recognition backends: an image in, a face embedding (or "no face") out.

The default backend, ``dlib-resnet``, is the model behind the ``face_recognition``
package (which the seed study used): dlib's HOG face detector, the 5-point shape
predictor and the 128-d ResNet face descriptor, compared by Euclidean distance. It calls
dlib directly with the same model files and the same steps as ``face_recognition`` 1.3.0,
so it gives the same boxes, encodings and distances (a test checks this on real faces),
without that package's dependency on a source build of dlib.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Distance at or below which ``face_recognition`` calls two faces the same person.
FACE_RECOGNITION_TOLERANCE = 0.6


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


def image_sha256(image: np.ndarray) -> str:
    """sha256 of an image's pixels and shape: the cache key of its embedding.

    Hashing decoded pixels rather than file bytes means the same picture saved twice, or
    an anonymized image that never touched disk, gets one key.
    """
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()


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


class DlibResNet:
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

    metric = "euclidean"

    def __init__(self, *, detector: str = "hog", upsample: int = 1, jitters: int = 1):
        if upsample < 0 or jitters < 1:
            raise ValueError("upsample must be >= 0 and jitters >= 1")
        self.detector = detector
        self.upsample = int(upsample)
        self.jitters = int(jitters)
        _dlib_models(detector)  # fail early on a bad detector name or missing model files

    @property
    def name(self) -> str:
        return f"dlib-resnet:{self.detector}:up{self.upsample}:jit{self.jitters}"

    def encode(
        self, image: np.ndarray, *, box: tuple[int, int, int, int] | None = None
    ) -> Encoding:
        """Encode the largest face of an RGB ``uint8`` image, or report that none was found.

        ``box``, a face as ``(top, right, bottom, left)`` (the order of :attr:`Encoding.box`
        and of ``face_recognition``'s ``known_face_locations``), skips detection: the
        landmarks and descriptor are computed in that box, as
        ``face_recognition.face_encodings(image, [box])`` does, and ``faces_found`` is 1.
        """
        find_faces, landmarks, descriptor = _dlib_models(self.detector)
        image = np.ascontiguousarray(image)
        if box is not None:
            import dlib

            top, right, bottom, left = (int(v) for v in box)
            if right <= left or bottom <= top:
                raise ValueError(f"face box {box} has no area (expected top, right, bottom, left)")
            shape = landmarks(image, dlib.rectangle(left, top, right, bottom))
            embedding = np.array(descriptor.compute_face_descriptor(image, shape, self.jitters))
            return Encoding(embedding=embedding, faces_found=1, box=(top, right, bottom, left))
        found = find_faces(image, self.upsample)
        rects = [f.rect for f in found] if self.detector == "cnn" else list(found)
        if not rects:
            return Encoding(embedding=None, faces_found=0)
        largest = max(rects, key=lambda r: (r.width() * r.height(), -r.top(), -r.left()))
        shape = landmarks(image, largest)
        embedding = np.array(descriptor.compute_face_descriptor(image, shape, self.jitters))
        height, width = image.shape[:2]
        box = (
            max(largest.top(), 0),
            min(largest.right(), width),
            min(largest.bottom(), height),
            max(largest.left(), 0),
        )
        return Encoding(embedding=embedding, faces_found=len(rects), box=box)


BACKENDS = {"dlib-resnet": DlibResNet}


def get_backend(name: str = "dlib-resnet", **options):
    """Create a recognition backend by name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown recognition backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](**options)


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
