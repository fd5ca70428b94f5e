"""Tampering with the audit log on a real broker, as an attacker with disk or admin access would; `hallmark audit
verify` names each attack. The records and checkpoints come from the real audit stage (through the runner) on a
dedicated broker, so the session's shared stack is never disturbed."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from hallmark.config import HallmarkConfig
from hallmark.stack import hallmark_argv
from streams.checkpoints import checkpoint_file, key_path, parse_lines, sign, to_line
from tests.test_spine_audit import _tamper

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
AUDIT_TOPICS = ("audit", "audit-checkpoints")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker of this module's own (its segments get edited and it gets restarted)."""
    from hallmark.broker import LocalKafka, free_port

    plain = {"secure": False} if "secure" in {f.name for f in dataclasses.fields(LocalKafka)} else {}
    kafka = LocalKafka(tmp_path_factory.mktemp("tamper-kafka"), free_port(), **plain)  # disk attacks, not auth
    kafka.start()
    yield kafka
    kafka.stop()


@pytest.fixture
def config(broker, tmp_path) -> HallmarkConfig:
    """Fresh `audit` topics and a home with its own checkpoint key; the timer stays quiet unless a test asks."""
    asyncio.run(recreate_topics(broker.bootstrap, AUDIT_TOPICS))
    return HallmarkConfig(home=tmp_path / "home", kafka_bootstrap=broker.bootstrap, audit_checkpoint_every=10**6,
                          audit_checkpoint_seconds=3600.0)


# ---- attacker tools (admin API) --------------------------------------------------------------------

async def recreate_topics(bootstrap: str, names: tuple[str, ...]) -> None:
    """Delete and create again the registry's topics `names` (test isolation on one broker)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from hallmark.broker import ensure_topics
    from schemas import TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        present = [n for n in names if n in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present)
        for _ in range(100):
            if not set(names) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    for _ in range(50):
        try:
            await ensure_topics(bootstrap, {n: TOPICS[n] for n in names})
            return
        except Exception:  # still being deleted
            await asyncio.sleep(0.3)
    raise AssertionError(f"could not recreate {names}")


async def delete_records(bootstrap: str, topic: str, partition: int, before: int) -> None:
    """Kafka's DeleteRecords: the partition's log start moves to `before` (everything earlier is gone)."""
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(before)})
    finally:
        await admin.close()


# ---- writing the log with the real audit stage -------------------------------------------------------

def audit(config: HallmarkConfig, counts: dict[int, int], anchor: bool = True, wait_for_timer: bool = False) -> None:
    """Feed `counts[p]` requests of source partition p through the audit stage (the runner, a producer to the broker);
    then sign every partition's head (or wait for the stage's own timer)."""
    from streams.runner import Runner
    from streams.runner import ProducerSink
    from streams.stages.audit import AuditStage
    from tests.test_audit_checkpoints import sources

    async def go():
        sink = ProducerSink(config.kafka_bootstrap)  # idempotent, acks=all
        stage = AuditStage(config)
        runner = Runner(stage, sink)
        await runner.prepare()
        try:
            for p, n in counts.items():
                first = stage.audited.get(("requests", p), -1) + 1  # a second call goes on where the first ended
                for i in range(0, n, 4):
                    await runner.process(sources(min(4, n - i), partition=p, first=first + i))
            if wait_for_timer:
                for _ in range(100):
                    if all(stage.checkpoints.waiting(p) == 0 for p in counts):  # written to the file and the topic
                        break
                    await asyncio.sleep(0.2)
            elif anchor:
                await stage.checkpoints.checkpoint(sorted(counts))
        finally:
            stage.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stage.timer
            await stage.checkpoints.sink.close()
            await sink.close()

    asyncio.run(go())


def verify(config: HallmarkConfig, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **config.to_env()}
    return subprocess.run(hallmark_argv("audit", "verify", *args), env=env, capture_output=True, text=True,
                          timeout=120)


def records(config: HallmarkConfig, topic: str = "audit", partition: int | None = None) -> list:
    from streams.topiclog import read_all

    found = asyncio.run(read_all(config.kafka_bootstrap, topic))
    return [r for r in found if partition is None or r.partition == partition]


def broken(result: subprocess.CompletedProcess) -> list[str]:
    """The break lines (`audit partition P offset O: kind: detail`), without the `BROKEN ` prefix."""
    return [line.removeprefix("BROKEN ") for line in result.stderr.splitlines() if line.startswith("BROKEN ")]


# ---- attacker tools (disk) ---------------------------------------------------------------------------

def rewrite_segment(broker, config: HallmarkConfig, partition: int, change) -> None:
    """With the broker stopped, replace audit partition `partition`'s segment by `change(records)` (a list of
    (offset, timestamp, key, value)), written as one valid record batch; drop the indexes so the broker rebuilds
    them on start, as an insider with disk access would."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    before = [(r.offset, r.timestamp, r.key, r.value) for r in records(config, partition=partition)]
    after = change(before)
    broker.stop()
    folder = broker.home / "data" / f"audit-{partition}"
    (segment,) = folder.glob("*.log")
    epoch = segment.read_bytes()[12:16]
    data = b""
    if after:
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                            producer_epoch=-1, base_sequence=-1, batch_size=1 << 24)
        for offset, timestamp, key, value in after:
            builder.append(offset - after[0][0], timestamp=timestamp, key=key, value=value, headers=[])
        batch = builder.build()
        struct.pack_into(">q", batch, 0, after[0][0])  # baseOffset and the leader epoch sit outside the CRC
        batch[12:16] = epoch
        data = bytes(batch)
    segment.write_bytes(data)
    for stale in [*folder.glob("*.index"), *folder.glob("*.timeindex"), *folder.glob("*.snapshot")]:
        stale.unlink()
    broker.start()


