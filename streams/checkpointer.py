"""The audit stage's checkpointer: signs each audit partition's durable head every N records or T seconds."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from hallmark.config import KafkaClient
from schemas.events import AuditCheckpoint
from streams import checkpoints
from streams.auditlog import chain_hash
from streams.base import Log, Record
from streams.checkpoints import Checkpoint, Signer

log = logging.getLogger("hallmark.streams")
TOPIC = "audit-checkpoints"


@dataclass(frozen=True)
class Cadence:
    """A partition is due once `every` records wait, or any record has waited `seconds`; looked at each `tick`."""

    every: int = 1000
    seconds: float = 30.0
    tick: float = 1.0


class CheckpointSink(Protocol):
    """Where a signed checkpoint goes (the file, then the compacted topic)."""

    async def write(self, checkpoint: Checkpoint) -> None: ...


class KafkaCheckpointSink:
    """Appends to the JSON-lines file (fsynced), then produces to `audit-checkpoints` keyed by audit partition."""

    def __init__(self, client: KafkaClient | str, path: Path):
        self.client, self.path = client, path
        self.producer = None

    async def write(self, checkpoint: Checkpoint) -> None:
        checkpoints.append(self.path, checkpoint)
        if self.producer is None:
            from streams.kafkaio import make_producer

            producer = make_producer(self.client)
            await producer.start()
            self.producer = producer
        event = checkpoint_event(checkpoint)
        try:
            await self.producer.send_and_wait(TOPIC, event.to_bytes(), key=event.key(),
                                              partition=checkpoint.partition)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()


def checkpoint_event(checkpoint: Checkpoint) -> AuditCheckpoint:
    """The topic's event: keyed `audit-<partition>`, so compaction keeps each partition's latest checkpoint."""
    from schemas import producer_for

    return AuditCheckpoint(event_type=AuditCheckpoint.event_type_name, request_id=f"audit-{checkpoint.partition}",
                           tenant_id="hallmark", producer=producer_for("audit"), payload=checkpoint)


class Checkpointer:
    """Signs a partition's head read back from the broker, only if it is intact, this stage's and at least durable."""

    def __init__(self, signer: Signer, log: Log, sink: CheckpointSink, cadence: Cadence, partitions: int,
                 clock: Callable[[], float] = time.monotonic):
        self.signer, self.log, self.sink, self.cadence, self.clock = signer, log, sink, cadence, clock
        self.written: dict[int, dict[str, int]] = {p: {} for p in range(partitions)}  # hash → sequence number
        self.count = {p: 0 for p in range(partitions)}  # records written since start
        self.anchored = {p: 0 for p in range(partitions)}  # sequence number of the last signed head
        self.durable = {p: 0 for p in range(partitions)}  # sequence number acknowledged by the broker
        self.since = {p: clock() for p in range(partitions)}
        self.refused: set[tuple[int, int]] = set()  # (partition, offset) of heads already reported

    def restore(self, heads: dict[int, str], signed: dict[int, str]) -> None:
        """After a restart: each head read back is this stage's; it waits for a checkpoint unless one signed it."""
        for p, head in heads.items():
            self.written[p] = {head: 0}
            self.anchored[p] = 0 if signed.get(p) == head else -1

    def wrote(self, partition: int, head: str) -> None:
        self.count[partition] += 1
        self.written[partition][head] = self.count[partition]

    def acknowledged(self, heads: dict[int, str]) -> None:
        """Every record up to these heads is on the broker (the runner awaited them before the next batch)."""
        for p, head in heads.items():
            self.durable[p] = max(self.durable[p], self.written[p].get(head, 0))

    def waiting(self, partition: int) -> int:
        return self.count[partition] - self.anchored[partition]

    def due(self) -> list[int]:
        now = self.clock()
        return [p for p in self.count if self.waiting(p) >= self.cadence.every
                or (self.waiting(p) > 0 and now - self.since[p] >= self.cadence.seconds)]

    async def checkpoint(self, partitions: list[int]) -> list[Checkpoint]:
        """Sign and write the durable head of each partition; the ones that cannot be trusted are logged, skipped."""
        tails: dict[int, Record] = {}
        async for record in self.log.read("audit", tail=1):
            tails[record.partition] = record
        out = []
        for p in partitions:
            record = tails.get(p)
            if record is None:
                log.warning("audit partition %d: its head cannot be read back (gone, or no access); not signing", p)
                continue
            head = self._accept(p, record)
            if head is None:
                continue
            checkpoint = checkpoints.sign(self.signer, p, record.offset, record.offset + 1, head)
            await self.sink.write(checkpoint)
            sequence = self.written[p][head]
            self.written[p] = {h: s for h, s in self.written[p].items() if s >= sequence}
            self.anchored[p], self.since[p] = sequence, self.clock()
            out.append(checkpoint)
        return out

    def _accept(self, p: int, record: Record) -> str | None:
        try:
            data = json.loads(record.value)
            prev, stored = data["payload"]["prev_hash"], data["payload"]["hash"]
            intact = chain_hash(prev, data) == stored
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            intact, stored = False, ""
        sequence = self.written[p].get(stored)
        if intact and sequence is not None and sequence >= self.durable[p]:
            return stored if sequence > self.anchored[p] else None  # nothing new is durable yet
        if (p, record.offset) not in self.refused:  # once per head, not every tick
            self.refused.add((p, record.offset))
            log.error("audit partition %d: not signing offset %d: it is not the head this stage wrote (tampered, or "
                      "another writer); `hallmark audit verify` names it", p, record.offset)
        return None

    async def run(self) -> None:
        """The timer: forever, every tick, checkpoint what is due; trouble is logged and retried next tick."""
        while True:
            await asyncio.sleep(self.cadence.tick)
            due = self.due()
            if not due:
                continue
            try:
                await self.checkpoint(due)
            except Exception as exc:  # Kafka or disk trouble: the records stay unanchored until the next try
                log.warning("audit checkpoint failed (%s); retrying", exc.__class__.__name__)
