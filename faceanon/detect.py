"""Face and eye detectors behind one interface, and the regions they hand to methods.

Detectors are chosen by name (:data:`DETECTORS`) through :func:`get_detector`:

``hog``
    dlib's HOG + linear SVM frontal face detector, called exactly as ``face_recognition``
    1.3.0 calls it, so that boxes here are the boxes the recognition side sees.
``cnn``
    dlib's MMOD CNN face detector (the model ``face_recognition`` ships). Accurate but
    slow on a CPU.
``haar-face``
    OpenCV's ``haarcascade_frontalface_default``.
``haar-eyes`` / ``haar-glasses``
    OpenCV's ``haarcascade_eye`` and ``haarcascade_eye_tree_eyeglasses`` (glasses reflect
    light and defeat the plain eye cascade). Both search inside faces found by a face
    detector, never the whole image: it is much faster and gives far fewer false eyes.

Every detector returns :class:`Detection` boxes ``(x, y, w, h)`` in image coordinates,
clipped to the image. :func:`find_regions` turns detections into the boxes a method
anonymizes (whole faces or eye bands, optionally grown by a margin), and
:func:`anonymization_regions` adds the one rule for an image in which no face is found
(:class:`faceanon.protocol.OnMiss`); the command line, the benchmark and the report's
pictures all use it, so that they anonymize the same pixels.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.imageio import to_rgb
from faceanon.protocol import OnMiss

Box = tuple[int, int, int, int]

#: Names accepted by :func:`get_detector`.
DETECTORS: tuple[str, ...] = ("hog", "cnn", "haar-face", "haar-eyes", "haar-glasses")
#: Names accepted by the ``region`` option of :func:`find_regions`.
REGIONS: tuple[str, ...] = ("face", "eyes")

# Where eyes sit in a face box, as fractions of its height. Measured on LFW with HOG boxes
# (whose top edge is near the eyebrows): eye centres fall at 25-35 % of the height. The
# fallback band is used when no eye is detected; it is generous so that a missed eye is
# still covered.
EYE_SEARCH_BOTTOM = 0.6
EYE_FALLBACK_BAND = (0.15, 0.5)


class DetectorError(FaceanonError, ValueError):
    """Unknown detector or region name, or an option a detector does not take."""


@dataclass(frozen=True)
class Detection:
    """One detected box in image coordinates.

    ``score`` is what the detector reports (HOG and CNN: SVM / MMOD confidence; Haar:
    the number of merged neighbouring windows), or ``None`` when it reports nothing.
    """

    x: int
    y: int
    w: int
    h: int
    score: float | None = None

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.w, self.h)


def clip_box(box: Sequence[int], shape: Sequence[int]) -> Box | None:
    """Clip ``(x, y, w, h)`` to an image of ``shape`` (height, width, ...).

    Returns ``None`` when nothing of the box lies inside the image (including boxes with
    zero or negative width or height).
    """
    x, y, w, h = (int(v) for v in box)
    height, width = int(shape[0]), int(shape[1])
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, width), min(y + h, height)
    if right <= left or bottom <= top:
        return None
    return (left, top, right - left, bottom - top)


def grow_box(box: Sequence[int], margin: float, shape: Sequence[int]) -> Box | None:
    """Grow a box by ``margin`` times its width and height (half on each side), clipped."""
    if margin < 0:
        raise DetectorError(f"margin must be >= 0, got {margin}")
    x, y, w, h = (int(v) for v in box)
    dx, dy = round(w * margin / 2), round(h * margin / 2)
    return clip_box((x - dx, y - dy, w + 2 * dx, h + 2 * dy), shape)


def _from_corners(left: int, top: int, right: int, bottom: int, shape, score) -> Detection | None:
    box = clip_box((left, top, right - left, bottom - top), shape)
    if box is None:
        return None
    return Detection(*box, score=None if score is None else float(score))


class Detector(abc.ABC):
    """The interface of every detector: ``detect(image) -> list[Detection]``.

    Models are loaded once per process and shared between detector objects, so creating a
    detector is cheap; keep one per run anyway.
    """

    name: ClassVar[str]
    #: What the boxes contain: ``"face"`` or ``"eye"``.
    finds: ClassVar[str] = "face"

    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect in an RGB ``uint8`` image (grey and RGBA are converted first)."""


