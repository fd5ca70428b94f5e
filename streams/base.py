"""What every stage shares: the Stage contract, where messages come from, dead letters, the first-wins guard.

A stage is constructible and testable without Kafka: it reads earlier state through a `Log` (Kafka in
production, `MemoryLog` in tests) and returns the events it wants sent; `streams.runner` feeds and sends.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from hallmark.config import HallmarkConfig
from schemas import DeadLetter, Event, Outcome, OutcomeStatus, PoisonMessage, Producer, producer_for
from schemas.events import DeadLetterPayload, OutcomePayload
from streams.logs import FirstSeen, KafkaLog, Log, MemoryLog, Record, TopicIndex  # noqa: F401 (the stage API)


def admitted(event: Event, topic: str) -> Event:
    """The event, if its topic may carry it: on a tenant's `requests.<tenant>` only that tenant's requests."""
    from hallmark.tenants import tenant_of_topic

    tenant = tenant_of_topic(topic)
    if tenant is not None and event.tenant_id != tenant:
        raise PoisonMessage("tenant_mismatch: the request names another tenant than its topic's")
    return event


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
    writes: ClassVar[tuple[str, ...]] = ()  # besides `outcomes` and `dlq` (flow stages): its broker ACLs
    reads: ClassVar[tuple[str, ...]] = ()  # topics it looks things up in through its `log` (besides `outcomes`)
    batch_size: ClassVar[int] = 1
    batch_within_s: ClassVar[float] = 0.05
    # Batches handled at once (Faust actors on one queue). Above 1, `handle_batch` must be safe to run concurrently;
    # offsets still commit only up to the oldest unfinished batch, so a crash replays, never skips.
    concurrency: ClassVar[int] = 1
    in_flow: ClassVar[bool] = True  # a stage error ends the request `failed`; observers only dead-letter
    raw: ClassVar[bool] = False  # observers see every message as it is, poison included (`handle_raw`)

    def __init__(self, settings: HallmarkConfig, log: Log | None = None, **deps: Any):
        """`deps` replace what `start` would load (gates, models, stores): tests pass fakes this way."""
        self.settings, self.deps = settings, deps
        self.log: Log = log or KafkaLog(settings.kafka_client())
        self.producer = producer_for(self.name)
        self.outcomes = FirstSeen("outcomes", key_of=lambda e: e.request_id,  # the first terminal outcome wins
                                  value_of=lambda e: f"{e.payload.status.value}:{e.event_id}")

    def terminal(self, request_id: str) -> str | None:
        """The request's terminal status, if it has one (as far as this process has caught up)."""
        first = self.outcomes.claims.get(request_id)
        return first.split(":", 1)[0] if first else None

    async def start(self) -> None:
        """Load models and state before the first message."""

    async def running(self) -> None:
        """Called in the loop that feeds the stage, once it is prepared (timers belong here, not in `start`)."""

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
