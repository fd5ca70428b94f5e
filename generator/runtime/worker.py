"""The worker: one denoiser step for a group of sequences (CFG rows batched), and VAE decoding of finished ones."""
from __future__ import annotations

import numpy as np
import torch

from generator.runtime.loading import ModelFolder
from generator.runtime.samplers import MULTISTEP, STEPS, renoise
from generator.runtime.sequence import Sequence

# Batch invariance: CPU BLAS takes a small-matrix path, with other rounding, for GEMMs of under 4 rows (the
# timestep MLPs run one row per image). Padding the denoiser to ≥ 4 rows and the decoder to ≥ 2 keeps a request's
# numbers the same whatever its batch-mates (tests/test_generator_batching.py checks it). A CPU measure: on CUDA
# the extra rows would only cost compute.
MIN_DENOISER_ROWS = 4
MIN_DECODER_ROWS = 2


def _minimum(model: ModelFolder, rows: int) -> int:
    return rows if model.device.type == "cpu" else 1


@torch.inference_mode()
def denoise_step(model: ModelFolder, seqs: list[Sequence]) -> None:
    """Advance every sequence by one step of its own sampler plan; all share one UNet call of 2·B rows."""
    unet, b, pad = model.components["unet"], len(seqs), _minimum(model, MIN_DENOISER_ROWS)
    c = torch.stack([s.plan.table[s.step] for s in seqs])  # (B, 10): each row's step coefficients
    latents = torch.cat([s.latents for s in seqs])  # (B, 4, h, w)
    x = (latents / c[:, 1].view(-1, 1, 1, 1)).to(latents.dtype)  # the sampler's input scaling (Euler: σ² + 1)
    if seqs[0].masked_image_latents is not None:  # inpainting UNet: + mask + masked image latents (9 channels)
        x = torch.cat([x, torch.cat([s.mask for s in seqs]), torch.cat([s.masked_image_latents for s in seqs])], 1)
    t = c[:, 0].repeat(2)  # (2B,)
    embeds = torch.cat([s.cond.embeds[0:1] for s in seqs] + [s.cond.embeds[1:2] for s in seqs])  # (2B, T, D)
    added = None
    if model.xl:
        added = {k: _pad_rows(torch.cat([getattr(s.cond, a)[i:i + 1] for i in (0, 1) for s in seqs]), pad)
                 for k, a in (("text_embeds", "pooled"), ("time_ids", "time_ids"))}
    out = unet(_pad_rows(torch.cat([x, x]), pad), _pad_rows(t, pad), encoder_hidden_states=_pad_rows(embeds, pad),
               added_cond_kwargs=added, return_dict=False)[0][:2 * b]
    uncond, cond = out.chunk(2)  # (B, 4, h, w) each
    guidance = torch.tensor([s.guidance for s in seqs], dtype=out.dtype, device=out.device).view(-1, 1, 1, 1)
    noise, latents32 = (uncond + guidance * (cond - uncond)).float(), latents.float()  # (B, 4, h, w) each
    for name, rows in _by_sampler(seqs).items():  # one batched step per sampler among the rows
        _advance(name, [seqs[i] for i in rows], *(v if len(rows) == b else v[rows] for v in (latents32, noise, c)),
                 latents.dtype)


def _by_sampler(seqs: list[Sequence]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, s in enumerate(seqs):
        rows.setdefault(s.plan.sampler, []).append(i)
    return rows


def _advance(name: str, seqs: list[Sequence], x: torch.Tensor, out: torch.Tensor, c: torch.Tensor,
             dtype: torch.dtype) -> None:
    """One sampler's rows x (B, 4, h, w) with guided outputs and table rows c (B, 10): new latents, step + 1."""
    prevs = [s.denoised for s in seqs]  # 2M history; a row without one (first step) has zero 2nd-order terms
    prev = None if all(p is None for p in prevs) else torch.cat([torch.zeros_like(x[:1]) if p is None else p
                                                                 for p in prevs])
    new, x0 = STEPS[name](x, out, c, seqs[0].plan.prediction, prev)
    new = new.to(dtype)  # computed in float32, stored in the model's dtype (as diffusers' step returns it)
    for j, s in enumerate(seqs):
        s.latents, s.denoised = new[j:j + 1], x0[j:j + 1] if name in MULTISTEP else None
        if s.noise is not None:  # plain-UNet inpainting: keep the unmasked region on the init image's path
            kept = s.image_latents
            if s.step + 1 < len(s.plan):
                kept = renoise(kept, s.noise, s.plan.table[s.step:s.step + 1])
            s.latents = (1 - s.mask) * kept + s.mask * s.latents
        s.step += 1


@torch.inference_mode()
def decode(model: ModelFolder, seqs: list[Sequence]) -> list[np.ndarray]:
    """Final latents → float RGB in [0, 1], one (H, W, 3) array per sequence."""
    vae = model.components["vae"]
    latents = torch.cat([s.latents for s in seqs]).to(vae.dtype) / vae.config.scaling_factor  # (B, 4, h, w)
    padded = _pad_rows(latents, _minimum(model, MIN_DECODER_ROWS))
    images = vae.decode(padded, return_dict=False)[0][:len(seqs)]  # (B, 3, H, W)
    return list((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy())


def _pad_rows(x: torch.Tensor, minimum: int) -> torch.Tensor:
    """Repeat rows up to `minimum`; the extra rows' outputs are discarded."""
    if len(x) >= minimum:
        return x
    return torch.cat([x] * -(-minimum // len(x)))[:minimum]
