"""One contract case per registered stage: how to build it with in-memory fakes (no broker) and a valid input."""
from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from provenance.store import BlobStore
from review.events import decision_event
from review.tasks import review_task
from safety.policy import ReviewPolicy
from safety.verdict import Decision as SafetyDecision, Verdict
from schemas import (Event, ImageGenerated, ImageVerdict, JobCreated, PromptVerdict, RequestSubmitted,
                     producer_for)
from schemas.events import (Decision, GateResult, GenerationSpec, ImageGeneratedPayload, ImageRef,
                            ImageVerdictPayload, JobCreatedPayload, PromptVerdictPayload, RequestSubmittedPayload)
from streams.base import MemoryLog

SPEC = GenerationSpec(prompt="a red circle to the left of a blue square", seed=7)
ALLOW = GateResult(decision=Decision.ALLOW, stage="lexical", policy_id="p", policy_version="1")


class FakeGate:
    """A gate that allows everything, or raises (to check that a gate error fails closed)."""

    def __init__(self, raises: bool = False):
        self.raises = raises

    def screen(self, items, region: str = "default") -> list[Verdict]:
        if self.raises:
            raise RuntimeError("the model fell over")
        return [Verdict(SafetyDecision.ALLOW, "fake", "p", "1") for _ in items]


@dataclass(frozen=True)
class FakePublished:
    sha256: str
    watermark_payload: str = "00"
    manifest_label: str = "urn:fake"
    width: int = 256
    height: int = 256
    fingerprints: tuple = (("pdq", "0" * 64),)


class FakePublisher:
    """Stores the image as it is (no watermark, no manifest): enough for the stage's contract."""

    def __init__(self, blobs: BlobStore):
        self.blobs = blobs

    def publish(self, image: bytes, asset_id: str, model_id: str, policy_version: str) -> FakePublished:
        return FakePublished(self.blobs.put(image))


def png(color: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), color).save(buffer, "PNG")
    return buffer.getvalue()


def first_event() -> Event:
    return RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=str(uuid.uuid4()),
                            tenant_id="dev", producer=producer_for("test"), payload=RequestSubmittedPayload(spec=SPEC))


def generated(blobs: BlobStore, log: MemoryLog) -> Event:
    sha = blobs.put(png())
    return first_event().follow(ImageGenerated, ImageGeneratedPayload(
        spec=SPEC, policy_version="1", model_id="m", generation_ms=1.0, images=[ImageRef(sha256=sha, index=0, width=256, height=256,
                                                                      seed=7)]), producer_for("test"))


def allowed(blobs: BlobStore, log: MemoryLog) -> Event:
    """An allow verdict for images the generation stage made for that request (on `images`, as the publisher
    checks)."""
    made = generated(blobs, log)
    log.append("images", made.to_bytes(), 0, made.key())
    p = made.payload
    return made.follow(ImageVerdict, ImageVerdictPayload(spec=SPEC, model_id=p.model_id, images=p.images,
                                                         verdict=ALLOW), producer_for("test"))


def approval(blobs: BlobStore, log: MemoryLog) -> Event:
    """A reviewer's approval of a prompt task the router wrote (on `review-tasks`, as the review stage checks)."""
    task = review_task(first_event(), "prompt", ALLOW, producer_for("test"), ReviewPolicy())
    log.append("review-tasks", task.to_bytes(), 0, task.key())
    return decision_event(task, "approve", "ann", "fine")


@dataclass(frozen=True)
class StageCase:
    """`deps(blobs, failing)` gives the fakes a stage is built with; `event(blobs, log)` one valid input (writing
    what it presupposes into the stage's log)."""

    event: Callable[[BlobStore, MemoryLog], Event]
    deps: Callable[[BlobStore, bool], dict[str, Any]] = lambda blobs, failing: {}
    emits: tuple[str, ...] = ()  # event types a valid input yields
    gate: bool = False  # a gate stage: an exception inside its gate must become a review verdict
    replay_dedupes: bool = False  # a second delivery of one offset yields nothing (rather than the same events)
    notes: list[str] = field(default_factory=list)


def gates(blobs: BlobStore, failing: bool) -> dict[str, Any]:
    return {"gate": FakeGate(raises=failing)}


CASES: dict[str, StageCase] = {
    "prompt-gate": StageCase(lambda blobs, log: first_event(), gates, ("prompt.verdict",), gate=True),
    "router": StageCase(lambda blobs, log: first_event().follow(PromptVerdict, PromptVerdictPayload(spec=SPEC,
                                                                                                    verdict=ALLOW),
                                                                producer_for("test")), emits=("job.created",)),
    "generation": StageCase(lambda blobs, log: first_event().follow(JobCreated, JobCreatedPayload(
        spec=SPEC.model_copy(update={"steps": 2}), policy_version="1"), producer_for("test")),
        emits=("image.generated",)),
    "output-gate": StageCase(generated, gates, ("image.verdict",), gate=True),
    "review": StageCase(approval, emits=("job.created",)),
    "publisher": StageCase(allowed, lambda blobs, failing: {"publisher": FakePublisher(blobs)},
                           ("asset.published", "outcome"), replay_dedupes=True),
    "audit": StageCase(lambda blobs, log: first_event(), emits=("audit.record",), replay_dedupes=True),
    "projections": StageCase(lambda blobs, log: first_event()),
    "review-queue": StageCase(approval),
}
