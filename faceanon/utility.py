"""What anonymization costs: utility measures of an anonymized image against its original.

Privacy numbers say how much a method hides; these say what is left to use. Per anonymized
image, against the original it was made from:

Detection retention
    Is each face of the original still found by a face detector in the anonymized image
    (a detection whose box overlaps the original face with IoU >= :data:`MIN_IOU`)? Can the
    published picture still be used to count people or to train a detector. Detections
    made elsewhere (the recognizer's HOG run, an attack's RetinaFace) are passed in, so
    nothing is detected twice; only when none are given does this module run dlib's HOG.
Landmarks kept
    The normalized mean error (NME) of dlib's 68 landmarks on the anonymized face against
    those on the original face, normalised by the original's inter-ocular distance (outer
    eye corners, points 36 and 45: the 300-W convention). Both are placed in the original's
    face box, on faces found in both images; whether landmarks could be placed on the
    anonymized face at all (dlib's predictor always answers; faceanon rejects shapes that
    fall outside the box) is reported beside it. Low NME: pose and expression survive.
Image change
    SSIM (Wang et al. 2004, scikit-image's ``structural_similarity`` with its default 7x7
    window, on the luma of ITU-R BT.601 as Wang et al. measured grey images) and PSNR (on
    the RGB values), over the whole image and over the anonymized regions (the mean of the
    SSIM map, and the PSNR of the pixels, inside the region boxes). Higher: closer to the
    original.
Contract
    How many pixels outside the anonymized regions changed. A method must change none
    (:attr:`ImageUtility.outside_unchanged`).

Polarity and ties: retention, SSIM and PSNR are higher-is-more-utility; NME is
lower-is-more-utility. PSNR is ``inf`` for identical pixels. NME is NaN where a face was not
found in both images or landmarks could not be placed on either; aggregate it over the
faces where it is finite and report the share where it is not.

The original's faces and landmarks are computed once per original (:func:`reference`) and
shared by all the variants made from it; :func:`measure` then costs one landmark fit per
face and an SSIM over the regions' neighbourhood. ``benchmarks/utility_overhead.py``
measures what that adds to the recognizer's work per image.

No database here: the results store decides how these numbers are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]

#: A detection in the anonymized image is the original face when the boxes' IoU is at least
#: this (the PASCAL VOC rule is 0.5 for one detector against itself; different detectors'
#: boxes for one face differ more, so the looser 0.3 faceanon's model card used).
MIN_IOU = 0.3
#: iBUG 300-W outer eye corners: the subject's right eye's outer corner and the left's.
OUTER_EYE_CORNERS = (36, 45)
#: scikit-image's default SSIM window (uniform 7x7) reaches this far from a pixel.
SSIM_WINDOW = 7


class UtilityError(ValueError):
    """The images or boxes given cannot be compared (shapes, dtypes, degenerate landmarks)."""


# --------------------------------------------------------------------------------------
# Small pure pieces, each checkable by hand.


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes; 0 when either is empty."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 and aw > 0 and ah > 0 and bw > 0 and bh > 0 else 0.0


def match_faces(
    faces: Sequence[Box], detections: Sequence[Box], *, min_iou: float = MIN_IOU
) -> list[Box | None]:
    """For each face, the detection that overlaps it most (IoU >= ``min_iou``), or ``None``.

    Greedy by IoU, highest first; a detection is matched to at most one face. Ties go to
    the earlier face, then the earlier detection.
    """
    pairs = sorted(
        (-box_iou(face, detection), i, j)
        for i, face in enumerate(faces)
        for j, detection in enumerate(detections)
    )
    matched: list[Box | None] = [None] * len(faces)
    used: set[int] = set()
    for negative_iou, i, j in pairs:
        if -negative_iou < min_iou:
            break
        if matched[i] is None and j not in used:
            matched[i] = tuple(int(v) for v in detections[j])
            used.add(j)
    return matched


def normalized_mean_error(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean point-to-point distance over 68 landmarks, divided by the inter-ocular distance.

    The distance between the outer eye corners (points 36 and 45) of ``reference`` is the
    unit, so the error does not depend on the face's size in the picture.

    Raises
    ------
    UtilityError
        When the arrays are not ``(68, 2)`` or the reference's eye corners coincide.
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != (68, 2) or estimate.shape != (68, 2):
        raise UtilityError(
            f"landmarks must be (68, 2) arrays, got {reference.shape} and {estimate.shape}"
        )
    right, left = OUTER_EYE_CORNERS
    interocular = float(np.linalg.norm(reference[right] - reference[left]))
    if interocular <= 0:
        raise UtilityError("reference landmarks have coinciding outer eye corners")
    return float(np.linalg.norm(reference - estimate, axis=1).mean() / interocular)


def region_mask(shape: Sequence[int], regions: Sequence[Sequence[int]]) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the union of ``(x, y, w, h)`` boxes, clipped."""
    mask = np.zeros((int(shape[0]), int(shape[1])), bool)
    for x, y, w, h in regions:
        mask[max(int(y), 0) : max(int(y + h), 0), max(int(x), 0) : max(int(x + w), 0)] = True
    return mask


