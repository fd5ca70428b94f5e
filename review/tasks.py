"""Review task identity, severity and deadline: deterministic, so a replay produces the same task."""
from __future__ import annotations

import uuid

from safety.policy import ReviewPolicy
from schemas import Event, Producer, ReviewTaskCreated
from schemas.events import GateResult, ImageRef, ReviewTaskCreatedPayload

TASK_NAMESPACE = uuid.UUID("6d1f0c52-5b8e-4f57-9d0e-6a1c2b7e9f30")
GATE_ERROR_STAGE = "error"  # the verdict stage of a gate that failed closed


def task_id(request_id: str, gate: str) -> uuid.UUID:
    return uuid.uuid5(TASK_NAMESPACE, f"{request_id}/{gate}")


def severity(verdict: GateResult, policy: ReviewPolicy) -> int:
    """1 = most urgent (the policy's urgent categories), then a gate that failed closed, then any other band hit."""
    return policy.severity(verdict.categories, failed_closed=verdict.stage == GATE_ERROR_STAGE)


def review_task(event: Event, gate: str, verdict: GateResult, producer: Producer, policy: ReviewPolicy,
                model_id: str | None = None, images: list[ImageRef] | None = None) -> Event:
    level = severity(verdict, policy)
    payload = ReviewTaskCreatedPayload(task_id=task_id(event.request_id, gate), gate=gate, verdict=verdict,
                                       severity=level, sla_deadline=event.occurred_at + policy.sla(level),
                                       spec=event.payload.spec, model_id=model_id, images=images or [])
    return event.follow(ReviewTaskCreated, payload, producer)
