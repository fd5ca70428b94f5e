"""SQL read models (requests, assets) projected from the topics. Never holds a prompt (review: `review.queue`).

Every column is a function of the set of events, not of their arrival order: status follows the highest-ranked
event (ties: the later `occurred_at`, then event id), so a rebuild from offset 0 yields identical rows.
"""
from __future__ import annotations

import datetime as dt
import json

from typing import Callable

from sqlmodel import Field, Session, SQLModel

from hallmark.db import create_tables, engine_for
from schemas import (AssetPublished, Event, ImageGenerated, ImageVerdict, JobCreated, Outcome, PromptVerdict,
                     RequestSubmitted, ReviewTaskCreated)

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


TABLES = [RequestRow.__table__, AssetRow.__table__]


def open_readmodels(db_url: str):
    """The engine of the request read models, with their tables created."""
    engine = engine_for(db_url)
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


def _submitted(session: Session, row: RequestRow, event: Event) -> None:
    row.source, row.submitted_at = event.payload.source, _utc(event.occurred_at)
    _status(row, event, "submitted")


def _prompt_verdict(session: Session, row: RequestRow, event: Event) -> None:
    v = event.payload.verdict
    row.prompt_decision, row.prompt_policy_version = v.decision.value, v.policy_version
    row.prompt_categories = json.dumps(sorted(v.categories))
    _status(row, event, "review" if v.decision.value == "review" else "screened")


def _image_verdict(session: Session, row: RequestRow, event: Event) -> None:
    v, key = event.payload.verdict, _key(0, event)
    if key > row.image_verdict_key:
        row.image_decision, row.image_verdict_key = v.decision.value, key
        row.image_categories = json.dumps(sorted(v.categories))
    _status(row, event, "image_review" if v.decision.value == "review" else "publishing")


def _asset(session: Session, row: RequestRow, event: Event) -> None:
    p = event.payload
    session.merge(AssetRow(asset_id=p.asset_id, request_id=event.request_id, tenant_id=event.tenant_id,
                           sha256=p.sha256, image_index=p.image_index, model_id=p.model_id,
                           policy_version=p.policy_version, watermark_payload=p.watermark_payload,
                           manifest_label=p.manifest_label, width=p.width, height=p.height,
                           published_at=_utc(event.occurred_at)))
    _status(row, event, "publishing")


def _outcome(session: Session, row: RequestRow, event: Event) -> None:
    p = event.payload
    if _status(row, event, p.status.value):
        row.outcome, row.outcome_reason = p.status.value, p.reason
        row.outcome_categories = json.dumps(sorted(p.categories))
        row.asset_ids = json.dumps(p.asset_ids)
        row.image_sha256s = json.dumps([ref.sha256 for ref in p.images])


HANDLERS: dict[type[Event], Callable[[Session, RequestRow, Event], None]] = {
    RequestSubmitted: _submitted,
    PromptVerdict: _prompt_verdict,
    JobCreated: lambda session, row, event: _status(row, event, "generating"),
    ImageGenerated: lambda session, row, event: _status(row, event, "generated"),
    ImageVerdict: _image_verdict,
    ReviewTaskCreated: lambda session, row, event: _status(row, event, "review" if event.payload.gate == "prompt"
                                                           else "image_review"),
    AssetPublished: _asset,
    Outcome: _outcome,
}


def apply(session: Session, event: Event) -> None:
    """Fold one event into the read models (idempotent: applying it again changes nothing)."""
    handler = HANDLERS.get(type(event))
    if handler is not None:
        handler(session, _request(session, event), event)