def rechain(rows: list, start: int) -> list:
    """Rows with the record at `start` changed and every later prev_hash/hash recomputed: links stay intact."""
    from streams.auditlog import chain_hash

    out = list(rows)
    prev = json.loads(out[start - 1][3])["payload"]["hash"]
    for i in range(start, len(out)):
        offset, timestamp, key, value = out[i]
        data = json.loads(value)
        if i == start:
            data["tenant_id"] = "someone-else"
        data["payload"]["prev_hash"] = prev
        data["payload"]["hash"] = prev = chain_hash(prev, data)
        out[i] = (offset, timestamp, key, json.dumps(data).encode())
    return out


# ---- the tests -------------------------------------------------------------------------------------

def test_an_untouched_log_verifies_the_tail_is_counted_and_checkpoints_export(config, tmp_path):
    audit(config, {0: 6, 1: 5, 2: 4})
    audit(config, {1: 3}, anchor=False)
    result = verify(config)
    assert result.returncode == 0, result.stderr
    assert "audit OK: 18 records" in result.stdout and "3 signed checkpoints" in result.stdout
    assert "audit partition 1: 3 records after the last checkpoint are not yet anchored" in result.stdout
    shipped = checkpoint_file(config).read_text().splitlines()
    assert [json.loads(line)["offset"] for line in shipped] == [5, 4, 3]
    assert len(records(config, "audit-checkpoints")) == 3
    env = {**os.environ, **config.to_env()}
    exported = subprocess.run(hallmark_argv("audit", "export-checkpoints"), env=env, capture_output=True,
                              text=True, timeout=120)
    assert exported.returncode == 0 and sorted(exported.stdout.splitlines()) == sorted(shipped)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(exported.stdout)
    assert verify(config, "--against", str(elsewhere)).returncode == 0
    elsewhere.write_text(exported.stdout + '{"partition": 1, "offset": "x"}\n')
    corrupt = verify(config, "--against", str(elsewhere))
    assert corrupt.returncode == 2 and f"{elsewhere} line 4: not a checkpoint" in corrupt.stderr


def test_the_stage_timer_writes_checkpoints_to_the_file_and_the_topic(config):
    config = dataclasses.replace(config, audit_checkpoint_every=3)
    audit(config, {2: 4}, anchor=False, wait_for_timer=True)
    (line,) = checkpoint_file(config).read_text().splitlines()
    assert json.loads(line)["partition"] == 2 and json.loads(line)["offset"] >= 2
    assert [json.loads(r.value)["payload"] for r in records(config, "audit-checkpoints")] == [json.loads(line)]


