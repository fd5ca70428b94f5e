"""Pipeline benchmark: N requests end to end through the real stack; p50/p99 per stage from event timestamps.

    python bench/pipeline.py --n 20              # starts its own broker and stages in a temp dir, then stops them
    python bench/pipeline.py --n 20 --running    # uses the stack `hallmark up` started (HALLMARK_* settings)

Stage latency = occurred_at of a stage's output event − occurred_at of the event it answers (its causation),
so it includes queueing in Kafka and batching, not only compute.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hallmark.config import HallmarkConfig  # noqa: E402
from schemas import PoisonMessage, Producer, RequestSubmitted, parse_event  # noqa: E402
from schemas.events import GenerationSpec, RequestSubmittedPayload  # noqa: E402
from streams.topiclog import read_all  # noqa: E402

STAGE_OF = {"prompt.verdict": "prompt-gate", "job.created": "router", "image.generated": "generation",
            "image.verdict": "output-gate", "asset.published": "publisher"}
TOPICS = ("requests", "prompt-verdicts", "jobs", "images", "image-verdicts", "assets", "outcomes")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def produce(client, events: list) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client.aiokafka(), acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait("requests", event.to_bytes(), key=event.key())
    finally:
        await producer.stop()


async def events_of(client, ids: set[str]) -> dict[str, list]:
    found: dict[str, list] = defaultdict(list)
    for topic in TOPICS:
        for record in await read_all(client, topic):
            try:
                event = parse_event(record.value)
            except PoisonMessage:
                continue
            if event.request_id in ids:
                found[event.request_id].append(event)
    return found


def run(settings: HallmarkConfig, n: int, steps: int, timeout: float) -> int:
    producer = Producer(service="bench", version="1")
    tag = uuid.uuid4().hex[:8]
    prompts = ["a red circle above a blue square", "two green triangles on a white background",
               "a small yellow star left of a large purple circle"]
    events = [RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=f"bench-{tag}-{i}",
                               tenant_id="bench", producer=producer, payload=RequestSubmittedPayload(
                                   spec=GenerationSpec(prompt=prompts[i % len(prompts)], seed=i, steps=steps)))
              for i in range(n)]
    ids = {e.request_id for e in events}
    started = time.monotonic()
    asyncio.run(produce(settings.operator_client(), events))
    while True:
        found = asyncio.run(events_of(settings.operator_client(), ids))
        done = {rid for rid, evs in found.items() if any(e.event_type == "outcome" for e in evs)}
        if len(done) == n or time.monotonic() - started > timeout:
            break
        time.sleep(2.0)
    found = asyncio.run(events_of(settings.operator_client(), ids))  # topics were read one after another: read again
    lat: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, int] = defaultdict(int)
    first_in, last_out = None, None
    for rid, evs in found.items():
        by_id = {e.event_id: e for e in evs}
        for e in evs:
            cause = by_id.get(e.causation_id)
            if e.event_type in STAGE_OF and cause is not None:
                lat[STAGE_OF[e.event_type]].append((e.occurred_at - cause.occurred_at).total_seconds() * 1000)
        submitted = next(e for e in evs if e.event_type == "request.submitted")
        outcome = next((e for e in evs if e.event_type == "outcome"), None)
        first_in = min(first_in or submitted.occurred_at, submitted.occurred_at)
        if outcome is not None:
            statuses[outcome.payload.status.value] += 1
            lat["end-to-end"].append((outcome.occurred_at - submitted.occurred_at).total_seconds() * 1000)
            last_out = max(last_out or outcome.occurred_at, outcome.occurred_at)
    print(f"requests: {n}  finished: {sum(statuses.values())}  outcomes: {dict(statuses)}  steps: {steps}")
    print(f"{'stage':<12} {'count':>5} {'p50 ms':>10} {'p99 ms':>10} {'mean ms':>10}")
    for stage in [*dict.fromkeys(STAGE_OF.values()), "end-to-end"]:
        values = lat.get(stage)
        if values:
            print(f"{stage:<12} {len(values):>5} {percentile(values, 0.5):>10.1f} {percentile(values, 0.99):>10.1f} "
                  f"{statistics.fmean(values):>10.1f}")
    if first_in and last_out:
        span = (last_out - first_in).total_seconds()
        print(f"throughput: {sum(statuses.values()) / span:.2f} requests/s over {span:.1f}s "
              f"(first submit → last outcome)")
    return 0 if sum(statuses.values()) == n else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--running", action="store_true", help="use the stack `hallmark up` started")
    args = parser.parse_args()
    if args.running:
        return run(HallmarkConfig.from_env(), args.n, args.steps, args.timeout)
    from hallmark.broker import LocalKafka, free_port
    from hallmark.stack import Stack, stage_services

    with tempfile.TemporaryDirectory(prefix="hallmark-bench-") as tmp:
        kafka = LocalKafka(Path(tmp) / "kafka", free_port()).start()
        settings = HallmarkConfig.from_env(home=Path(tmp) / "home", kafka_bootstrap=kafka.bootstrap, database_url="",
                                           kafka_credentials_dir=kafka.credentials_dir)
        stack = Stack(settings)
        try:
            t0 = time.monotonic()
            stack.up(stages=stage_services(), web=[], with_kafka=False)
            print(f"stack ready in {time.monotonic() - t0:.1f}s")
            return run(settings, args.n, args.steps, args.timeout)
        finally:
            stack.down(with_kafka=False)
            kafka.stop()


if __name__ == "__main__":
    sys.exit(main())
