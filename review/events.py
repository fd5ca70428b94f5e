"""What the reviewer console sends: `review.decided` and `review.activity` events (built here, sent by streams)."""
from __future__ import annotations

import uuid

from schemas import Event, ReviewActivity, ReviewDecided, producer_for
from schemas.events import ReviewActivityPayload, ReviewDecidedPayload

PRODUCER = producer_for("review-console")


def decision_event(task: Event, decision: str, reviewer: str, reason: str) -> Event:
    """A decision answering `task` (a `review.task_created`): it carries what resumes the request on approve."""
    p = task.payload
    return task.follow(ReviewDecided, ReviewDecidedPayload(
        task_id=p.task_id, gate=p.gate, decision=decision, reviewer=reviewer, reason=reason, spec=p.spec,
        model_id=p.model_id, images=p.images, policy_version=p.verdict.policy_version), PRODUCER)


def activity_event(request_id: str, tenant_id: str, task_id: str, task_event_id: str, action: str, reviewer: str,
                   shown: list[str] | None = None, detail: str = "") -> Event:
    return ReviewActivity(event_type=ReviewActivity.event_type_name, request_id=request_id, tenant_id=tenant_id,
                          producer=PRODUCER, causation_id=uuid.UUID(task_event_id),
                          payload=ReviewActivityPayload(task_id=uuid.UUID(task_id), action=action, reviewer=reviewer,
                                                        shown=shown or [], detail=detail[:500]))