def changed_outside(
    original: np.ndarray, anonymized: np.ndarray, regions: Sequence[Sequence[int]]
) -> int:
    """How many pixels outside the regions differ in any channel (a method must change none)."""
    _check_pair(original, anonymized)
    changed = (
        np.any(original != anonymized, axis=-1) if original.ndim == 3 else original != anonymized
    )
    return int(np.count_nonzero(changed & ~region_mask(original.shape, regions)))


def psnr(original: np.ndarray, anonymized: np.ndarray, *, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all values given; ``inf`` when they are equal.

    The definition of :func:`skimage.metrics.peak_signal_noise_ratio`; here it also takes
    the 1-D arrays of a region's pixels. NaN for empty arrays.
    """
    difference = np.asarray(original, np.float64) - np.asarray(anonymized, np.float64)
    return _psnr(float(np.sum(difference * difference)), difference.size, data_range)


def _psnr(squared_error: float, count: int, data_range: float = 255.0) -> float:
    if count == 0:
        return math.nan
    mse = squared_error / count
    return math.inf if mse == 0 else 10.0 * math.log10(data_range * data_range / mse)


def ssim_map(
    original: np.ndarray, anonymized: np.ndarray, *, regions: Sequence[Sequence[int]] | None = None
) -> tuple[float, np.ndarray]:
    """Whole-image SSIM and the per-pixel SSIM map of the luma, as scikit-image has them.

    scikit-image's ``structural_similarity`` with its defaults (7x7 uniform window, sample
    covariance, K1 = 0.01, K2 = 0.03, data range 255) on the BT.601 luma (OpenCV's
    RGB-to-grey, rounded to ``uint8``); the whole-image value is its mean of the map
    without the 3-pixel image border. With ``regions`` given, and no pixel
    outside them changed, only the regions' neighbourhood is computed: elsewhere every
    window holds identical pixels and the map is exactly 1, so the result equals the
    whole-image computation (a test checks this) at a fraction of the cost.
    """
    _check_pair(original, anonymized)
    boxes = _nonempty(regions or [])
    unchanged = regions is not None and changed_outside(original, anonymized, boxes) == 0
    return _ssim(original, anonymized, boxes if unchanged else None)


def luma(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB ``uint8`` image (grey images pass through)."""
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def _nonempty(regions: Sequence[Sequence[int]]) -> list[Box]:
    return [tuple(int(v) for v in r) for r in regions if r[2] > 0 and r[3] > 0]


