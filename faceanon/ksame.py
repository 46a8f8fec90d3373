"""k-Same-Pixel de-identification (Newton, Sweeney, Malin 2005).

k-Same works on a *set* of faces. Every face is aligned to a canonical frame (a similarity
transform taking its eye centres, nose tip and mouth corners from dlib's 68 landmarks onto
:data:`faceanon.landmarks.CANONICAL_FIVE`); then, following the paper's algorithm:

1. while faces remain: if fewer than ``2k`` remain, they all form the last cluster (so no
   cluster ever has fewer than ``k`` members); otherwise take a remaining face (drawn with
   the method's ``rng``) and its ``k`` nearest remaining faces, itself included, in pixel
   space;
2. the cluster's pixel-wise average replaces every member, and the members are removed from
   further selection.

Every output face is therefore the same average of at least ``k`` faces of the set. The
clusters group faces, not people (:func:`k_same_clusters`): the average stands for ``k``
people only when each person gives the set one face, as in each of the benchmark's sets
(one gallery image, one probe per person). Newton et al.'s guarantee (a recognizer that
matches a de-identified face against the very originals it was made from is right for at
most one in ``k`` of them, rank-1 <= 1/k in the aligned frame) rests on that and on the
average being the same image for every member; here it is warped back into each member's
own photograph, so the guarantee is the paper's, not a property this code proves.

Distances are measured in pixel space (not PCA), over an ellipse covering the inner face in
the aligned frame, on colour pixels: the set is usually small, and pixel space needs nothing
fitted. The average is warped back into each face's box with the inverse transform and
blended with a feathered mask that is zero on the box edge, so no pixel outside a box
changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from faceanon.detect import clip_box
from faceanon.landmarks import align_canonical, face_keypoints, feather_mask, paste_warped
from faceanon.methods import Box, Method, MethodError


def _face_ellipse(size: int) -> np.ndarray:
    """Boolean mask of the inner face in the canonical frame: where distances are measured."""
    mask = np.zeros((size, size), np.uint8)
    centre = (int(round(0.5 * size)), int(round(0.52 * size)))
    axes = (int(round(0.30 * size)), int(round(0.36 * size)))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def k_same_clusters(
    vectors: np.ndarray, k: int, *, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Partition rows of ``vectors`` into k-Same clusters of size ``k`` to ``2k - 1``.

    Each cluster is a seed face and its nearest remaining faces (Euclidean, itself
    included); the last cluster takes every face left when fewer than ``2k`` remain.
    ``rng`` picks the seed face each round; without it the first remaining face is taken,
    as in the paper's pseudo-code.

    The clusters group *faces* (rows), not people: identities are not known here, and two
    photographs of one person, being close, tend to land in the same cluster. A cluster
    of ``k`` faces therefore stands for ``k`` people only when every person contributes one
    face to ``vectors``; otherwise it may stand for fewer.

    Raises
    ------
    MethodError
        When there are fewer than ``k`` faces.
    """
    n = len(vectors)
    if n < k:
        raise MethodError(
            f"the set holds {n} face(s), fewer than k={k}; k-Same needs at least k faces "
            "to average (pass a larger set, e.g. a whole folder, or a smaller k)"
        )
    vectors = np.asarray(vectors, dtype=np.float64)
    remaining = list(range(n))
    clusters = []
    while remaining:
        if len(remaining) < 2 * k:
            clusters.append(np.array(remaining))
            break
        seed = remaining[int(rng.integers(len(remaining)))] if rng is not None else remaining[0]
        candidates = np.array(remaining)
        distances = np.linalg.norm(vectors[candidates] - vectors[seed], axis=1)
        # The seed is at distance 0 and comes first; stable sort keeps ties in set order.
        chosen = candidates[np.argsort(distances, kind="stable")[:k]]
        clusters.append(chosen)
        taken = set(chosen.tolist())
        remaining = [i for i in remaining if i not in taken]
    return clusters


@dataclass
class AlignedSet:
    """k-Same's result in the canonical frame.

    ``faces`` holds ``(image index, box, matrix to the canonical frame)`` per face, in set
    order; ``aligned`` the aligned originals and ``deidentified`` the cluster averages, both
    float32 ``(n, size, size, 3)``; ``clusters`` the face indices of each cluster.
    """

    faces: list
    aligned: np.ndarray
    deidentified: np.ndarray
    clusters: list


