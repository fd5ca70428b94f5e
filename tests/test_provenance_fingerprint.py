"""PDQ fingerprints and the FAISS binary index (provenance/fingerprint.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from provenance.fingerprint import PDQ_MATCH_DISTANCE, Pdq, PdqIndex, distance, pdq, pdq_dihedral


def photo(name: str, size: int = 256) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(im.size)
    return np.asarray(im.crop((0, 0, side, side)).resize((size, size), Image.LANCZOS))


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_pdq_is_256_bits_with_quality_and_stable_under_jpeg():
    a = pdq(photo("astronaut"))
    assert isinstance(a, Pdq) and len(a.value) == 64 and int(a.value, 16) >= 0 and 0 <= a.quality <= 100
    assert a == pdq(photo("astronaut"))
    assert distance(a.value, pdq(jpeg(photo("astronaut"), 50)).value) <= PDQ_MATCH_DISTANCE
    assert distance(a.value, pdq(photo("coffee")).value) > 2 * PDQ_MATCH_DISTANCE


def test_dihedral_variants_start_with_the_original_and_cover_rotations_and_flips():
    rgb = photo("chelsea")
    variants = [v.value for v in pdq_dihedral(rgb)]
    assert len(variants) == 8 and variants[0] == pdq(rgb).value
    for turned in (np.rot90(rgb), np.rot90(rgb, 2), rgb[:, ::-1], rgb[::-1]):
        h = pdq(np.ascontiguousarray(turned)).value
        assert distance(variants[0], h) > 64  # the plain hash does not see rotations…
        assert min(distance(v, h) for v in variants) <= PDQ_MATCH_DISTANCE  # …one of the variants does


def test_index_search_returns_ids_nearest_first_within_the_distance():
    index = PdqIndex()
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    index.add(names, [pdq(photo(n)).value for n in names])
    index.add(["astronaut"], [pdq(photo("astronaut")).value])  # re-adding the same value changes nothing
    assert len(index) == 4
    query = pdq(jpeg(photo("rocket"), 60)).value
    [hits] = index.search([query], k=5)
    assert hits[0][0] == "rocket" and hits[0][1] <= PDQ_MATCH_DISTANCE and len(hits) == 1
    [everything] = index.search([query], k=10, max_distance=256)
    assert [d for _, d in everything] == sorted(d for _, d in everything) and len(everything) == 4
    flipped = [v.value for v in pdq_dihedral(np.ascontiguousarray(photo("coffee")[:, ::-1]))]
    assert index.nearest(flipped)[0][0] == "coffee"


def test_index_replaces_a_changed_value_and_rejects_bad_hex():
    index = PdqIndex()
    a, b = pdq(photo("astronaut")).value, pdq(photo("coffee")).value
    index.add(["x"], [a])
    index.add(["x"], [b])
    assert len(index) == 1
    assert index.search([a]) == [[]] and index.search([b]) == [[("x", 0)]]
    assert PdqIndex().search([a]) == [[]]
    with pytest.raises(ValueError):
        index.add(["y"], ["abc"])
