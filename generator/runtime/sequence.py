"""One request's denoising state (vLLM's Sequence): its own sampler plan, generator, latents and conditioning.

`prepare` follows diffusers' pipelines call for call (timesteps, VAE posterior sample, noise, in that order on the
request's own generator) so a request's image equals the pipeline's for the same seed; the request's diffusers
scheduler sets its schedule, which becomes the Plan the batched sampler steps read (generator/runtime/samplers.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from generator.api import GenerationRequest, RequestError
from generator.runtime.inputs import image_tensor, mask_tensor
from generator.runtime.loading import ModelFolder
from generator.runtime.samplers import Plan, make_scheduler, plan
from generator.runtime.text import Conditioning


@dataclass
class Sequence:
    request_id: int
    request: GenerationRequest
    model_name: str
    plan: Plan  # the S steps to run: timesteps and sampler coefficients
    latents: torch.Tensor  # (1, 4, h, w)
    cond: Conditioning
    guidance: float
    step: int = 0
    denoised: torch.Tensor | None = None  # (1, 4, h, w) the previous step's x0 prediction (multistep samplers)
    noise: torch.Tensor | None = None  # (1, 4, h, w) inpainting by latent blending: re-noises the kept region
    image_latents: torch.Tensor | None = None  # (1, 4, h, w) the init image, encoded
    mask: torch.Tensor | None = None  # (1, 1, h, w) 1 = repaint
    masked_image_latents: torch.Tensor | None = None  # (1, 4, h, w) inpainting UNets' extra input channels

    @property
    def done(self) -> bool:
        return self.step >= len(self.plan)

    def key(self) -> tuple:
        """Sequences with equal keys share one denoiser call: same model, same adapters, same latent size."""
        return (self.model_name, self.request.adapter_key(), tuple(self.latents.shape[-2:]))


def _vae_sample(model: ModelFolder, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """retrieve_latents(vae.encode(x), generator) × scaling factor, as the pipelines do.  # (1, 4, h, w)"""
    vae = model.components["vae"]
    dist = vae.encode(pixels.to(model.device, vae.dtype)).latent_dist
    noise = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype).to(model.device)
    return (dist.mean + dist.std * noise).to(model.dtype) * vae.config.scaling_factor


@torch.no_grad()
def prepare(request_id: int, request: GenerationRequest, model_name: str, model: ModelFolder, cond: Conditioning,
            init: Image.Image | None, mask: Image.Image | None) -> Sequence:
    """A ready-to-step Sequence, or RequestError when the strength leaves no step to run."""
    unet = model.components["unet"]
    generator = torch.Generator().manual_seed(request.seed)
    scheduler = make_scheduler(request.sampler, model.components["scheduler_config"])
    scheduler.set_timesteps(request.steps, device=model.device)
    h, w = model.latent_size(request.width, request.height)
    shape = (1, model.components["vae"].config.latent_channels, h, w)
    guidance = max(request.guidance, 1.0)
    if init is None:  # txt2img: StableDiffusion(XL)Pipeline.prepare_latents
        noise = torch.randn(shape, generator=generator, dtype=model.dtype).to(model.device)
        return Sequence(request_id, request, model_name, plan(request.sampler, scheduler, 0, model.device),
                        noise * scheduler.init_noise_sigma, cond, guidance)
    strength = request.strength if request.strength is not None else (0.8 if mask is None else 1.0)
    first = request.steps - min(int(request.steps * strength), request.steps)  # the pipelines' get_timesteps
    timesteps = scheduler.timesteps[first * scheduler.order:]
    if len(timesteps) == 0:
        raise RequestError("bad_strength", f"strength {strength} with {request.steps} steps leaves no step to run")
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first * scheduler.order)
    draw_w, draw_h = model.draw_size(request.width, request.height)
    pixels = image_tensor(init, draw_w, draw_h)  # (1, 3, H, W)
    inpaint_unet = unet.config.in_channels == 9
    full = mask is not None and strength == 1.0
    image_latents = None if full and inpaint_unet else _vae_sample(model, pixels, generator)
    noise = torch.randn(shape, generator=generator, dtype=model.dtype).to(model.device)
    if full:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
    seq = Sequence(request_id, request, model_name, plan(request.sampler, scheduler, first * scheduler.order,
                                                         model.device), latents, cond, guidance)
    if mask is None:
        return seq
    condition = mask_tensor(mask, draw_w, draw_h)  # (1, 1, H, W)
    seq.mask = torch.nn.functional.interpolate(condition, size=(h, w)).to(model.device, model.dtype)
    masked = _vae_sample(model, pixels * (condition < 0.5), generator)  # drawn even for plain UNets, as diffusers
    if inpaint_unet:
        seq.masked_image_latents = masked
    else:
        seq.noise, seq.image_latents = noise, image_latents
    return seq
