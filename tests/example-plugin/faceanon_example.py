"""An example faceanon method from another package: posterize the face."""

import numpy as np

from faceanon.detect import clip_box
from faceanon.methods import Method


class Posterize(Method):
    """Quantize each face box to ``k`` levels per colour channel (fewer levels hide more)."""

    name = "posterize"
    k_meaning = "levels per colour channel inside the face box (256 = unchanged)"
    k_range = (2, 256)
    neutral_k = 256
    stronger = "lower"
    needs_set = False
    benchmark_ks = [2, 4]

    def anonymize(self, image, boxes, *, k, rng):
        k = self.check_k(k)
        out = np.array(image, dtype=np.uint8, copy=True)
        step = 256 / k
        for box in filter(None, (clip_box(b, out.shape) for b in boxes)):
            x, y, w, h = box
            levels = np.floor(out[y : y + h, x : x + w] / step)
            out[y : y + h, x : x + w] = (levels * step + step / 2).astype(np.uint8)
        return out
