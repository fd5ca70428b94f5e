"""LoRA adapters on a model's UNet: loaded once per (model, adapter) and cached; one adapter set active per step.

diffusers cannot mix adapters inside one batch, so the step scheduler groups sequences by `adapter_key()` and the
engine calls `activate` before each denoiser call (one engine owns its models: no concurrent callers).
"""
from __future__ import annotations

from pathlib import Path

from generator.api import RequestError
from generator.runtime.loading import ModelFolder

WEIGHT_NAMES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors", "pytorch_lora_weights.bin")


class Adapters:
    """The adapters loaded into one model's UNet, by configured name."""

    def __init__(self, model: ModelFolder, folders: dict[str, Path]):
        self.model, self.folders, self.loaded = model, folders, set()
        self.active: tuple = ()

    def ensure(self, name: str) -> None:
        """Load an adapter into the UNet unless it is already there; RequestError when unknown or unloadable."""
        if name in self.loaded:
            return
        folder = self.folders.get(name)
        if folder is None:
            raise RequestError("unknown_adapter", f"unknown LoRA adapter {name!r}; configured: "
                                                  f"{', '.join(sorted(self.folders)) or 'none'}")
        weights = next((w for w in WEIGHT_NAMES if (Path(folder) / w).is_file()), None)
        if weights is None:
            raise RequestError("adapter_unavailable", f"LoRA adapter {name!r} has no weights file")
        unet = self.model.components["unet"]
        try:  # diffusers' format prefixes the UNet's keys with "unet."; peft's own saves have no prefix
            try:
                unet.load_lora_adapter(str(folder), weight_name=weights, prefix="unet", adapter_name=name)
            except ValueError:
                unet.load_lora_adapter(str(folder), weight_name=weights, prefix=None, adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise RequestError("adapter_unavailable", f"LoRA adapter {name!r} does not load on model "
                                                      f"{self.model.model_id} ({exc.__class__.__name__})") from None
        self.loaded.add(name)
        self.active = None  # loading changes the active set: re-apply before the next step

    def activate(self, key: tuple[tuple[str, float], ...]) -> None:
        """Make exactly these (name, scale) adapters active on the UNet; () is the base model."""
        if not self.loaded or key == self.active:
            self.active = key
            return
        unet = self.model.components["unet"]
        if key:
            unet.enable_lora()
            unet.set_adapters([name for name, _ in key], weights=[scale for _, scale in key])
        else:
            unet.disable_lora()
        self.active = key
