"""One contract case per registered stage: how to build it with in-memory fakes (no broker) and a valid input."""
from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image

from hallmark.config import HallmarkConfig
from hallmark.sealing import seal_spec
from hallmark.tenants import open_registry, tenant_keys
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


@dataclass(frozen=True)
class Fixture:
    """What a case builds its input with: the stage's config (tenant keys under its home), blobs and log."""

    config: HallmarkConfig
    blobs: BlobStore
    log: MemoryLog

    def spec(self, request_id: str, **changes) -> GenerationSpec:
        """SPEC with its prompt sealed to the `dev` tenant's key, as everything on the bus carries it."""
        open_registry(self.config)
        key_id, public = tenant_keys(self.config).public("dev")
        return GenerationSpec.model_validate(seal_spec(SPEC.model_copy(update=changes).model_dump(), public, key_id,
                                                       "dev", request_id))

    def request(self) -> Event:
        request_id = str(uuid.uuid4())
        return RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=request_id, tenant_id="dev",
                                producer=producer_for("test"),
                                payload=RequestSubmittedPayload(spec=self.spec(request_id)))


def generated(fx: Fixture) -> Event:
    sha, first = fx.blobs.put(png()), fx.request()
    return first.follow(ImageGenerated, ImageGeneratedPayload(
        spec=first.payload.spec, policy_version="1", model_id="m", generation_ms=1.0,
        images=[ImageRef(sha256=sha, index=0, width=256, height=256, seed=7)]), producer_for("test"))


def allowed(fx: Fixture) -> Event:
    """An allow verdict for images the generation stage made for that request (on `images`, as the publisher
    checks)."""
    made = generated(fx)
    fx.log.append("images", made.to_bytes(), 0, made.key())
    p = made.payload
    return made.follow(ImageVerdict, ImageVerdictPayload(spec=p.spec, model_id=p.model_id, images=p.images,
                                                         verdict=ALLOW), producer_for("test"))


def approval(fx: Fixture) -> Event:
    """A reviewer's approval of a prompt task the router wrote (on `review-tasks`, as the review stage checks)."""
    first = fx.request()
    task = review_task(first, "prompt", ALLOW, producer_for("test"), ReviewPolicy())
    fx.log.append("review-tasks", task.to_bytes(), 0, task.key())
    return decision_event(task, "approve", "ann", "fine")


def screened(fx: Fixture) -> Event:
    first = fx.request()
    return first.follow(PromptVerdict, PromptVerdictPayload(spec=first.payload.spec, verdict=ALLOW),
                        producer_for("test"))


def job(fx: Fixture) -> Event:
    first = fx.request()
    return first.follow(JobCreated, JobCreatedPayload(spec=fx.spec(first.request_id, steps=2), policy_version="1"),
                        producer_for("test"))


@dataclass(frozen=True)
class StageCase:
    """`deps(blobs, failing)` gives the fakes a stage is built with; `event(fx)` one valid input (writing what it
    presupposes into the stage's log)."""

    event: Callable[[Fixture], Event]
    deps: Callable[[BlobStore, bool], dict[str, Any]] = lambda blobs, failing: {}
    emits: tuple[str, ...] = ()  # event types a valid input yields
    gate: bool = False  # a gate stage: an exception inside its gate must become a review verdict
    replay_dedupes: bool = False  # a second delivery of one offset yields nothing (rather than the same events)


def gates(blobs: BlobStore, failing: bool) -> dict[str, Any]:
    return {"gate": FakeGate(raises=failing)}


CASES: dict[str, StageCase] = {
    "prompt-gate": StageCase(Fixture.request, gates, ("prompt.verdict",), gate=True),
    "router": StageCase(screened, emits=("job.created",)),
    "generation": StageCase(job, emits=("image.generated",)),
    "output-gate": StageCase(generated, gates, ("image.verdict",), gate=True),
    "review": StageCase(approval, emits=("job.created",)),
    "publisher": StageCase(allowed, lambda blobs, failing: {"publisher": FakePublisher(blobs)},
                           ("asset.published", "outcome"), replay_dedupes=True),
    "audit": StageCase(Fixture.request, emits=("audit.record",), replay_dedupes=True),
    "projections": StageCase(Fixture.request),
    "review-queue": StageCase(approval),
}
