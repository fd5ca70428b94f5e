"""Hash banks through the real broker: a banked image (and its JPEG q75 and 10% crop copies) named by an
`image.generated` event on `images` gets a blocking `image.verdict` from the running output gate, with the bank id.

The output-gate process matches the banks in `var/banks` (`HallmarkConfig.banks_dir`); this test adds a bank of its
own there (a unique id, removed afterwards) and the running gate picks it up without a restart.
"""
from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provenance.store import BlobStore
from safety.banks import BankConfig, HashBanks, image_signals
from schemas import ImageGenerated, RequestSubmitted, producer_for
from schemas.events import (
    GenerationSpec,
    ImageGeneratedPayload,
    ImageRef,
    RequestSubmittedPayload,
)


def _unique_image(seed: int) -> Image.Image:
    """A structured image nobody else's test makes: 16×16 random colour blocks blurred up to 256×256.

    Not 8×8: so smooth an image has too little detail for PDQ (a 10% crop plus JPEG q75 moved it by more than 31 bits
    for 30% of seeds, from its own crop view too); at 16×16 the same edits move it by at most 4 bits over 150 seeds.
    """
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return small.resize((256, 256), Image.BICUBIC)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def bank(spine):
    """A bank in the stack's bank directory (`HallmarkConfig.banks_dir`) holding one unique image; removed after."""
    directory = spine.settings.banks_dir
    bank_id = f"test-{uuid.uuid4().hex[:12]}"
    image = _unique_image(int(uuid.uuid4().int % 2**32))
    banks = HashBanks(BankConfig(Path(directory)))
    banks.add(bank_id, "csam", image_signals(np.asarray(image), "broker-test.png"))
    try:
        yield bank_id, image
    finally:
        (banks.config.directory / f"{bank_id}.json").unlink(missing_ok=True)


def _generated(spine, data: bytes, width: int, height: int):
    sha = BlobStore(spine.settings.blob_dir).put(data)
    first = RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=f"bank-{uuid.uuid4().hex}",
                             tenant_id="dev", producer=producer_for("test"),
                             payload=RequestSubmittedPayload(spec=GenerationSpec(prompt="a calm blue lake", seed=1)))
    ref = ImageRef(sha256=sha, index=0, width=width, height=height, seed=1)
    return first.follow(ImageGenerated, ImageGeneratedPayload(spec=first.payload.spec, policy_version="2.0.0",
                                                              model_id="shapes-ldm", images=[ref], generation_ms=1.0),
                        producer_for("generator"))


def test_a_banked_image_and_its_edited_copies_are_blocked_at_the_output_gate_with_the_bank_id(spine, bank):
    bank_id, image = bank
    w, h = image.size
    crop = image.crop((round(w * .05), round(h * .05), round(w * .95), round(h * .95)))
    variants = {
        "original": (_bytes(image, "PNG"), image.size),
        "jpeg-q75": (_bytes(image, "JPEG", quality=75), image.size),
        "crop10-jpeg-q75": (_bytes(crop, "JPEG", quality=75), crop.size),
    }
    events = {name: _generated(spine, data, *size) for name, (data, size) in variants.items()}
    for event in events.values():
        spine.produce_event(event)
    for name, event in events.items():
        (verdict_event,) = spine.wait_for("image-verdicts", lambda e, rid=event.request_id: e.request_id == rid,
                                          timeout=180, what=f"the image verdict for the {name} copy")
        v = verdict_event.payload.verdict
        assert v.decision.value == "block", (name, v)
        assert v.stage == "hashbank" and "hash_bank" in v.categories and "csam" in v.categories, (name, v)
        assert any(r.startswith(f"bank={bank_id} version=1") for r in v.reasons), (name, v)
    blocked = spine.wait_for("outcomes", lambda e: e.request_id == events["original"].request_id, timeout=120,
                             what="the rejected outcome")
    assert blocked