def _ssim(original, anonymized, boxes: list[Box] | None) -> tuple[float, np.ndarray]:
    """:func:`ssim_map`; ``boxes`` hold every changed pixel, or ``None``: compute everything."""
    from skimage.metrics import structural_similarity

    original, anonymized = luma(original), luma(anonymized)
    pad = (SSIM_WINDOW - 1) // 2
    height, width = original.shape[:2]

    def compute(a, b):
        _, full = structural_similarity(a, b, data_range=255, full=True, win_size=SSIM_WINDOW)
        return full

    if boxes is None:
        full = compute(original, anonymized)
    elif not boxes:
        full = np.ones((height, width))
    else:
        # Every pixel within `pad` of a changed one has a window that reaches `pad`
        # further: compute on the regions' bounding box grown by 2 * pad.
        x0 = max(min(b[0] for b in boxes) - 2 * pad, 0)
        y0 = max(min(b[1] for b in boxes) - 2 * pad, 0)
        x1 = min(max(b[0] + b[2] for b in boxes) + 2 * pad, width)
        y1 = min(max(b[1] + b[3] for b in boxes) + 2 * pad, height)
        if min(x1 - x0, y1 - y0) < SSIM_WINDOW:
            full = compute(original, anonymized)
        else:
            crop = compute(original[y0:y1, x0:x1], anonymized[y0:y1, x0:x1])
            full = np.ones((height, width))
            # Keep the crop pixels whose window lies inside the crop, or meets the image
            # border there (scikit-image reflects at the image border, and so at the crop's).
            cx0, cy0 = (0 if x0 == 0 else pad), (0 if y0 == 0 else pad)
            cx1 = (x1 - x0) - (0 if x1 == width else pad)
            cy1 = (y1 - y0) - (0 if y1 == height else pad)
            full[y0 + cy0 : y0 + cy1, x0 + cx0 : x0 + cx1] = crop[cy0:cy1, cx0:cx1]
    whole = float(full[pad : height - pad, pad : width - pad].mean())
    return whole, full


def edge_seam(
    original: np.ndarray,
    anonymized: np.ndarray,
    box: Sequence[int],
    *,
    band: float = 0.15,
    sigma: float = 3.0,
) -> dict[str, float]:
    """How strongly each edge of ``box`` shows as a straight seam: anonymized over original.

    On the grey image, the derivative across the edge (central difference) is smoothed
    along the edge with a Gaussian of ``sigma`` pixels, so texture (whose sign changes
    along the edge) averages out and a straight step (a seam, the same sign all along)
    stays. Its energy (mean square) is taken on every line parallel to the edge from 2 px
    outside the box to ``band`` of the box's shorter side inside, where a blend ramp lies;
    an edge's value is the strongest line's energy in the anonymized image divided by the
    strongest line's in the original (the same lines). 1: no new straight edge. Of 100 LFW
    faces replaced by the GAN, the four highest (all above 2) showed seams by eye and the
    lowest none. Edges on the image border are left out.

    Returns
    -------
    dict
        ``{"top": ..., "bottom": ..., "left": ..., "right": ...}`` for the edges inside
        the image; NaN where the original's lines are flat (no energy to compare with).
    """
    import cv2

    _check_pair(original, anonymized)
    x, y, w, h = (int(v) for v in box)
    depth = max(2, int(round(band * min(w, h))))
    outside = 2

    def smoothed_derivatives(image):
        grey = luma(image).astype(np.float32)
        d_rows = np.zeros_like(grey)
        d_rows[1:-1] = (grey[2:] - grey[:-2]) / 2
        d_cols = np.zeros_like(grey)
        d_cols[:, 1:-1] = (grey[:, 2:] - grey[:, :-2]) / 2
        across_rows = cv2.GaussianBlur(d_rows, (0, 0), sigmaX=sigma, sigmaY=1e-3)
        across_cols = cv2.GaussianBlur(d_cols, (0, 0), sigmaX=1e-3, sigmaY=sigma)
        return across_rows, across_cols

    height, width = original.shape[:2]
    offsets = range(-outside, depth)
    lines = {
        "top": ("rows", [y + d for d in offsets], slice(x, x + w)),
        "bottom": ("rows", [y + h - 1 - d for d in offsets], slice(x, x + w)),
        "left": ("cols", [x + d for d in offsets], slice(y, y + h)),
        "right": ("cols", [x + w - 1 - d for d in offsets], slice(y, y + h)),
    }
    derivatives = {"original": smoothed_derivatives(original)}
    derivatives["anonymized"] = smoothed_derivatives(anonymized)
    result = {}
    for edge, (axis, indices, span) in lines.items():
        limit = height if axis == "rows" else width
        if min(indices) < 1 or max(indices) > limit - 2:
            continue  # the edge lies on (or too near) the image border
        energies = {}
        for name, (across_rows, across_cols) in derivatives.items():
            values = [
                across_rows[i, span] if axis == "rows" else across_cols[span, i] for i in indices
            ]
            energies[name] = max(float(np.mean(v.astype(np.float64) ** 2)) for v in values)
        reference = energies["original"]
        result[edge] = energies["anonymized"] / reference if reference > 1e-9 else math.nan
    return result


