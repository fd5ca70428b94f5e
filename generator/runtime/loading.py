"""Load and validate a local diffusers-format model folder (no hub, ever)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from generator.text_encoder import PACKAGE_MARKER, load_text_encoder

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "shapes-ldm"
REQUIRED = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "scheduler/scheduler_config.json")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")


class ModelError(ValueError):
    """A model folder that is missing, incomplete or of a kind this runtime cannot run."""


@dataclass
class ModelFolder:
    path: Path
    model_id: str
    native_size: int  # pixels the UNet + VAE draw natively
    output_size: int | None  # fixed published size (the embedded model upscales 64 → 256); None: as requested
    vae_scale: int  # pixels per latent cell
    dtype: torch.dtype = torch.float32
    components: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path | None = None) -> "ModelFolder":
        """Check a folder has everything a Stable-Diffusion-family pipeline needs, without loading weights."""
        folder = Path(path) if path else DEFAULT_MODEL_DIR
        if not folder.is_dir():
            raise ModelError(f"model folder {folder} does not exist")
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        missing += [f"{part}/ weights" for part in ("unet", "vae") if not _has_weights(folder / part)]
        if not _has_weights(folder / "text_encoder") and not (folder / "text_encoder" / PACKAGE_MARKER).exists():
            missing.append("text_encoder/ weights")
        if not (folder / "tokenizer").is_dir():
            missing.append("tokenizer/")
        if missing:
            raise ModelError(f"model folder {folder} is incomplete: missing {', '.join(missing)}")
        index = _read_json(folder / "model_index.json")
        if "unet" not in index or "vae" not in index:
            raise ModelError(f"{folder}/model_index.json does not describe a UNet + VAE (SD-family) pipeline")
        vae_cfg, unet_cfg = _read_json(folder / "vae/config.json"), _read_json(folder / "unet/config.json")
        vae_scale = 2 ** (len(vae_cfg.get("block_out_channels", [0])) - 1)
        extra = _read_json(folder / "hallmark.json") if (folder / "hallmark.json").exists() else {}
        native = int(unet_cfg.get("sample_size", 64)) * vae_scale
        return cls(path=folder, model_id=extra.get("model_id", folder.name), native_size=native,
                   output_size=extra.get("output_size"), vae_scale=vae_scale)

    def check_size(self, width: int, height: int) -> None:
        if self.output_size is not None:
            if (width, height) != (self.output_size, self.output_size):
                raise ModelError(f"model {self.model_id} makes {self.output_size}×{self.output_size} images, "
                                 f"not {width}×{height}")
            return
        if width % self.vae_scale or height % self.vae_scale or not (64 <= width <= 2048 and 64 <= height <= 2048):
            raise ModelError(f"model {self.model_id} cannot make {width}×{height}: sides must be 64–2048 and "
                             f"multiples of {self.vae_scale}")

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        if self.output_size is not None:
            return self.native_size // self.vae_scale, self.native_size // self.vae_scale
        return height // self.vae_scale, width // self.vae_scale

    def load(self) -> "ModelFolder":
        """Load the torch components once; they are read-only afterwards (schedulers are made per batch)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import AutoTokenizer

        if self.components:
            return self
        try:
            unet = UNet2DConditionModel.from_pretrained(self.path / "unet", torch_dtype=self.dtype)
            vae = AutoencoderKL.from_pretrained(self.path / "vae", torch_dtype=self.dtype)
            tokenizer = AutoTokenizer.from_pretrained(self.path / "tokenizer")
            text_encoder = _load_any_text_encoder(self.path / "text_encoder", self.dtype)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"cannot load model folder {self.path}: {str(exc).splitlines()[0][:300]}") from None
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise ModelError(f"{self.path}: UNet cross_attention_dim {unet.config.cross_attention_dim} ≠ text encoder "
                             f"hidden size {text_encoder.config.hidden_size}")
        self.components = {"unet": unet.eval().requires_grad_(False), "vae": vae.eval().requires_grad_(False),
                           "tokenizer": tokenizer, "text_encoder": text_encoder,
                           "scheduler_config": _read_json(self.path / "scheduler/scheduler_config.json")}
        return self


def _has_weights(part: Path) -> bool:
    return any((part / name).is_file() for name in WEIGHT_NAMES)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None


def _load_any_text_encoder(folder: Path, dtype: torch.dtype):
    """Our packaged MiniLM (BERT), or a CLIP text encoder as in SD 1.x, whichever the folder holds."""
    arch = _read_json(folder / "config.json").get("architectures", [""])[0]
    if (folder / PACKAGE_MARKER).exists() or arch.startswith("Bert"):
        return load_text_encoder(folder, dtype)
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(folder, torch_dtype=dtype).eval().requires_grad_(False)
