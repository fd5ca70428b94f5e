"""Kafka I/O outside the stages: the one producer factory, a restartable event sender, one-record reads."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hallmark.config import KafkaClient
from schemas import TOPICS, Event, parse_event, topic_for

SEND_TIMEOUT_MS = 15000


def make_producer(client: KafkaClient | str) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all); the caller starts and stops it."""
    return AIOKafkaProducer(**KafkaClient.of(client).aiokafka(), acks="all", enable_idempotence=True,
                            request_timeout_ms=SEND_TIMEOUT_MS)


class EventSender:
    """One producer, started on first use and restarted after a failure; safe to share across requests."""

    def __init__(self, client: KafkaClient | str):
        self.client = client
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, event: Event) -> None:
        """Returns once the broker acknowledged the event on its topic; raises if it could not."""
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self.client)
                try:
                    await producer.start()
                except Exception:
                    await producer.stop()
                    raise
                self._producer = producer
        try:
            await self._producer.send_and_wait(topic_for(event.event_type).name, event.to_bytes(), key=event.key())
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception:
                pass


async def read_event_at(client: KafkaClient | str, topic: str, partition: int, offset: int,
                        timeout_s: float = 10.0) -> Event:
    """The event at (partition, offset) of `topic`; LookupError if it is gone (retention) or unreadable."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**KafkaClient.of(client).aiokafka(), enable_auto_commit=False, group_id=None,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(tp), timeout_s)
    except asyncio.TimeoutError:
        raise LookupError(f"{topic}[{partition}]@{offset} could not be read (retention?)") from None
    finally:
        await consumer.stop()
    if record.offset != offset:
        raise LookupError(f"{topic}[{partition}]@{offset} is gone (retention); found offset {record.offset}")
    return parse_event(record.value, expected=TOPICS[topic].event_types)