def _check_pair(original: np.ndarray, anonymized: np.ndarray) -> None:
    if original.shape != anonymized.shape:
        raise UtilityError(
            f"original {original.shape} and anonymized {anonymized.shape} differ in shape"
        )
    if original.dtype != np.uint8 or anonymized.dtype != np.uint8:
        raise UtilityError(f"expected uint8 images, got {original.dtype} and {anonymized.dtype}")


# --------------------------------------------------------------------------------------
# Per image.


@dataclass(frozen=True)
class Reference:
    """An original image prepared once for all the variants made from it.

    ``faces`` are the face boxes of the original (the faces that should be retained),
    ``landmarks`` dlib's 68 points for each, or ``None`` where they could not be placed.
    ``image`` is the original, or ``None`` in a :func:`detached` copy (the facts alone,
    sent between processes; :func:`image_record` then takes the image apart).
    """

    image: np.ndarray | None
    faces: tuple[Box, ...]
    landmarks: tuple[np.ndarray | None, ...]


@dataclass(frozen=True)
class FaceUtility:
    """One face of the original, in the anonymized image.

    ``retained``: a detection overlaps it (IoU >= :data:`MIN_IOU`); ``detection`` is that
    box. ``landmarks_placed``: the face is retained and landmarks could be placed on it (in
    ``box``).
    ``nme``: :func:`normalized_mean_error` of those landmarks against the original's, NaN
    unless both were placed.
    """

    box: Box
    retained: bool
    detection: Box | None
    landmarks_placed: bool
    nme: float


@dataclass(frozen=True)
class ImageUtility:
    """The utility measures of one anonymized image against its original.

    ``ssim``/``psnr`` over the whole image; ``region_ssim``/``region_psnr`` over the
    anonymized regions (NaN when there are none); ``changed_outside`` pixels outside the
    regions differ (must be 0).
    """

    faces: tuple[FaceUtility, ...]
    ssim: float
    psnr: float
    region_ssim: float
    region_psnr: float
    changed_outside: int

    @property
    def retention(self) -> float:
        """Share of the original's faces still detected; NaN without faces."""
        return float(np.mean([f.retained for f in self.faces])) if self.faces else math.nan

    @property
    def landmarks_placed(self) -> float:
        """Share of the original's faces with landmarks placed on the anonymized face."""
        if not self.faces:
            return math.nan
        return float(np.mean([f.landmarks_placed for f in self.faces]))

    @property
    def nme(self) -> float:
        """Mean NME over the faces where it is defined; NaN if there are none."""
        values = [f.nme for f in self.faces if math.isfinite(f.nme)]
        return float(np.mean(values)) if values else math.nan

    @property
    def outside_unchanged(self) -> bool:
        return self.changed_outside == 0


def _hog_boxes(image: np.ndarray, upsample: int) -> list[Box]:
    from faceanon.detect import HogDetector

    return [d.box for d in HogDetector(upsample=upsample).detect(image)]


