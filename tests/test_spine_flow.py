"""End to end against the real broker: every route of the flow, review resumption, dead letters."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from PIL import Image

from schemas import RequestSubmitted, ReviewDecided
from schemas.envelope import Producer
from schemas.events import GenerationSpec, RequestSubmittedPayload, ReviewDecidedPayload

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SAFE = "a red circle above a blue square"
BLOCKED = "a gory scene with a severed head"  # lexical block list: violence.gore
REVIEW = "a massacre of green triangles"  # lexical review band: violence.acts
TEST_PRODUCER = Producer(service="test-backend", version="1")


def kafka_request(prompt: str, seed: int = 7, tenant: str = "kafka-tenant") -> RequestSubmitted:
    spec = GenerationSpec(prompt=prompt, seed=seed, steps=4, width=256, height=256)
    return RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=f"kafka-{uuid.uuid4().hex}",
                            tenant_id=tenant, producer=TEST_PRODUCER,
                            payload=RequestSubmittedPayload(spec=spec, source="kafka"))


def assert_published_png(spine, outcome) -> None:
    from provenance.store import BlobStore

    assert outcome.payload.status.value == "published", outcome.payload.reason
    assert outcome.payload.images and len(outcome.payload.asset_ids) == len(outcome.payload.images)
    for ref in outcome.payload.images:
        path = BlobStore(spine.settings.blob_dir).path(ref.sha256)
        assert path.is_file()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (ref.width, ref.height)


def test_http_request_is_published_with_a_png(spine):
    with spine.http() as http:
        response = http.post("/v1/requests", json={"prompt": SAFE, "seed": 3, "steps": 4})
        assert response.status_code == 202, response.text
        request_id = response.json()["request_id"]
        assert_published_png(spine, spine.outcome(request_id))
        view = spine.wait_for_view(request_id, "published")
        assert view["images"] and Path(view["images"][0]["path"]).is_file()
        assert http.get(view["images"][0]["url"]).headers["content-type"] == "image/png"


def test_request_produced_straight_onto_kafka_is_published(spine):
    event = kafka_request(SAFE, seed=11)
    spine.produce_event(event)
    assert_published_png(spine, spine.outcome(event.request_id))


def test_published_image_verifies_on_all_three_signals(spine):
    import time

    from provenance.publisher import ProvenanceConfig
    from provenance.registry import AssetRegistry
    from provenance.store import BlobStore
    from provenance.verify import Verifier

    event = kafka_request(SAFE, seed=13)
    spine.produce_event(event)
    outcome = spine.outcome(event.request_id)
    assert_published_png(spine, outcome)
    sha256 = outcome.payload.images[0].sha256
    data = BlobStore(spine.settings.blob_dir).get(sha256)
    # The registry row comes from the projection of the `assets` event. Wait for it before verifying: a verifier
    # that loads its watermark index just before the row lands would answer by sha256 yet miss the watermark.
    registry = AssetRegistry(spine.settings.db_url)
    deadline = time.monotonic() + 120
    while registry.by_sha256(sha256) is None:
        assert time.monotonic() < deadline, "the projections stage never registered the published asset"
        time.sleep(0.5)
    answer = Verifier(ProvenanceConfig.from_settings(spine.settings)).verify(data)
    evidence = answer["evidence"]
    assert evidence["c2pa"]["present"] and evidence["c2pa"]["valid"], evidence["c2pa"]
    assert evidence["watermark"]["detected"], evidence["watermark"]
    assert evidence["watermark"]["asset_id"] == outcome.payload.asset_ids[0]
    assert answer["verdict"] == "verified" and evidence["sha256_match"]  # the registry holds the exact file
    assert answer["asset"]["asset_id"] == outcome.payload.asset_ids[0]


def test_blocked_prompt_is_rejected_without_any_job(spine):
    event = kafka_request(BLOCKED)
    spine.produce_event(event)
    outcome = spine.outcome(event.request_id)
    assert outcome.payload.status.value == "rejected"
    assert "violence" in outcome.payload.categories
    assert spine.events("jobs", event.request_id) == []


def _review_task(spine, request_id: str):
    return spine.wait_for("review-tasks", lambda e: e.request_id == request_id, what="a review task")[0]


def _decide(spine, task, decision: str) -> None:
    p = task.payload
    spine.produce_event(task.follow(ReviewDecided, ReviewDecidedPayload(
        task_id=p.task_id, gate=p.gate, decision=decision, reviewer="tester", reason=f"test {decision}",
        spec=p.spec, model_id=p.model_id, images=p.images, policy_version=p.verdict.policy_version), TEST_PRODUCER))


def test_review_routed_request_waits_then_approve_resumes_to_published(spine):
    event = kafka_request(REVIEW, seed=5)
    spine.produce_event(event)
    task = _review_task(spine, event.request_id)
    assert task.payload.gate == "prompt" and task.payload.verdict.decision.value == "review"
    assert spine.events("outcomes", event.request_id) == [] and spine.events("jobs", event.request_id) == []
    _decide(spine, task, "approve")
    assert_published_png(spine, spine.outcome(event.request_id))
    jobs = spine.events("jobs", event.request_id)
    assert len(jobs) == 1 and jobs[0].payload.reviewed


def test_review_reject_ends_rejected(spine):
    event = kafka_request(REVIEW, seed=6)
    spine.produce_event(event)
    task = _review_task(spine, event.request_id)
    _decide(spine, task, "reject")
    _decide(spine, task, "approve")  # a second, later decision on the same task changes nothing
    outcome = spine.outcome(event.request_id)
    assert outcome.payload.status.value == "rejected"
    assert "reviewer" in outcome.payload.reason
    assert spine.events("jobs", event.request_id) == []


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe not json at all", "not JSON"),
    (b'{"event_type": "request.submitted", "schema_version": "1.0", "request_id": "x"}', "schema-invalid"),
    (b'{"event_type": "request.submitted", "schema_version": "2.0", "request_id": "y"}', "unknown schema major"),
    (b'[1, 2, 3]', "not a JSON object"),
])
def test_poison_goes_to_dlq_with_reason_and_the_stage_keeps_going(spine, raw, reason):
    spine.produce("requests", raw, key=b"poison")
    import hashlib

    digest = hashlib.sha256(raw).hexdigest()
    letters = spine.wait_for("dlq", lambda e: e.payload.raw_sha256 == digest, what="a dead letter")
    assert letters[0].payload.stage == "prompt-gate" and reason in letters[0].payload.reason
    assert letters[0].payload.source_topic == "requests"
    after = kafka_request(BLOCKED)  # the next valid message is processed
    spine.produce_event(after)
    assert spine.outcome(after.request_id).payload.status.value == "rejected"


def test_every_flow_stage_dead_letters_poison_on_its_topic(spine):
    import hashlib
    import time

    readers = {"prompt-verdicts": {"router"}, "jobs": {"generation"}, "images": {"output-gate"},
               "image-verdicts": {"router", "publisher"}, "review-decisions": {"review"}}
    digests = {}
    for topic in readers:
        raw = f"garbage for {topic} {uuid.uuid4()}".encode()
        spine.produce(topic, raw)
        digests[hashlib.sha256(raw).hexdigest()] = topic
    deadline = time.monotonic() + 120
    while True:
        letters = [e for e in spine.events("dlq") if e.payload.raw_sha256 in digests]
        by_topic: dict[str, set] = {}
        for letter in letters:
            by_topic.setdefault(letter.payload.source_topic, set()).add(letter.payload.stage)
            assert digests[letter.payload.raw_sha256] == letter.payload.source_topic
            assert "not JSON" in letter.payload.reason
        if by_topic == readers or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert by_topic == readers
