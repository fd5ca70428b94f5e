"""A stage's read access to the topics' logs (Kafka in production, memory in tests) and indexes folded from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Protocol

from hallmark.config import KafkaClient
from schemas import Event, PoisonMessage, parse_event


@dataclass(frozen=True)
class Record:
    """One message of a topic's log."""

    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


class Log(Protocol):
    """Read access to the topics' logs, for state a stage rebuilds at start or catches up on."""

    def read(self, topic: str, tail: int | None = None,
             start: dict[int, int] | None = None) -> AsyncIterator[Record]:
        """Every record of `topic` up to its current end, per partition in offset order, from `start` (partition →
        first offset) or only the last `tail`."""


@dataclass(frozen=True)
class KafkaLog:
    client: KafkaClient

    async def read(self, topic: str, tail: int | None = None,
                   start: dict[int, int] | None = None) -> AsyncIterator[Record]:
        from streams.topiclog import read_to_end

        async for r in read_to_end(self.client, topic, start=start, tail=tail):
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

    async def read(self, topic: str, tail: int | None = None,
                   start: dict[int, int] | None = None) -> AsyncIterator[Record]:
        records = sorted(self.topics.get(topic, []), key=lambda r: (r.partition, r.offset))
        for r in records:
            ends = sum(1 for x in records if x.partition == r.partition)
            if r.offset >= (start or {}).get(r.partition, 0) and (tail is None or r.offset >= ends - tail):
                yield r


class TopicIndex:
    """An in-memory fold of a topic's events; `catch_up` reads only what arrived since the last call."""

    def __init__(self, topic: str, fold: Callable[[Event, Record], None]):
        self.topic, self.fold = topic, fold
        self.next: dict[int, int] = {}

    async def catch_up(self, log: Log) -> None:
        async for record in log.read(self.topic, start=dict(self.next)):
            self.next[record.partition] = record.offset + 1
            try:
                self.fold(parse_event(record.value), record)
            except PoisonMessage:
                continue


class FirstSeen(TopicIndex):
    """Which event first claimed a key in a topic's log; rebuilt from the topic at start, so it survives crashes."""

    def __init__(self, topic: str, key_of: Callable[[Event], str],
                 value_of: Callable[[Event], str] = lambda event: str(event.event_id)):
        super().__init__(topic, lambda event, _record: self.claim_event(event))
        self.key_of, self.value_of = key_of, value_of
        self.claims: dict[str, str] = {}  # key → value_of(the first event)

    async def load(self, log: Log) -> "FirstSeen":
        await self.catch_up(log)
        return self

    def claim_event(self, event: Event) -> bool:
        """True when `event` is (or now becomes) the first for its key."""
        value = self.value_of(event)
        return self.claims.setdefault(self.key_of(event), value) == value
