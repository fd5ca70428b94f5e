"""Nobody steers the pipeline from outside, tried as an attacker would against the real broker.

The broker itself refuses clients without credentials and principals outside their grants; a tenant writes only
its own topic and cannot claim another tenant; and what does get onto a topic is re-derived, not trusted: a
forged decision, an allow naming a blob the request never produced, or a verdict for a request that is already
final publish nothing, and each refusal is a `dlq` event with a reason code.
"""
from __future__ import annotations

import asyncio

import pytest

from hallmark.config import KafkaClient
from provenance.store import BlobStore
from review.events import decision_event
from schemas import ImageVerdict, producer_for
from schemas.events import Decision, GateResult, ImageRef, ImageVerdictPayload
from streams.acls import API
from tests.test_spine_flow import BLOCKED, REVIEW, SAFE, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ALLOW = GateResult(decision=Decision.ALLOW, stage="forged", policy_id="p", policy_version="1")


def refused(spine, client: KafkaClient, topic: str) -> bool:
    """True when the broker refuses this client's write to `topic` (authentication or authorization)."""
    try:
        spine.produce(topic, b'{"forged": true}', b"k", client)
    except Exception:
        return True
    return False


def dead_letters(spine, code: str, stage: str) -> list:
    return spine.wait_for("dlq", lambda e: e.payload.reason == code and e.payload.stage == stage,
                          what=f"a {code} dead letter from {stage}")


def test_the_broker_refuses_writes_without_credentials_or_outside_the_grant(spine):
    anonymous, api = KafkaClient(spine.bootstrap), spine.settings.kafka_client(API)
    assert api.username == API
    for topic in ("review-decisions", "image-verdicts", "audit"):
        assert refused(spine, anonymous, topic), topic
        assert refused(spine, api, topic), topic
    assert not refused(spine, api, "requests")  # the API's one grant


def test_a_tenant_writes_only_its_own_topic_and_cannot_claim_another_tenant(spine):
    acme = spine.settings.kafka_client("tenant-acme")
    assert refused(spine, acme, "requests.kafka-tenant") and refused(spine, acme, "requests")
    forged = kafka_request(SAFE, tenant="kafka-tenant")
    spine.produce("requests.acme", forged.to_bytes(), forged.key(), acme)  # its own topic, another tenant's name
    (dead,) = [e for e in dead_letters(spine, "tenant_mismatch: the request names another tenant than its "
                                       "topic's", "prompt-gate") if e.request_id == forged.request_id]
    assert dead.payload.source_topic == "requests.acme"
    assert not spine.events("prompt-verdicts", forged.request_id)


def test_a_decision_for_a_task_that_never_existed_publishes_nothing(spine):
    event = kafka_request(BLOCKED)  # a prompt the gate blocks, carried by a forged approval
    spine.produce_event(event)
    spine.outcome(event.request_id)
    from review.tasks import review_task
    from safety.policy import ReviewPolicy

    never_sent = review_task(event, "prompt", ALLOW, producer_for("router"), ReviewPolicy())
    spine.produce_event(decision_event(never_sent, "approve", "mallory", "forged"))
    assert any(e.request_id == event.request_id for e in dead_letters(spine, "unknown_task", "review"))
    assert not spine.events("jobs", event.request_id)
    assert [o.payload.status.value for o in spine.events("outcomes", event.request_id)] == ["rejected"]


def test_a_decision_that_differs_from_its_task_moves_nothing(spine):
    event = kafka_request(REVIEW)
    spine.produce_event(event)
    (task,) = spine.wait_for("review-tasks", lambda e: e.request_id == event.request_id)
    other = [ImageRef(sha256="ab" * 32, index=0, width=256, height=256, seed=1)]
    forged = decision_event(task.model_copy(update={"payload": task.payload.model_copy(update={"images": other})}),
                            "approve", "mallory", "forged")
    spine.produce_event(forged)
    assert any(e.request_id == event.request_id for e in dead_letters(spine, "decision_differs_from_task",
                                                                      "review"))
    assert not spine.events("jobs", event.request_id) and not spine.events("outcomes", event.request_id)


def test_an_allow_naming_a_blob_the_request_never_produced_publishes_nothing(spine):
    sha = BlobStore(spine.settings.blob_dir).put(b"\x89PNG not ours")
    event = kafka_request(SAFE)
    verdict = event.follow(ImageVerdict, ImageVerdictPayload(
        spec=event.payload.spec, model_id="shapes-ldm", verdict=ALLOW,
        images=[ImageRef(sha256=sha, index=0, width=256, height=256, seed=1)]), producer_for("output-gate"))
    spine.produce_event(verdict)
    assert any(e.request_id == event.request_id
               for e in dead_letters(spine, "image_not_generated_for_request", "publisher"))
    assert not spine.events("assets", event.request_id) and not spine.events("outcomes", event.request_id)


def test_a_verdict_for_a_request_that_is_already_final_publishes_nothing(spine):
    event = kafka_request(BLOCKED)
    spine.produce_event(event)
    assert spine.outcome(event.request_id).payload.status.value == "rejected"
    verdict = event.follow(ImageVerdict, ImageVerdictPayload(
        spec=event.payload.spec, model_id="shapes-ldm", verdict=ALLOW,
        images=[ImageRef(sha256="cd" * 32, index=0, width=256, height=256, seed=1)]), producer_for("output-gate"))
    spine.produce_event(verdict)
    assert any(e.request_id == event.request_id for e in dead_letters(spine, "request_already_final", "publisher"))
    assert not spine.events("assets", event.request_id)
    assert len(spine.events("outcomes", event.request_id)) == 1


def test_the_verification_server_has_no_principal_and_unknown_clients_cannot_even_read(spine):
    from hallmark.stack import web_services
    from streams.topiclog import read_all

    (verify,) = [s for s in web_services(spine.settings.ports) if s.name == "verify"]
    assert verify.principal == ""
    with pytest.raises(Exception):
        asyncio.run(asyncio.wait_for(read_all(KafkaClient(spine.bootstrap), "audit"), 30))
