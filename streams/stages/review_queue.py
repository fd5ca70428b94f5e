"""The review queue projector: `review-tasks`, `review-decisions`, `audit` → streams/review_queue read models."""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlmodel import Session, SQLModel

from hallmark.config import Settings
from hallmark.db import create_tables
from schemas import TOPICS, PoisonMessage, parse_event
from streams.base import Source, Stage
from streams.readmodels import engine_for
from streams.review_queue import TABLES, apply

SOURCES = ("review-tasks", "review-decisions", "audit")


def apply_records(engine, records: Iterable[tuple[str, int, int, bytes]]) -> int:
    """(topic, partition, offset, value) → read models in one transaction; poison is the flow stages' to report."""
    count = 0
    with Session(engine) as session:
        for topic, partition, offset, value in records:
            try:
                event = parse_event(value, expected=TOPICS[topic].event_types)
            except PoisonMessage:
                continue
            apply(session, event, topic, partition, offset)
            count += 1
        session.commit()
    return count


class ReviewQueueStage(Stage):
    name = "review-queue"
    sources = SOURCES
    batch_size = 200
    in_flow = False
    raw = True  # quiet about poison: the review stage and the audit verifier already name it

    async def start(self) -> None:
        self.engine = engine_for(self.settings.db_url)
        create_tables(self.engine, TABLES)

    async def handle_raw(self, sources: Sequence[Source]) -> list:
        apply_records(self.engine, ((s.topic, s.partition, s.offset, s.value) for s in sources))
        return []


async def rebuild(settings: Settings) -> int:
    """Drop the review read models and replay their topics from offset 0 (same rows: see streams/review_queue)."""
    from streams.topiclog import read_to_end

    records = []
    for topic in SOURCES:
        records.extend([(topic, r.partition, r.offset, r.value) async for r in read_to_end(settings.kafka_bootstrap,
                                                                                          topic)])
    engine = engine_for(settings.db_url)
    SQLModel.metadata.drop_all(engine, tables=TABLES)
    create_tables(engine, TABLES)
    return apply_records(engine, records)
