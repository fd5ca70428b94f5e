"""The HTTP submission API against the real broker: bad input is refused with a JSON reason and reaches no topic."""
from __future__ import annotations

import uuid

import httpx
import pytest

from tests.test_spine_flow import BLOCKED, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BAD_BODIES = [
    ({}, 422, "prompt"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "   "}, 422, "blank"),
    ({"prompt": "x" * 2001}, 422, "prompt"),
    ({"prompt": "ok", "negative_prompt": "x" * 2001}, 422, "negative_prompt"),
    ({"prompt": "ok", "width": 100}, 422, "width"),
    ({"prompt": "ok", "height": 4096}, 422, "height"),
    ({"prompt": "ok", "width": -8}, 422, "width"),
    ({"prompt": "ok", "steps": 0}, 422, "steps"),
    ({"prompt": "ok", "steps": 500}, 422, "steps"),
    ({"prompt": "ok", "n": 0}, 422, "n"),
    ({"prompt": "ok", "n": 9}, 422, "n"),
    ({"prompt": "ok", "seed": -1}, 422, "seed"),
    ({"prompt": "ok", "guidance": "lots"}, 422, "guidance"),
    ({"prompt": "ok", "sampler": "magic"}, 422, "sampler"),
    ({"prompt": "ok", "tenant_id": "someone-else"}, 422, "unknown fields"),
    (["prompt"], 400, "JSON object"),
]


def request_count(spine) -> int:
    return len(spine.records("requests"))


def test_bad_input_gets_a_json_reason_and_nothing_reaches_kafka(spine):
    before = request_count(spine)
    with spine.http() as http:
        for body, status, words in BAD_BODIES:
            response = http.post("/v1/requests", json=body)
            assert response.status_code == status, (body, response.text)
            assert words in response.json()["reason"], (body, response.json())
        response = http.post("/v1/requests", content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 400 and "not JSON" in response.json()["reason"]
        big = b'{"prompt": "ok", "negative_prompt": "' + b"x" * (1024 * 1024) + b'"}'
        response = http.post("/v1/requests", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "larger" in response.json()["reason"]
        response = http.post("/v1/requests", json={"prompt": "ok"}, headers={"Idempotency-Key": "k" * 201})
        assert response.status_code == 400
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": ""}):
        response = httpx.post(f"{spine.api_url}/v1/requests", json={"prompt": "ok"}, headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["reason"]
    assert request_count(spine) == before


def test_idempotency_key_returns_the_same_request_and_produces_once(spine):
    key = f"idem-{uuid.uuid4()}"
    body = {"prompt": BLOCKED, "steps": 4}
    with spine.http() as http:
        first = http.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
        second = http.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == second.status_code == 202
        request_id = first.json()["request_id"]
        assert second.json()["request_id"] == request_id and second.headers.get("Idempotent-Replay") == "true"
        other = http.post("/v1/requests", json={**body, "steps": 5}, headers={"Idempotency-Key": key})
        assert other.status_code == 409 and "different body" in other.json()["reason"]
        spine.outcome(request_id)
        assert len(spine.events("requests", request_id)) == 1
        assert spine.events("requests", request_id)[0].payload.idempotency_key == key


def test_status_shows_categories_and_outcome_but_never_the_prompt(spine):
    with spine.http() as http:
        request_id = http.post("/v1/requests", json={"prompt": BLOCKED}).json()["request_id"]
        accepted = http.get(f"/v1/requests/{request_id}")
        assert accepted.status_code == 200 and accepted.json()["request_id"] == request_id
        view = spine.wait_for_view(request_id, "rejected")
        assert view["outcome"]["status"] == "rejected" and "violence" in view["verdicts"]["prompt"]["categories"]
        assert view["verdicts"]["prompt"]["decision"] == "block" and view["images"] == []
        assert "severed" not in http.get(f"/v1/requests/{request_id}").text
        assert http.get("/v1/requests/no-such-request").status_code == 404
        foreign = kafka_request(BLOCKED, tenant="another-tenant")  # produced straight onto Kafka by another tenant
        spine.produce_event(foreign)
        spine.outcome(foreign.request_id)
        assert http.get(f"/v1/requests/{foreign.request_id}").status_code == 404
    assert httpx.get(f"{spine.api_url}/v1/requests/{request_id}").status_code == 401
