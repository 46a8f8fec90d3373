"""The one rule for where an image is anonymized, faces found or not."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.detect import anonymization_regions, find_regions
from faceanon.imageio import read_image
from faceanon.protocol import OnMissError


@pytest.mark.parametrize("on_miss, boxes, publishable", [
    ("whole", ((0, 0, 40, 30),), True),
    ("skip", (), False),
    ("fail", (), False),
])
def test_an_image_without_a_face_follows_the_miss_policy(on_miss, boxes, publishable):
    flat = np.full((30, 40, 3), 128, np.uint8)
    regions = anonymization_regions(flat, on_miss=on_miss)
    assert regions.boxes == boxes and regions.found is False
    assert regions.publishable is publishable


def test_an_unknown_miss_policy_is_refused():
    flat = np.full((30, 40, 3), 128, np.uint8)
    with pytest.raises(OnMissError, match=r"unknown on_miss 'keep'; use one of whole, skip"):
        anonymization_regions(flat, on_miss="keep")


@pytest.mark.realdata
def test_a_found_face_is_anonymized_whatever_the_miss_policy(lfw):
    image = read_image(lfw.path(lfw.images_of()["Aaron_Sorkin"][0]))
    (box,) = find_regions(image)
    for on_miss in ("whole", "skip", "fail"):
        regions = anonymization_regions(image, on_miss=on_miss, margin=0.0)
        assert regions.found and regions.boxes == (tuple(box),)
