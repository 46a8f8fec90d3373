"""dlib's 68-point facial landmarks and the geometry both generative methods share.

k-Same aligns every face to a canonical frame before averaging, and the GAN conditions its
generator on a handful of sparse keypoints; both start from dlib's 68-point shape predictor
run inside a face box. The models ship with ``face_recognition_models`` and load once per
process.

Points follow the iBUG 300-W numbering: 0-16 jaw, 17-26 brows, 27-35 nose, 36-41 the
subject's right eye (image left), 42-47 the subject's left eye, 48-67 mouth.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from faceanon.detect import hog_model
from faceanon.errors import FaceanonError

Box = tuple[int, int, int, int]

#: Names of the sparse keypoints the GAN is conditioned on, in channel order.
KEYPOINT_NAMES = (
    "eye_image_left",
    "eye_image_right",
    "nose_tip",
    "mouth_image_left",
    "mouth_image_right",
    "jaw_image_left",
    "jaw_image_right",
)
#: Channel order after a horizontal flip: left and right swap, the nose stays.
KEYPOINT_FLIP = (1, 0, 2, 4, 3, 6, 5)

# Keypoints of an average face in box-relative units (0..1 across the box): the medians over
# dlib HOG boxes on lfw-singletons (HOG boxes sit a little left of the face centre). Used
# when no landmarks can be found in a box.
_BOX_KEYPOINTS = np.array(
    [
        [0.267, 0.264],
        [0.665, 0.255],
        [0.467, 0.494],
        [0.295, 0.731],
        [0.657, 0.724],
        [0.000, 0.308],
        [0.943, 0.288],
    ],
    dtype=np.float32,
)

#: Smallest box side (pixels) in which the 68-point predictor is trusted; below it the
#: predictor mostly returns its mean shape and geometry from the box is as good.
MIN_LANDMARK_BOX = 20


class LandmarkError(FaceanonError, RuntimeError):
    """Landmarks could not be found for a face box."""


@functools.cache
def shape_predictor_68():
    """dlib's 68-point shape predictor, loaded once."""
    import dlib
    import face_recognition_models

    return dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


def hog_boxes(image: np.ndarray, *, upsample: int = 0) -> list[Box]:
    """Face boxes ``(x, y, w, h)`` from dlib's HOG detector, largest first, clipped to the image."""
    height, width = image.shape[:2]
    boxes = []
    for rect in hog_model()(np.ascontiguousarray(image), upsample):
        x0, y0 = max(rect.left(), 0), max(rect.top(), 0)
        x1, y1 = min(rect.right() + 1, width), min(rect.bottom() + 1, height)
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def landmarks68(image: np.ndarray, box: Box) -> np.ndarray:
    """The 68 landmarks ``(x, y)`` as a float32 ``(68, 2)`` array for the face in ``box``.

    Raises
    ------
    LandmarkError
        When the box is too small for the predictor or the points land mostly outside it,
        which is how the predictor fails (it always returns *some* shape).
    """
    import dlib

    x, y, w, h = (int(v) for v in box)
    if min(w, h) < MIN_LANDMARK_BOX:
        raise LandmarkError(f"box {box} smaller than {MIN_LANDMARK_BOX} px")
    shape = shape_predictor_68()(
        np.ascontiguousarray(image), dlib.rectangle(x, y, x + w - 1, y + h - 1)
    )
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    # Inner face points (brows, eyes, nose, mouth) must fall in a box grown by a quarter.
    inner = points[17:]
    grow_x, grow_y = 0.25 * w, 0.25 * h
    inside = (
        (inner[:, 0] >= x - grow_x)
        & (inner[:, 0] <= x + w + grow_x)
        & (inner[:, 1] >= y - grow_y)
        & (inner[:, 1] <= y + h + grow_y)
    )
    if inside.mean() < 0.9:
        raise LandmarkError(f"landmarks fall outside box {box}")
    return points


