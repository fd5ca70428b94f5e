"""Engine configuration: typed, passed in explicitly (no environment reads), resolved once at load."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from provenance.images import ImageLimits  # caps on init images and masks, as on uploads

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    """What one engine process serves and how. One engine owns one device."""

    models: dict[str, Path] = field(default_factory=dict)  # name in the request spec → local diffusers folder
    default_model: str | None = None  # for requests without `model`; None: the first of `models`
    adapters: dict[str, Path] = field(default_factory=dict)  # LoRA name → local folder (diffusers/peft format)
    device: str = "auto"  # "auto": CUDA when present, else CPU
    dtype: str = "auto"  # "auto": bf16 on CUDA where supported (fp16 otherwise; per model, see loading), fp32 on CPU
    compile: bool = False  # torch.compile the UNet (CUDA only; first steps are slow while it compiles)
    channels_last: bool = True  # UNet and VAE in channels-last memory format on CUDA
    max_batch: int = 16  # requests per denoiser step (each brings two rows: unconditional and conditional)
    limits: ImageLimits = ImageLimits()

    def model_name(self, requested: str | None) -> str | None:
        return requested or self.default_model or next(iter(self.models), None)


def resolve_device(name: str) -> torch.device:
    """"auto" → cuda:0 when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device, prefer: torch.dtype | None = None) -> torch.dtype:
    """float32 on CPU; on CUDA the model's preference (e.g. fp16 weights), else bf16 where the card has it."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; choose auto or one of {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    if prefer is not None:
        return prefer
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
