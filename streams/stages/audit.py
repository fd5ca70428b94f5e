"""The audit processor: every message → `audit` (redacted, hash-chained per partition); signed head checkpoints."""
from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Sequence

from schemas import TOPICS, AuditRecord, Event
from schemas.events import AuditRecordPayload
from streams.auditlog import (
    GENESIS,
    AuditKeys,
    chain_hash,
    encrypt_prompts,
    prompt_hmac,
    redact,
)
from streams.base import Source, Stage, _id_or
from streams.checkpointer import Cadence, Checkpointer, KafkaCheckpointSink
from streams.checkpoints import FileSigner, checkpoint_file, key_path

TAIL = 5000  # records per audit partition re-read at start: far more than one commit interval can leave unacked


class AuditStage(Stage):
    """Source partition p chains onto audit partition p. Re-reading the tail at start restores each chain's head
    and which source offsets are already audited, so a restart neither forks a chain nor audits twice."""

    name = "audit"
    sources = tuple(name for name in TOPICS if name not in ("audit", "audit-checkpoints"))
    writes = ("audit",)  # and `audit-checkpoints` (streams.acls grants every audit topic to this stage alone)
    reads = ("audit", "audit-checkpoints")  # each chain's head and its latest checkpoint, at start and each tick
    batch_size = 200
    in_flow = False
    raw = True

    async def start(self) -> None:
        """Restore each chain's head from the log, then start the checkpoint timer (`deps`: signer, checkpoint_sink)."""
        self.keys = self.deps.get("keys") or AuditKeys.load(self.settings.keys_dir)
        self.parts = TOPICS["audit"].partitions
        self.heads: dict[int, str] = {}
        self.audited: dict[tuple[str, int], int] = {}
        async for rec in self.log.read("audit", tail=TAIL):
            try:
                payload = json.loads(rec.value)["payload"]
                self.heads[rec.partition] = payload["hash"]
                key = (payload["source_topic"], payload["source_partition"])
                self.audited[key] = max(self.audited.get(key, -1), payload["source_offset"])
            except (ValueError, KeyError, TypeError):
                continue  # `hallmark audit verify` reports it; new records chain onto the last good hash
        self.checkpoints = Checkpointer(
            self.deps.get("signer") or FileSigner.load(key_path(self.settings)), self.log,
            self.deps.get("checkpoint_sink") or KafkaCheckpointSink(self.settings.kafka_client(),
                                                                    checkpoint_file(self.settings)),
            Cadence(self.settings.audit_checkpoint_every, self.settings.audit_checkpoint_seconds,
                    min(1.0, self.settings.audit_checkpoint_seconds)), self.parts)
        self.checkpoints.restore(self.heads, await self._signed_heads())
        self.timer: asyncio.Task | None = None
        self._keep_timer()

    async def running(self) -> None:
        """In the loop that feeds the stage: anchor the tail on time even if no new message arrives."""
        self._keep_timer()

    def _keep_timer(self) -> None:
        """(Re)start the checkpoint timer in the loop feeding the stage (`streams.run` prepares in another loop)."""
        loop = asyncio.get_running_loop()
        if self.timer is None or self.timer.done() or self.timer.get_loop() is not loop:
            self.timer = loop.create_task(self.checkpoints.run())

    async def _signed_heads(self) -> dict[int, str]:
        """Each audit partition's head hash as its latest checkpoint on `audit-checkpoints` pins it."""
        signed: dict[int, tuple[int, str]] = {}
        async for rec in self.log.read("audit-checkpoints", tail=1):
            try:
                payload = json.loads(rec.value)["payload"]
                p, offset, head = int(payload["partition"]), int(payload["offset"]), str(payload["head_hash"])
            except (ValueError, KeyError, TypeError):
                continue
            if offset >= signed.get(p, (-1, ""))[0]:
                signed[p] = (offset, head)
        return {p: head for p, (_, head) in signed.items()}

    def partition_for(self, out: Event, source: Source) -> int | None:
        return source.partition % self.parts

    async def handle_raw(self, sources: Sequence[Source]) -> list[tuple[Event, Source]]:
        self._keep_timer()
        self.checkpoints.acknowledged(self.heads)  # the runner awaited the last batch's records before this one
        heads, audited = dict(self.heads), dict(self.audited)  # committed only if the whole batch succeeds
        out = []
        for source in sources:
            if source.offset <= audited.get((source.topic, source.partition), -1):
                continue
            out.append((self.record(source, heads), source))
            audited[(source.topic, source.partition)] = source.offset
        self.heads, self.audited = heads, audited
        for record, source in out:
            self.checkpoints.wrote(self.partition_for(record, source), record.payload.hash)
        return out

    def record(self, source: Source, heads: dict[int, str]) -> Event:
        try:
            data = json.loads(source.value)
        except (ValueError, UnicodeDecodeError):
            data = None
        prompts: dict[str, str] = {}
        if isinstance(data, dict):
            redacted, prompts = redact(data)
        else:  # not an event at all: keep only its fingerprint (it may be a prompt in clear)
            data, redacted = {}, {"unparsed": True, "raw_sha256": hashlib.sha256(source.value).hexdigest(),
                                  "raw_size": len(source.value)}
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        request_id = _id_or(data.get("request_id"), "unknown")
        if request_id == "unknown" and source.key:
            request_id = _id_or(source.key.decode("utf-8", "replace"), "unknown")
        partition = source.partition % self.parts
        payload = AuditRecordPayload(
            source_topic=source.topic, source_partition=source.partition, source_offset=source.offset,
            source_event_id=event_id, source_event_type=_id_or(data.get("event_type"), "") or None,
            redacted_event=redacted, prev_hash=heads.get(partition, GENESIS), hash="",
            prompt_hmac=prompt_hmac(self.keys, prompts["prompt"]) if "prompt" in prompts else None,
            prompt_ciphertext=encrypt_prompts(self.keys, prompts, (event_id or "").encode()) if prompts else None,
            key_id=self.keys.key_id if prompts else None)
        record = AuditRecord(event_type=AuditRecord.event_type_name, request_id=request_id,
                             tenant_id=_id_or(data.get("tenant_id"), "unknown"), producer=self.producer,
                             causation_id=_uuid(event_id), payload=payload)
        record.payload.hash = chain_hash(payload.prev_hash, json.loads(record.model_dump_json()))
        heads[partition] = record.payload.hash
        return record


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