# ---------------------------------------------------------------------------------------
# dlib detectors


@functools.cache
def hog_model():
    """dlib's HOG frontal face detector, loaded once per process and shared by every module."""
    import dlib

    return dlib.get_frontal_face_detector()


@functools.cache
def cnn_model():
    """dlib's MMOD CNN face detector, loaded once per process and shared by every module."""
    import dlib
    import face_recognition_models

    return dlib.cnn_face_detection_model_v1(
        face_recognition_models.cnn_face_detector_model_location()
    )


class _DlibDetector(Detector):
    """A dlib face detector run on an image up-sampled ``upsample`` times."""

    def __init__(self, *, upsample: int = 1):
        if upsample < 0:
            raise DetectorError(f"upsample must be >= 0, got {upsample}")
        self.upsample = int(upsample)


class HogDetector(_DlibDetector):
    """dlib HOG face detector, as ``face_recognition.face_locations(model="hog")``.

    ``face_recognition`` calls ``detector(image, upsample)``; ``run(image, upsample, 0)``
    returns the same rectangles (threshold 0 is that call's default) plus their scores.
    Rectangles become boxes like ``face_recognition`` does: ``w = right - left``,
    ``h = bottom - top`` (dlib's right/bottom are inclusive, ``face_recognition`` treats
    them as exclusive; we follow it so the boxes agree to the pixel), then clipped to the
    image as its ``_trim_css_to_bounds`` does.

    Parameters
    ----------
    upsample : int
        How many times the image is doubled before detection (finds smaller faces, 4x
        slower each time). ``face_recognition`` uses 1.
    """

    name = "hog"

    def detect(self, image: np.ndarray) -> list[Detection]:
        image = np.ascontiguousarray(to_rgb(image))
        rectangles, scores, _ = hog_model().run(image, self.upsample, 0)
        found = (
            _from_corners(r.left(), r.top(), r.right(), r.bottom(), image.shape, s)
            for r, s in zip(rectangles, scores, strict=True)
        )
        return [d for d in found if d is not None]


class CnnDetector(_DlibDetector):
    """dlib MMOD CNN face detector, as ``face_recognition.face_locations(model="cnn")``.

    Boxes are converted as in :class:`HogDetector`. About a second per 250x250 image on
    one CPU core with ``upsample=1``.

    Parameters
    ----------
    upsample : int
        As in :class:`HogDetector`.
    """

    name = "cnn"

    def detect(self, image: np.ndarray) -> list[Detection]:
        image = np.ascontiguousarray(to_rgb(image))
        found = (
            _from_corners(
                m.rect.left(),
                m.rect.top(),
                m.rect.right(),
                m.rect.bottom(),
                image.shape,
                m.confidence,
            )
            for m in cnn_model()(image, self.upsample)
        )
        return [d for d in found if d is not None]


# ---------------------------------------------------------------------------------------
# OpenCV Haar cascades


@functools.cache
def _cascade(filename: str):
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + filename)
    if cascade.empty():
        raise DetectorError(f"OpenCV cascade {filename} could not be loaded")
    return cascade


