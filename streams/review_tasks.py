"""Review task identity, severity and deadline: deterministic, so a replay produces the same task."""
from __future__ import annotations

import uuid
from datetime import timedelta

from schemas import Event, ReviewTaskCreated
from schemas.events import GateResult, ImageRef, ReviewTaskCreatedPayload

TASK_NAMESPACE = uuid.UUID("6d1f0c52-5b8e-4f57-9d0e-6a1c2b7e9f30")
SLA = {1: timedelta(hours=1), 2: timedelta(hours=4), 3: timedelta(hours=24), 4: timedelta(hours=72)}
URGENT = ("minor", "csam", "sexual_minor", "self_harm", "protected_person")


def task_id(request_id: str, gate: str) -> uuid.UUID:
    return uuid.uuid5(TASK_NAMESPACE, f"{request_id}/{gate}")


def severity(verdict: GateResult) -> int:
    """1 = most urgent: zero-tolerance categories; 2: a gate failed closed; 3: any other review band hit."""
    if any(any(u in c for u in URGENT) for c in verdict.categories):
        return 1
    return 2 if verdict.stage == "error" else 3


def review_task(event: Event, gate: str, verdict: GateResult, producer, model_id: str | None = None,
                images: list[ImageRef] | None = None) -> Event:
    level = severity(verdict)
    payload = ReviewTaskCreatedPayload(task_id=task_id(event.request_id, gate), gate=gate, verdict=verdict,
                                       severity=level, sla_deadline=event.occurred_at + SLA[level],
                                       spec=event.payload.spec, model_id=model_id, images=images or [])
    return event.follow(ReviewTaskCreated, payload, producer)
