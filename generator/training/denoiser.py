"""Stage 2: train the text-conditioned latent UNet (v-prediction, zero terminal SNR, min-SNR-γ weighting, EMA).

v-prediction: Salimans & Ho 2022; zero terminal SNR: Lin et al. 2023; min-SNR-γ: Hang et al. 2023;
classifier-free guidance by caption dropout: Ho & Salimans 2022; warmup-stable-decay learning rate with a
linear cool-down: Hägele et al. 2024.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import EMAModel

from generator.text_encoder import encode, load_text_encoder, load_tokenizer
from generator.training.autoencoder import build_autoencoder
from generator.training.common import (TRAIN_TIMESTEPS, DenoiserConfig, Progress, TrainConfig, learning_rate,
                                       load_checkpoint, parse_category_weights, pick_device, save_checkpoint,
                                       setup_threads, shapes_batch)

LATENT = 16
LOSS_WEIGHTS = ("min-snr", "clamped-v")
_TRANSFORMER_BLOCK = re.compile(r"^(.*\.transformer_blocks\.\d+)\.")


def noise_schedule() -> DDPMScheduler:
    """The training schedule; the sampler configs written by export.py share these betas."""
    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                         timestep_spacing="trailing", steps_offset=1)


def build_unet(cfg: DenoiserConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=cfg.layers_per_block,
        block_out_channels=cfg.block_out_channels,
        # attention at 8×8 and 4×4 only: on CPU, 256-token attention at 16×16 cost half of each step
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim, norm_num_groups=32,
        transformer_layers_per_block=cfg.transformer_layers_per_block,
    )


def _transformer_block(key: str) -> str | None:
    """"down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight" -> the block's prefix; None outside one."""
    m = _TRANSFORMER_BLOCK.match(key)
    return m.group(1) if m else None


