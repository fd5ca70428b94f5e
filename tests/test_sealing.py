"""Prompts sealed to their tenant's key: bound to tenant, request and field; opened only in memory; shreddable."""
from __future__ import annotations

import uuid

import pytest
from cryptography.exceptions import InvalidTag

from hallmark.config import HallmarkConfig
from hallmark.sealing import ClearPrompt, open_spec, reason_code, seal, seal_spec, unseal
from hallmark.tenant_keys import Shredded
from hallmark.tenants import Tenant, open_registry, tenant_keys
from schemas import RequestSubmitted, producer_for
from schemas.events import GenerationSpec, RequestSubmittedPayload
from streams.base import MemoryLog, Source
from streams.stages.prompt_gate import PromptGateStage
from tests.stage_cases import FakeGate
from tests.test_stage_contract import run as run_stage

PROMPT = "a quiet harbour at dusk, unique-marker-7c1f"


@pytest.fixture
def config(tmp_path) -> HallmarkConfig:
    config = HallmarkConfig(home=tmp_path / "home")
    registry = open_registry(config)
    registry.add(Tenant("acme"))
    open_registry(config)
    return config


def sealed_spec(config, tenant: str, request_id: str, **fields) -> GenerationSpec:
    key_id, public = tenant_keys(config).public(tenant)
    return GenerationSpec.model_validate(seal_spec({"prompt": PROMPT, **fields}, public, key_id, tenant, request_id))


def test_a_sealed_prompt_opens_only_for_its_tenant_request_and_field(config):
    keys = tenant_keys(config)
    key_id, public = keys.public("dev")
    box = seal(PROMPT, public, key_id, "dev", "r1", "prompt")
    assert PROMPT not in box.model_dump_json()
    assert unseal(box, keys.private("dev", key_id), "dev", "r1", "prompt") == PROMPT
    for tenant, request, field in (("dev", "r2", "prompt"), ("dev", "r1", "negative_prompt")):
        with pytest.raises(InvalidTag):
            unseal(box, keys.private("dev", key_id), tenant, request, field)
    acme_id, _ = keys.public("acme")
    with pytest.raises(InvalidTag):  # another tenant's private key
        unseal(box, keys.private("acme", acme_id), "dev", "r1", "prompt")


def test_open_spec_refuses_clear_prompts_and_names_every_failure_by_code(config):
    keys = tenant_keys(config)
    spec = sealed_spec(config, "dev", "r1", negative_prompt="blurry")
    assert open_spec(spec, keys, "dev", "r1") == (PROMPT, "blurry")
    with pytest.raises(ClearPrompt) as clear:
        open_spec(GenerationSpec(prompt=PROMPT), keys, "dev", "r1")
    assert reason_code(clear.value) == "clear_prompt"
    with pytest.raises(InvalidTag) as spliced:  # a sealed prompt copied into another request
        open_spec(spec, keys, "dev", "r2")
    assert reason_code(spliced.value) == "sealed_prompt_unreadable"


def test_shredding_leaves_no_key_on_disk_that_opens_the_prompt(config):
    keys = tenant_keys(config)
    spec = sealed_spec(config, "dev", "r1")
    assert keys.shred("dev")
    with pytest.raises(Shredded) as gone:
        open_spec(spec, keys, "dev", "r1")
    assert reason_code(gone.value) == "tenant_shredded"
    for path in config.keys_dir.rglob("*"):  # every key file left: none opens it, whatever it holds
        if path.is_file():
            for candidate in _x25519_candidates(path.read_bytes()):
                with pytest.raises(Exception):
                    unseal(spec.prompt, candidate, "dev", "r1", "prompt")


def _x25519_candidates(data: bytes):
    import base64
    import json

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    blobs = [data, data.strip()]
    try:
        blobs.append(base64.b64decode(data.strip()))
    except ValueError:
        pass
    try:
        blobs += [base64.b64decode(v) for v in json.loads(data).values() if isinstance(v, str)]
    except (ValueError, AttributeError, TypeError):
        pass
    for blob in blobs:
        for start in range(0, max(1, len(blob) - 31)):
            yield X25519PrivateKey.from_private_bytes(blob[start:start + 32].ljust(32, b"\0"))


def run_gate(config, event, topic: str) -> list:
    stage = PromptGateStage(config, MemoryLog(), gate=FakeGate())
    return run_stage(stage, [Source(topic, 0, 0, event.key(), event.to_bytes())])


def request(config, tenant: str, spec: GenerationSpec | None = None) -> RequestSubmitted:
    request_id = str(uuid.uuid4())
    return RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=request_id, tenant_id=tenant,
                            producer=producer_for("test"),
                            payload=RequestSubmittedPayload(spec=spec or sealed_spec(config, tenant, request_id)))


def test_ingress_dead_letters_a_clear_prompt_and_screens_a_sealed_one_under_the_tenants_region(config):
    clear = request(config, "acme", GenerationSpec(prompt=PROMPT, region="adult"))
    out = run_gate(config, clear, "requests.acme")
    assert [(t, e.payload.reason) for t, e in out] == [("dlq", "clear_prompt"), ("outcomes", "clear_prompt")]
    assert all(PROMPT not in e.model_dump_json() for _, e in out)
    ok = request(config, "acme")
    ok = ok.model_copy(update={"payload": ok.payload.model_copy(update={
        "spec": ok.payload.spec.model_copy(update={"region": "adult"})})})  # the body asks for a laxer region
    ((topic, verdict),) = run_gate(config, ok, "requests.acme")
    assert topic == "prompt-verdicts" and verdict.payload.spec.region == "default"  # the registry's, not the body's
    assert verdict.payload.spec.sealed and PROMPT not in verdict.model_dump_json()


def test_ingress_refuses_a_shredded_tenant(config):
    event = request(config, "acme")
    tenant_keys(config).shred("acme")
    out = run_gate(config, event, "requests.acme")
    assert [e.payload.reason for t, e in out if t == "outcomes"] == ["tenant_shredded"]
