"""Crash test: kill the generation consumer, then a gate, mid-flight; every request ends exactly once."""
from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from hallmark.stack import stage_services
from tests.test_spine_flow import BLOCKED, SAFE, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def restart(spine, name: str) -> None:
    """SIGKILL (no clean shutdown, nothing flushed or committed), then start it again at once."""
    stack = spine.stack
    assert stack.pid(name), f"{name} is not running"
    stack.stop(name, sig=signal.SIGKILL)
    stack.start(next(s for s in stage_services() if s.name == name))


def wave(spine, n: int) -> list[str]:
    prompts = [SAFE, SAFE, BLOCKED, SAFE]
    events = [kafka_request(prompts[i % len(prompts)], seed=100 + i) for i in range(n)]
    for event in events:
        spine.produce_event(event)
    return [e.request_id for e in events]


def test_killing_generation_then_a_gate_loses_and_doubles_nothing(spine):
    ids = wave(spine, 6)
    spine.wait_for("jobs", lambda e: e.request_id in ids, what="a job in flight")
    restart(spine, "generation")
    ids += wave(spine, 6)
    time.sleep(0.5)
    restart(spine, "prompt-gate")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        counts = Counter(e.request_id for e in spine.events("outcomes") if e.request_id in ids)
        if len(counts) == len(ids):
            break
        time.sleep(2.0)
    time.sleep(5.0)  # let any late duplicate surface
    counts = Counter(e.request_id for e in spine.events("outcomes") if e.request_id in ids)
    assert set(counts) == set(ids), f"lost: {set(ids) - set(counts)}"
    assert all(c == 1 for c in counts.values()), {k: c for k, c in counts.items() if c > 1}
    assert not spine.stack.wait_ready([s for s in stage_services() if s.name in ("generation", "prompt-gate")])
