"""Read a topic from an offset to its current end, without joining a consumer group (audit, rebuild, guards)."""
from __future__ import annotations

from typing import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from hallmark.config import KafkaClient


async def read_to_end(client: KafkaClient | str, topic: str, start: dict[int, int] | None = None,
                      tail: int | None = None) -> AsyncIterator[ConsumerRecord]:
    """Every record of `topic` (per partition, in offset order) up to the end offsets seen when called.

    `start` maps partition → first offset (default 0); `tail` reads only each partition's last `tail` records.
    """
    consumer = AIOKafkaConsumer(**KafkaClient.of(client).aiokafka(), enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        if not parts:
            await consumer._client.force_metadata_update()  # a fresh client may not know the topic yet
            parts = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        todo: dict[TopicPartition, int] = {}
        for tp in tps:
            first = (start or {}).get(tp.partition, 0)
            if tail is not None:
                first = max(first, ends[tp] - tail)
            first = max(first, begins[tp])
            if first < ends[tp]:
                consumer.seek(tp, first)
                todo[tp] = ends[tp]
        while todo:
            batch = await consumer.getmany(*todo.keys(), timeout_ms=1000, max_records=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < todo.get(tp, -1):
                        yield record
            for tp in list(todo):
                # control records (transaction markers) are skipped, so compare positions, not last offsets
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        await consumer.stop()


async def read_all(client: KafkaClient | str, topic: str, **kwargs) -> list[ConsumerRecord]:
    return [r async for r in read_to_end(client, topic, **kwargs)]
