"""Stage 1: train the shapes AutoencoderKL (Rombach et al. 2022, without the GAN: flat shapes need none)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from generator.training.common import (AutoencoderConfig, Progress, TrainConfig, learning_rate, load_checkpoint,
                                       pick_device, save_checkpoint, setup_threads, shapes_batch)

RECON_LOSSES = ("l1+mse", "l1-edges")


def build_autoencoder(cfg: AutoencoderConfig) -> AutoencoderKL:
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
    )


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, kind: str = "l1+mse") -> torch.Tensor:
    """Object-weighted reconstruction error; `l1-edges` drops MSE (whose mean-seeking blurs edges) and weighs the
    pixels at colour boundaries, where the checker's colour thresholds eat blurred corners first."""
    # object pixels are a few percent of the canvas; weighting them keeps corners and colours exact
    on_object = (x != x[:, :, :1, :1]).any(dim=1, keepdim=True).float()  # (B, 1, H, W), corner = background
    if kind == "l1+mse":
        weight = 1.0 + 4.0 * on_object
        return ((recon - x).abs() * weight).mean() + ((recon - x).square() * weight).mean()
    if kind == "l1-edges":
        spread = F.max_pool2d(x, 3, 1, 1) + F.max_pool2d(-x, 3, 1, 1)  # (B, 3, H, W): 3×3 max - min
        on_edge = (spread.amax(dim=1, keepdim=True) > 0.05).float()
        weight = 1.0 + 4.0 * on_object + 10.0 * on_edge
        return ((recon - x).abs() * weight).mean()
    raise ValueError(f"unknown reconstruction loss {kind!r}; expected one of {', '.join(RECON_LOSSES)}")


def train(model_cfg: AutoencoderConfig, cfg: TrainConfig, kl_weight: float = 1e-6, decoder_only: bool = False,
          init_from: Path | None = None, recon_loss: str = "l1+mse") -> Path:
    """Train encoder and decoder; with `decoder_only` the encoder (hence the latent space the denoiser learned) is
    frozen and only the decoder sharpens, as SD's fine-tuned VAE decoders were made."""
    setup_threads(cfg.threads)
    device = pick_device()
    torch.manual_seed(cfg.seed)
    vae = build_autoencoder(model_cfg).to(device).train()
    ckpt_path = cfg.out / "autoencoder.pt"
    rng = np.random.default_rng(cfg.seed)
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    step = 0
    if init_from is not None and not ckpt_path.exists():
        # a new session has no var/train: continue from the shipped weights (and keep their latent scale)
        shipped = AutoencoderKL.from_pretrained(init_from / "vae", torch_dtype=torch.float32)
        vae.load_state_dict(shipped.state_dict())
        save_checkpoint(ckpt_path, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": 0,
                                    "rng": rng.bit_generator.state, "config": model_cfg, "decoder_only": None,
                                    "scaling_factor": shipped.config.scaling_factor})
        print(f"initialised from {init_from}/vae", flush=True)
    if (state := load_checkpoint(ckpt_path)) is not None:
        vae.load_state_dict(state["model"])
        if state.get("decoder_only", False) == decoder_only:
            opt.load_state_dict(state["opt"])
        step, rng.bit_generator.state = state["step"], state["rng"]
        print(f"resumed from {ckpt_path} at step {step}{' (decoder only)' if decoder_only else ''}", flush=True)
    extra = {k: state[k] for k in ("scaling_factor",) if state and k in state}
    progress, t_start = Progress(cfg.steps, step, cfg.batch_size), time.time()
    while step < cfg.steps:
        x, _ = shapes_batch(rng, cfg.batch_size, device)  # (B, 3, 64, 64)
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = reconstruction_loss(recon, x, recon_loss)
        kl = posterior.kl().mean()
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        timed_out = cfg.time_limit_min and time.time() - t_start > cfg.time_limit_min * 60
        if step % 50 == 0 or step == cfg.steps:
            print(progress.line(step, rec=rec.item(), kl=kl.item()), flush=True)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
            save_checkpoint(ckpt_path, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                                        "rng": rng.bit_generator.state, "config": model_cfg,
                                        "decoder_only": decoder_only, **extra})
        if timed_out:
            print(f"time limit reached at step {step}; rerun the same command to resume", flush=True)
            break
    return ckpt_path


@torch.no_grad()
def evaluate(vae: AutoencoderKL, n: int = 512, seed: int = 99) -> dict[str, float]:
    """Reconstruct fresh renders; report the checker's pass rate on them and the mean absolute error."""
    from generator.shapes.checker import check
    from generator.shapes.dataset import make_batch

    images, captions, categories = make_batch(np.random.default_rng(seed), n)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(vae.device) / 127.5 - 1
    recon = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mode()).sample for i in range(0, n, 64)])
    out = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    passed = [check(img, cap).passed for img, cap in zip(out, captions)]  # categories are inferred from the text
    return {"checker_pass": float(np.mean(passed)), "mae_255": float(np.abs(out.astype(int) - images).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("var/train"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--time-limit-min", type=float, default=0.0)
    p.add_argument("--decay-from", type=int, default=0, help="cool the learning rate linearly to zero from this step")
    p.add_argument("--loss", choices=RECON_LOSSES, default="l1+mse",
                   help="reconstruction loss; l1-edges sharpens colour boundaries (decoder fine-tunes)")
    p.add_argument("--eval-only", action="store_true", help="score the checkpoint's reconstructions and exit")
    p.add_argument("--decoder-only", action="store_true",
                   help="freeze the encoder (keeps the denoiser's latent space) and sharpen the decoder")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from an exported model folder's VAE (continuing training in a fresh checkout)")
    a = p.parse_args(argv)
    if a.eval_only:
        state = load_checkpoint(a.out / "autoencoder.pt")
        if state is None:
            raise SystemExit(f"no checkpoint in {a.out}")
        vae = build_autoencoder(state["config"])
        vae.load_state_dict(state["model"])
        print(f"step {state['step']}: {evaluate(vae.eval())}")
        return 0
    cfg = TrainConfig(out=a.out, seed=a.seed, steps=a.steps, batch_size=a.batch_size, lr=a.lr, threads=a.threads,
                      time_limit_min=a.time_limit_min, decay_from=a.decay_from)
    ckpt = train(AutoencoderConfig(), cfg, decoder_only=a.decoder_only, init_from=a.init_from, recon_loss=a.loss)
    print(f"checkpoint: {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
