"""Input images (img2img init image, inpainting mask) go through the image checks before any generation, as their
own gate verdict on the prompt verdict, and the router acts on the stricter of the two."""
from __future__ import annotations

import io

from PIL import Image

from hallmark.config import HallmarkConfig
from provenance.store import BlobStore
from safety.verdict import Decision as SafetyDecision, Verdict
from streams.base import MemoryLog, Source
from streams.stages.prompt_gate import PromptGateStage
from streams.stages.router import RouterStage
from streams.uploads import UploadStore
from tests.stage_cases import FakeGate, Fixture
from tests.test_stage_contract import run as run_stage


class BlockingImageGate:
    """Blocks every image it is shown, as a hash-bank match would."""

    def __init__(self):
        self.seen = 0

    def screen(self, images, region: str = "default") -> list[Verdict]:
        self.seen += len(images)
        return [Verdict(SafetyDecision.BLOCK, "hashbank", "p", "1", ("hash_bank", "csam"), 1.0, ("bank=b1",))
                for _ in images]


def run(stage, event, topic: str) -> list:
    return run_stage(stage, [Source(topic, 0, 0, event.key(), event.to_bytes())])


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_an_input_image_is_screened_before_generation_and_its_verdict_decides(tmp_path):
    config = HallmarkConfig(home=tmp_path / "home")
    fx = Fixture(config, BlobStore(config.blob_dir), MemoryLog())
    sha = UploadStore(fx.blobs).put("dev", png())
    first = fx.request()
    event = first.model_copy(update={"payload": first.payload.model_copy(update={
        "spec": fx.spec(first.request_id, init_image=sha)})})
    images = BlockingImageGate()
    ((topic, verdict),) = run(PromptGateStage(config, MemoryLog(), gate=FakeGate(), image_gate=images), event,
                              "requests.dev")
    assert topic == "prompt-verdicts" and images.seen == 1
    assert verdict.payload.verdict.decision.value == "allow"  # the prompt itself is fine
    assert verdict.payload.input_verdict.decision.value == "block" and "bank=b1" in verdict.payload.input_verdict.reasons
    ((topic, rejected),) = run(RouterStage(config, MemoryLog()), verdict, "prompt-verdicts")
    assert topic == "outcomes" and rejected.payload.status.value == "rejected"


def test_an_input_image_that_is_not_among_the_tenants_uploads_fails_the_request(tmp_path):
    config = HallmarkConfig(home=tmp_path / "home")
    fx = Fixture(config, BlobStore(config.blob_dir), MemoryLog())
    other = UploadStore(fx.blobs).put("someone-else", png())  # another tenant's upload: not this one's to use
    first = fx.request()
    event = first.model_copy(update={"payload": first.payload.model_copy(update={
        "spec": fx.spec(first.request_id, init_image=other)})})
    out = run(PromptGateStage(config, MemoryLog(), gate=FakeGate(), image_gate=BlockingImageGate()), event,
              "requests.dev")
    assert [(t, e.payload.reason) for t, e in out] == [("outcomes", "input_image_missing")]
