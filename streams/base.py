"""What every stage shares: the Stage contract, where messages come from, dead letters, the first-wins guard.

A stage is constructible and testable without Kafka: it reads earlier state through a `Log` (Kafka in
production, `MemoryLog` in tests) and returns the events it wants sent; `streams.runner` feeds and sends.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar, Protocol, Sequence

from hallmark.config import HallmarkConfig
from schemas import DeadLetter, Event, Outcome, OutcomeStatus, PoisonMessage, Producer, parse_event, producer_for
from schemas.events import DeadLetterPayload, OutcomePayload


@dataclass(frozen=True)
class Record:
    """One message of a topic's log."""

    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


class Log(Protocol):
    """Read access to the topics' logs, for state a stage rebuilds at start."""

    def read(self, topic: str, tail: int | None = None) -> AsyncIterator[Record]:
        """Every record of `topic` up to its current end (per partition, in offset order; only the last `tail`)."""


@dataclass(frozen=True)
class KafkaLog:
    bootstrap: str

    async def read(self, topic: str, tail: int | None = None) -> AsyncIterator[Record]:
        from streams.topiclog import read_to_end

        async for r in read_to_end(self.bootstrap, topic, tail=tail):
            yield Record(r.partition, r.offset, r.value or b"", r.key)


@dataclass
class MemoryLog:
    """Topics held in memory (tests, contract runs): topic → records."""

    topics: dict[str, list[Record]] = field(default_factory=dict)

    def append(self, topic: str, value: bytes, partition: int = 0, key: bytes | None = None) -> Record:
        records = self.topics.setdefault(topic, [])
        record = Record(partition, sum(1 for r in records if r.partition == partition), value, key)
        records.append(record)
        return record

    async def read(self, topic: str, tail: int | None = None) -> AsyncIterator[Record]:
        records = sorted(self.topics.get(topic, []), key=lambda r: (r.partition, r.offset))
        for r in records:
            if tail is None or r.offset >= sum(1 for x in records if x.partition == r.partition) - tail:
                yield r


class FirstSeen:
    """Which event first claimed a key in a topic's log; rebuilt from the topic at start, so it survives crashes."""

    def __init__(self, topic: str, key_of):
        self.topic, self.key_of = topic, key_of
        self.claims: dict[str, str] = {}

    async def load(self, log: Log) -> "FirstSeen":
        async for record in log.read(self.topic):
            try:
                event = parse_event(record.value)
            except PoisonMessage:
                continue
            self.claims.setdefault(self.key_of(event), str(event.event_id))
        return self

    def claim(self, key: str, event_id: str) -> bool:
        """True when `event_id` is (or now becomes) the first for `key`."""
        return self.claims.setdefault(key, event_id) == event_id


def outcome(event: Event, producer: Producer, status: OutcomeStatus, reason: str, **fields: Any) -> Event:
    return event.follow(Outcome, OutcomePayload(status=status, reason=reason[:500], **fields), producer)


@dataclass
class Source:
    """Where a message came from, for dead letters and for stages that keep per-partition state."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Stage:
    """One processor. Subclasses set `name`/`sources` and implement `handle` (or `handle_batch`)."""

    name: ClassVar[str]
    sources: ClassVar[tuple[str, ...]]
    batch_size: ClassVar[int] = 1
    batch_within_s: ClassVar[float] = 0.05
    in_flow: ClassVar[bool] = True  # a stage error ends the request `failed`; observers only dead-letter
    raw: ClassVar[bool] = False  # observers see every message as it is, poison included (`handle_raw`)

    def __init__(self, settings: HallmarkConfig, log: Log | None = None, **deps: Any):
        """`deps` replace what `start` would load (gates, models, stores): tests pass fakes this way."""
        self.settings, self.deps = settings, deps
        self.log: Log = log or KafkaLog(settings.kafka_bootstrap)
        self.producer = producer_for(self.name)

    async def start(self) -> None:
        """Load models and state before the first message."""

    async def handle(self, event: Event, source: Source) -> list[Event]:
        raise NotImplementedError

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        return [await self.handle(event, source) for event, source in items]

    async def handle_raw(self, sources: Sequence[Source]) -> list[tuple[Event, Source]]:
        raise NotImplementedError

    def partition_for(self, out: Event, source: Source) -> int | None:
        """None lets the key (request id) choose the partition."""
        return None


def dead_letter(stage: str, source: Source, reason: str) -> Event:
    """A `dlq` event naming the reason; the raw bytes only as hash and size (they may hold a prompt)."""
    request_id, tenant_id = "unknown", "unknown"
    try:
        data = json.loads(source.value)
        if isinstance(data, dict):
            request_id = _id_or(data.get("request_id"), request_id)
            tenant_id = _id_or(data.get("tenant_id"), tenant_id)
    except (ValueError, UnicodeDecodeError):
        pass
    if request_id == "unknown" and source.key:
        request_id = _id_or(source.key.decode("utf-8", "replace"), request_id)
    return DeadLetter(event_type=DeadLetter.event_type_name, request_id=request_id, tenant_id=tenant_id,
                      producer=producer_for(stage), payload=DeadLetterPayload(
                          source_topic=source.topic, source_partition=source.partition, source_offset=source.offset,
                          stage=stage, reason=reason[:1000], raw_sha256=hashlib.sha256(source.value).hexdigest(),
                          raw_size=len(source.value)))


def _id_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() else default


async def warm_up(stage: str, gate, sample: list) -> None:
    """Screen one sample so the gate's models load before the first request; a gate that fails here fails closed
    per request later (its verdicts go to review), so the stage still starts."""
    import logging

    try:
        await in_thread(gate.screen, sample, "default")
    except Exception as exc:
        logging.getLogger("hallmark.streams").warning("stage %s: gate warm-up failed (%s); requests will fail "
                                                      "closed to review", stage, exc.__class__.__name__)


async def in_thread(fn, *args, timeout: float | None = None):
    """Run blocking work (models) off the event loop so heartbeats keep flowing; raise TimeoutError past `timeout`."""
    return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, fn, *args), timeout)
