"""The projectors: topics → SQL read models (upserts by id); `rebuild` drops them and replays from offset 0.

Two stages, two consumer groups: `projections` (requests, assets, provenance's asset registry) and `review-queue`
(the review domain's queue, decisions and history, `review.queue`).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlmodel import Session, SQLModel

from hallmark.config import HallmarkConfig
from hallmark.db import create_tables, engine_for
from schemas import TOPICS, AssetPublished, Event, PoisonMessage, parse_event
from schemas.topics import topic_named
from streams.base import Source, Stage, admitted
from streams.readmodels import TABLES, apply

SOURCES = tuple(name for name in TOPICS if name not in ("audit", "dlq"))
REVIEW_SOURCES = ("review-tasks", "review-decisions", "audit")
Record = tuple[str, int, int, bytes]  # topic, partition, offset, value


def parse_records(records: Iterable[Record]) -> list[tuple[Event, int, int]]:
    """(event, partition, offset) for every record that is an event of its topic; poison is the flow stages' to
    dead-letter (and the audit verifier's to name)."""
    events = []
    for topic, partition, offset, value in records:
        try:
            events.append((admitted(parse_event(value, expected=topic_named(topic).event_types), topic), partition,
                           offset))
        except PoisonMessage:
            continue
    return events


class Projector:
    """Applies events to the request read models and to provenance's asset registry."""

    def __init__(self, settings: HallmarkConfig):
        from provenance.registry import AssetRegistry
        from provenance.store import BlobStore

        self.engine = engine_for(settings.db_url)
        create_tables(self.engine, TABLES)
        self.registry = AssetRegistry(settings.db_url, BlobStore(settings.blob_dir))

    def apply_all(self, records: Iterable[Record]) -> int:
        events = [event for event, _, _ in parse_records(records)]
        with Session(self.engine) as session:
            for event in events:
                apply(session, event)
                session.flush()
            session.commit()
        for event in events:
            if isinstance(event, AssetPublished):
                p = event.payload
                self.registry.upsert(asset_id=p.asset_id, sha256=p.sha256, watermark_payload=p.watermark_payload,
                                     model_id=p.model_id, policy_version=p.policy_version, width=p.width,
                                     height=p.height, created_at=event.occurred_at, manifest_label=p.manifest_label,
                                     fingerprints=[(f.alg, f.value) for f in p.fingerprints])
        return len(events)

    def drop(self) -> None:
        SQLModel.metadata.drop_all(self.engine, tables=TABLES)
        create_tables(self.engine, TABLES)
        self.registry.delete_all()


class ReviewQueueProjector:
    """Applies events, with their log coordinates, to the review read models (`review.queue`)."""

    def __init__(self, settings: HallmarkConfig):
        from review.queue import TABLES as REVIEW_TABLES, ReviewProjector
        from safety.policy import load_pack

        self.tables = REVIEW_TABLES
        self.engine = engine_for(settings.db_url)
        create_tables(self.engine, self.tables)
        self.projector = ReviewProjector(load_pack().review)

    def apply_all(self, records: Iterable[Record]) -> int:
        events = parse_records(records)
        with Session(self.engine) as session:
            for event, partition, offset in events:
                self.projector.apply(session, event, partition, offset)
            session.commit()
        return len(events)

    def drop(self) -> None:
        SQLModel.metadata.drop_all(self.engine, tables=self.tables)
        create_tables(self.engine, self.tables)


class ProjectionStage(Stage):
    name = "projections"
    sources = SOURCES
    batch_size = 200
    in_flow = False
    raw = True  # quiet about poison: the flow stages already dead-letter it
    projector_class = Projector

    async def start(self) -> None:
        self.projector = self.projector_class(self.settings)

    async def handle_raw(self, sources: Sequence[Source]) -> list:
        self.projector.apply_all((s.topic, s.partition, s.offset, s.value) for s in sources)
        return []


class ReviewQueueStage(ProjectionStage):
    name = "review-queue"
    sources = REVIEW_SOURCES
    projector_class = ReviewQueueProjector


async def rebuild(settings: HallmarkConfig, review_only: bool = False) -> int:
    """Drop the read models (all, or only the review ones) and replay their topics from offset 0. Events apply in
    causal (occurred_at, event id) order and decisions count in log order (`review.decisions`): the same rows."""
    from hallmark.tenants import with_tenant_topics
    from streams.topiclog import read_to_end

    async def records(topics: tuple[str, ...]) -> list[Record]:
        return [(t, r.partition, r.offset, r.value) for t in with_tenant_topics(topics, settings.tenants_file)
                async for r in read_to_end(settings.operator_client(), t)]

    jobs = [(ReviewQueueProjector(settings), await records(REVIEW_SOURCES))]
    if not review_only:
        flow = [(record, event) for record in await records(SOURCES) for event, _, _ in parse_records([record])]
        flow.sort(key=lambda pair: (pair[1].occurred_at, str(pair[1].event_id)))
        jobs.insert(0, (Projector(settings), [record for record, _ in flow]))
    count = 0
    for projector, recs in jobs:
        projector.drop()
        count += projector.apply_all(recs)
    return count
