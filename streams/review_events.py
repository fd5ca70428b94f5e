"""What the reviewer console sends: `review.decided` and `review.activity` events, and the task event it answers."""
from __future__ import annotations

import asyncio

from schemas import TOPICS, Event, ReviewActivity, ReviewDecided, ReviewTaskCreated, parse_event, topic_for
from schemas.events import ReviewActivityPayload, ReviewDecidedPayload
from streams.base import producer_for

PRODUCER = producer_for("review-console")


def decision_event(task: Event, decision: str, reviewer: str, reason: str) -> Event:
    """A decision answering `task` (a `review.task_created`): it carries what resumes the request on approve."""
    p = task.payload
    return task.follow(ReviewDecided, ReviewDecidedPayload(
        task_id=p.task_id, gate=p.gate, decision=decision, reviewer=reviewer, reason=reason, spec=p.spec,
        model_id=p.model_id, images=p.images, policy_version=p.verdict.policy_version), PRODUCER)


def activity_event(request_id: str, tenant_id: str, task_id: str, task_event_id: str, action: str, reviewer: str,
                   shown: list[str] | None = None, detail: str = "") -> Event:
    import uuid

    return ReviewActivity(event_type=ReviewActivity.event_type_name, request_id=request_id, tenant_id=tenant_id,
                          producer=PRODUCER, causation_id=uuid.UUID(task_event_id),
                          payload=ReviewActivityPayload(task_id=uuid.UUID(task_id), action=action, reviewer=reviewer,
                                                        shown=shown or [], detail=detail[:500]))


async def read_task_event(bootstrap: str, partition: int, offset: int, timeout_s: float = 10.0) -> Event:
    """The `review.task_created` event at (partition, offset) of `review-tasks`; LookupError if it is gone."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition("review-tasks", partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(tp), timeout_s)
    except asyncio.TimeoutError:
        raise LookupError(f"review-tasks[{partition}]@{offset} could not be read (retention?)") from None
    finally:
        await consumer.stop()
    if record.offset != offset:
        raise LookupError(f"review-tasks[{partition}]@{offset} is gone (retention); found offset {record.offset}")
    event = parse_event(record.value, expected=TOPICS["review-tasks"].event_types)
    if event.event_type != ReviewTaskCreated.event_type_name:
        raise LookupError("not a review task")
    return event


class EventSender:
    """One idempotent producer (acks=all), started on first use and restarted after a failure."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._producer = None
        self._lock = asyncio.Lock()

    async def send(self, event: Event) -> None:
        """Returns once the broker acknowledged the event; raises if it could not."""
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                            request_timeout_ms=15000)
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