def _landmarks_or_none(image: np.ndarray, box: Box) -> np.ndarray | None:
    from faceanon.landmarks import LandmarkError, landmarks68

    try:
        return landmarks68(image, box)
    except LandmarkError:
        return None


def reference(
    original: np.ndarray, *, faces: Sequence[Sequence[int]] | None = None, upsample: int = 1
) -> Reference:
    """Prepare an original once: its faces (given, or dlib HOG) and their 68 landmarks.

    Parameters
    ----------
    original : ndarray
        RGB ``uint8`` image.
    faces : sequence of (x, y, w, h), optional
        The original's face boxes, e.g. the detections the benchmark anonymized. Default:
        dlib HOG with ``upsample``, as the recognizer runs it.
    upsample : int, optional
        HOG up-sampling when ``faces`` is not given.
    """
    original = np.asarray(original)
    if faces is None:
        faces = _hog_boxes(original, upsample)
    boxes = tuple(tuple(int(v) for v in box) for box in faces)
    landmarks = tuple(_landmarks_or_none(original, box) for box in boxes)
    return Reference(image=original, faces=boxes, landmarks=landmarks)


def measure(
    ref: Reference,
    anonymized: np.ndarray,
    regions: Sequence[Sequence[int]],
    *,
    detections: Sequence[Sequence[int]] | None = None,
    min_iou: float = MIN_IOU,
    upsample: int = 1,
) -> ImageUtility:
    """Measure one anonymized image against its prepared original.

    Parameters
    ----------
    ref : Reference
        From :func:`reference`.
    anonymized : ndarray
        The anonymized image, same shape as the original.
    regions : sequence of (x, y, w, h)
        The boxes the method was given (what it was allowed to change).
    detections : sequence of (x, y, w, h), optional
        Faces already detected in ``anonymized`` (pass them: nothing is detected twice).
        Default: dlib HOG with ``upsample``.
    min_iou : float, optional
        Overlap for a detection to count as the original face.

    Returns
    -------
    ImageUtility
    """
    original = ref.image
    anonymized = np.asarray(anonymized)
    _check_pair(original, anonymized)
    if detections is None:
        detections = _hog_boxes(anonymized, upsample)
    detections = [tuple(int(v) for v in d) for d in detections]

    faces = []
    matches = match_faces(ref.faces, detections, min_iou=min_iou)
    for box, points, detection in zip(ref.faces, ref.landmarks, matches, strict=True):
        # Landmarks go in the original's box on both sides, so that NME is the change of
        # the face, not the jitter between two detections (1 px moves dlib's points by
        # about 0.006 NME); only faces found in both images count.
        placed = None if detection is None else _landmarks_or_none(anonymized, box)
        nme = math.nan
        if points is not None and placed is not None:
            nme = normalized_mean_error(points, placed)
        faces.append(
            FaceUtility(
                box=box,
                retained=detection is not None,
                detection=detection,
                landmarks_placed=placed is not None,
                nme=nme,
            )
        )

    boxes = _nonempty(regions)
    outside = changed_outside(original, anonymized, boxes)
    whole_ssim, full_map = _ssim(original, anonymized, boxes if outside == 0 else None)
    mask = region_mask(original.shape, boxes)
    inside = np.asarray(original[mask], np.float64) - anonymized[mask]
    region_error = float(np.sum(inside * inside))
    if outside == 0:  # the rest of the image is equal: its squared error is 0
        whole_psnr = _psnr(region_error, original.size)
    else:
        whole_psnr = psnr(original, anonymized)
    return ImageUtility(
        faces=tuple(faces),
        ssim=whole_ssim,
        psnr=whole_psnr,
        region_ssim=float(full_map[mask].mean()) if mask.any() else math.nan,
        region_psnr=_psnr(region_error, inside.size),
        changed_outside=outside,
    )


# --------------------------------------------------------------------------------------
# In the benchmark: one record per anonymized variant image.

