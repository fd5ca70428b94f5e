"""The spine's pure parts, without a broker: audit chain and redaction, read-model determinism."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st
from sqlmodel import Session, select

from schemas import ImageVerdict, JobCreated, Outcome, OutcomeStatus, Producer, PromptVerdict, RequestSubmitted
from schemas.events import (Decision, GateResult, GenerationSpec, ImageVerdictPayload, JobCreatedPayload,
                            OutcomePayload, PromptVerdictPayload, RequestSubmittedPayload)
from streams.auditlog import GENESIS, AuditKeys, chain_hash, decrypt_prompts, encrypt_prompts, redact, verify
from streams.readmodels import TABLES, RequestRow, apply, open_readmodels

P = Producer(service="test", version="1")


def chain(n: int) -> list[tuple[int, int, bytes]]:
    out, prev = [], GENESIS
    for i in range(n):
        record = {"event_id": str(i), "payload": {"source_offset": i, "prev_hash": prev, "hash": ""}}
        record["payload"]["hash"] = prev = chain_hash(prev, record)
        out.append((0, i, json.dumps(record).encode()))
    return out


def test_intact_chain_verifies():
    report = verify(chain(5))
    assert report.ok and report.records == 5


def test_changed_record_is_the_one_named():
    records = chain(5)
    data = json.loads(records[2][2])
    data["payload"]["source_offset"] = 99
    records[2] = (0, 2, json.dumps(data).encode())
    report = verify(records)
    assert [(b.partition, b.offset) for b in report.breaks] == [(0, 2)] and "content changed" in report.breaks[0].reason


def test_deleted_record_breaks_the_next_link():
    records = chain(5)
    del records[1]
    report = verify(records)
    assert report.breaks[0].offset == 2 and "prev_hash" in report.breaks[0].reason


def test_redaction_finds_nested_prompts_and_crypto_shredding(tmp_path):
    data = {"payload": {"spec": {"prompt": "secret cat", "negative_prompt": "dogs", "n": 1}}, "x": [{"prompt": "p2"}]}
    redacted, found = redact(data)
    assert "secret" not in json.dumps(redacted) and "p2" not in json.dumps(redacted)
    assert found == {"prompt": "secret cat", "negative_prompt": "dogs"}
    keys = AuditKeys.load(tmp_path)
    ciphertext = encrypt_prompts(keys, found, b"event-1")
    assert decrypt_prompts(keys, ciphertext, b"event-1") == found
    (tmp_path / "reviewer.key").unlink()
    shredded = AuditKeys.load(tmp_path, create=False)
    assert shredded.reviewer_key is None and shredded.hmac_key == keys.hmac_key


def lifecycle(request_id: str, status: OutcomeStatus) -> list:
    spec = GenerationSpec(prompt="never stored", seed=3)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    first = RequestSubmitted(event_type="request.submitted", request_id=request_id, tenant_id="t", producer=P,
                             occurred_at=t0, payload=RequestSubmittedPayload(spec=spec))
    allow = GateResult(decision=Decision.ALLOW, stage="lexical", policy_id="p", policy_version="1")
    events = [first]
    for i, (cls, payload) in enumerate([
        (PromptVerdict, PromptVerdictPayload(spec=spec, verdict=allow)),
        (JobCreated, JobCreatedPayload(spec=spec, policy_version="1")),
        (ImageVerdict, ImageVerdictPayload(spec=spec, model_id="m", images=[], verdict=allow)),
        (Outcome, OutcomePayload(status=status, reason="r")),
    ]):
        event = events[-1].follow(cls, payload, P)
        events.append(event.model_copy(update={"occurred_at": t0 + timedelta(seconds=i + 1)}))
    return events


def rows(events: list) -> list[dict]:
    engine = open_readmodels("sqlite://")
    with Session(engine) as session:
        for event in events:
            apply(session, event)
            session.flush()
        session.commit()
        return [r.model_dump() for r in session.exec(select(RequestRow).order_by(RequestRow.request_id))]


EVENTS = lifecycle("a", OutcomeStatus.PUBLISHED) + lifecycle("b", OutcomeStatus.REJECTED)


def test_read_models_fold_to_final_status_idempotently_and_without_prompts():
    expected = rows(EVENTS)
    assert {r["request_id"]: r["status"] for r in expected} == {"a": "published", "b": "rejected"}
    assert rows(EVENTS + EVENTS[:3]) == expected  # re-applying changes nothing
    assert "never stored" not in repr(expected) and len(TABLES) == 2


@settings(max_examples=12, deadline=None)
@given(st.randoms(use_true_random=False))
def test_read_models_do_not_depend_on_arrival_order(rnd: random.Random):
    shuffled = list(EVENTS)
    rnd.shuffle(shuffled)
    assert rows(shuffled) == rows(EVENTS)
