"""Image inputs end to end: upload over HTTP, submit by content address, screened before generation, published."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.test_spine_flow import SAFE, assert_published_png

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), color).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_uploaded_init_image_is_screened_and_an_img2img_request_is_published(spine):
    with spine.http() as http:
        upload = http.post("/v1/uploads", files={"file": ("start.png", png("white"))})
        assert upload.status_code == 201, upload.text
        sha = upload.json()["sha256"]
        foreign = http.post("/v1/requests", json={"prompt": SAFE, "init_image": "ab" * 32, "steps": 4})
        assert foreign.status_code == 422 and "uploads" in foreign.json()["reason"]  # not one of this tenant's
        accepted = http.post("/v1/requests", json={"prompt": SAFE, "init_image": sha, "strength": 0.6, "steps": 4,
                                                   "seed": 2})
        assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    assert_published_png(spine, spine.outcome(request_id, timeout=300))
    (verdict,) = spine.events("prompt-verdicts", request_id)
    assert verdict.payload.input_verdict is not None  # the init image went through the image checks first
    assert verdict.payload.spec.init_image == sha and verdict.payload.spec.sealed
