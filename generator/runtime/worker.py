"""The worker: one denoiser step for a group of sequences (CFG rows batched), and VAE decoding of finished ones."""
from __future__ import annotations

import numpy as np
import torch

from generator.runtime.loading import ModelFolder
from generator.runtime.sequence import Sequence

# Batch invariance: CPU BLAS takes a small-matrix path, with other rounding, for GEMMs of under 4 rows (the
# timestep MLPs run one row per image). Padding the denoiser to ≥ 4 rows and the decoder to ≥ 2 keeps a request's
# numbers the same whatever its batch-mates (tests/test_generator_batching.py checks it). A CPU measure: on CUDA
# the extra rows would only cost compute.
MIN_DENOISER_ROWS = 4
MIN_DECODER_ROWS = 2


def _minimum(model: ModelFolder, rows: int) -> int:
    return rows if model.device.type == "cpu" else 1


@torch.no_grad()
def denoise_step(model: ModelFolder, seqs: list[Sequence]) -> None:
    """Advance every sequence by one step of its own scheduler; all share one UNet call of 2·B rows."""
    unet, b, pad = model.components["unet"], len(seqs), _minimum(model, MIN_DENOISER_ROWS)
    ts = [s.timesteps[s.step] for s in seqs]
    scaled = [s.scheduler.scale_model_input(s.latents, t) for s, t in zip(seqs, ts)]  # B × (1, 4, h, w)
    if seqs[0].masked_image_latents is not None:  # inpainting UNet: + mask + masked image latents (9 channels)
        scaled = [torch.cat([x, s.mask, s.masked_image_latents], dim=1) for x, s in zip(scaled, seqs)]
    x = torch.cat(scaled * 2)  # (2B, C, h, w): unconditional rows, then conditional rows
    t = torch.stack([t.float() for t in ts] * 2).to(model.device)  # (2B,)
    embeds = torch.cat([s.cond.embeds[0:1] for s in seqs] + [s.cond.embeds[1:2] for s in seqs])  # (2B, T, D)
    added = None
    if model.xl:
        added = {k: _pad_rows(torch.cat([getattr(s.cond, a)[i:i + 1] for i in (0, 1) for s in seqs]), pad)
                 for k, a in (("text_embeds", "pooled"), ("time_ids", "time_ids"))}
    out = unet(_pad_rows(x, pad), _pad_rows(t, pad), encoder_hidden_states=_pad_rows(embeds, pad),
               added_cond_kwargs=added, return_dict=False)[0][:2 * b]
    uncond, cond = out.chunk(2)  # (B, 4, h, w) each
    guidance = torch.tensor([s.guidance for s in seqs], dtype=out.dtype, device=out.device).view(-1, 1, 1, 1)
    noise = uncond + guidance * (cond - uncond)
    for i, (s, t) in enumerate(zip(seqs, ts)):
        s.latents = s.scheduler.step(noise[i:i + 1], t, s.latents, return_dict=False)[0]
        s.step += 1
        if s.noise is not None:  # plain-UNet inpainting: keep the unmasked region on the init image's path
            kept = s.image_latents
            if not s.done:
                kept = s.scheduler.add_noise(kept, s.noise, s.timesteps[s.step:s.step + 1])
            s.latents = (1 - s.mask) * kept + s.mask * s.latents


@torch.no_grad()
def decode(model: ModelFolder, seqs: list[Sequence]) -> list[np.ndarray]:
    """Final latents → float RGB in [0, 1], one (H, W, 3) array per sequence."""
    vae = model.components["vae"]
    latents = torch.cat([s.latents for s in seqs]).to(vae.dtype) / vae.config.scaling_factor  # (B, 4, h, w)
    images = vae.decode(_pad_rows(latents, _minimum(model, MIN_DECODER_ROWS)), return_dict=False)[0][:len(seqs)]  # (B, 3, H, W)
    return list((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy())


def _pad_rows(x: torch.Tensor, minimum: int) -> torch.Tensor:
    """Repeat rows up to `minimum`; the extra rows' outputs are discarded."""
    if len(x) >= minimum:
        return x
    return torch.cat([x] * -(-minimum // len(x)))[:minimum]
