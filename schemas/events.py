"""One pydantic model per event type. Payloads are closed (extra="forbid"); evolve them additively."""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from enum import Enum
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.envelope import SCHEMA_VERSION, Event, PoisonMessage

MAX_PROMPT_CHARS = 2000
SamplerName = Literal["ddim", "euler", "dpmpp_2m"]  # generator.runtime.samplers.SAMPLERS implements each (a test checks)
SAMPLERS: tuple[str, ...] = get_args(SamplerName)


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decision(str, Enum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


class OutcomeStatus(str, Enum):
    PUBLISHED = "published"
    REJECTED = "rejected"
    FAILED = "failed"


SEALED_ALG = "hpke-base-x25519-hkdf-sha256-aes256gcm"  # RFC 9180


class SealedText(Payload):
    """A prompt sealed to its tenant's public key (HPKE); only stages that need the text open it, in memory."""

    alg: Literal["hpke-base-x25519-hkdf-sha256-aes256gcm"] = SEALED_ALG
    key_id: str = Field(min_length=1, max_length=64)  # which of the tenant's keys
    ct: str = Field(min_length=1, max_length=12_000)  # base64(encapsulated key || AES-256-GCM ciphertext)


class GenerationSpec(Payload):
    """What the requester asked for. `seed` is always concrete once past ingress, so replays repeat. On the bus the
    prompts are sealed (`SealedText`) from the first event on; clear text exists only in a caller's HTTP body."""

    prompt: SealedText | str = Field(union_mode="left_to_right")
    negative_prompt: SealedText | str = Field(default="", union_mode="left_to_right")
    width: int = Field(default=256, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=256, ge=64, le=2048, multiple_of=8)
    steps: int = Field(default=20, ge=1, le=200)
    guidance: float = Field(default=4.0, ge=0.0, le=30.0)  # = generator.DEFAULT_GUIDANCE (a test checks)
    seed: int = Field(default=0, ge=0, lt=2**63)
    n: int = Field(default=1, ge=1, le=8)
    sampler: SamplerName = "dpmpp_2m"
    model: str = Field(default="shapes-ldm", min_length=1, max_length=128)
    region: str = Field(default="default", max_length=32)

    class Lora(Payload):
        """A LoRA adapter from the generator's configured set, by name, at a scale (0 = as if absent)."""

        name: str = Field(min_length=1, max_length=128)
        scale: float = Field(default=1.0, ge=-4.0, le=4.0)

    # img2img / inpainting inputs by content address (sha256 from POST /v1/uploads), never inline in events
    init_image: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    mask: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # white = repaint; needs init_image
    strength: float | None = Field(default=None, ge=0.0, le=1.0)  # None: 0.8 img2img, 1.0 inpainting
    loras: list[Lora] = Field(default_factory=list, max_length=4)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: SealedText | str) -> SealedText | str:
        if isinstance(value, str) and not value.strip():
            raise ValueError("prompt is blank")
        return value

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _bounded(cls, value: SealedText | str) -> SealedText | str:
        if isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
            raise ValueError(f"at most {MAX_PROMPT_CHARS} characters")
        return value

    @property
    def sealed(self) -> bool:
        """Whether no prompt field is in clear."""
        return isinstance(self.prompt, SealedText) and not (isinstance(self.negative_prompt, str)
                                                            and self.negative_prompt)

    @field_validator("guidance")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("guidance must be finite")
        return value


class GateResult(Payload):
    """One gate's decision with the reasons a reviewer needs (never the prompt itself)."""

    decision: Decision
    stage: str  # "lexical" | "embedding" | "nsfw" | "faces" | "error" ...
    categories: list[str] = []
    score: float | None = None
    reasons: list[str] = []
    policy_id: str
    policy_version: str


class ImageRef(Payload):
    """A blob in the content-addressed store: `blobs/sha256/<aa>/<rest>.png`."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    index: int = Field(ge=0)
    width: int
    height: int
    seed: int


# ---- payloads per topic -------------------------------------------------------------------------

class RequestSubmittedPayload(Payload):
    spec: GenerationSpec
    source: Literal["http", "kafka"] = "kafka"
    idempotency_key: str | None = Field(default=None, max_length=200)


class PromptVerdictPayload(Payload):
    spec: GenerationSpec
    verdict: GateResult
    input_verdict: GateResult | None = None  # the image checks of the request's init image and mask, if any


class JobCreatedPayload(Payload):
    spec: GenerationSpec
    policy_version: str
    reviewed: bool = False  # True when a human approved it after a review-band verdict


class ImageGeneratedPayload(Payload):
    spec: GenerationSpec
    policy_version: str
    model_id: str
    images: list[ImageRef]
    generation_ms: float


class ImageVerdictPayload(Payload):
    spec: GenerationSpec
    model_id: str
    images: list[ImageRef]
    verdict: GateResult


class ReviewTaskCreatedPayload(Payload):
    task_id: uuid.UUID
    gate: Literal["prompt", "image"]
    verdict: GateResult
    severity: int = Field(ge=1, le=4)  # 1 = most urgent
    sla_deadline: datetime
    spec: GenerationSpec  # what resumes on approve
    model_id: str | None = None
    images: list[ImageRef] = []


class ReviewDecidedPayload(Payload):
    task_id: uuid.UUID
    gate: Literal["prompt", "image"]
    decision: Literal["approve", "reject", "escalate"]
    reviewer: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=2000)
    spec: GenerationSpec
    model_id: str | None = None
    images: list[ImageRef] = []
    policy_version: str


class ReviewActivityPayload(Payload):
    """Who did what to a review task in the console, and what they were shown (never the prompt itself)."""

    task_id: uuid.UUID
    action: Literal["viewed", "image_revealed", "claimed", "released", "reassigned"]
    reviewer: str = Field(min_length=1, max_length=128)
    shown: list[str] = []  # what the reviewer saw: "prompt", "image:0", "reasons", "history"
    detail: str = Field(default="", max_length=500)


class Fingerprint(Payload):
    """One perceptual fingerprint of a published image: the algorithm's id and its value (hex)."""

    alg: str = Field(min_length=1, max_length=64)
    value: str = Field(min_length=1, max_length=4096)


