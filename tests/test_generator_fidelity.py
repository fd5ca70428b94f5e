"""Acceptance 1: our runtime equals diffusers' own pipelines (txt2img, img2img, inpaint) on tiny random SD1.5- and
SDXL-shaped folders, same seed, steps and scheduler, within 2/255."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from generator.api import GenerationRequest
from generator.runtime import Engine, EngineConfig
from generator.runtime.samplers import make_scheduler
from tests.tiny_sd import build_tiny_sd

torch.set_num_threads(2)
PROMPT, NEGATIVE = "a photo of a cat", "blurry"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("fidelity")
    models = {"sd": build_tiny_sd(root / "sd"), "xl": build_tiny_sd(root / "xl", xl=True),
              "sd-inpaint": build_tiny_sd(root / "sd-inpaint", in_channels=9)}
    return Engine(EngineConfig(models=models))


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


INIT = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
MASK = np.zeros((64, 64, 3), np.uint8)
MASK[:, 24:] = 255  # repaint the right part


def pipeline(engine: Engine, model: str, task: str, sampler: str):
    """diffusers' own pipeline class for the task, on our loaded components and a fresh scheduler."""
    import diffusers

    _, folder = engine.model(model)
    c = folder.components
    xl = "XL" if folder.xl else ""
    cls = getattr(diffusers, f"StableDiffusion{xl}{ {'txt2img': '', 'img2img': 'Img2Img', 'inpaint': 'Inpaint'}[task]}"
                             "Pipeline")
    parts = dict(vae=c["vae"], text_encoder=c["text_encoder"] if False else c["text_encoders"][0],
                 tokenizer=c["tokenizers"][0], unet=c["unet"], scheduler=make_scheduler(sampler, c["scheduler_config"]))
    if folder.xl:
        parts |= dict(text_encoder_2=c["text_encoders"][1], tokenizer_2=c["tokenizers"][1], add_watermarker=False)
    else:
        parts |= dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return cls(**parts)


CASES = [  # (model, task, sampler, strength, negative prompt)
    ("sd", "txt2img", "euler", None, NEGATIVE), ("sd", "img2img", "dpmpp_2m", 0.6, NEGATIVE),
    ("sd", "inpaint", "ddim", 1.0, NEGATIVE), ("sd", "inpaint", "euler", 0.7, ""),
    ("sd-inpaint", "inpaint", "dpmpp_2m", 1.0, NEGATIVE), ("sd-inpaint", "inpaint", "euler", 0.75, NEGATIVE),
    ("xl", "txt2img", "dpmpp_2m", None, ""), ("xl", "txt2img", "euler", None, NEGATIVE),
    ("xl", "img2img", "euler", 0.5, NEGATIVE), ("xl", "inpaint", "dpmpp_2m", 1.0, ""),
    ("xl", "inpaint", "ddim", 0.8, NEGATIVE),
]


@pytest.mark.parametrize("model, task, sampler, strength, negative", CASES)
def test_equals_diffusers_pipeline(engine, model, task, sampler, strength, negative):
    request = GenerationRequest(prompt=PROMPT, negative_prompt=negative, seed=11, steps=6, guidance=6.0,
                                sampler=sampler, width=64, height=64, model=model, strength=strength,
                                init_image=None if task == "txt2img" else png(INIT),
                                mask=png(MASK) if task == "inpaint" else None)
    (ours,) = engine.generate([request])
    kwargs = dict(num_inference_steps=6, guidance_scale=6.0, generator=torch.Generator().manual_seed(11),
                  output_type="np", negative_prompt=negative or None)
    if task == "txt2img":
        kwargs |= dict(height=64, width=64)
    else:
        kwargs |= dict(image=Image.fromarray(INIT), strength=strength)
    if task == "inpaint":
        kwargs |= dict(mask_image=Image.fromarray(MASK), height=64, width=64)
    theirs = pipeline(engine, model, task, sampler)(PROMPT, **kwargs).images[0]  # (64, 64, 3) in [0, 1]
    mine = np.asarray(ours.image).astype(np.float32) / 255
    assert mine.shape == theirs.shape
    assert np.abs(mine - theirs).max() <= 2 / 255 + 0.5 / 255  # + the rounding of our 8-bit output