def keypoints_from_landmarks(points: np.ndarray) -> np.ndarray:
    """Seven sparse keypoints ``(7, 2)`` (see :data:`KEYPOINT_NAMES`) from 68 landmarks."""
    points = np.asarray(points, dtype=np.float32)
    return np.stack(
        [
            points[36:42].mean(axis=0),
            points[42:48].mean(axis=0),
            points[30],
            points[48],
            points[54],
            points[0],
            points[16],
        ]
    ).astype(np.float32)


def keypoints_from_box(box: Box) -> np.ndarray:
    """Keypoints of an average frontal face placed in ``box``: the fallback without landmarks."""
    x, y, w, h = box
    return (_BOX_KEYPOINTS * np.array([w, h], np.float32) + np.array([x, y], np.float32)).astype(
        np.float32
    )


def landmarks_or_none(image: np.ndarray, box: Box) -> np.ndarray | None:
    """:func:`landmarks68`, or ``None`` where the predictor fails in ``box``."""
    try:
        return landmarks68(image, box)
    except LandmarkError:
        return None


def face_keypoints(image: np.ndarray, box: Box) -> tuple[np.ndarray, bool]:
    """Keypoints for ``box`` and whether they came from landmarks (``False``: from the box)."""
    points = landmarks_or_none(image, box)
    if points is None:
        return keypoints_from_box(box), False
    return keypoints_from_landmarks(points), True


