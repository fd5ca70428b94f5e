"""Generator runtime: fidelity to diffusers, batch invariance, other SD-family shapes, clear errors."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from generator.api import GenerationRequest
from generator.runtime import Generator, ModelError
from generator.runtime.loading import DEFAULT_MODEL_DIR
from generator.runtime.samplers import make_scheduler
from tests.tiny_sd import build_tiny_sd

torch.set_num_threads(2)
PROMPTS = ["a red circle", "two blue squares", "a green triangle above a yellow circle", "a purple square",
           "a small orange triangle on a black background", "three yellow circles", "a blue circle and a red square",
           "a circle that is green"]


@pytest.fixture(scope="module")
def default_generator() -> Generator:
    return Generator.load(None, max_batch=8)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


def _pipeline(gen: Generator, sampler: str):
    from diffusers import StableDiffusionPipeline

    c = gen.model.components
    return StableDiffusionPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                   unet=c["unet"], scheduler=make_scheduler(sampler, c["scheduler_config"]),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
def test_matches_diffusers_pipeline(default_generator, sampler):
    request = GenerationRequest(prompt="a blue square left of a red circle", negative_prompt="a green triangle",
                                seed=7, steps=12, guidance=4.0, sampler=sampler)
    ours = default_generator.denoise([request])[0]  # (64, 64, 3) in [0, 1]
    size = default_generator.model.native_size
    theirs = _pipeline(default_generator, sampler)(
        request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=request.steps,
        guidance_scale=request.guidance, generator=torch.Generator().manual_seed(request.seed), output_type="np",
        height=size, width=size).images[0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 2 / 255


def test_batch_invariance(default_generator):
    requests = [GenerationRequest(prompt=p, seed=100 + i, steps=10, guidance=3.0 + i / 4) for i, p in enumerate(PROMPTS)]
    batched = default_generator.generate(requests)
    for i in (0, 5):
        alone = default_generator.generate([requests[i]])[0]
        assert np.array_equal(np.asarray(alone.image), np.asarray(batched[i].image)), f"request {i} changed in a batch"


def test_default_output_size_and_png_metadata(default_generator, tmp_path):
    (image,) = default_generator.generate([GenerationRequest(prompt="a red circle", seed=1, steps=4)])
    assert image.image.size == (256, 256)
    path = tmp_path / "x.png"
    path.write_bytes(image.png_bytes())
    from PIL import Image

    meta = json.loads(Image.open(path).text["hallmark"])
    assert meta["seed"] == 1 and meta["steps"] == 4 and meta["model_id"] == default_generator.model_id
    assert meta["prompt"] == "a red circle"
    stored = json.loads(Image.open(io.BytesIO(image.png_bytes(include_prompt=False))).text["hallmark"])
    assert "prompt" not in stored and "negative_prompt" not in stored and stored["seed"] == 1


def test_loads_other_sd_family_model(tiny_model):
    gen = Generator.load(tiny_model)
    assert gen.model.vae_scale == 8 and gen.model.output_size is None
    images = gen.generate([GenerationRequest(prompt="a cat", seed=s, steps=3, sampler="euler", width=64, height=64)
                           for s in (1, 2)])
    assert [im.image.size for im in images] == [(64, 64), (64, 64)]
    assert not np.array_equal(np.asarray(images[0].image), np.asarray(images[1].image))
    theirs = _pipeline(gen, "euler")("a cat", num_inference_steps=3, guidance_scale=5.0,
                                     generator=torch.Generator().manual_seed(1), output_type="np", height=64, width=64)
    ours = gen.denoise([GenerationRequest(prompt="a cat", seed=1, steps=3, guidance=5.0, sampler="euler", width=64,
                                          height=64)])[0]
    assert np.abs(ours - theirs.images[0]).max() <= 2 / 255


@pytest.mark.parametrize("change, message", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="x" * 2001), "longer than 2000"),
    (dict(sampler="plms"), "unknown sampler"),
    (dict(steps=0), "steps must be"),
    (dict(steps=201), "steps must be"),
    (dict(guidance=float("nan")), "guidance must be"),
    (dict(width=300, height=300), "makes 256×256 images"),
])
def test_bad_requests_name_the_problem(default_generator, change, message):
    request = GenerationRequest(**{"prompt": "a red circle", **change})
    with pytest.raises(ValueError, match=message):
        default_generator.generate([request])


def test_missing_or_incomplete_model_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Generator.load(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(DEFAULT_MODEL_DIR, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError, match="incomplete: missing unet/ weights"):
        Generator.load(broken)


def test_requests_by_http_kafka_and_cli_share_one_default_guidance():
    from generator import DEFAULT_GUIDANCE
    from schemas.events import GenerationSpec

    assert GenerationSpec.model_fields["guidance"].default == GenerationRequest.guidance == DEFAULT_GUIDANCE
