"""Shared training plumbing: configs, shapes batches as tensors, checkpoints, device choice."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generator.shapes.captions import CATEGORIES
from generator.shapes.dataset import make_batch

TRAIN_TIMESTEPS = 1000  # the denoiser's noise schedule length


@dataclass
class AutoencoderConfig:
    block_out_channels: tuple[int, ...] = (16, 32, 64)  # 2 downsamples: 64×64 → 16×16
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8


@dataclass
class DenoiserConfig:
    block_out_channels: tuple[int, ...] = (64, 96, 128)  # 16×16 → 8×8 → 4×4
    layers_per_block: int = 1
    attention_head_dim: int = 32
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1)  # per level; the 16×16 level has no attention
    cross_attention_dim: int = 384  # MiniLM hidden size
    prediction_type: str = "v_prediction"


@dataclass
class TrainConfig:
    out: Path = Path("var/train")
    seed: int = 0
    steps: int = 4000
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 200
    decay_from: int = 0  # step where the linear cool-down to zero at `steps` begins; 0 = constant after warmup
    batch_reuse: int = 1  # optimizer steps per rendered, encoded batch
    ema_decay: float = 0.999
    ckpt_every: int = 250
    threads: int = 0  # 0: all cores
    time_limit_min: float = 0.0  # stop (after checkpointing) once this much wall time is spent; 0 = none
    loss_weight: str = "min-snr"  # denoiser: see denoiser.loss_weight
    category_weights: tuple[float, ...] | None = None  # caption category mix, in CATEGORIES order; None = uniform
    # denoiser: train on timesteps lo ≤ t < hi (a band fine-tunes one regime)
    timesteps: tuple[int, int] = (0, TRAIN_TIMESTEPS)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, constant, then (from cfg.decay_from, if set) a linear cool-down to zero at cfg.steps."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
    if cfg.decay_from and step >= cfg.decay_from:
        lr *= max(0.0, (cfg.steps - step) / max(cfg.steps - cfg.decay_from, 1))
    return lr


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def setup_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def shapes_batch(rng: np.random.Generator, n: int, device: torch.device,
                 category_weights: tuple[float, ...] | None = None) -> tuple[torch.Tensor, list[str]]:
    images, captions, _ = make_batch(rng, n, category_weights)
    return images_to_tensor(images, device), captions


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-save never leaves a broken checkpoint


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


class Progress:
    """One-line progress with rate and ETA, flushed so a background log can be tailed."""

    def __init__(self, total: int, start: int, unit_per_step: int):
        self.total, self.start, self.unit = total, start, unit_per_step
        self.t0 = time.time()

    def line(self, step: int, **metrics: float) -> str:
        dt = max(time.time() - self.t0, 1e-9)
        rate = (step - self.start) / dt
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        parts = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        return (f"step {step}/{self.total} {parts} {rate * self.unit:.0f} samples/s "
                f"elapsed {dt / 60:.1f}m eta {eta / 60:.1f}m")


def parse_category_weights(text: str) -> tuple[float, ...]:
    """"position=2,counting=1.5" -> one weight per CATEGORIES entry (unnamed ones weigh 1)."""
    weights = dict.fromkeys(CATEGORIES, 1.0)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in weights:
            raise ValueError(f"unknown category {name.strip()!r}; expected one of {', '.join(CATEGORIES)}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"category weight for {name.strip()!r} is not a number: {value!r}") from None
    if any(not np.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"category weights must be finite, non-negative and not all zero: {text!r}")
    return tuple(weights.values())


def config_json(cfg) -> str:
    return json.dumps(dataclasses.asdict(cfg), default=str)
