"""The audit log on a real run: the chain verifies, on-disk tampering is named, prompts reach it only redacted.
Checkpoints of the running stage: tests/test_audit_stage.py; every attack on a dedicated broker:
tests/test_audit_tamper.py."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from hallmark.stack import hallmark_argv
from tests.conftest import logs_text
from tests.test_spine_flow import BLOCKED, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def hallmark(spine, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **spine.settings.to_env()}
    return subprocess.run(hallmark_argv(*args), env=env, capture_output=True, text=True,
                          timeout=120)


def audited(spine, request_id: str, topic: str, timeout: float = 120.0) -> list[dict]:
    """Audit records of `request_id` from `topic`, once the audit processor has written at least one."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(r.value) for r in spine.records("audit")]
        found = [r for r in found if r["request_id"] == request_id
                 and r["payload"]["source_topic"].split(".")[0] == topic]  # `requests.<tenant>` too
        if found or time.monotonic() > deadline:
            assert found, f"no audit record of {topic} for {request_id}"
            return found
        time.sleep(1.0)


def test_audit_verify_passes_on_a_real_run(spine):
    event = kafka_request(BLOCKED)
    spine.produce_event(event)
    spine.outcome(event.request_id)
    audited(spine, event.request_id, "outcomes")
    result = hallmark(spine, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "audit OK" in result.stdout


def _tamper(segment: Path, value: bytes) -> tuple[bytes, bytes]:
    """Change one byte of `value` inside its record batch and fix the batch CRC, as an insider with disk access
    would; returns (original file bytes, tampered file bytes)."""
    from aiokafka.record.util import calc_crc32c

    data = bytearray(segment.read_bytes())
    original = bytes(data)
    at = data.find(value)
    assert at >= 0 and data.find(value, at + 1) < 0
    target = at + value.find(b'"tenant_id":"') + len(b'"tenant_id":"')
    data[target] = ord("X") if data[target] != ord("X") else ord("Y")
    pos = 0
    while pos < len(data):  # record batch v2: baseOffset int64, batchLength int32, then the batch
        (length,) = struct.unpack_from(">i", data, pos + 8)
        start, end = pos + 12, pos + 12 + length
        if start <= target < end:
            crc_at = start + 5  # partitionLeaderEpoch int32, magic int8, then crc uint32
            struct.pack_into(">I", data, crc_at, calc_crc32c(bytes(data[crc_at + 4:end])))
            break
        pos = end
    segment.write_bytes(bytes(data))
    return original, bytes(data)


def test_tampering_with_one_audit_record_is_named_by_verify(spine, kafka):
    event = kafka_request(BLOCKED)
    spine.produce_event(event)
    spine.outcome(event.request_id)
    audited(spine, event.request_id, "outcomes")
    victim = next(r for r in spine.records("audit") if json.loads(r.value)["request_id"] == event.request_id)
    segment = sorted((kafka.home / "data" / f"audit-{victim.partition}").glob("*.log"))[-1]
    original, _ = _tamper(segment, victim.value)
    try:
        result = hallmark(spine, "audit", "verify")
        assert result.returncode == 2
        assert f"audit partition {victim.partition} offset {victim.offset}" in result.stderr
        assert "content changed" in result.stderr
    finally:
        segment.write_bytes(original)
    assert hallmark(spine, "audit", "verify").returncode == 0


def produce_clear(spine, event) -> None:
    """A request straight onto its tenant's topic with its prompt in clear, as a backend that forgot to seal would
    (ingress dead-letters it; the audit keeps it only redacted)."""
    from hallmark.tenants import Tenant

    tenant = Tenant(event.tenant_id)
    spine.produce(tenant.topic, event.to_bytes(), event.key(), spine.settings.kafka_client(tenant.principal))


def test_a_clear_prompt_reaches_the_audit_only_redacted_and_a_sealed_one_only_sealed(spine):
    from streams.auditlog import AuditKeys, decrypt_prompts, prompt_hmac

    marker = f"zebra{uuid.uuid4().hex[:10]}"
    clear, sealed = kafka_request(f"{BLOCKED} {marker}c"), kafka_request(f"{BLOCKED} {marker}s")
    produce_clear(spine, clear)
    spine.produce_event(sealed)  # sealed to the tenant's key: the whole story is tests/test_privacy_sealed.py
    submitted = audited(spine, clear.request_id, "requests")[0]["payload"]
    keys = AuditKeys.load(spine.settings.keys_dir, create=False)
    opened = decrypt_prompts(keys, submitted["prompt_ciphertext"], submitted["source_event_id"].encode())
    assert opened["prompt"] == clear.payload.spec.prompt and submitted["prompt_hmac"] == prompt_hmac(keys,
                                                                                                    opened["prompt"])
    audited(spine, sealed.request_id, "requests")
    assert marker.encode() not in b"".join(r.value for r in spine.records("audit"))
    assert marker not in logs_text(spine.settings.home)


def test_deleting_the_reviewer_key_crypto_shreds_but_the_chain_still_verifies(spine, tmp_path):
    from streams.auditlog import AuditKeys, decrypt_prompts

    event = kafka_request(BLOCKED)
    produce_clear(spine, event)
    payload = audited(spine, event.request_id, "requests")[0]["payload"]
    shredded = tmp_path / "keys"
    shutil.copytree(spine.settings.keys_dir, shredded)
    (shredded / "reviewer.key").unlink()
    aad = payload["source_event_id"].encode()
    assert decrypt_prompts(AuditKeys.load(spine.settings.keys_dir, create=False), payload["prompt_ciphertext"],
                           aad)["prompt"] == BLOCKED
    with pytest.raises(PermissionError):
        decrypt_prompts(AuditKeys.load(shredded, create=False), payload["prompt_ciphertext"], aad)
    assert hallmark(spine, "audit", "verify").returncode == 0
