"""Image gate: real NSFW models on benign images, real face detection and gallery matching, bad images, fail closed."""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from skimage import data

from safety.faces import FaceEmbedder, Gallery
from safety.gates import ImageGateConfig, load_image_gate
from safety.image_gate import ImageChecksConfig, ImageFindings, LayeredImageGate, decide
from safety.inputs import ImageInputError, load_image
from safety.nsfw import NsfwScores
from safety.policy import Limits, load_pack
from safety.verdict import Decision

PACK = load_pack()
CHECKS = ImageChecksConfig(threads=1)


def _rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])


def _reencoded(img: Image.Image, size: int, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.resize((size, size), Image.BICUBIC).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def gate(astronaut, tmp_path_factory) -> LayeredImageGate:
    """A gate whose protected gallery holds the astronaut's face, enrolled from the original photo."""
    face = min(FaceEmbedder().faces(astronaut), key=lambda f: f.box[1])  # the portrait's face: top of the frame
    path = tmp_path_factory.mktemp("gallery") / "protected.npz"
    gallery = Gallery()
    gallery.add("eileen-collins", face.embedding)
    gallery.save(path)
    g = LayeredImageGate(PACK, replace(CHECKS, gallery=str(path)))
    g.load()
    return g


@pytest.mark.parametrize("detector", ["nudenet", "hog"])
def test_real_face_photo_is_detected(gate, astronaut, detector):
    faces = gate.faces(astronaut) if detector == "nudenet" else FaceEmbedder().faces(astronaut)
    assert faces, "no face found in the astronaut photo"
    left, top, right, bottom = min(faces, key=lambda f: f.box[1]).box
    assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200  # where her face is


@pytest.mark.parametrize("size, quality", [(256, 70), (300, 45)])
def test_enrolled_face_is_matched_in_a_resized_reencoded_copy(gate, astronaut, size, quality):
    (v,) = gate.screen([_reencoded(astronaut, size, quality)])
    assert v.decision == Decision.BLOCK and v.stage == "faces"
    assert v.categories == ("protected_person",)
    assert "closest=eileen-collins" in v.reasons[1]


def test_other_faces_do_not_match_the_gallery(gate):
    ip = PACK.image
    faces = data.lfw_subset()[:100:3]  # the first 100 of scikit-image's LFW subset are faces of other people
    for a in faces:
        img = _rgb((a * 255).astype(np.uint8)).resize((150, 150), Image.BICUBIC)
        match = gate.gallery.best_match(gate._faces.embed_whole(img).embedding)
        assert match.distance > ip.face_review


@pytest.fixture(scope="module")
def benign_images() -> list[Image.Image]:
    from generator.shapes.dataset import make_example
    from generator.shapes.render import upscale

    rng = np.random.default_rng(7)
    shapes = [Image.fromarray(upscale(make_example(rng)[0], 256)) for _ in range(6)]
    photos = [_rgb(getattr(data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")]
    return shapes + photos


def test_benign_images_score_below_the_review_band(gate, benign_images):
    scores = gate._nsfw.scores(benign_images)
    for s in scores:
        assert s.sexual < PACK.image.sexual_review, s
    assert all(v.decision == Decision.ALLOW for v in gate.screen(benign_images[:6]))  # shapes: no faces


def test_decision_bands_and_zero_tolerance():
    rp = PACK.for_region("default")
    ip = rp.image

    def run(sexual: float, faces: int = 0, match=None):
        return decide(rp, ImageFindings(NsfwScores(sexual, 0.0, ()), faces, match))

    assert run(ip.sexual_review - 0.01).decision == Decision.ALLOW
    assert run(ip.sexual_review + 0.01).decision == Decision.REVIEW
    assert run(ip.sexual_block + 0.01).decision == Decision.BLOCK
    zero = run(ip.sexual_review + 0.01, faces=1)  # a face in sexual content: no review band
    assert zero.decision == Decision.BLOCK and "ncii" in zero.categories
    assert PACK.for_region("strict").image.sexual_review < ip.sexual_review


@pytest.mark.parametrize("make, reason", [
    (lambda png: png[: len(png) // 3], "truncated"),
    (lambda png: b"definitely not an image", "not a readable image"),
    (lambda png: b"", "empty"),
])
def test_broken_images_are_refused_with_a_reason(astronaut, make, reason):
    buf = io.BytesIO()
    astronaut.save(buf, "PNG")
    with pytest.raises(ImageInputError, match=reason):
        load_image(make(buf.getvalue()), Limits())


def test_decompression_bomb_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (6_000, 6_000)).save(buf, "PNG")  # 36 Mpx in a few KB
    assert len(buf.getvalue()) < 50_000
    with pytest.raises(ImageInputError, match="bomb|too large"):
        load_image(buf.getvalue(), Limits(max_image_pixels=10_000_000))


def test_gate_turns_bad_images_into_review_verdicts(gate):
    v_bad, v_small = gate.screen([b"GIF89a-garbage", Image.new("RGB", (4, 4))])
    assert v_bad.decision == Decision.REVIEW and v_bad.stage == "input"
    assert v_small.decision == Decision.REVIEW and "too small" in v_small.reasons[0]


def test_image_gate_fails_closed_when_a_model_cannot_load(tmp_path):
    bad_gallery = tmp_path / "gallery.npz"
    bad_gallery.write_bytes(b"not an npz")
    g = load_image_gate(config=ImageGateConfig(checks=ImageChecksConfig(threads=1, gallery=str(bad_gallery))))
    (v,) = g.screen([Image.new("RGB", (64, 64))])
    assert v.decision == Decision.REVIEW and v.stage == "error" and "loading" in v.reasons[0]
