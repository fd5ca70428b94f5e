"""The engine: validate requests, group compatible ones, run each group as one denoiser batch.

The loop is diffusers' StableDiffusionPipeline.__call__ step for step (the fidelity test holds us to it), with
per-request seeds, guidance and negative prompts so a request's image does not depend on its batch-mates.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generator.api import GeneratedImage, GenerationRequest
from generator.runtime.loading import ModelError, ModelFolder
from generator.runtime.samplers import SAMPLERS, make_scheduler

MAX_PROMPT_CHARS = 2000
MAX_STEPS = 200
# Batch invariance: CPU BLAS takes a small-matrix path, with other rounding, for GEMMs of under 4 rows (the
# timestep MLPs run one row per image). Padding the denoiser to ≥ 4 rows and the decoder to ≥ 2 keeps every
# request's numbers identical whatever its batch-mates (tests/test_generator_runtime.py checks it).
MIN_DENOISER_ROWS = 4
MIN_DECODER_ROWS = 2


def validate(request: GenerationRequest, model: ModelFolder) -> None:
    """Raise ValueError naming the first problem with a request."""
    if not request.prompt or not request.prompt.strip():
        raise ValueError("prompt is empty")
    if len(request.prompt) > MAX_PROMPT_CHARS or len(request.negative_prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
    if request.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {request.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if not 1 <= request.steps <= MAX_STEPS:
        raise ValueError(f"steps must be 1–{MAX_STEPS}, got {request.steps}")
    if not math.isfinite(request.guidance) or request.guidance < 0:
        raise ValueError(f"guidance must be a finite number ≥ 0, got {request.guidance}")
    if not 0 <= request.seed < 2**63:
        raise ValueError(f"seed must be 0 ≤ seed < 2^63, got {request.seed}")
    model.check_size(request.width, request.height)


class Generator:
    """Holds one loaded model (read-only); every call builds its own schedulers and noise."""

    def __init__(self, model: ModelFolder, max_batch: int = 8):
        self.model, self.max_batch = model.load(), max_batch

    @classmethod
    def load(cls, model_dir: str | Path | None = None, max_batch: int = 8) -> "Generator":
        return cls(ModelFolder.open(model_dir), max_batch)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def generate(self, requests: list[GenerationRequest]) -> list[GeneratedImage]:
        """Images in request order; compatible requests share denoiser batches of up to `max_batch`."""
        for request in requests:
            try:
                validate(request, self.model)
            except ModelError:
                raise
            except ValueError as exc:
                raise ValueError(f"bad generation request: {exc}") from None
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[request.batch_key()].append(i)
        out: list[GeneratedImage | None] = [None] * len(requests)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start:start + self.max_batch]
                for i, image in zip(chunk, self.denoise([requests[i] for i in chunk])):
                    out[i] = GeneratedImage(requests[i], self.finish(image, requests[i]), self.model_id)
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def denoise(self, batch: list[GenerationRequest]) -> np.ndarray:
        """One batch (same steps, sampler, size) → float images in [0, 1].  # (B, H, W, 3)"""
        c = self.model.components
        unet, vae, first = c["unet"], c["vae"], batch[0]
        scheduler = make_scheduler(first.sampler, c["scheduler_config"])
        texts = [r.negative_prompt for r in batch] + [r.prompt for r in batch]  # the pipeline's [negative, positive]
        unique = list(dict.fromkeys(texts))  # most negatives are "" : encode each distinct text once
        row = {text: i for i, text in enumerate(unique)}
        embeds = self.encode_prompts(unique)[[row[t] for t in texts]]  # (2B, T, D)
        guidance = torch.tensor([max(r.guidance, 1.0) for r in batch], dtype=unet.dtype).view(-1, 1, 1, 1)
        h, w = self.model.latent_size(first.width, first.height)
        latents = torch.cat([
            torch.randn((1, unet.config.in_channels, h, w), generator=torch.Generator().manual_seed(r.seed),
                        dtype=unet.dtype)
            for r in batch
        ])  # (B, 4, h, w): noise per request, so batch-mates never change it
        scheduler.set_timesteps(first.steps)
        latents = latents * scheduler.init_noise_sigma
        rows, embeds = 2 * len(batch), _pad_rows(embeds, MIN_DENOISER_ROWS)
        for t in scheduler.timesteps:
            model_in = _pad_rows(scheduler.scale_model_input(torch.cat([latents] * 2), t), MIN_DENOISER_ROWS)
            out = unet(model_in, t, encoder_hidden_states=embeds, return_dict=False)[0][:rows]
            noise_uncond, noise_cond = out.chunk(2)
            noise = noise_uncond + guidance * (noise_cond - noise_uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        decoder_in = _pad_rows(latents / vae.config.scaling_factor, MIN_DECODER_ROWS)
        images = vae.decode(decoder_in, return_dict=False)[0][:len(batch)]  # (B, 3, H, W)
        return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Token embeddings as StableDiffusionPipeline.encode_prompt makes them (mask only if the config asks)."""
        c = self.model.components
        tokenizer, encoder = c["tokenizer"], c["text_encoder"]
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        mask = tokens.attention_mask if getattr(encoder.config, "use_attention_mask", False) else None
        return encoder(tokens.input_ids, attention_mask=mask)[0]

    def finish(self, image: np.ndarray, request: GenerationRequest) -> Image.Image:
        pil = Image.fromarray((image * 255).round().astype(np.uint8))
        if pil.size != (request.width, request.height):
            pil = pil.resize((request.width, request.height), Image.Resampling.LANCZOS)
        return pil


def _pad_rows(x: torch.Tensor, minimum: int) -> torch.Tensor:
    """Repeat rows up to `minimum`; the extra rows' outputs are discarded."""
    if len(x) >= minimum:
        return x
    return torch.cat([x] * -(-minimum // len(x)))[:minimum]
