"""Audit checkpoints without a broker: signatures, the verifier's break list, the checkpoint file, the checkpointer."""
from __future__ import annotations

import asyncio
import json
import stat

import pytest

from hallmark.config import HallmarkConfig
from streams.auditlog import GENESIS, chain_hash, verify
from streams.base import MemoryLog, Source
from streams.checkpointer import Cadence, Checkpointer
from streams.checkpoints import (
    CheckpointFileError,
    FileSigner,
    load_public_key,
    parse_lines,
    public_path,
    sign,
    signature_problem,
    to_line,
)


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> FileSigner:
    return FileSigner.load(tmp_path_factory.mktemp("keys") / "audit-checkpoint.key")


def chain(n: int, partition: int = 0, start: str = GENESIS) -> list[tuple[int, int, bytes]]:
    out, prev = [], start
    for i in range(n):
        out.append((partition, i, record(i, prev)))
        prev = json.loads(out[-1][2])["payload"]["hash"]
    return out


def record(i: int, prev: str, note: str = "") -> bytes:
    data = {"event_id": f"e{i}", "tenant_id": "t", "payload": {"source_offset": i, "note": note, "prev_hash": prev,
                                                                 "hash": ""}}
    data["payload"]["hash"] = chain_hash(prev, data)
    return json.dumps(data).encode()


def head(rows, offset: int) -> str:
    return json.loads(next(v for _, o, v in rows if o == offset))["payload"]["hash"]


def pin(signer, rows, offset: int, partition: int = 0):
    return sign(signer, partition, offset, offset + 1, head(rows, offset))


def kinds(report) -> list[tuple[int, int, str]]:
    return [(b.partition, b.offset, b.kind) for b in report.breaks]


# ---- signatures and keys -----------------------------------------------------------------------------

def test_a_checkpoint_verifies_and_any_change_to_it_does_not(signer, tmp_path):
    cp = sign(signer, 1, 41, 42, "a" * 64)
    assert signature_problem(cp, signer.public_key()) is None
    for change in ({"offset": 40}, {"count": 41}, {"head_hash": "b" * 64}, {"partition": 2}, {"at": "2020-01-01"}):
        assert "bad signature" in signature_problem(cp.model_copy(update=change), signer.public_key())
    other = FileSigner.load(tmp_path / "other.key")
    assert "unknown key" in signature_problem(cp, other.public_key())
    forged = sign(other, 1, 41, 42, "a" * 64).model_copy(update={"key_id": signer.key_id})
    assert "bad signature" in signature_problem(forged, signer.public_key())


def test_the_key_file_is_private_its_public_half_beside_it_and_reloads_the_same(tmp_path):
    path = tmp_path / "k" / "audit-checkpoint.key"
    first = FileSigner.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert FileSigner.load(path, create=False).key_id == first.key_id
    assert b"PRIVATE" not in public_path(path).read_bytes()
    assert load_public_key(public_path(path)) == first.public_key() == load_public_key(path)
    with pytest.raises(FileNotFoundError):
        FileSigner.load(tmp_path / "missing.key", create=False)


# ---- the verifier's break list -----------------------------------------------------------------------

def test_an_intact_anchored_chain_passes_and_later_records_are_counted_unanchored(signer):
    rows = chain(6) + chain(2, partition=1)
    report = verify(rows, [pin(signer, rows, 1), pin(signer, rows, 3)], signer.public_key())
    assert report.ok and report.checkpoints == 2 and report.unanchored == {0: 2, 1: 2}


def test_two_edits_in_one_partition_are_both_named(signer):
    rows = chain(8)
    cps = [pin(signer, rows, 7)]
    for k in (2, 5):
        data = json.loads(rows[k][2])
        data["tenant_id"] = "X"
        rows[k] = (0, k, json.dumps(data).encode())
    assert kinds(verify(rows, cps, signer.public_key())) == [(0, 2, "content changed"), (0, 5, "content changed")]