class KSame(Method):
    """k-Same-Pixel: every face becomes the average of at least k aligned faces of the set.

    Parameters
    ----------
    size
        Side of the canonical frame, in pixels, where faces are compared and averaged.
    feather
        Width of the blend ramp inside each box, as a share of its shorter side. Kept thin
        because the ramp keeps some original pixels: on 88 LFW faces (k=3) a 12 % ramp let
        dlib's recognizer reach rank-1 0.36 against the originals, a 5 % ramp 0.26.
    """

    name = "ksame"
    k_meaning = "faces averaged together: every replacement face is the average of at least k faces"
    k_range = (2, None)
    neutral_k = None
    stronger = "higher"
    # Each face is averaged with its nearest neighbours in the set, so the set is one job.
    needs_set = True

    def __init__(self, *, size: int = 80, feather: float = 0.05):
        if size < 16:
            raise MethodError(f"ksame: size must be at least 16, got {size}")
        self.size = int(size)
        self.feather = float(feather)

    def anonymize(
        self,
        image: np.ndarray,
        boxes: Sequence[Box],
        *,
        k: int | None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """De-identify one image, its faces forming the set.

        k-Same needs a set: this works only for a picture with at least ``k`` faces; for
        single-face pictures pass a set of images to :meth:`anonymize_set`.
        """
        return self.anonymize_set([image], [boxes], k=k, rng=rng)[0]

    def anonymize_set(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[Sequence[Box]],
        *,
        k: int | None,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        """De-identify every face of every image together; each face is one set member."""
        result = self.deidentify_aligned(images, boxes, k=k, rng=rng)
        outputs = [np.array(image, dtype=np.uint8, copy=True) for image in images]
        for (index, box, matrix), average in zip(result.faces, result.deidentified, strict=True):
            self._paste(outputs[index], average, box, matrix)
        return outputs

    def deidentify_aligned(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[Sequence[Box]],
        *,
        k: int | None,
        rng: np.random.Generator,
    ) -> AlignedSet:
        """Run k-Same in the canonical frame, without pasting back: the paper's setting.

        Raises
        ------
        MethodError
            When the set holds fewer than ``k`` faces.
        """
        k = self.check_k(k)
        if len(images) != len(boxes):
            raise MethodError(f"ksame: {len(images)} images but {len(boxes)} box lists")
        faces, aligned = [], []
        for index, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            for raw_box in image_boxes:
                box = clip_box(raw_box, image.shape)
                if box is None:
                    continue
                keypoints, _ = face_keypoints(image, box)
                face, matrix = align_canonical(image, keypoints[:5], size=self.size)
                faces.append((index, box, matrix))
                aligned.append(face.astype(np.float32))
        empty = np.zeros((0, self.size, self.size, 3), np.float32)
        if not faces:
            return AlignedSet(faces=[], aligned=empty, deidentified=empty, clusters=[])
        if len(faces) < k:
            raise MethodError(
                f"the set holds {len(faces)} face(s) in {len(images)} image(s), fewer "
                f"than k={k}; k-Same averages groups of at least k faces, so pass at least k "
                "faces (a folder of images is one set) or lower k"
            )
        aligned_stack = np.stack(aligned)
        ellipse = _face_ellipse(self.size)
        vectors = aligned_stack[:, ellipse].reshape(len(faces), -1)
        clusters = k_same_clusters(vectors, k, rng=rng)
        deidentified = np.empty_like(aligned_stack)
        for cluster in clusters:
            deidentified[cluster] = aligned_stack[cluster].mean(axis=0)
        return AlignedSet(
            faces=faces, aligned=aligned_stack, deidentified=deidentified, clusters=clusters
        )

    def _paste(self, out: np.ndarray, average: np.ndarray, box: Box, matrix) -> None:
        """Warp the canonical ``average`` back into ``box`` of ``out``, blending inside it."""
        _, _, w, h = box
        alpha = feather_mask(h, w, border=self.feather)
        paste_warped(out, average, matrix, box, alpha=alpha, interpolation=cv2.INTER_LINEAR)
