"""Review queue read models: tasks with their queue, and each request's audit trail index. Never holds a prompt.

Projected by the `review-queue` stage from `review-tasks`, `review-decisions` and `audit`. Like the other read
models every column is a function of the events and their log positions (a re-sent task keeps the first in
`occurred_at` order; the decision that counts is the first in log order, `review.decisions`), so a rebuild from
offset 0 gives the same rows. Times are UTC epoch seconds (floats) so lease and SLA arithmetic is plain SQL.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Field, Session, SQLModel, select

from review.decisions import first_escalation, first_final
from review.tasks import GATE_ERROR_STAGE
from safety.policy import ReviewPolicy
from schemas import AuditRecord, Event, ReviewDecided, ReviewTaskCreated
from schemas.events import SealedText

SENIOR = "senior"


class ReviewQueueRow(SQLModel, table=True):
    """One review task: what the gate said, where it waits, and how it ended."""

    __tablename__ = "review_queue"
    task_id: str = Field(primary_key=True)
    request_id: str = Field(index=True)
    tenant_id: str
    gate: str
    category: str = Field(index=True)  # the queue it waits in until decided or escalated
    categories: str = "[]"
    severity: int
    reasons: str = "[]"
    score: float | None = None
    verdict_stage: str
    policy_id: str
    policy_version: str
    model_id: str | None = None
    image_sha256s: str = "[]"
    created_at: float = Field(index=True)
    sla_deadline: float
    task_event_id: str
    task_key: str  # occurred_at|event_id of the task event kept (a re-sent task keeps the first)
    task_partition: int  # where that event sits on `review-tasks`: the console reads the full spec from there
    sealed_prompts: str = "{}"  # the task's prompts as sealed to the tenant (ciphertext; the console opens them)
    task_offset: int
    escalated_at: float | None = None
    escalated_by: str | None = None
    decision: str | None = Field(default=None, index=True)  # approve | reject, once decided
    decided_by: str | None = None
    decided_at: float | None = None


class ReviewDecisionRow(SQLModel, table=True):
    """Every decision event, so a decision that arrives before its task still counts (and throughput is a query)."""

    __tablename__ = "review_decisions"
    event_id: str = Field(primary_key=True)
    task_id: str = Field(index=True)
    decision: str
    reviewer: str = Field(index=True)
    occurred_at: float = Field(index=True)
    log_partition: int  # where it sits on `review-decisions`: log order decides which decision counts
    log_offset: int


class ReviewHistoryRow(SQLModel, table=True):
    """One audit record of a request, indexed so the console shows the trail without scanning the topic."""

    __tablename__ = "review_history"
    audit_partition: int = Field(primary_key=True)
    audit_offset: int = Field(primary_key=True)
    request_id: str = Field(index=True)
    source_topic: str
    source_event_type: str | None = None
    source_event_id: str | None = None
    occurred_at: float
    producer: str = ""
    summary: str = ""
    prompt_ciphertext: str | None = None  # the audit's AES-GCM ciphertext (reviewer key), never clear text
    key_id: str | None = None


TABLES = [ReviewQueueRow.__table__, ReviewDecisionRow.__table__, ReviewHistoryRow.__table__]


def primary_category(categories: list[str], stage: str, policy: ReviewPolicy) -> str:
    """The queue of a task: an urgent category first, else the first category; gate errors have their own."""
    urgent = sorted(c for c in categories if policy.is_urgent(c))
    if urgent or categories:
        return (urgent or sorted(categories))[0]
    return "gate-error" if stage == GATE_ERROR_STAGE else "uncategorised"


def _key(event: Event) -> str:
    return f"{event.occurred_at.isoformat()}|{event.event_id}"


@dataclass(frozen=True)
class ReviewProjector:
    """Folds events (with their log coordinates) into the review read models; applying one twice changes nothing."""

    policy: ReviewPolicy

    def apply(self, session: Session, event: Event, partition: int, offset: int) -> None:
        if isinstance(event, ReviewTaskCreated):
            self._task(session, event, partition, offset)
        elif isinstance(event, ReviewDecided):
            _decided(session, event, partition, offset)
        elif isinstance(event, AuditRecord):
            _history(session, event, partition, offset)

    def _task(self, session: Session, event: Event, partition: int, offset: int) -> None:
        p, key = event.payload, _key(event)
        row = session.get(ReviewQueueRow, str(p.task_id))
        if row is not None and row.task_key <= key:
            return
        v = p.verdict
        fields = dict(request_id=event.request_id, tenant_id=event.tenant_id, gate=p.gate,
                      category=primary_category(v.categories, v.stage, self.policy),
                      categories=json.dumps(sorted(v.categories)), severity=p.severity, reasons=json.dumps(v.reasons),
                      score=v.score, verdict_stage=v.stage, policy_id=v.policy_id, policy_version=v.policy_version,
                      model_id=p.model_id, image_sha256s=json.dumps([ref.sha256 for ref in p.images]),
                      created_at=event.occurred_at.timestamp(), sla_deadline=p.sla_deadline.timestamp(),
                      task_event_id=str(event.event_id), task_key=key, task_partition=partition, task_offset=offset,
                      sealed_prompts=json.dumps({name: value.model_dump() for name in ("prompt", "negative_prompt")
                                                 if isinstance(value := getattr(p.spec, name), SealedText)}))
        if row is None:
            row = ReviewQueueRow(task_id=str(p.task_id), **fields)
            session.add(row)
        else:
            for name, value in fields.items():
                setattr(row, name, value)
        _fold(session, row)


def _decided(session: Session, event: Event, partition: int, offset: int) -> None:
    p = event.payload
    if session.get(ReviewDecisionRow, str(event.event_id)) is None:
        session.add(ReviewDecisionRow(event_id=str(event.event_id), task_id=str(p.task_id), decision=p.decision,
                                      reviewer=p.reviewer, occurred_at=event.occurred_at.timestamp(),
                                      log_partition=partition, log_offset=offset))
    row = session.get(ReviewQueueRow, str(p.task_id))
    if row is not None:
        _fold(session, row)


def _fold(session: Session, row: ReviewQueueRow) -> None:
    """The first escalation and the decision that counts (`review.decisions`), as the review stage acts on it."""
    session.flush()
    decisions = session.exec(select(ReviewDecisionRow).where(ReviewDecisionRow.task_id == row.task_id)).all()
    escalation, final = first_escalation(decisions), first_final(decisions)
    if escalation:
        row.escalated_at, row.escalated_by = escalation.occurred_at, escalation.reviewer
    if final:
        row.decision, row.decided_by, row.decided_at = final.decision, final.reviewer, final.occurred_at


def _history(session: Session, record: Event, partition: int, offset: int) -> None:
    if session.get(ReviewHistoryRow, (partition, offset)) is not None:
        return
    p = record.payload
    inner = p.redacted_event if isinstance(p.redacted_event, dict) else {}
    session.add(ReviewHistoryRow(
        audit_partition=partition, audit_offset=offset, request_id=record.request_id, source_topic=p.source_topic,
        source_event_type=p.source_event_type, source_event_id=p.source_event_id,
        occurred_at=_epoch(inner.get("occurred_at")) or record.occurred_at.timestamp(),
        producer=str((inner.get("producer") or {}).get("service", ""))[:64] if isinstance(inner.get("producer"), dict)
        else "", summary=summarise(p.source_event_type, inner.get("payload")), prompt_ciphertext=p.prompt_ciphertext,
        key_id=p.key_id))


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def summarise(event_type: str | None, payload: Any) -> str:
    """One line a reviewer can read, from a redacted event (prompt fields are already `[redacted]`)."""
    p = payload if isinstance(payload, dict) else {}
    verdict = p.get("verdict") if isinstance(p.get("verdict"), dict) else {}
    spec = p.get("spec") if isinstance(p.get("spec"), dict) else {}
    lines = {
        "request.submitted": lambda: f"submitted via {p.get('source')}: {spec.get('width')}×{spec.get('height')}, "
                                     f"{spec.get('steps')} steps, n={spec.get('n')}, model {spec.get('model')}",
        "prompt.verdict": lambda: _verdict("prompt", verdict),
        "image.verdict": lambda: _verdict("image", verdict),
        "job.created": lambda: "job created" + (" after human approval" if p.get("reviewed") else ""),
        "image.generated": lambda: f"{len(p.get('images') or [])} image(s) generated by {p.get('model_id')}",
        "review.task_created": lambda: f"review task ({p.get('gate')} gate, severity {p.get('severity')})",
        "review.decided": lambda: f"{p.get('reviewer')}: {p.get('decision')} — {p.get('reason')}",
        "review.activity": lambda: f"{p.get('reviewer')} {p.get('action')}"
                                   + (f" ({', '.join(map(str, p.get('shown') or []))})" if p.get("shown") else "")
                                   + (f": {p.get('detail')}" if p.get("detail") else ""),
        "asset.published": lambda: f"asset {p.get('asset_id')} published",
        "outcome": lambda: f"{p.get('status')}" + (f": {p.get('reason')}" if p.get("reason") else ""),
        "dlq.message": lambda: f"dead-lettered by {p.get('stage')}: {p.get('reason')}",
    }
    line = lines.get(event_type or "", lambda: event_type or "unparsed message")()
    return line[:500]


def _verdict(gate: str, v: dict) -> str:
    cats = ", ".join(map(str, v.get("categories") or [])) or "none"
    policy = v.get("policy_version")
    return f"{gate} gate: {v.get('decision')} by {v.get('stage')} (categories: {cats}; policy {policy})"
