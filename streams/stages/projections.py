"""The projector: topics → SQL read models (upserts by id); `rebuild` drops them and replays from offset 0."""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

from sqlmodel import Session, SQLModel

from hallmark.config import Settings
from hallmark.db import create_tables
from schemas import TOPICS, Event, PoisonMessage, parse_event
from streams.base import Source, Stage
from streams.readmodels import TABLES, apply, engine_for

SOURCES = tuple(name for name in TOPICS if name not in ("audit", "dlq"))
log = logging.getLogger("hallmark.streams")


class Projector:
    """Applies events to the read models and to provenance's asset registry."""

    def __init__(self, settings: Settings):
        from provenance.registry import AssetRegistry
        from provenance.store import BlobStore

        self.engine = engine_for(settings.db_url)
        self.registry = AssetRegistry(settings.db_url, BlobStore(settings.blob_dir))

    def apply_all(self, events: Iterable[Event]) -> int:
        events, count = list(events), 0
        with Session(self.engine) as session:
            for event in events:
                apply(session, event)
                session.flush()
                count += 1
            session.commit()
        for event in events:
            if event.event_type == "asset.published":
                p = event.payload
                self.registry.upsert(asset_id=p.asset_id, sha256=p.sha256, watermark_payload=p.watermark_payload,
                                     model_id=p.model_id, policy_version=p.policy_version, width=p.width,
                                     height=p.height, created_at=event.occurred_at, manifest_label=p.manifest_label,
                                     fingerprints=[(f.alg, f.value) for f in p.fingerprints])
        return count

    def drop(self) -> None:
        SQLModel.metadata.drop_all(self.engine, tables=TABLES)
        create_tables(self.engine, TABLES)
        self.registry.delete_all()


def parse_quietly(values: Iterable[bytes]) -> list[Event]:
    """Events only: poison is the flow stages' to dead-letter."""
    events = []
    for value in values:
        try:
            events.append(parse_event(value))
        except PoisonMessage:
            continue
    return events


class ProjectionStage(Stage):
    name = "projections"
    sources = SOURCES
    batch_size = 200
    in_flow = False
    raw = True

    async def start(self) -> None:
        self.projector = Projector(self.settings)

    async def handle_raw(self, sources: Sequence[Source]) -> list:
        self.projector.apply_all(parse_quietly(s.value for s in sources))
        return []


async def rebuild(settings: Settings) -> int:
    """Drop the read models and replay every topic from offset 0, in causal (occurred_at, event id) order."""
    from streams.topiclog import read_to_end

    events: list[Event] = []
    for topic in SOURCES:
        events.extend(parse_quietly([r.value async for r in read_to_end(settings.kafka_bootstrap, topic)]))
    events.sort(key=lambda e: (e.occurred_at, str(e.event_id)))
    projector = Projector(settings)
    projector.drop()
    return projector.apply_all(events)