def test_tail_truncation_and_an_emptied_partition_are_named(signer):
    rows = chain(6) + chain(4, partition=2)
    cps = [pin(signer, rows, 5), sign(signer, 2, 3, 4, head(rows[6:], 3))]
    cut = [r for r in rows if r[0] == 0 and r[1] < 3]
    report = verify(cut, cps, signer.public_key())
    assert kinds(report) == [(0, 3, "truncated"), (2, 3, "emptied")]
    assert "3 records cut from the tail" in report.breaks[0].detail and "pinned 4 records" in report.breaks[1].detail


def test_reordered_records_are_named_out_of_order(signer):
    rows = chain(6)
    cps = [pin(signer, rows, 5)]
    rows[2], rows[3] = (0, 2, rows[3][2]), (0, 3, rows[2][2])
    report = verify(rows, cps, signer.public_key())
    assert kinds(report) == [(0, 2, "out of order"), (0, 3, "out of order"), (0, 4, "out of order")]
    assert "follows the record at offset 3" in report.breaks[0].detail


def test_a_duplicated_record_is_named_once_and_the_chain_goes_on(signer):
    rows = chain(5)
    rows = rows[:3] + [(0, 3, rows[2][2])] + [(0, o + 1, v) for _, o, v in rows[3:]]
    report = verify(rows, [sign(signer, 0, 5, 6, head(rows, 5))], signer.public_key())
    assert kinds(report) == [(0, 3, "duplicate")] and "same record as offset 2" in report.breaks[0].detail


def test_a_rewrite_with_recomputed_hashes_is_caught_by_the_checkpoints_alone(signer):
    rows = chain(10)
    cps = [pin(signer, rows, 3), pin(signer, rows, 6), pin(signer, rows, 9)]
    prev = head(rows, 4)
    for k in range(5, 10):  # from offset 5 on: new content, every later hash recomputed, links intact
        rows[k] = (0, k, record(k, prev, note="forged"))
        prev = json.loads(rows[k][2])["payload"]["hash"]
    assert verify(rows).ok  # the chain alone cannot tell
    report = verify(rows, cps, signer.public_key())
    assert kinds(report) == [(0, 6, "rewritten"), (0, 9, "rewritten")]
    assert "still matched the checkpoint at offset 3" in report.breaks[0].detail


def test_deleted_leading_records_and_bad_checkpoints_are_named(signer, tmp_path):
    rows = chain(5)
    good, forged = pin(signer, rows, 4), sign(FileSigner.load(tmp_path / "x.key"), 0, 4, 5, "f" * 64)
    report = verify(rows[2:], [good, forged, good.model_copy(update={"count": 9})], signer.public_key())
    assert kinds(report) == [(0, 2, "records missing"), (0, 2, "records missing"), (0, 4, "bad checkpoint"),
                             (0, 4, "bad checkpoint")]
    assert "3 records up to offset 4" in report.breaks[1].detail
    assert verify(rows, [good]).breaks[0].kind == "bad checkpoint"  # no public key: nothing can be trusted


# ---- the checkpoint file -----------------------------------------------------------------------------

def test_the_checkpoint_file_round_trips_and_a_corrupt_line_is_named(signer):
    rows = chain(3)
    lines = [to_line(pin(signer, rows, 0)), "\n", to_line(pin(signer, rows, 2))]
    assert [c.offset for c in parse_lines("".join(lines))] == [0, 2]
    for bad, line in ((lines[0] + "\n" + "{not json\n", 3), (lines[0] + '{"partition": 0}\n', 2),
                      (lines[0] + lines[2][:40], 2), (lines[0].replace('"count":1', '"count":0'), 1)):
        with pytest.raises(CheckpointFileError) as err:
            parse_lines(bad, "shipped.jsonl")
        assert err.value.line == line and f"shipped.jsonl line {line}:" in str(err.value)


# ---- the checkpointer and the stage ------------------------------------------------------------------

class Kept:
    """A checkpoint sink that keeps what it is given."""

    def __init__(self):
        self.written = []

    async def write(self, checkpoint) -> None:
        self.written.append(checkpoint)


