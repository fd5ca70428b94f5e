"""Shared helpers of the review tests: a settable clock, task and decision events, a review read-model engine."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Session, select

from review.queue import ReviewProjector, ReviewQueueRow
from review.tasks import task_id
from safety.policy import ReviewPolicy
from schemas import ReviewDecided, ReviewTaskCreated
from schemas.envelope import Producer
from schemas.events import Decision, GateResult, GenerationSpec, ReviewDecidedPayload, ReviewTaskCreatedPayload

P = Producer(service="test", version="1")
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
PASSWORD = "correct horse battery staple"
POLICY = ReviewPolicy()

class Clock:
    """A settable clock handed to the stores (UTC epoch seconds)."""

    def __init__(self, t: float = T0.timestamp()):
        self.t = t

    def __call__(self) -> float:
        return self.t


def task_event(request_id: str, severity: int = 3, categories=("violence",), at: datetime = T0, stage="lexical"):
    verdict = GateResult(decision=Decision.REVIEW, stage=stage, categories=list(categories), score=0.7,
                         reasons=["matched a review-band term"], policy_id="hallmark-default", policy_version="1.0.0")
    payload = ReviewTaskCreatedPayload(task_id=task_id(request_id, "prompt"), gate="prompt", verdict=verdict,
                                       severity=severity, sla_deadline=at + POLICY.sla(severity),
                                       spec=GenerationSpec(prompt="a massacre of green triangles"))
    return ReviewTaskCreated(event_type=ReviewTaskCreated.event_type_name, request_id=request_id, tenant_id="t",
                             producer=P, occurred_at=at, payload=payload)


def decided(task, decision: str, reviewer: str, at: datetime):
    p = task.payload
    payload = ReviewDecidedPayload(task_id=p.task_id, gate=p.gate, decision=decision, reviewer=reviewer,
                                   reason="because", spec=p.spec, policy_version="1.0.0")
    event = task.follow(ReviewDecided, payload, P)
    return event.model_copy(update={"occurred_at": at})



def project(engine, *events) -> None:
    """Apply events in this order; each topic's events get consecutive offsets (their log order)."""
    offsets: dict[str, int] = {}
    with Session(engine) as session:
        for event in events:
            topic = "review-tasks" if event.event_type == "review.task_created" else "review-decisions"
            offsets[topic] = offsets.get(topic, -1) + 1
            ReviewProjector(POLICY).apply(session, event, 0, offsets[topic])
        session.commit()


def rows(engine) -> list[tuple]:
    with Session(engine) as session:
        return sorted((r.task_id, r.category, r.severity, r.escalated_by, r.decision, r.decided_by, r.task_event_id)
                      for r in session.exec(select(ReviewQueueRow)).all())
