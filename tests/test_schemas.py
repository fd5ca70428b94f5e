"""Event contracts: strict parsing with reasons, round trips, and the checked-in JSON Schemas match the models."""
from __future__ import annotations

import json
import pytest

from schemas import EVENT_TYPES, TOPICS, PoisonMessage, Producer, RequestSubmitted, new_event_id, parse_event
from schemas.events import GenerationSpec, RequestSubmittedPayload
from schemas.export import drift, rendered

P = Producer(service="test", version="1")


def request(**spec) -> RequestSubmitted:
    return RequestSubmitted(event_type="request.submitted", request_id="r1", tenant_id="t1", producer=P,
                            payload=RequestSubmittedPayload(spec=GenerationSpec(prompt="a red circle", **spec)))


def test_checked_in_json_schemas_match_the_models():
    assert drift() == [], "run `python -m schemas.export` and commit schemas/jsonschema/"


def test_every_event_type_and_the_registry_are_exported():
    files = rendered()
    assert {f"{name}.schema.json" for name in EVENT_TYPES} | {"topics.json"} == set(files)
    registry = {t["name"]: t for t in json.loads(files["topics.json"])}
    assert registry["audit"]["retention_ms"] == -1 and set(registry) == set(TOPICS)


def test_round_trip_and_uuid7():
    event = request(seed=5)
    again = parse_event(event.to_bytes(), expected=TOPICS["requests"].event_types)
    assert again == event
    assert event.event_id.version == 7 and new_event_id().version == 7


@pytest.mark.parametrize("raw, reason", [
    (b"\x00\xff", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"schema_version": "2.0", "event_type": "request.submitted"}).encode(), "unknown schema major"),
    (json.dumps({"schema_version": "1.0", "event_type": "nope"}).encode(), "unknown event_type"),
    (json.dumps({"schema_version": "1.0", "event_type": "request.submitted", "request_id": "x"}).encode(),
     "schema-invalid"),
])
def test_poison_is_named(raw, reason):
    with pytest.raises(PoisonMessage, match=reason):
        parse_event(raw)


def test_wrong_topic_and_oversized_prompt_are_poison():
    event = request()
    with pytest.raises(PoisonMessage, match="does not belong"):
        parse_event(event.to_bytes(), expected=TOPICS["jobs"].event_types)
    data = json.loads(event.to_bytes())
    data["payload"]["spec"]["prompt"] = "x" * 2001
    with pytest.raises(PoisonMessage, match="prompt"):
        parse_event(json.dumps(data))
    data["payload"]["spec"]["prompt"] = "ok"
    data["schema_version"] = "1.7"  # a newer minor is read (additive)
    assert parse_event(json.dumps(data)).schema_version == "1.7"
