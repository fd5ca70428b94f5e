"""Plumbing every stage shares: one Faust app per stage, strict parsing, dead letters, the first-wins guards."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from hallmark.config import HallmarkConfig
from schemas import (TOPICS, DeadLetter, Event, Outcome, OutcomeStatus, PoisonMessage, Producer, parse_event,
                     producer_for, topic_for)
from schemas.events import DeadLetterPayload, OutcomePayload
from streams.topiclog import read_to_end

log = logging.getLogger("hallmark.streams")


class FirstSeen:
    """Which event first claimed a key in a topic's log; rebuilt from the topic at start, so it survives crashes."""

    def __init__(self, topic: str, key_of):
        self.topic, self.key_of = topic, key_of
        self.claims: dict[str, str] = {}

    async def load(self, bootstrap: str) -> "FirstSeen":
        async for record in read_to_end(bootstrap, self.topic):
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

    def __init__(self, settings: HallmarkConfig):
        self.settings = settings
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


class Runner:
    """Feeds a stage from its Faust stream and sends what it returns (at-least-once; see docs/spine.md)."""

    def __init__(self, stage: Stage, app):
        self.stage, self.app = stage, app
        self.sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw") for name in TOPICS}
        self.outcomes = FirstSeen("outcomes", key_of=lambda e: e.request_id)
        self._started = False

    async def prepare(self) -> None:
        """Load models and indexes before the consumer joins its group (so no heartbeat waits on a model load)."""
        if not self._started:
            if self.stage.in_flow:
                await self.outcomes.load(self.stage.settings.kafka_bootstrap)
            await self.stage.start()
            self._started = True

    async def agent(self, stream) -> None:
        try:
            await self.prepare()
            ready = self.stage.settings.home / "run" / f"{self.stage.name}.ready"
            ready.parent.mkdir(parents=True, exist_ok=True)
            ready.write_text("ready\n")  # `hallmark up` and the tests wait for this
            log.info("stage %s ready", self.stage.name)
            async for batch in stream.take_events(self.stage.batch_size, within=self.stage.batch_within_s):
                await self.process([Source(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                                           e.message.value or b"") for e in batch])
        except Exception:
            # Kafka or disk trouble: a restarted Faust agent would go on past the unacked batch, so end the process
            # and let the restart (`hallmark up`, compose) resume from the committed offsets: nothing is skipped.
            log.critical("stage %s cannot go on; exiting so a restart resumes from committed offsets",
                         self.stage.name, exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def process(self, sources: list[Source]) -> None:
        items: list[tuple[Event, Source]] = []
        outputs: list[tuple[Event, Source]] = []
        if self.stage.raw:
            outputs.extend(await self._handle_raw(sources))
            sources = []
        for source in sources:
            try:
                event = parse_event(source.value, expected=TOPICS[source.topic].event_types)
            except PoisonMessage as exc:
                log.warning("dead-letter %s[%d]@%d: %s", source.topic, source.partition, source.offset, exc.reason)
                outputs.append((dead_letter(self.stage.name, source, exc.reason), source))
                continue
            items.append((event, source))
        if items:
            for (event, source), outs in zip(items, await self._handle(items)):
                outputs.extend((out, source) for out in outs)
        # Sent in order and acknowledged by the broker before the batch is acked, so a committed offset never
        # covers an output that was not written (Faust's own attach-to-event mode loses that order across batches).
        futures = [await self.send(out, source) for out, source in outputs]
        for fut in futures:
            if fut is not None:
                await fut

    async def _handle_raw(self, sources: list[Source]) -> list[tuple[Event, Source]]:
        try:
            return await self.stage.handle_raw(sources)
        except Exception as exc:
            if len(sources) > 1:
                return [out for source in sources for out in await self._handle_raw([source])]
            reason = f"{self.stage.name} failed: {exc.__class__.__name__}: {str(exc)[:300]}"
            log.exception("stage error on %s[%d]@%d", sources[0].topic, sources[0].partition, sources[0].offset)
            return [(dead_letter(self.stage.name, sources[0], reason), sources[0])]

    async def _handle(self, items: list[tuple[Event, Source]]) -> list[list[Event]]:
        try:
            return await self.stage.handle_batch(items)
        except Exception as exc:  # a bug or a broken dependency: never a silent stall
            if len(items) > 1:  # find the culprit: retry one by one
                return [(await self._handle([item]))[0] for item in items]
            event, source = items[0]
            reason = f"{self.stage.name} failed: {exc.__class__.__name__}: {str(exc)[:300]}"
            log.exception("stage error on %s[%d]@%d (request %s)", source.topic, source.partition, source.offset,
                          event.request_id)
            outs = [dead_letter(self.stage.name, source, reason)]
            if self.stage.in_flow:
                outs.append(outcome(event, self.stage.producer, OutcomeStatus.FAILED, reason))
            return [outs]

    async def send(self, out: Event, source: Source):
        if out.event_type == Outcome.event_type_name and not self.outcomes.claim(out.request_id, str(out.event_id)):
            log.info("request %s already has a terminal outcome; dropping %s", out.request_id, out.payload.status.value)
            return None
        topic = topic_for(out.event_type).name
        return await self.sinks[topic].send(key=out.key(), value=out.to_bytes(),
                                            partition=self.stage.partition_for(out, source), force=True)


def build_app(stage: Stage) -> tuple:
    """The Faust app of one stage (its own consumer group `hallmark-<stage>`) and the runner feeding the stage."""
    import faust

    settings = stage.settings
    (settings.home / "faust" / stage.name).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"hallmark-{stage.name}", broker=f"kafka://{settings.kafka_bootstrap}",
        processing_guarantee="at_least_once",  # see docs/spine.md for why not Faust's exactly_once
        store="memory://", web_enabled=False, topic_allow_declare=False, topic_disable_leader=True,
        autodiscover=False, datadir=str(settings.home / "faust" / stage.name),
        consumer_auto_offset_reset="earliest", producer_acks=-1, broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0, broker_commit_every=100, broker_commit_interval=1.0,
        stream_wait_empty=False, consumer_max_fetch_size=4 * 1024 * 1024,
    )
    runner = Runner(stage, app)
    source = app.topic(*stage.sources, key_serializer="raw", value_serializer="raw")
    app.agent(source, name=f"hallmark-{stage.name}")(runner.agent)
    return app, runner


async def in_thread(fn, *args, timeout: float | None = None):
    """Run blocking work (models) off the event loop so heartbeats keep flowing; raise TimeoutError past `timeout`."""
    return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, fn, *args), timeout)
