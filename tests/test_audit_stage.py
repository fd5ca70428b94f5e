"""The audit stage as `hallmark up` runs it (its own process and principal, SASL/SCRAM and ACLs) on a dedicated
broker: it anchors the log with signed checkpoints in the file and the topic, `hallmark audit verify` (as the
operator) accepts them, and no other principal may write `audit-checkpoints`."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest

from hallmark.stack import hallmark_argv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A broker of its own with authentication, and only the audit stage running (checkpoints every 2 s)."""
    from hallmark.broker import LocalKafka, free_port
    from hallmark.config import HallmarkConfig
    from hallmark.stack import Stack, stage_services

    broker = LocalKafka(tmp_path_factory.mktemp("audit-kafka"), free_port())
    broker.start()
    settings = HallmarkConfig.from_env(home=tmp_path_factory.mktemp("audit-home"), kafka_bootstrap=broker.bootstrap,
                                       kafka_credentials_dir=broker.credentials_dir, audit_checkpoint_seconds=2.0)
    stack = Stack(settings)
    try:
        stack.up(stages=[s for s in stage_services() if s.name == "audit"], web=[], with_kafka=False)
        yield stack
    finally:
        stack.down(with_kafka=False)
        broker.stop()


def hallmark(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(hallmark_argv(*args), env={**os.environ, **settings.to_env()}, capture_output=True,
                          text=True, timeout=120)


def produce(client, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
    from streams.kafkaio import make_producer

    async def go():
        producer = make_producer(client)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def test_the_running_stage_anchors_the_log_and_verify_accepts_it(stack):
    from streams.topiclog import read_all

    settings = stack.settings
    produce(settings.operator_client(), "dlq", b"not an event", key=b"req-1")  # any topic but the audit ones
    deadline = time.monotonic() + 120
    while True:  # the stage signs a partition's head within audit_checkpoint_seconds (plus its one-second tick)
        exported = [json.loads(line) for line in hallmark(settings, "audit", "export-checkpoints").stdout.splitlines()]
        audited = asyncio.run(read_all(settings.operator_client(), "audit"))
        if audited and any(c["offset"] == audited[-1].offset and c["partition"] == audited[-1].partition
                           for c in exported):
            break
        assert time.monotonic() < deadline, f"no checkpoint after {len(audited)} audit records: {exported}"
        time.sleep(1.0)
    shipped = (settings.home / "audit-checkpoints.jsonl").read_text().splitlines()
    assert {json.dumps(c, sort_keys=True, separators=(",", ":")) for c in exported} <= set(shipped)
    assert (settings.keys_dir / "audit-checkpoint.key").stat().st_mode & 0o777 == 0o600
    result = hallmark(settings, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "audit OK: 1 records" in result.stdout and "signed checkpoints" in result.stdout


def test_only_the_audit_stage_may_write_checkpoints(stack):
    from aiokafka.errors import KafkaError

    from streams.acls import API

    settings = stack.settings
    for principal in (API, "svc-projections"):
        with pytest.raises(KafkaError):
            produce(settings.kafka_client(principal), "audit-checkpoints", b"{}", key=b"audit-0", partition=0)
