"""SQL read models (requests, review tasks, assets) projected from the topics. Never holds a prompt.

Every column is a function of the set of events, not of their arrival order: status follows the highest-ranked
event (ties: the later `occurred_at`, then event id), so a rebuild from offset 0 yields identical rows.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import event as sa_event
from sqlmodel import Field, Session, SQLModel, create_engine

from hallmark.db import create_tables
from schemas import Event

RANK = {"submitted": 0, "screened": 1, "review": 1, "generating": 2, "generated": 3, "image_review": 4,
        "publishing": 4, "published": 9, "rejected": 9, "failed": 9}


class RequestRow(SQLModel, table=True):
    __tablename__ = "requests"
    request_id: str = Field(primary_key=True)
    tenant_id: str = Field(index=True)
    status: str = "submitted"
    status_key: str = ""  # rank|occurred_at|event_id of the event that set `status`
    source: str = ""
    width: int = 0
    height: int = 0
    steps: int = 0
    n: int = 0
    seed: int = 0
    guidance: float = 0.0
    sampler: str = ""
    model: str = ""
    region: str = ""
    submitted_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    prompt_decision: str | None = None
    prompt_categories: str = "[]"
    prompt_policy_version: str | None = None
    image_decision: str | None = None
    image_categories: str = "[]"
    image_verdict_key: str = ""
    outcome: str | None = None
    outcome_reason: str | None = None
    outcome_categories: str = "[]"
    asset_ids: str = "[]"
    image_sha256s: str = "[]"


class ReviewTaskRow(SQLModel, table=True):
    __tablename__ = "review_tasks"
    task_id: str = Field(primary_key=True)
    request_id: str = Field(index=True)
    tenant_id: str
    gate: str
    severity: int
    sla_deadline: dt.datetime
    created_at: dt.datetime
    verdict_stage: str
    categories: str = "[]"
    reasons: str = "[]"
    score: float | None = None
    model_id: str | None = None
    image_sha256s: str = "[]"
    state: str = Field(default="open", index=True)  # open | escalated | approved | rejected
    escalated: bool = False
    decision_key: str = ""
    reviewer: str | None = None
    decided_at: dt.datetime | None = None


class AssetRow(SQLModel, table=True):
    __tablename__ = "assets"
    asset_id: str = Field(primary_key=True)
    request_id: str = Field(index=True)
    tenant_id: str
    sha256: str = Field(index=True)
    image_index: int
    model_id: str
    policy_version: str
    watermark_payload: str
    manifest_label: str | None = None
    width: int
    height: int
    published_at: dt.datetime


TABLES = [RequestRow.__table__, ReviewTaskRow.__table__, AssetRow.__table__]


def engine_for(db_url: str):
    """An engine; SQLite gets WAL so the API reads while the projector writes."""
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _wal(conn, _record) -> None:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
    else:
        engine = create_engine(db_url, pool_pre_ping=True)
    create_tables(engine, TABLES)
    return engine


def _key(rank: int, event: Event) -> str:
    return f"{rank:02d}|{event.occurred_at.isoformat()}|{event.event_id}"


def _utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc)  # UTC-aware in, UTC-aware out (SQLModel stores it with the zone)


def _request(session: Session, event: Event) -> RequestRow:
    row = session.get(RequestRow, event.request_id)
    if row is None:
        row = RequestRow(request_id=event.request_id, tenant_id=event.tenant_id)
        session.add(row)
    spec = getattr(event.payload, "spec", None)
    if spec is not None and not row.model:
        row.width, row.height, row.steps, row.n, row.seed = spec.width, spec.height, spec.steps, spec.n, spec.seed
        row.guidance, row.sampler, row.model, row.region = spec.guidance, spec.sampler, spec.model, spec.region
    return row


def _status(row: RequestRow, event: Event, status: str) -> bool:
    """Highest rank wins, then the latest event; among terminal outcomes the first wins. True if it changed."""
    key = _key(RANK[status], event)
    terminal = RANK[status] == RANK["published"]
    if row.status_key[:2] == key[:2] and terminal:
        better = key < row.status_key
    else:
        better = key > row.status_key
    if better:
        row.status, row.status_key, row.updated_at = status, key, _utc(event.occurred_at)
    return better


def apply(session: Session, event: Event) -> None:
    """Fold one event into the read models (idempotent: applying it again changes nothing)."""
    kind, p = event.event_type, event.payload
    if kind in ("audit.record", "dlq.message"):
        return
    row = _request(session, event)
    if kind == "request.submitted":
        row.source, row.submitted_at = p.source, _utc(event.occurred_at)
        _status(row, event, "submitted")
    elif kind == "prompt.verdict":
        row.prompt_decision, row.prompt_policy_version = p.verdict.decision.value, p.verdict.policy_version
        row.prompt_categories = json.dumps(sorted(p.verdict.categories))
        _status(row, event, "review" if p.verdict.decision.value == "review" else "screened")
    elif kind == "job.created":
        _status(row, event, "generating")
    elif kind == "image.generated":
        _status(row, event, "generated")
    elif kind == "image.verdict":
        key = _key(0, event)
        if key > row.image_verdict_key:
            row.image_decision, row.image_verdict_key = p.verdict.decision.value, key
            row.image_categories = json.dumps(sorted(p.verdict.categories))
        _status(row, event, "image_review" if p.verdict.decision.value == "review" else "publishing")
    elif kind == "review.task_created":
        _task_created(session, event)
        _status(row, event, "review" if p.gate == "prompt" else "image_review")
    elif kind == "review.decided":
        _task_decided(session, event)
    elif kind == "asset.published":
        session.merge(AssetRow(asset_id=p.asset_id, request_id=event.request_id, tenant_id=event.tenant_id,
                               sha256=p.sha256, image_index=p.image_index, model_id=p.model_id,
                               policy_version=p.policy_version, watermark_payload=p.watermark_payload,
                               manifest_label=p.manifest_label, width=p.width, height=p.height,
                               published_at=_utc(event.occurred_at)))
        _status(row, event, "publishing")
    elif kind == "outcome":
        if _status(row, event, p.status.value):
            row.outcome, row.outcome_reason = p.status.value, p.reason
            row.outcome_categories = json.dumps(sorted(p.categories))
            row.asset_ids = json.dumps(p.asset_ids)
            row.image_sha256s = json.dumps([ref.sha256 for ref in p.images])


def _task_created(session: Session, event: Event) -> None:
    p = event.payload
    task = session.get(ReviewTaskRow, str(p.task_id))
    if task is None:
        task = ReviewTaskRow(task_id=str(p.task_id), request_id=event.request_id, tenant_id=event.tenant_id,
                             gate=p.gate, severity=p.severity, sla_deadline=_utc(p.sla_deadline),
                             created_at=_utc(event.occurred_at), verdict_stage=p.verdict.stage)
        session.add(task)
    task.categories, task.reasons = json.dumps(sorted(p.verdict.categories)), json.dumps(p.verdict.reasons)
    task.score, task.model_id = p.verdict.score, p.model_id
    task.image_sha256s = json.dumps([ref.sha256 for ref in p.images])


def _task_decided(session: Session, event: Event) -> None:
    p = event.payload
    task = session.get(ReviewTaskRow, str(p.task_id))
    if task is None:
        return  # a decision for a task this projection never saw (it arrives with the task on rebuild)
    if p.decision == "escalate":
        task.escalated = True
    else:
        key = _key(0, event)
        if not task.decision_key or key < task.decision_key:  # the first decision wins, as in the review stage
            task.state = "approved" if p.decision == "approve" else "rejected"
            task.decision_key, task.reviewer, task.decided_at = key, p.reviewer, _utc(event.occurred_at)
    if not task.decision_key:
        task.state = "escalated" if task.escalated else "open"
