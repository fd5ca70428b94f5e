"""The generation stage: every batch joins one running engine; a bad job fails alone with a reason code."""
from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch
from PIL import Image

from hallmark.config import HallmarkConfig
from provenance.store import BlobStore
from schemas import JobCreated, OutcomeStatus, Producer
from schemas.events import GenerationSpec, JobCreatedPayload
from streams.base import MemoryLog
from streams.stages.generation import GenerationStage, engine_config
from streams.uploads import UploadStore
from tests.tiny_sd import build_tiny_lora, build_tiny_sd

torch.set_num_threads(2)
P = Producer(service="test", version="0")
SECRET = "a quokka-secret-5512"


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> GenerationStage:
    root = tmp_path_factory.mktemp("stage")
    models = root / "models"
    build_tiny_sd(models / "tiny")
    build_tiny_lora(models / "tiny", models / "loras" / "ink", seed=1)
    settings = HallmarkConfig(home=root, model_dir=str(models))  # blobs under root/blobs
    stage = GenerationStage(settings, MemoryLog())
    asyncio.run(stage.start())
    return stage


def job(tenant: str = "t1", **spec) -> JobCreated:
    spec = GenerationSpec(**{"prompt": SECRET, "model": "tiny", "width": 64, "height": 64, "steps": 3, **spec})
    return JobCreated(event_type="job.created", request_id=f"r-{abs(hash(str(spec))) % 10**9}", tenant_id=tenant,
                      producer=P, payload=JobCreatedPayload(spec=spec, policy_version="1"))


def upload(stage: GenerationStage, tenant: str, size: tuple[int, int] = (64, 64)) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buf, "PNG")
    return UploadStore(stage.blobs).put(tenant, buf.getvalue())


def test_engine_config_serves_embedded_and_configured_folders_and_adapters(stage):
    config = engine_config(stage.settings)
    assert set(config.models) == {"shapes-ldm", "tiny"} and set(config.adapters) == {"ink"}
    assert config.default_model == "shapes-ldm"


def test_a_batch_of_jobs_each_gets_its_own_outcome(stage):
    mine = upload(stage, "t1")
    jobs = [job(n=2, seed=5), job(init_image=mine, strength=0.6, steps=4), job(init_image=mine, mask=mine),
            job(loras=[{"name": "ink", "scale": 0.8}], sampler="euler"),
            job(init_image="0" * 64), job(tenant="t2", init_image=mine), job(model="nope"),
            job(loras=[{"name": "velvet"}]), job(init_image=upload(stage, "t1", (32, 32))),
            job(model="shapes-ldm", width=512, height=512)]
    out = asyncio.run(stage.handle_batch([(e, None) for e in jobs]))
    assert [len(events) for events in out] == [1] * len(jobs)
    good, bad = [events[0] for events in out[:4]], [events[0] for events in out[4:]]
    assert [e.event_type for e in good] == ["image.generated"] * 4
    assert [len(e.payload.images) for e in good] == [2, 1, 1, 1]
    assert [r.seed for r in good[0].payload.images] == [5, 6]
    for ref in good[0].payload.images:
        stored = Image.open(io.BytesIO(BlobStore(stage.blobs.root).get(ref.sha256)))
        assert stored.size == (64, 64) and SECRET not in str(stored.text)
    reasons = [e.payload.reason for e in bad]
    assert all(e.event_type == "outcome" and e.payload.status == OutcomeStatus.FAILED for e in bad)
    assert [r.split(":")[0] for r in reasons] == ["init_image_missing", "init_image_missing", "unknown_model",
                                                  "unknown_adapter", "init_image_wrong_size", "bad_size"]
    assert not any("quokka" in r for r in reasons)


def test_a_job_from_a_later_batch_joins_the_running_batch_and_matches_running_alone(stage):
    """Continuous batching through the stage: a short job handed in while a long one is generating finishes first
    (it did not wait for the running batch), and its image equals the same job run on its own."""
    def pixels(event) -> np.ndarray:
        data = BlobStore(stage.blobs.root).get(event.payload.images[0].sha256)
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)

    long, short = job(steps=60, seed=21), job(steps=3, seed=22, guidance=4.0)
    alone = asyncio.run(stage.handle_batch([(short, None)]))[0][0]

    async def overlapped():
        first = asyncio.create_task(stage.handle_batch([(long, None)]))
        while not any(s.step > 0 for s in list(stage.engine.scheduler.running)):  # the long job is mid-run
            await asyncio.sleep(0.002)
        second = asyncio.create_task(stage.handle_batch([(short, None)]))
        done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {second}, "the later job waited for the running batch to finish"
        return (await first)[0][0], (await second)[0][0]

    long_out, short_out = asyncio.run(overlapped())
    assert long_out.event_type == short_out.event_type == "image.generated"
    assert np.abs(pixels(short_out) - pixels(alone)).max() <= 1
