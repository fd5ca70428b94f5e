"""Generator runtime on the embedded shapes model: fidelity to diffusers, batch invariance, sizes, metadata, folders."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from generator.api import GenerationRequest, RequestError
from generator.runtime import Engine, ModelError
from generator.runtime.loading import DEFAULT_MODEL_DIR
from generator.runtime.samplers import make_scheduler

torch.set_num_threads(2)
PROMPTS = ["a red circle", "two blue squares", "a green triangle above a yellow circle", "a purple square",
           "a small orange triangle on a black background", "three yellow circles", "a blue circle and a red square",
           "a circle that is green"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.for_folder(None)


def _pipeline(engine: Engine, sampler: str):
    from diffusers import StableDiffusionPipeline

    c = engine.model(None)[1].components
    return StableDiffusionPipeline(vae=c["vae"], text_encoder=c["text_encoders"][0], tokenizer=c["tokenizers"][0],
                                   unet=c["unet"], scheduler=make_scheduler(sampler, c["scheduler_config"]),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
def test_matches_diffusers_pipeline_then_upscales(engine, sampler):
    request = GenerationRequest(prompt="a blue square left of a red circle", negative_prompt="a green triangle",
                                seed=7, steps=12, guidance=4.0, sampler=sampler)
    (ours,) = engine.generate([request])
    theirs = _pipeline(engine, sampler)(
        request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=request.steps,
        guidance_scale=request.guidance, generator=torch.Generator().manual_seed(request.seed), output_type="pil",
        height=64, width=64).images[0]
    upscaled = np.asarray(theirs.resize((256, 256), Image.Resampling.LANCZOS)).astype(int)
    assert ours.image.size == (256, 256)
    assert np.abs(np.asarray(ours.image).astype(int) - upscaled).max() <= 3  # ≤ 1 level at 64², through Lanczos


def test_batch_invariance(engine):
    requests = [GenerationRequest(prompt=p, seed=100 + i, steps=10, guidance=3.0 + i / 4)
                for i, p in enumerate(PROMPTS)]
    batched = engine.generate(requests)
    for i in (0, 5):
        (alone,) = engine.generate([requests[i]])
        diff = np.abs(np.asarray(alone.image).astype(int) - np.asarray(batched[i].image).astype(int)).max()
        assert diff <= 1, f"request {i} changed in a batch"


def test_default_output_size_and_png_metadata(engine, tmp_path):
    (image,) = engine.generate([GenerationRequest(prompt="a red circle", seed=1, steps=4)])
    assert image.image.size == (256, 256)
    path = tmp_path / "x.png"
    path.write_bytes(image.png_bytes())
    meta = json.loads(Image.open(path).text["hallmark"])
    assert meta["seed"] == 1 and meta["steps"] == 4 and meta["model_id"] == "shapes-ldm-v1.1"
    assert meta["prompt"] == "a red circle" and meta["init_image"] is None and meta["loras"] == []
    stored = json.loads(Image.open(io.BytesIO(image.png_bytes(include_prompt=False))).text["hallmark"])
    assert "prompt" not in stored and "negative_prompt" not in stored and stored["seed"] == 1


def test_embedded_model_takes_init_images_at_the_output_size(engine):
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (20, 20, 20)).save(buf, "PNG")
    (out,) = engine.generate([GenerationRequest(prompt="a red circle", steps=6, init_image=buf.getvalue(),
                                                strength=0.3)])
    assert out.image.size == (256, 256)
    assert np.asarray(out.image).mean() < 90  # mostly the dark init image at low strength


@pytest.mark.parametrize("change, code", [
    (dict(prompt=""), "bad_prompt"),
    (dict(prompt="x" * 2001), "bad_prompt"),
    (dict(sampler="plms"), "unknown_sampler"),
    (dict(steps=0), "bad_steps"),
    (dict(steps=201), "bad_steps"),
    (dict(guidance=float("nan")), "bad_guidance"),
    (dict(width=300, height=300), "bad_size"),
])
def test_bad_requests_name_the_problem(engine, change, code):
    (result,) = engine.generate([GenerationRequest(**{"prompt": "a red circle", **change})])
    assert isinstance(result, RequestError) and result.code == code


def test_abort_all_drops_waiting_running_and_failed_requests_and_the_engine_goes_on(engine):
    running = engine.add_request(GenerationRequest(prompt="a red circle", seed=1, steps=6))
    engine.step()  # admitted and one step in
    waiting = engine.add_request(GenerationRequest(prompt="a blue square", seed=2, steps=6))
    failed = engine.add_request(GenerationRequest(prompt="a red circle", steps=0))
    assert sorted(engine.abort_all()) == sorted([running, waiting, failed]) and not engine.has_unfinished()
    (after,) = engine.generate([GenerationRequest(prompt="a red circle", seed=1, steps=6)])
    assert not isinstance(after, RequestError)


def test_missing_or_incomplete_model_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Engine.for_folder(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL_DIR, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError, match="incomplete: missing unet/ weights"):
        Engine.for_folder(broken)


def test_requests_by_http_kafka_and_cli_share_one_default_guidance():
    from generator import DEFAULT_GUIDANCE
    from schemas.events import GenerationSpec

    assert GenerationSpec.model_fields["guidance"].default == GenerationRequest.guidance == DEFAULT_GUIDANCE