def load_grown(unet: UNet2DConditionModel, source: dict[str, torch.Tensor]) -> list[str]:
    """Load a shallower UNet's weights into `unet`; the transformer blocks the source lacks start as identities
    (zeroed output projections, as ControlNet's zero convolutions), so the grown net computes what the source did.
    Returns the names of the new parameters."""
    target = unet.state_dict()
    mismatched = [k for k, v in source.items() if k not in target or target[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"source UNet does not fit this architecture ({len(mismatched)} tensors, e.g. "
                         f"{mismatched[0]}); only transformer depth can grow")
    new = [k for k in target if k not in source]
    blocks = {_transformer_block(k) for k in new}
    if None in blocks or any(_transformer_block(k) in blocks for k in source):
        raise ValueError("source UNet lacks tensors other than whole transformer blocks; only transformer depth "
                         "can grow")
    unet.load_state_dict(source, strict=False)
    modules = dict(unet.named_modules())
    with torch.no_grad():
        for name in blocks:
            block = modules[name]
            for out in (block.attn1.to_out[0], block.attn2.to_out[0],
                        [m for m in block.ff.net if isinstance(m, torch.nn.Linear)][-1]):
                out.weight.zero_()
                out.bias.zero_()
    return new


def load_autoencoder(ckpt: Path) -> AutoencoderKL:
    """The trained autoencoder with its latent scaling factor (measured once, then stored in the checkpoint)."""
    state = load_checkpoint(ckpt)
    if state is None:
        raise SystemExit(f"no autoencoder checkpoint at {ckpt}; run `python -m generator.training.autoencoder` first")
    vae = build_autoencoder(state["config"])
    vae.load_state_dict(state["model"])
    vae.eval().requires_grad_(False)
    if "scaling_factor" not in state:
        state["scaling_factor"] = latent_scaling_factor(vae)
        save_checkpoint(ckpt, state)
    vae.register_to_config(scaling_factor=state["scaling_factor"])
    return vae


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, n: int = 1024, seed: int = 1234) -> float:
    """1 / std of the latents, so the denoiser sees unit-variance inputs (as SD's 0.18215)."""
    rng = np.random.default_rng(seed)
    latents = [vae.encode(shapes_batch(rng, 128, vae.device)[0]).latent_dist.sample() for _ in range(n // 128)]
    return float(1.0 / torch.cat(latents).std())


class CaptionCache:
    """Frozen-encoder outputs by caption; the grammar repeats captions often."""

    def __init__(self, tokenizer, text_encoder, size: int = 50_000):
        self.tokenizer, self.text_encoder, self.size = tokenizer, text_encoder, size
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(c for c in captions if c not in self.cache))
        if missing:
            for caption, emb in zip(missing, encode(missing, self.tokenizer, self.text_encoder)):
                self.cache[caption] = emb.clone()
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return torch.stack([self.cache[c] for c in captions])  # (B, T, 384)


def loss_weight(scheduler: DDPMScheduler, t: torch.Tensor, kind: str = "min-snr", gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weight on the v-prediction MSE.

    min-snr: min(SNR, γ) / (SNR + 1), min-SNR-γ (Hang et al. 2023). On a zero-terminal-SNR schedule it vanishes at
    the last timestep, where samplers start.
    clamped-v: min(1, γ / (SNR + 1)): the plain v loss (Salimans & Ho 2022) at high noise, min-SNR's clamp at low.
    Meant to teach layout from the caption; 1,000 fine-tuning steps with it scored lower than min-snr (README).
    """
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar).clamp(min=1e-8)
    if kind == "min-snr":
        return snr.clamp(max=gamma) / (snr + 1)
    if kind == "clamped-v":
        return (gamma / (snr + 1)).clamp(max=1.0)
    raise ValueError(f"unknown loss weighting {kind!r}; expected one of {', '.join(LOSS_WEIGHTS)}")


def train(model_cfg: DenoiserConfig, cfg: TrainConfig, vae_ckpt: Path, caption_dropout: float = 0.1,
          init_from: Path | None = None) -> Path:
    setup_threads(cfg.threads)
    device = pick_device()
    vae = load_autoencoder(vae_ckpt).to(device)  # may sample latents once (scaling factor): before seeding
    scale = vae.config.scaling_factor
    tokenizer, text_encoder = load_tokenizer(), load_text_encoder().to(device)
    captions_to_emb = CaptionCache(tokenizer, text_encoder)
    null_emb = captions_to_emb([""])  # (1, T, 384): the unconditional embedding CFG uses at sampling time
    torch.manual_seed(cfg.seed)
    unet = build_unet(model_cfg).to(device).train()
    if device.type == "cpu":
        # at 16-64 tokens PyTorch's CPU flash-attention kernel is slower than plain matmuls (+16% samples/s here)
        unet.set_attn_processor(AttnProcessor())
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = noise_schedule()
    ckpt_path = cfg.out / "denoiser.pt"
    step, rng = 0, np.random.default_rng(cfg.seed + 1)
    if init_from is not None and not ckpt_path.exists():
        # continue from an exported model's EMA weights with a fresh optimizer, growing its transformer depth
        # to this config's if it is shallower
        source = UNet2DConditionModel.from_pretrained(init_from / "unet", torch_dtype=torch.float32).state_dict()
        try:
            new = load_grown(unet, source)
        except ValueError as exc:
            raise SystemExit(f"--init-from {init_from}: {exc}") from None
        ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=False)
        print(f"initialised from {init_from}/unet" + (f" ({len(new)} new tensors start as identities)" if new else ""),
              flush=True)
    if (state := load_checkpoint(ckpt_path)) is not None:
        if state["config"] != model_cfg:
            raise SystemExit(f"{ckpt_path} holds a UNet of another shape ({state['config']}); this run asks for "
                             f"{model_cfg}. Train into another --out, or grow it with --init-from an export of it")
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, rng.bit_generator.state = state["step"], state["rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    print(f"unet parameters: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M, device {device}, "
          f"vae scaling {scale:.4f}", flush=True)
    progress, t_start, start_step = Progress(cfg.steps, step, cfg.batch_size), time.time(), step
    while step < cfg.steps:
        if step % cfg.batch_reuse == 0 or step == start_step:
            # rendering, VAE encoding and MiniLM are ~20% of a CPU step; reuse amortises them over fresh noise draws
            x, captions = shapes_batch(rng, cfg.batch_size, device, cfg.category_weights)  # (B, 3, 64, 64)
            with torch.no_grad():
                z0 = vae.encode(x).latent_dist.sample() * scale  # (B, 4, 16, 16)
            clean_emb = captions_to_emb(captions).to(device)  # (B, T, 384)
        drop = torch.rand(len(captions), device=device) < caption_dropout
        emb = torch.where(drop[:, None, None], null_emb.to(device), clean_emb)
        noise = torch.randn_like(z0)
        t = torch.randint(*cfg.timesteps, (len(z0),), device=device)
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t)
        pred = unet(zt, t, encoder_hidden_states=emb).sample
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight(sched, t, cfg.loss_weight)).mean()
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        step += 1
        # stop only where a fresh batch is due, so a resumed run draws exactly what an uninterrupted one would
        timed_out = (cfg.time_limit_min and step % cfg.batch_reuse == 0
                     and time.time() - t_start > cfg.time_limit_min * 60)
        if step % 25 == 0 or step == cfg.steps:
            print(progress.line(step, loss=loss.item(), lr=lr), flush=True)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
            save_checkpoint(ckpt_path, {"model": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                                        "step": step, "rng": rng.bit_generator.state,
                                        "torch_rng": torch.get_rng_state(), "config": model_cfg})
        if timed_out:
            print(f"time limit reached at step {step}; rerun the same command to resume", flush=True)
            break
    return ckpt_path


def _layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers like 1,2,2, got {text!r}") from None
    if len(layers) != 3 or min(layers) < 1:
        raise argparse.ArgumentTypeError(f"expected three integers ≥ 1 like 1,2,2, got {text!r}")
    return layers


def _band(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(n) for n in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI like 600:1000, got {text!r}") from None
    if not 0 <= lo < hi <= TRAIN_TIMESTEPS:
        raise argparse.ArgumentTypeError(f"expected 0 ≤ LO < HI ≤ {TRAIN_TIMESTEPS}, got {text!r}")
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("var/train"))
    p.add_argument("--autoencoder", type=Path, default=None, help="autoencoder checkpoint (default OUT/autoencoder.pt)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--decay-from", type=int, default=0,
                   help="step at which the learning rate starts its linear cool-down to zero at --steps (0: none)")
    p.add_argument("--batch-reuse", type=int, default=1,
                   help="optimizer steps per rendered batch, each with fresh noise, timesteps and caption dropout")
    p.add_argument("--category-weights", type=parse_category_weights, default=None, metavar="CAT=W,...",
                   help="caption category mix, e.g. position=2,counting=1.5 (unnamed categories weigh 1)")
    p.add_argument("--transformer-layers", type=_layers, default=DenoiserConfig.transformer_layers_per_block,
                   metavar="N,N,N", help="transformer layers per UNet level (16×16, 8×8, 4×4; the first is unused)")
    p.add_argument("--loss-weight", choices=LOSS_WEIGHTS, default="min-snr",
                   help="per-timestep loss weight (see loss_weight)")
    p.add_argument("--timesteps", type=_band, default=TrainConfig.timesteps, metavar="LO:HI",
                   help=f"train only on timesteps LO ≤ t < HI (of {TRAIN_TIMESTEPS}; high ones set the layout)")
    p.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--time-limit-min", type=float, default=0.0)
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from an exported model folder's UNet (continuing training in a fresh checkout)")
    a = p.parse_args(argv)
    cfg = TrainConfig(out=a.out, seed=a.seed, steps=a.steps, batch_size=a.batch_size, lr=a.lr, threads=a.threads,
                      time_limit_min=a.time_limit_min, decay_from=a.decay_from, batch_reuse=a.batch_reuse,
                      category_weights=a.category_weights, loss_weight=a.loss_weight, timesteps=a.timesteps,
                      ema_decay=a.ema_decay)
    model_cfg = DenoiserConfig(transformer_layers_per_block=a.transformer_layers)
    print(f"checkpoint: {train(model_cfg, cfg, a.autoencoder or a.out / 'autoencoder.pt', init_from=a.init_from)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
