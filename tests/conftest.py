"""Shared fixtures: a real single-node Kafka for the session, the stage processes, and helpers to drive them."""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # two shared cores: keep torch and friends modest


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """A real Apache Kafka broker (KRaft) on a free port; jars come from Maven once (cached in hallmark/kafka/lib)."""
    from hallmark.broker import LocalKafka, free_port

    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), free_port())
    broker.start()
    broker.ensure_topics()
    yield broker
    broker.stop()


@dataclass
class Spine:
    """The running stack of one test session and small helpers to talk to it."""

    stack: "object"
    settings: "object"
    api_url: str
    api_key: str

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def admin(self):
        """The broker's admin principal: the tests stand in for upstream stages with it."""
        return self.settings.operator_client()

    def produce(self, topic: str, value: bytes, key: bytes | None = None, client=None) -> None:
        from streams.kafkaio import make_producer

        async def go():
            producer = make_producer(client or self.admin)
            await producer.start()
            try:
                await producer.send_and_wait(topic, value, key=key)
            finally:
                await producer.stop()

        asyncio.run(go())

    def produce_event(self, event) -> None:
        """As the stage that writes it would; a request as its tenant, on the tenant's own topic."""
        from hallmark.tenants import Tenant
        from schemas import RequestSubmitted, topic_for

        if isinstance(event, RequestSubmitted):
            tenant = Tenant(event.tenant_id)
            event = sealed(self.settings, event)
            self.produce(tenant.topic, event.to_bytes(), event.key(), self.settings.kafka_client(tenant.principal))
            return
        self.produce(topic_for(event.event_type).name, event.to_bytes(), event.key())

    def records(self, topic: str) -> list:
        from streams.topiclog import read_all

        return asyncio.run(read_all(self.admin, topic))

    def events(self, topic: str, request_id: str | None = None) -> list:
        from schemas import PoisonMessage, parse_event

        out = []
        for record in self.records(topic):
            try:
                event = parse_event(record.value)
            except PoisonMessage:
                continue
            if request_id is None or event.request_id == request_id:
                out.append(event)
        return out

    def wait_for(self, topic: str, predicate, timeout: float = 120.0, what: str = "") -> list:
        """Events of `topic` matching `predicate`, once there is at least one; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(topic) if predicate(e)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or topic}")
            time.sleep(1.0)

    def outcome(self, request_id: str, timeout: float = 180.0):
        return self.wait_for("outcomes", lambda e: e.request_id == request_id, timeout,
                             f"an outcome for {request_id}")[0]

    def wait_for_view(self, request_id: str, status: str, timeout: float = 60.0) -> dict:
        """GET /v1/requests/{id} until the read model shows `status`."""
        deadline = time.monotonic() + timeout
        with self.http() as http:
            while True:
                view = http.get(f"/v1/requests/{request_id}").json()
                if view.get("status") == status or time.monotonic() > deadline:
                    assert view.get("status") == status, view
                    return view
                time.sleep(0.5)

    def http(self):
        import httpx

        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {self.api_key}"},
                            timeout=30.0)


def sealed(settings, event):
    """A request whose prompts are sealed to its tenant's public key, as a backend does with the helper."""
    from hallmark.sealing import seal_spec
    from hallmark.tenants import tenant_keys
    from schemas.events import GenerationSpec

    if event.payload.spec.sealed:
        return event
    key_id, public = tenant_keys(settings).public(event.tenant_id)
    spec = seal_spec(event.payload.spec.model_dump(), public, key_id, event.tenant_id, event.request_id)
    return event.model_copy(update={"payload": event.payload.model_copy(
        update={"spec": GenerationSpec.model_validate(spec)})})


TEST_TENANTS = ("kafka-tenant", "acme", "another-tenant", "shred-me")  # besides `dev`: Kafka submitters of the tests, each with its own topic


@pytest.fixture(scope="session")
def spine(kafka, tmp_path_factory):
    """Every stage as its own process plus the submission API, against the session's broker."""
    from hallmark.broker import free_port
    from hallmark.config import HallmarkConfig, Ports
    from hallmark.stack import Stack, stage_services, web_services
    from hallmark.tenants import Tenant, TenantRegistry, open_registry
    from streams.apikeys import ApiKeys

    home = tmp_path_factory.mktemp("home")
    ports = Ports(api=free_port(), verify=free_port(), review=free_port())
    settings = HallmarkConfig.from_env(home=home, kafka_bootstrap=kafka.bootstrap, database_url="", ports=ports,
                                       kafka_credentials_dir=kafka.credentials_dir)
    registry = TenantRegistry.load(settings.tenants_file)
    for tenant in TEST_TENANTS:
        registry.add(Tenant(tenant))
    open_registry(settings)  # their prompt keys
    stack = Stack(settings)
    web = [s for s in web_services(ports) if s.name == "api"]
    try:
        stack.up(stages=stage_services(), web=web, with_kafka=False)
    except RuntimeError:
        for log in sorted((home / "logs").glob("*.log")):
            print(f"==== {log.name}\n{log.read_text()[-3000:]}")
        stack.down(with_kafka=False)
        raise
    key = ApiKeys.load(home / "api-keys.json").dev_key()
    yield Spine(stack, settings, f"http://127.0.0.1:{ports.api}", key)
    stack.down(with_kafka=False)


def logs_text(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((home / "logs").glob("*.log")))


@pytest.fixture
def engine(tmp_path):
    """An empty SQLite database with the review read models (the review tests' store)."""
    from sqlmodel import SQLModel

    from hallmark.db import engine_for
    from review.queue import TABLES

    engine = engine_for(f"sqlite:///{tmp_path / 'review.db'}")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    return engine