def to_grey(image: np.ndarray) -> np.ndarray:
    """The grey (luma) version of an image, as the Haar cascades expect it."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(to_rgb(image)), cv2.COLOR_RGB2GRAY)


def _run_cascade(cascade, grey, *, scale_factor, min_neighbors, min_size, max_size=None):
    options = {"maxSize": max_size} if max_size else {}
    boxes, neighbours = cascade.detectMultiScale2(
        grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=min_size, **options
    )
    return [
        (tuple(int(v) for v in box), float(n))
        for box, n in zip(np.reshape(boxes, (-1, 4)), np.ravel(neighbours), strict=True)
    ]


class HaarFaceDetector(Detector):
    """OpenCV ``haarcascade_frontalface_default`` on the grey image.

    Parameters are those of ``cv2.CascadeClassifier.detectMultiScale``; the score is the
    number of neighbouring windows merged into the box.
    """

    name = "haar-face"
    cascade_file = "haarcascade_frontalface_default.xml"

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: tuple[int, int] = (30, 30),
    ):
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = tuple(min_size)

    def detect(self, image: np.ndarray) -> list[Detection]:
        grey = to_grey(image)
        found = _run_cascade(
            _cascade(self.cascade_file),
            grey,
            scale_factor=self.scale_factor,
            min_neighbors=self.min_neighbors,
            min_size=self.min_size,
        )
        return [Detection(*box, score=score) for box, score in found]


class HaarEyeDetector(Detector):
    """An OpenCV eye cascade run inside each face, never over the whole image.

    Eyes are searched in the upper part of each face box (eyes never sit in the lower
    40 %, where nostrils and mouth corners fool the cascade), no larger than 40 % of the
    face width, and at most the two strongest non-overlapping boxes are kept per face.

    Parameters
    ----------
    face_detector : str or Detector
        Finds the faces to search when :meth:`detect` is given none.
    scale_factor, min_neighbors
        As in ``detectMultiScale``.
    """

    name = "haar-eyes"
    finds = "eye"
    cascade_file = "haarcascade_eye.xml"

    def __init__(
        self,
        *,
        face_detector: str | Detector = "hog",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
    ):
        self.face_detector = _as_face_detector(face_detector)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)

    def detect(self, image: np.ndarray, *, faces: Sequence[Box] | None = None) -> list[Detection]:
        """Eyes in ``image``, searched inside ``faces`` (found by ``face_detector`` if None)."""
        image = to_rgb(image)
        if faces is None:
            faces = [d.box for d in self.face_detector.detect(image)]
        grey = to_grey(image)
        eyes: list[Detection] = []
        for face in faces:
            eyes.extend(self.detect_in_face(grey, face))
        return eyes

    def detect_in_face(self, grey: np.ndarray, face: Sequence[int]) -> list[Detection]:
        """At most two eyes inside one face box of a grey image, in image coordinates."""
        clipped = clip_box(face, grey.shape)
        if clipped is None:
            return []
        x, y, w, h = clipped
        search_h = max(1, round(h * EYE_SEARCH_BOTTOM))
        roi = grey[y : y + search_h, x : x + w]
        smallest = max(1, w // 10)
        largest = max(smallest + 1, round(w * 0.4))
        found = _run_cascade(
            _cascade(self.cascade_file),
            roi,
            scale_factor=self.scale_factor,
            min_neighbors=self.min_neighbors,
            min_size=(smallest, smallest),
            max_size=(largest, largest),
        )
        found.sort(key=lambda item: -item[1])
        kept: list[tuple[Box, float]] = []
        for box, score in found:
            if all(_overlap(box, other) < 0.3 for other, _ in kept):
                kept.append((box, score))
            if len(kept) == 2:
                break
        return [Detection(bx + x, by + y, bw, bh, score=s) for (bx, by, bw, bh), s in kept]


class HaarGlassesDetector(HaarEyeDetector):
    """``haarcascade_eye_tree_eyeglasses``: eyes behind glasses, same rules as eyes."""

    name = "haar-glasses"
    cascade_file = "haarcascade_eye_tree_eyeglasses.xml"


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / smaller if smaller else 0.0


_CLASSES: dict[str, type[Detector]] = {
    "hog": HogDetector,
    "cnn": CnnDetector,
    "haar-face": HaarFaceDetector,
    "haar-eyes": HaarEyeDetector,
    "haar-glasses": HaarGlassesDetector,
}


def get_detector(name: str, **options) -> Detector:
    """Create the detector called ``name`` (see :data:`DETECTORS`) with keyword options."""
    if name not in _CLASSES:
        raise DetectorError(f"unknown detector {name!r}; known detectors: {', '.join(DETECTORS)}")
    try:
        return _CLASSES[name](**options)
    except TypeError as error:
        raise DetectorError(f"detector {name!r}: {error}") from None


def _as_face_detector(detector: str | Detector) -> Detector:
    if isinstance(detector, str):
        detector = get_detector(detector)
    if detector.finds != "face":
        raise DetectorError(f"{detector.name!r} finds eyes, not faces")
    return detector


# ---------------------------------------------------------------------------------------
# Regions to anonymize


def both_eyes(eyes: Sequence[Detection], face: Sequence[int]) -> bool:
    """Whether two eye hits can be the two eyes of ``face``: one on each side of its centre.

    The eye cascade also fires on eyebrows, nostrils and glasses frames; two hits on the
    same side (an eye and its eyebrow, say) are not both eyes, and trusting them would
    leave the other eye bare.
    """
    if len(eyes) != 2:
        return False
    centre = face[0] + face[2] / 2
    left, right = sorted(eyes, key=lambda e: e.x + e.w / 2)
    return left.x + left.w / 2 < centre < right.x + right.w / 2


def eye_band(
    image: np.ndarray,
    face: Sequence[int],
    *,
    eye_detectors: Sequence[HaarEyeDetector] | None = None,
    padding: float = 0.25,
    grey: np.ndarray | None = None,
) -> tuple[Box, bool] | None:
    """The horizontal band over the eyes of one face, kept inside the face box.

    It fails closed: the band fits the detected eyes only when a detector found both of
    them, and otherwise covers the whole width of the face wherever the eyes may be.

    The eye detectors are tried in order (by default plain eyes, then eyes behind
    glasses) until one finds two eyes that pass :func:`both_eyes` (one left, one right of
    the face's centre). The band then spans them, grown by ``padding`` times the eye size
    on every side. Otherwise the band is placed from the face geometry (15-50 % of the
    face height, full width) and stretched, still full width, over every eye hit of the
    detector that found most (padded likewise), so that a single eye, or an eye and its
    eyebrow, never narrows it.

    Returns
    -------
    (box, found) or None
        ``found`` tells whether any eye was detected (``False``: placed from the face
        geometry alone). ``None`` when the face box lies outside the image.
    """
    face_box = clip_box(face, image.shape)
    if face_box is None:
        return None
    if grey is None:
        grey = to_grey(image)
    if eye_detectors is None:
        eye_detectors = (get_detector("haar-eyes"), get_detector("haar-glasses"))
    fx, fy, fw, fh = face_box
    pair: list[Detection] = []
    hits: list[Detection] = []
    for detector in eye_detectors:
        found = detector.detect_in_face(grey, face_box)
        if both_eyes(found, face_box):
            pair = found
            break
        if len(found) > len(hits):
            hits = found

    def padded(eyes: Sequence[Detection]) -> tuple[int, int, int, int]:
        pad = round(padding * max(max(e.w, e.h) for e in eyes))
        return (min(e.x for e in eyes) - pad, min(e.y for e in eyes) - pad,
                max(e.x + e.w for e in eyes) + pad, max(e.y + e.h for e in eyes) + pad)

    if pair:
        left, top, right, bottom = padded(pair)
    else:
        low, high = EYE_FALLBACK_BAND
        left, right = fx, fx + fw
        top = fy + int(fh * low)
        bottom = max(top + 1, fy + int(round(fh * high)))
        if hits:
            _, hit_top, _, hit_bottom = padded(hits)
            top, bottom = min(top, hit_top), max(bottom, hit_bottom)
    # The bar must never leave the face box: methods may only touch pixels in boxes.
    left, top = max(left, fx), max(top, fy)
    right, bottom = min(right, fx + fw), min(bottom, fy + fh)
    return (left, top, right - left, bottom - top), bool(pair or hits)


def find_regions(
    image: np.ndarray,
    *,
    detector: str | Detector = "hog",
    region: str = "face",
    margin: float = 0.0,
) -> list[Box]:
    """The boxes to anonymize in an image.

    Parameters
    ----------
    image : ndarray
        RGB ``uint8`` (grey and RGBA are converted).
    detector : str or Detector
        A face detector (``hog``, ``cnn``, ``haar-face``), or an eye detector
        (``haar-eyes``, ``haar-glasses``, which implies ``region="eyes"`` and uses only
        that cascade).
    region : {"face", "eyes"}
        ``face``: one box per detected face. ``eyes``: one band over the eyes of each
        detected face (see :func:`eye_band`; a face whose eyes are not found still gets a
        band placed from its geometry, so no detected face is left bare).
    margin : float
        Grow every box by this fraction of its width and height (0.2: 20 % larger),
        clipped to the image.

    Returns
    -------
    list of (x, y, w, h)
        Empty when no face is found.
    """
    if region not in REGIONS:
        raise DetectorError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    if isinstance(detector, str):
        detector = get_detector(detector)
    image = to_rgb(image)
    if detector.finds == "eye":
        if region != "eyes":
            raise DetectorError(
                f"detector {detector.name!r} finds eyes; use region='eyes' or a face detector"
            )
        faces = [d.box for d in detector.face_detector.detect(image)]
        eye_detectors: Sequence[HaarEyeDetector] | None = (detector,)  # type: ignore[assignment]
    else:
        faces = [d.box for d in detector.detect(image)]
        eye_detectors = None
    if region == "face":
        boxes = faces
    else:
        grey = to_grey(image)
        bands = (eye_band(image, face, eye_detectors=eye_detectors, grey=grey) for face in faces)
        boxes = [band for band, _ in filter(None, bands)]
    grown = (grow_box(box, margin, image.shape) for box in boxes)
    return [box for box in grown if box is not None]


@dataclass(frozen=True)
class Regions:
    """Where an image is anonymized, and whether a face was found there.

    ``boxes`` is empty only when no face was found and the policy is not ``whole``: the
    image must then not be published at all.
    """

    boxes: tuple[Box, ...]
    found: bool

    @property
    def publishable(self) -> bool:
        """True when there is something to anonymize (a face, or the whole image)."""
        return bool(self.boxes)


def anonymization_regions(
    image: np.ndarray,
    *,
    detector: str | Detector = "hog",
    region: str = "face",
    margin: float = 0.0,
    on_miss: OnMiss | str = OnMiss.WHOLE,
) -> Regions:
    """The boxes to anonymize in an image, with the rule for an image with no face.

    Parameters
    ----------
    image : ndarray
        RGB ``uint8`` (grey and RGBA are converted).
    detector, region, margin
        As in :func:`find_regions`.
    on_miss : OnMiss or str
        When no face is found: ``whole`` gives one box over the whole image; ``skip`` and
        ``fail`` give no box (the caller must not publish the image; whether that is an
        error is the caller's to say). Any other value raises
        :class:`faceanon.protocol.OnMissError`.

    Returns
    -------
    Regions
    """
    on_miss = OnMiss.parse(on_miss)
    boxes = [tuple(int(v) for v in box) for box in
             find_regions(image, detector=detector, region=region, margin=margin)]
    if boxes:
        return Regions(tuple(boxes), found=True)
    if on_miss is OnMiss.WHOLE:
        height, width = np.shape(image)[:2]
        return Regions(((0, 0, int(width), int(height)),), found=False)
    return Regions((), found=False)