class AssetPublishedPayload(Payload):
    asset_id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    image_index: int
    model_id: str
    policy_version: str
    watermark_payload: str  # hex
    manifest_label: str | None = None
    width: int
    height: int
    fingerprints: list[Fingerprint] = []  # additive: a new algorithm is one more entry


class OutcomePayload(Payload):
    status: OutcomeStatus
    reason: str = ""
    categories: list[str] = []
    asset_ids: list[str] = []
    images: list[ImageRef] = []


class AuditRecordPayload(Payload):
    """One audited event, redacted: the prompt only as a keyed HMAC and AES-GCM ciphertext."""

    source_topic: str
    source_partition: int
    source_offset: int
    source_event_id: str | None
    source_event_type: str | None
    redacted_event: dict
    prompt_hmac: str | None = None
    prompt_ciphertext: str | None = None  # base64(nonce || ciphertext), for the reviewers' key
    key_id: str | None = None
    prev_hash: str
    hash: str


class AuditCheckpointPayload(Payload):
    """A signed pin of one audit partition: its head record's offset and hash and the record count up to it."""

    topic: str = "audit"
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    count: int = Field(ge=1)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    at: str = Field(min_length=1, max_length=40)  # UTC, ISO 8601, as signed
    key_id: str = Field(min_length=1, max_length=64)
    signature: str = Field(min_length=1, max_length=200)  # base64 Ed25519 over the other fields (canonical JSON)


class DeadLetterPayload(Payload):
    source_topic: str
    source_partition: int
    source_offset: int
    stage: str
    reason: str
    raw_sha256: str
    raw_size: int


# ---- typed events ----------------------------------------------------------------------------------

def _event(name: str, payload_cls: type[Payload]) -> type[Event]:
    cls = type(
        "".join(part.capitalize() for part in name.replace(".", "_").split("_")),
        (Event,),
        {"__annotations__": {"event_type": Literal[name], "payload": payload_cls},  # type: ignore[valid-type]
         "event_type_name": name, "__module__": __name__},
    )
    return cls


RequestSubmitted = _event("request.submitted", RequestSubmittedPayload)
PromptVerdict = _event("prompt.verdict", PromptVerdictPayload)
JobCreated = _event("job.created", JobCreatedPayload)
ImageGenerated = _event("image.generated", ImageGeneratedPayload)
ImageVerdict = _event("image.verdict", ImageVerdictPayload)
ReviewTaskCreated = _event("review.task_created", ReviewTaskCreatedPayload)
ReviewDecided = _event("review.decided", ReviewDecidedPayload)
ReviewActivity = _event("review.activity", ReviewActivityPayload)
AssetPublished = _event("asset.published", AssetPublishedPayload)
Outcome = _event("outcome", OutcomePayload)
AuditRecord = _event("audit.record", AuditRecordPayload)
AuditCheckpoint = _event("audit.checkpoint", AuditCheckpointPayload)
DeadLetter = _event("dlq.message", DeadLetterPayload)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type_name: cls
    for cls in (RequestSubmitted, PromptVerdict, JobCreated, ImageGenerated, ImageVerdict, ReviewTaskCreated,
                ReviewDecided, ReviewActivity, AssetPublished, Outcome, AuditRecord, AuditCheckpoint, DeadLetter)
}


def parse_event(raw: bytes | str | dict, expected: tuple[type[Event], ...] | None = None) -> Event:
    """Parse one message into its typed event or raise PoisonMessage naming why: a stable phrase with schema
    field paths and error types, never a value from the message (it may hold a prompt)."""
    if isinstance(raw, dict):
        data = raw
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PoisonMessage(f"not JSON: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise PoisonMessage(f"not a JSON object but {type(data).__name__}")
    version = str(data.get("schema_version", ""))
    if version.split(".", 1)[0] != SCHEMA_VERSION.split(".", 1)[0]:
        raise PoisonMessage(f"unknown schema major version (this consumer speaks {SCHEMA_VERSION})")
    event_type = data.get("event_type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise PoisonMessage("unknown event_type")
    if expected is not None and cls not in expected:
        raise PoisonMessage(f"event_type {event_type!r} does not belong on this topic")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{_path(e)}: {e['type']}" for e in exc.errors()[:5])
        raise PoisonMessage(f"schema-invalid {event_type}: {errors}") from None


def _path(error: dict) -> str:
    """Where a validation error is, by schema field names only (an unknown key's name is the sender's text)."""
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden" and loc:
        loc[-1] = "<unknown field>"
    return ".".join(loc) or "<event>"