#: The columns of :func:`image_record`, in the order the results store keeps them.
RECORD_COLUMNS = (
    "faces", "retained_hog", "landmarks_placed", "nme", "nme_faces", "ssim", "psnr",
    "ssim_face", "psnr_face", "changed_outside", "seconds",
)


def detached(ref: Reference) -> Reference:
    """``ref`` without its image: the facts a worker sends back, small enough to pickle."""
    return Reference(image=None, faces=ref.faces, landmarks=ref.landmarks)


def reference_for_regions(
    original: np.ndarray,
    regions: Sequence[Sequence[int]],
    *,
    found: bool,
    regions_are_faces: bool,
) -> Reference:
    """The :func:`reference` of an original whose anonymization regions are known.

    The benchmark has already found the regions to anonymize; when they are the faces
    themselves (``regions_are_faces``: whole face boxes, no margin) they are reused and
    nothing is detected again. Regions made where no face was found (``found`` false:
    the whole image) hold no face to retain. Otherwise (eye regions, a margin) the faces
    are found with dlib's HOG once here.
    """
    if not found:
        return reference(original, faces=())
    return reference(original, faces=regions if regions_are_faces else None)


def recognizer_detections(face, backend) -> list[Box] | None:
    """The faces a recognizer's HOG run found, as ``(x, y, w, h)``, when they are all known.

    ``face`` is the :class:`faceanon.recognition.FaceChip` that ``backend`` cut (or
    ``None``: the image was not detected, its embedding came from the cache). Its
    detection is :func:`measure`'s own (dlib HOG, up-sampled once) only when the backend
    detects that way; and the recognizer keeps only the largest face, so its detections
    are the complete list only when it found at most one. In every other case ``None``,
    and :func:`measure` runs HOG itself.
    """
    same_detector = (getattr(backend, "detector", None) == "hog"
                     and getattr(backend, "upsample", None) == 1)
    if face is None or not same_detector or face.faces_found > 1:
        return None
    if face.faces_found == 0 or face.box is None:
        return []
    top, right, bottom, left = (int(v) for v in face.box)
    return [(left, top, right - left, bottom - top)]


def image_record(
    ref: Reference,
    anonymized: np.ndarray,
    regions: Sequence[Sequence[int]],
    *,
    original: np.ndarray | None = None,
    detections: Sequence[Sequence[int]] | None = None,
) -> dict[str, float | int | None]:
    """:func:`measure` as one flat row of :data:`RECORD_COLUMNS` (plain numbers only).

    ``faces``: the original's faces; ``retained_hog`` and ``landmarks_placed``: how many of
    them are detected in / have landmarks placed on the anonymized image; ``nme``: the mean
    NME over the ``nme_faces`` faces where it is defined (``None`` when none);
    ``ssim_face``/``psnr_face``: over the anonymized regions; ``seconds``: what measuring
    took (the cost the benchmark's budget counts). PSNR is ``inf`` for equal pixels.
    ``original`` is the original image when ``ref`` is :func:`detached`.
    """
    import time
    from dataclasses import replace

    start = time.perf_counter()
    if original is not None:
        ref = replace(ref, image=np.asarray(original))
    if ref.image is None:
        raise UtilityError("the reference is detached from its image: pass original=")
    result = measure(ref, anonymized, regions, detections=detections)
    defined = [f.nme for f in result.faces if math.isfinite(f.nme)]

    def number(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    return {
        "faces": len(result.faces),
        "retained_hog": sum(f.retained for f in result.faces),
        "landmarks_placed": sum(f.landmarks_placed for f in result.faces),
        "nme": float(np.mean(defined)) if defined else None,
        "nme_faces": len(defined),
        "ssim": number(result.ssim),
        "psnr": number(result.psnr),
        "ssim_face": number(result.region_ssim),
        "psnr_face": number(result.region_psnr),
        "changed_outside": result.changed_outside,
        "seconds": time.perf_counter() - start,
    }