def audit_stage(tmp_path, signer, every: int = 3, seconds: float = 3600.0):
    from streams.stages.audit import AuditStage

    config = HallmarkConfig(home=tmp_path / "home", kafka_bootstrap="127.0.0.1:9", audit_checkpoint_every=every,
                            audit_checkpoint_seconds=seconds)
    log, kept = MemoryLog(), Kept()
    return AuditStage(config, log, signer=signer, checkpoint_sink=kept), log, kept


def sources(n: int, partition: int = 0, first: int = 0) -> list[Source]:
    from tests.test_spine_flow import kafka_request

    return [Source("requests", partition, first + i, None, kafka_request("a red circle").to_bytes())
            for i in range(n)]


class ToLog:
    """A runner sink that appends to the in-memory log, as the broker would."""

    def __init__(self, log: MemoryLog):
        self.log = log

    async def send(self, topic, key, value, partition):
        self.log.append(topic, value, partition or 0, key)


async def feed(stage, log: MemoryLog, batches: list[list[Source]]) -> None:
    """Run batches through the real runner."""
    from streams.runner import Runner

    runner = Runner(stage, ToLog(log))
    await runner.prepare()
    for batch in batches:
        await runner.process(batch)


async def until_written(stage, kept: Kept) -> None:
    """Wait (5 s at most) for the stage's timer to write a checkpoint, then stop the timer."""
    for _ in range(50):
        if kept.written:
            break
        await asyncio.sleep(0.1)
    stage.timer.cancel()


def test_the_stage_signs_each_partitions_durable_head_every_n_records(tmp_path, signer):
    stage, log, kept = audit_stage(tmp_path, signer, every=3)

    async def go():
        await feed(stage, log, [sources(2), sources(2, first=2), sources(1, partition=1)])
        assert stage.checkpoints.due() == [0]
        await stage.checkpoints.checkpoint(stage.checkpoints.due())
        stage.timer.cancel()

    asyncio.run(go())
    (cp,) = kept.written
    rows = [(r.partition, r.offset, r.value) for r in log.topics["audit"]]
    assert (cp.partition, cp.offset, cp.count) == (0, 3, 4) and cp.head_hash == head(rows, 3)
    report = verify(rows, kept.written, signer.public_key())
    assert report.ok and report.unanchored == {0: 0, 1: 1}


def test_the_timer_anchors_a_quiet_partition_after_t_seconds(tmp_path, signer):
    stage, log, kept = audit_stage(tmp_path, signer, every=1000, seconds=0.2)

    async def go():
        await feed(stage, log, [sources(2, partition=2)])
        await until_written(stage, kept)

    asyncio.run(go())
    assert [(c.partition, c.offset) for c in kept.written] == [(2, 1)]


def test_a_head_the_stage_did_not_write_is_not_signed_and_is_reported_once(tmp_path, signer, caplog):
    clock = [0.0]
    log, kept = MemoryLog(), Kept()
    checkpointer = Checkpointer(signer, log, kept, Cadence(every=1, seconds=1.0), 1, clock=lambda: clock[0])
    mine = record(0, GENESIS)
    log.append("audit", mine)
    checkpointer.wrote(0, json.loads(mine)["payload"]["hash"])
    log.append("audit", record(1, json.loads(mine)["payload"]["hash"], note="forged"))  # another writer's record
    asyncio.run(checkpointer.checkpoint([0]))
    asyncio.run(checkpointer.checkpoint([0]))
    assert kept.written == [] and checkpointer.due() == [0]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "audit partition 0: not signing offset 1: it is not the head this stage wrote (tampered, or another writer); "
        "`hallmark audit verify` names it"]


def test_the_timer_restarts_in_the_loop_that_feeds_the_stage(tmp_path, signer):
    from streams.runner import Runner

    stage, log, kept = audit_stage(tmp_path, signer, every=1)
    runner = Runner(stage, ToLog(log))
    asyncio.run(runner.prepare())  # as `streams.run` does: a loop of its own, gone before Faust's starts

    async def go():
        await runner.process(sources(1, partition=1))
        await until_written(stage, kept)

    asyncio.run(go())
    assert [(c.partition, c.offset) for c in kept.written] == [(1, 0)]