# Canonical positions, in a unit square, of the five points k-Same aligns on (eye centres,
# nose tip, mouth corners): the average HOG-box layout above, made symmetric and shrunk by
# 1.25 about the centre, so the canonical frame covers a face box with some margin.
CANONICAL_FIVE = np.array(
    [
        [0.340, 0.308],
        [0.660, 0.308],
        [0.500, 0.495],
        [0.356, 0.684],
        [0.644, 0.684],
    ],
    dtype=np.float32,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``source`` onto ``target``.

    Returns a ``2x3`` float64 matrix for :func:`cv2.warpAffine`. Closed form (Umeyama
    without reflection), so it is deterministic and never falls back to RANSAC.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    # With complex numbers a 2-D similarity is one multiplication: dst = a * src + b.
    zs = src_c[:, 0] + 1j * src_c[:, 1]
    zd = dst_c[:, 0] + 1j * dst_c[:, 1]
    denominator = np.vdot(zs, zs).real
    if denominator <= 1e-12:
        raise LandmarkError("degenerate points: all source points coincide")
    a = np.vdot(zs, zd) / denominator
    rotation = np.array([[a.real, -a.imag], [a.imag, a.real]])
    shift = dst_mean - rotation @ src_mean
    return np.hstack([rotation, shift[:, None]])


def align_canonical(
    image: np.ndarray, five: np.ndarray, *, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face to the canonical ``size x size`` frame from its five points.

    ``five`` are eye centres, nose tip and mouth corners (the first five keypoints).
    Returns the aligned ``uint8`` face and the ``2x3`` matrix that maps image coordinates
    to aligned ones; :func:`paste_warped` warps an aligned face back.
    """
    matrix = similarity_transform(np.asarray(five)[:5], CANONICAL_FIVE * size)
    aligned = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return aligned, matrix


def feather_mask(height: int, width: int, *, border: float = 0.15) -> np.ndarray:
    """A float32 ``(height, width)`` mask, 1 inside and ramping to 0 at the edges.

    ``border`` is the ramp width as a share of the shorter side, so the blend seam lies
    inside the box and pixels on the box edge keep most of the original.
    """
    ramp = max(1.0, border * min(height, width))
    ys = np.arange(height, dtype=np.float32)
    xs = np.arange(width, dtype=np.float32)
    dy = np.minimum(ys + 0.5, height - ys - 0.5) / ramp
    dx = np.minimum(xs + 0.5, width - xs - 0.5) / ramp
    return np.clip(np.minimum(dy[:, None], dx[None, :]), 0.0, 1.0).astype(np.float32)


def feature_blend_mask(
    points68: np.ndarray | None,
    box: Box,
    *,
    feather: float = 0.12,
    outer_feather: float = 0.25,
    grow: float = 0.05,
) -> np.ndarray:
    """Blend weights ``(h, w)`` for a generated face: a wide ramp except on the features.

    A generated face pasted with a narrow ramp along the box edge shows the box as a
    straight seam where the photo around it (forehead, cheeks, background) does not match.
    This mask ramps over ``outer_feather`` of the box's shorter side, wide enough to hide
    the seam, everywhere except on the face's features (brows, eyes, nose, mouth: the
    convex hull of landmarks 17-67 and ``grow`` of the box's shorter side around it, then
    falling off over as much again), where it is the narrow :func:`feather_mask` of
    ``feather``. So the features are replaced exactly as by the
    narrow ramp (where they reach the box edge too), and only pixels away from them keep
    more of the photo: every value lies in ``[0, 1]`` and is at most the narrow ramp's.

    Without landmarks (``points68`` is ``None``) the features are unknown, and the mask is
    the narrow ramp: nothing more of the photo is kept.
    """
    x, y, w, h = box
    narrow = feather_mask(h, w, border=feather)
    if points68 is None:
        return narrow
    features = np.asarray(points68, np.float32)[17:] - np.array([x, y], np.float32)
    hull = cv2.convexHull(np.round(features).astype(np.int32))
    outside = np.ones((h, w), np.uint8)
    cv2.fillConvexPoly(outside, hull, 0)
    # 1 on the hull and up to `grow` beyond it, falling linearly to 0 at twice that.
    radius = max(1.0, grow * min(w, h))
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    core = np.clip(2.0 - distance / radius, 0.0, 1.0).astype(np.float32)
    wide = feather_mask(h, w, border=outer_feather)
    return np.maximum(wide, np.minimum(core, narrow))


def paste_warped(
    out: np.ndarray,
    source: np.ndarray,
    matrix: np.ndarray,
    box: Box,
    *,
    alpha: np.ndarray | float = 1.0,
    interpolation: int = cv2.INTER_LINEAR,
) -> None:
    """Warp ``source`` back into ``box`` of ``out`` and blend it there, in place.

    ``matrix`` is the ``2x3`` affine map from image coordinates to ``source``'s frame (an
    aligned face, a model crop); every box pixel samples ``source`` where the map sends it.
    ``alpha`` (a scalar, or ``(h, w)`` for the box) weighs the warped pixels against the
    pixels already in ``out``; it is multiplied by the share of each box pixel that
    ``source`` covers, so a frame that does not reach a box corner leaves the original
    there. Only pixels inside ``box`` are written, so the method contract (nothing outside
    the regions changes) holds whatever ``alpha`` is.

    Parameters
    ----------
    out : ndarray
        ``uint8`` image ``(H, W, 3)``, modified in place.
    source : ndarray
        float32 or ``uint8`` ``(S, S, 3)`` image in the warped frame, values in ``[0, 255]``.
    matrix : ndarray
        ``2x3`` image-to-source affine matrix.
    box : tuple of int
        ``(x, y, w, h)`` inside ``out`` (clip it first).
    alpha : float or ndarray, optional
        Blend weight of the warped pixels, ``1`` replaces.
    interpolation : int, optional
        OpenCV interpolation flag for sampling ``source``.
    """
    x, y, w, h = box
    # Map box pixels to source pixels: source = matrix @ (box origin + local).
    to_source = np.array(matrix, dtype=np.float64).copy()
    to_source[:, 2] += to_source[:, :2] @ np.array([x, y], dtype=np.float64)
    flags = interpolation | cv2.WARP_INVERSE_MAP
    patch = cv2.warpAffine(source, to_source, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    coverage = cv2.warpAffine(
        np.ones(source.shape[:2], np.float32),
        to_source,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    weight = (np.asarray(alpha, dtype=np.float32) * coverage)[:, :, None]
    region = out[y : y + h, x : x + w].astype(np.float32)
    blended = weight * np.clip(patch, 0, 255) + (1.0 - weight) * region
    out[y : y + h, x : x + w] = np.round(blended).astype(np.uint8)