def test_two_edits_in_one_partition_are_both_named(broker, config):
    audit(config, {0: 8})
    victims = records(config, partition=0)[2], records(config, partition=0)[5]
    segment = next((broker.home / "data" / "audit-0").glob("*.log"))
    original, _ = _tamper(segment, victims[0].value)
    _tamper(segment, victims[1].value)
    try:
        lines = broken(verify(config))
    finally:
        segment.write_bytes(original)
    assert [line.split(": ")[:2] for line in lines] == [["audit partition 0 offset 2", "content changed"],
                                                         ["audit partition 0 offset 5", "content changed"]]


def test_a_truncated_tail_is_named(broker, config):
    audit(config, {1: 9})
    rewrite_segment(broker, config, 1, lambda rows: rows[:5])
    assert len(records(config, partition=1)) == 5  # the broker serves the shortened log
    result = verify(config)
    assert result.returncode == 2
    assert broken(result) == ["audit partition 1 offset 5: truncated: the partition ends at offset 4; the "
                              f"checkpoint of {checkpoint(config, 1)['at']} pinned 9 records up to offset 8: 4 "
                              "records cut from the tail"]


def test_an_emptied_partition_is_named(config):
    audit(config, {0: 3, 2: 6})
    asyncio.run(delete_records(config.kafka_bootstrap, "audit", 2, 6))
    assert records(config, partition=2) == []
    lines = broken(verify(config))
    assert len(lines) == 1 and lines[0].startswith("audit partition 2 offset 5: emptied: the partition holds no "
                                                   "records")


def test_reordered_records_are_named(broker, config):
    audit(config, {2: 7})

    def swap(rows):
        rows = list(rows)
        (o3, t3, k3, v3), (o4, t4, k4, v4) = rows[3], rows[4]
        rows[3], rows[4] = (o3, t3, k4, v4), (o4, t4, k3, v3)
        return rows

    rewrite_segment(broker, config, 2, swap)
    lines = broken(verify(config))
    assert [line.split(": ")[:2] for line in lines] == [[f"audit partition 2 offset {o}", "out of order"]
                                                         for o in (3, 4, 5)]


def test_a_rewrite_with_recomputed_hashes_is_named_and_an_insider_with_the_key_is_caught_by_the_export(
        broker, config, tmp_path):
    audit(config, {0: 4})
    audit(config, {0: 4})
    exported = tmp_path / "shipped.jsonl"
    exported.write_text(checkpoint_file(config).read_text())  # shipped off the host before the attack
    rewrite_segment(broker, config, 0, lambda rows: rechain(rows, 2))
    lines = broken(verify(config))
    assert [line.split(": ")[:2] for line in lines] == [["audit partition 0 offset 3", "rewritten"],
                                                         ["audit partition 0 offset 7", "rewritten"]]

    # The insider also holds the checkpoint key: re-signs the forged heads, replaces the file and the topic.
    from streams.checkpointer import checkpoint_event
    from streams.checkpoints import FileSigner
    from streams.kafkaio import make_producer

    signer = FileSigner.load(key_path(config), create=False)
    forged = records(config, partition=0)
    resigned = [sign(signer, 0, o, o + 1, json.loads(forged[o].value)["payload"]["hash"]) for o in (3, 7)]
    checkpoint_file(config).write_text("".join(map(to_line, resigned)))
    asyncio.run(recreate_topics(config.kafka_bootstrap, ("audit-checkpoints",)))  # compacted: no DeleteRecords

    async def produce():
        producer = make_producer(config.kafka_bootstrap)
        await producer.start()
        for cp in resigned:
            event = checkpoint_event(cp)
            await producer.send_and_wait("audit-checkpoints", event.to_bytes(), key=event.key(), partition=0)
        await producer.stop()

    asyncio.run(produce())
    assert verify(config).returncode == 0  # what a key holder can do: the local evidence agrees with itself
    against = verify(config, "--against", str(exported))
    assert against.returncode == 2  # what it cannot: change what was shipped
    assert [line.split(": ")[:2] for line in broken(against)] == [["audit partition 0 offset 3", "rewritten"],
                                                                  ["audit partition 0 offset 7", "rewritten"]]


def checkpoint(config: HallmarkConfig, partition: int) -> dict:
    """The latest line of the checkpoint file for `partition`."""
    found = [c for c in parse_lines(Path(checkpoint_file(config)).read_text()) if c.partition == partition]
    return found[-1].model_dump()
