"""The local Kafka: a real broker from Maven Central's jars, idempotent start, topics from the registry."""
from __future__ import annotations

import asyncio

import pytest

from schemas import TOPICS

pytestmark = pytest.mark.kafka


async def describe(client) -> dict[str, tuple[int, str]]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**client.aiokafka())
    await admin.start()
    try:
        meta = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(list(TOPICS))}
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in TOPICS])
        retention = {}
        for response in configs:
            for resource in response.resources:
                name, entries = resource[3], resource[4]
                retention[name] = next(e[1] for e in entries if e[0] == "retention.ms")
        return {t: (meta[t], retention[t]) for t in TOPICS}
    finally:
        await admin.close()


def test_topics_follow_the_registry(kafka):
    found = asyncio.run(describe(kafka.admin()))
    for name, topic in TOPICS.items():
        assert found[name] == (topic.partitions, str(topic.retention_ms)), name
    assert found["audit"][1] == "-1"


def test_start_and_topic_creation_are_idempotent(kafka):
    pid = kafka.pid()
    assert kafka.start().pid() == pid and kafka.running()
    assert kafka.ensure_topics() == []
    assert (kafka.home / "logs" / "server.log").stat().st_size > 0  # the broker logs to its file


def test_transactions_work_on_the_single_node(kafka):
    """Offsets and transaction state are configured for one replica, so transactional producers can commit."""
    from aiokafka import AIOKafkaProducer

    from streams.topiclog import read_all

    async def go():
        producer = AIOKafkaProducer(**kafka.admin().aiokafka(), transactional_id="broker-test")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait("dlq", b"txn-probe", key=b"probe")
        finally:
            await producer.stop()
        for _ in range(40):  # the commit marker reaches the partition a moment after commit returns
            values = [r.value for r in await read_all(kafka.admin(), "dlq")]
            if b"txn-probe" in values:
                break
            await asyncio.sleep(0.25)
        return values

    assert b"txn-probe" in asyncio.run(go())
