"""Pipeline benchmark: what authentication and sealed prompts cost, end to end through two real stacks.

    python bench/pipeline.py                      # 10 rounds × 10 requests per mode, interleaved
    python bench/pipeline.py --only secure --rounds 2
    python bench/pipeline.py --rounds 6 --spread    # also how each round's burst spread out on its way

It starts two brokers and two sets of stage processes in a temp dir: `secure` (SASL/SCRAM, ACLs, prompts sealed
to the tenant's key) and `plain` (neither), then runs rounds of requests submitted as a tenant on its own topic,
alternating between the modes (and which goes first), so a drift in the machine's speed hits both alike.

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
TOPICS = ("requests.bench", "prompt-verdicts", "jobs", "images", "image-verdicts", "assets", "outcomes")
BENCH_TENANT = "bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def produce(client, topic: str, events: list) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client.aiokafka(), acks="all")
    await producer.start()
    try:  # a burst as a backend's producer sends one: every send, then wait for the acks (not one round trip each)
        await asyncio.gather(*[await producer.send(topic, event.to_bytes(), key=event.key()) for event in events])
    finally:
        await producer.stop()


async def end_offsets(client, topics: tuple[str, ...]) -> dict[str, dict[int, int]]:
    """Each topic's end offset per partition: where a round's events will start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client.aiokafka(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        out: dict[str, dict[int, int]] = {}
        for topic in topics:
            if not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            out[topic] = {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()} if tps else {}
        return out
    finally:
        await consumer.stop()


async def wait_for_outcomes(client, ids: set[str], start: dict[int, int], timeout: float) -> None:
    """Until every request has an outcome: one consumer tailing `outcomes` from the round's start (cheap, so the
    waiting does not compete with the stages for the CPU)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client.aiokafka(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition("outcomes", p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        done: set[str] = set()
        deadline = time.monotonic() + timeout
        while not ids <= done and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        done.add(parse_event(record.value).request_id)
                    except PoisonMessage:
                        continue
    finally:
        await consumer.stop()


async def events_of(client, ids: set[str], start: dict[str, dict[int, int]]) -> dict[str, list]:
    """The requests' events on every topic, read once from the round's start offsets."""
    found: dict[str, list] = defaultdict(list)
    for topic in TOPICS:
        for record in await read_all(client, topic, start=start.get(topic)):
            try:
                event = parse_event(record.value)
            except PoisonMessage:
                continue
            if event.request_id in ids:
                found[event.request_id].append(event)
    return found


def requests_for(settings: HallmarkConfig, tenant: str, n: int, steps: int, tag: str) -> list:
    """n requests of `tenant`, sealed to its key when the stack seals prompts (as a backend does)."""
    from hallmark.sealing import seal_spec
    from hallmark.tenants import tenant_keys

    producer = Producer(service="bench", version="1")
    prompts = ["a red circle above a blue square", "two green triangles on a white background",
               "a small yellow square left of a large purple circle"]
    events = []
    for i in range(n):
        rid = f"bench-{tag}-{i}"
        spec = {"prompt": prompts[i % len(prompts)], "seed": i, "steps": steps}
        if settings.prompt_sealing:
            key_id, public = tenant_keys(settings).public(tenant)
            spec = seal_spec(spec, public, key_id, tenant, rid)
        events.append(RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=rid, tenant_id=tenant,
                                       producer=producer, payload=RequestSubmittedPayload(
                                           spec=GenerationSpec.model_validate(spec))))
    return events


def run_round(settings: HallmarkConfig, tenant: str, n: int, steps: int, timeout: float) -> tuple[list, float]:
    """Submit n requests as the tenant, on its own topic; wait for every outcome. → (their events, seconds)."""
    from hallmark.tenants import Tenant

    events = requests_for(settings, tenant, n, steps, uuid.uuid4().hex[:8])
    ids, client, operator = {e.request_id for e in events}, settings.kafka_client(Tenant(tenant).principal), \
        settings.operator_client()

    async def go() -> tuple[list, float]:
        start = await end_offsets(operator, TOPICS)
        started = time.monotonic()
        await produce(client, Tenant(tenant).topic, events)
        await wait_for_outcomes(operator, ids, start["outcomes"], timeout)
        seconds = time.monotonic() - started
        return list((await events_of(operator, ids, start)).values()), seconds

    return asyncio.run(go())


def spread(found: list) -> str:
    """How a round's burst spread out on its way: first to last event of each kind, and the last image's lag."""
    def times(kind: str) -> list[float]:
        return sorted(e.occurred_at.timestamp() for evs in found for e in evs if e.event_type == kind)

    submitted, verdicts, jobs, images = (times(k) for k in ("request.submitted", "prompt.verdict", "job.created",
                                                              "image.generated"))
    if not (submitted and verdicts and jobs and images):
        return "incomplete"
    return (f"spread ms: submitted {1000 * (submitted[-1] - submitted[0]):.0f}, verdicts "
            f"{1000 * (verdicts[-1] - verdicts[0]):.0f}, jobs {1000 * (jobs[-1] - jobs[0]):.0f}; images "
            f"+{1000 * (images[0] - jobs[0]):.0f} to +{1000 * (images[-1] - jobs[0]):.0f} after the first job")


def report(name: str, rounds: list[tuple[list, float]]) -> dict[str, float]:
    """Per-stage and end-to-end latencies (from event timestamps) and throughput; prints them, returns the p50s."""
    lat: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, int] = defaultdict(int)
    for found, _ in rounds:
        for evs in found:
            by_id = {e.event_id: e for e in evs}
            for e in evs:
                cause = by_id.get(e.causation_id)
                if e.event_type in STAGE_OF and cause is not None:
                    lat[STAGE_OF[e.event_type]].append((e.occurred_at - cause.occurred_at).total_seconds() * 1000)
            submitted = next(e for e in evs if e.event_type == "request.submitted")
            outcome = next((e for e in evs if e.event_type == "outcome"), None)
            if outcome is not None:
                statuses[outcome.payload.status.value] += 1
                lat["end-to-end"].append((outcome.occurred_at - submitted.occurred_at).total_seconds() * 1000)
    finished, seconds = sum(statuses.values()), sum(t for _, t in rounds)
    print(f"\n[{name}] requests: {sum(len(f) for f, _ in rounds)}  outcomes: {dict(statuses)}")
    print(f"{'stage':<12} {'count':>5} {'p50 ms':>10} {'p99 ms':>10} {'mean ms':>10}")
    p50 = {}
    for stage in [*dict.fromkeys(STAGE_OF.values()), "end-to-end"]:
        values = lat.get(stage)
        if values:
            p50[stage] = percentile(values, 0.5)
            print(f"{stage:<12} {len(values):>5} {p50[stage]:>10.1f} {percentile(values, 0.99):>10.1f} "
                  f"{statistics.fmean(values):>10.1f}")
    p50["throughput"] = finished / seconds if seconds else 0.0
    print(f"throughput: {p50['throughput']:.2f} requests/s ({finished} in {seconds:.1f}s of rounds)")
    return p50


def start_stack(tmp: Path, secure: bool):
    """A broker and every stage in `tmp`; secure = SASL/SCRAM + ACLs + sealed prompts, else neither."""
    from hallmark.broker import LocalKafka, free_port
    from hallmark.stack import Stack, stage_services
    from hallmark.tenants import Tenant, TenantRegistry, open_registry

    kafka = LocalKafka(tmp / "kafka", free_port(), secure=secure).start()
    settings = HallmarkConfig.from_env(home=tmp / "home", kafka_bootstrap=kafka.bootstrap, database_url="",
                                       kafka_credentials_dir=kafka.credentials_dir, kafka_secure=secure,
                                       prompt_sealing=secure)
    TenantRegistry.load(settings.tenants_file).add(Tenant(BENCH_TENANT))
    open_registry(settings)
    stack = Stack(settings)
    stack.up(stages=stage_services(), web=[], with_kafka=False)
    return kafka, stack, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds per mode (default 10)")
    parser.add_argument("--batch", type=int, default=10, help="requests per round (default 10)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one round may take")
    parser.add_argument("--only", choices=("secure", "plain"), help="run one mode instead of both interleaved")
    parser.add_argument("--spread", action="store_true", help="print how each round's burst spread out per stage")
    args = parser.parse_args()
    modes = [args.only] if args.only else ["secure", "plain"]
    with tempfile.TemporaryDirectory(prefix="hallmark-bench-") as tmp:
        stacks = {}
        try:
            for mode in modes:
                t0 = time.monotonic()
                stacks[mode] = start_stack(Path(tmp) / mode, secure=mode == "secure")
                print(f"{mode} stack ready in {time.monotonic() - t0:.1f}s", flush=True)
            for mode in modes:  # warm-up round each (models, JIT, consumer groups), not counted
                run_round(stacks[mode][2], BENCH_TENANT, 2, args.steps, args.timeout)
            rounds: dict[str, list] = {m: [] for m in modes}
            for r in range(args.rounds):
                for mode in (modes if r % 2 == 0 else modes[::-1]):  # interleaved, alternating which goes first
                    rounds[mode].append(run_round(stacks[mode][2], BENCH_TENANT, args.batch, args.steps,
                                                  args.timeout))
                    print(f"round {r + 1}/{args.rounds} {mode}: {rounds[mode][-1][1]:.1f}s"
                          + (f"  {spread(rounds[mode][-1][0])}" if args.spread else ""), flush=True)
            p50 = {mode: report(mode, rounds[mode]) for mode in modes}
        finally:
            for kafka, stack, _ in stacks.values():
                stack.down(with_kafka=False)
                kafka.stop()
    if len(modes) == 2:
        on, off = p50["secure"], p50["plain"]
        print(f"\nauthentication + sealed prompts vs neither: end-to-end p50 {on['end-to-end']:.0f} vs "
              f"{off['end-to-end']:.0f} ms ({100 * (on['end-to-end'] / off['end-to-end'] - 1):+.1f}%), throughput "
              f"{on['throughput']:.2f} vs {off['throughput']:.2f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
