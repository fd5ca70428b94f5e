"""Feeding a stage and sending what it returns: at-least-once, outputs acknowledged before the input is."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Protocol

from hallmark.config import KafkaClient
from schemas import Event, Outcome, OutcomeStatus, PoisonMessage, parse_event, topic_for
from schemas.topics import topic_named
from streams.base import Source, Stage, admitted, dead_letter, outcome
from streams.kafkaio import make_producer

log = logging.getLogger("hallmark.streams")


class Sink(Protocol):
    """Where a runner's outputs go; `send` returns an awaitable that completes once the output is durable."""

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None) -> Awaitable | None: ...


class ProducerSink:
    """The runners' sink: one idempotent producer (acks=all), so a retried send never duplicates an output (Faust's
    own producer is idempotent only in its exactly-once mode, which stages do not use: see docs/spine.md)."""

    def __init__(self, client: KafkaClient | str):
        self.client, self.producer = client, None

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None):
        if self.producer is None:
            producer = make_producer(self.client)
            await producer.start()
            self.producer = producer
        return await self.producer.send(topic, value, key=key, partition=partition)

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()


class Runner:
    """Feeds a stage from its Faust stream and sends what it returns (at-least-once; see docs/spine.md)."""

    def __init__(self, stage: Stage, sink: Sink):
        self.stage, self.sink = stage, sink
        self.outcomes = stage.outcomes
        self._started = self._running = False
        self._starting: asyncio.Lock | None = None

    async def prepare(self) -> None:
        """Load models and indexes before the consumer joins its group (so no heartbeat waits on a model load).
        Once per process: with `concurrency` > 1 every actor calls it, and the first does the work."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._started:
                if self.stage.in_flow:
                    await self.outcomes.load(self.stage.log)
                await self.stage.start()
                self._started = True

    async def agent(self, stream) -> None:
        try:
            await self.prepare()
            if not self._running:  # once, in the feeding loop (with `concurrency` > 1 every actor gets here)
                self._running = True
                await self.stage.running()
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
                event = admitted(parse_event(source.value, expected=topic_named(source.topic).event_types),
                                 source.topic)
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
            reason = f"stage_error: {exc.__class__.__name__}"  # never the message: it may quote a prompt
            log.error("stage error on %s[%d]@%d: %s", sources[0].topic, sources[0].partition, sources[0].offset,
                      exc.__class__.__name__)
            return [(dead_letter(self.stage.name, sources[0], reason), sources[0])]

    async def _handle(self, items: list[tuple[Event, Source]]) -> list[list[Event]]:
        try:
            return await self.stage.handle_batch(items)
        except Exception as exc:  # a bug or a broken dependency: never a silent stall
            if len(items) > 1:  # find the culprit: retry one by one
                return [(await self._handle([item]))[0] for item in items]
            event, source = items[0]
            reason = f"stage_error: {exc.__class__.__name__}"  # never the message: it may quote a prompt
            log.error("stage error on %s[%d]@%d (request %s): %s", source.topic, source.partition, source.offset,
                      event.request_id, exc.__class__.__name__)
            outs = [dead_letter(self.stage.name, source, reason)]
            if self.stage.in_flow:
                outs.append(outcome(event, self.stage.producer, OutcomeStatus.FAILED, reason))
            return [outs]

    async def send(self, out: Event, source: Source):
        if isinstance(out, Outcome) and not self.outcomes.claim_event(out):
            log.info("request %s already has a terminal outcome; dropping %s", out.request_id, out.payload.status.value)
            return None
        return await self.sink.send(topic_for(out.event_type).name, out.key(), out.to_bytes(),
                                    self.stage.partition_for(out, source))


def subscribed(stage: Stage) -> list[str]:
    """The topics a stage consumes: its sources and, where it reads `requests`, every registered tenant's
    `requests.<tenant>` (`hallmark tenants add` restarts those stages so they pick a new tenant up)."""
    from hallmark.tenants import with_tenant_topics

    return with_tenant_topics(stage.sources, stage.settings.tenants_file)


def build_app(stage: Stage) -> tuple:
    """The Faust app of one stage (its own consumer group `hallmark-<stage>`) and the runner feeding the stage."""
    import faust

    settings, client = stage.settings, stage.settings.kafka_client()
    credentials = faust.SASLCredentials(username=client.username, password=client.password,
                                        mechanism=client.mechanism) if client.username else None
    (settings.home / "faust" / stage.name).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"hallmark-{stage.name}", broker=f"kafka://{settings.kafka_bootstrap}", broker_credentials=credentials,
        processing_guarantee="at_least_once",  # see docs/spine.md for why not Faust's exactly_once
        store="memory://", web_enabled=False, topic_allow_declare=False, topic_disable_leader=True,
        autodiscover=False, datadir=str(settings.home / "faust" / stage.name),
        consumer_auto_offset_reset="earliest", producer_acks=-1, broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0, broker_commit_every=100, broker_commit_interval=1.0,
        stream_wait_empty=False, consumer_max_fetch_size=4 * 1024 * 1024,
    )
    runner = Runner(stage, ProducerSink(stage.settings.kafka_client()))
    source = app.topic(*subscribed(stage), key_serializer="raw", value_serializer="raw")
    app.agent(source, name=f"hallmark-{stage.name}", concurrency=stage.concurrency)(runner.agent)
    return app, runner


