"""The stage contract, run over every registered stage with in-memory fakes and no broker.

Every stage: its outputs answer the input (same request, causation = the input's event id), a redelivery gives
the same events again (or, for stages that dedupe by offset, nothing), poison never crashes it (flow stages send
it to `dlq` with a reason and the raw bytes only as a hash), and a gate stage whose gate raises routes the input
to human review (fail closed), never to allow.
"""
from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from hallmark.config import HallmarkConfig
from provenance.store import BlobStore
from schemas import TOPICS, DeadLetter, parse_event
from streams.base import MemoryLog, Source
from streams.run import STAGES, stage_class
from streams.runner import Runner
from tests.stage_cases import CASES, SPEC, Fixture

POISON = b'{"event_type": "request.submitted", "payload": {"spec": {"prompt": "a secret prompt"}}}'
VOLATILE = ("event_id", "occurred_at")


class Capture:
    """A sink that keeps what a runner sends, in order, and appends it to the stage's log (as the broker would)."""

    def __init__(self, log: MemoryLog):
        self.log, self.sent = log, []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None):
        self.sent.append((topic, value))
        self.log.append(topic, value, partition or 0, key)
        return None


def test_every_registered_stage_has_a_contract_case():
    assert set(CASES) == set(STAGES)


@pytest.fixture(params=sorted(STAGES))
def name(request) -> str:
    return request.param


def build(name: str, tmp_path, failing: bool = False):
    """The stage with its fakes, and one valid input (what it presupposes is in the stage's log)."""
    config = HallmarkConfig(home=tmp_path / "home", kafka_bootstrap="127.0.0.1:9")
    blobs, log = BlobStore(config.blob_dir), MemoryLog()
    stage = stage_class(name)(config, log, **CASES[name].deps(blobs, failing))
    return stage, CASES[name].event(Fixture(config, blobs, log))


def run(stage, sources: list[Source]) -> list:
    """Prepare the stage (as the process does before joining its group) and process one batch."""
    sink = Capture(stage.log)

    async def go():
        runner = Runner(stage, sink)
        await runner.prepare()
        await runner.process(sources)

    asyncio.run(go())
    return [(topic, parse_event(value)) for topic, value in sink.sent]


def source_of(name: str, event) -> Source:
    topic = next(t for t in STAGES_SOURCES[name] if type(event) in TOPICS[t].event_types)  # the first topic of its
    # type a stage reads: every stage here reads one topic per event type
    return Source(topic, 0, 0, event.key(), event.to_bytes())


STAGES_SOURCES = {name: stage_class(name).sources for name in STAGES}


def stable(event) -> dict:
    data = json.loads(event.model_dump_json(exclude=set(VOLATILE)))
    data.pop("causation_id", None)
    data["payload"].pop("generation_ms", None)  # a measurement, not an effect
    return data


def test_outputs_answer_their_input(name, tmp_path):
    stage, event = build(name, tmp_path)
    outputs = run(stage, [source_of(name, event)])
    assert sorted({e.event_type for _, e in outputs}) == sorted(CASES[name].emits)
    for topic, out in outputs:
        assert type(out) in TOPICS[topic].event_types  # each output on the topic of its type
        assert out.request_id == event.request_id and out.tenant_id == event.tenant_id
        assert out.causation_id == event.event_id
        assert SPEC.prompt not in out.model_dump_json()  # prompts travel sealed: in clear on no topic


def test_a_redelivered_input_gives_the_same_events_again(name, tmp_path):
    stage, event = build(name, tmp_path)
    source = source_of(name, event)
    first = run(stage, [source])
    again = run(stage, [source])  # the same offset again, after a restart that found the first outputs logged
    expected = [] if CASES[name].replay_dedupes else [(t, stable(e)) for t, e in first if t != "outcomes"]
    assert [(t, stable(e)) for t, e in again] == expected  # a request's terminal outcome is never sent twice


def test_poison_never_crashes_and_flow_stages_dead_letter_it(name, tmp_path):
    stage, _ = build(name, tmp_path)
    source = Source(stage.sources[0], 0, 0, b"req-1", POISON)
    outputs = run(stage, [source])
    assert all(SPEC.prompt not in e.model_dump_json() and "secret prompt" not in e.model_dump_json()
               for _, e in outputs)
    if stage.raw:
        assert all(t in ("audit",) for t, _ in outputs)  # observers never write into the flow
        return
    (topic, dead), = outputs
    assert topic == "dlq" and isinstance(dead, DeadLetter)
    assert dead.payload.stage == name and dead.payload.reason
    assert dead.payload.raw_sha256 == hashlib.sha256(POISON).hexdigest() and dead.request_id == "req-1"


@pytest.mark.parametrize("name", [n for n in sorted(STAGES) if CASES[n].gate])
def test_a_gate_that_raises_routes_to_review(name, tmp_path):
    stage, event = build(name, tmp_path, failing=True)
    (topic, verdict), = run(stage, [source_of(name, event)])
    assert verdict.payload.verdict.decision.value == "review" and verdict.payload.verdict.stage == "error"
