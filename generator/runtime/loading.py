"""Load and validate a local diffusers-format SD 1.x/2.x or SDXL folder (no hub, ever)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from generator.runtime.config import EngineConfig, resolve_device, resolve_dtype
from generator.text_encoder import PACKAGE_MARKER, load_text_encoder

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "shapes-ldm"
REQUIRED = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "scheduler/scheduler_config.json")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "model.safetensors", "model.fp16.safetensors", "pytorch_model.bin")


class ModelError(ValueError):
    """A model folder that is missing, incomplete or of a kind this runtime cannot run."""


@dataclass
class ModelFolder:
    path: Path
    model_id: str
    native_size: int  # pixels the UNet + VAE draw natively
    output_size: int | None  # fixed published size (the embedded model upscales 64 → 256); None: as requested
    vae_scale: int  # pixels per latent cell
    xl: bool = False  # SDXL: two text encoders, pooled embeddings, size/crop micro-conditioning
    force_zeros_for_empty_prompt: bool = True  # SDXL: an empty negative prompt is all zeros
    prefer_dtype: torch.dtype | None = None  # the folder's own precision on CUDA (hallmark.json "torch_dtype")
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    components: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path | None = None) -> "ModelFolder":
        """Check a folder has everything an SD-family pipeline needs, without loading weights."""
        folder = Path(path) if path else DEFAULT_MODEL_DIR
        if not folder.is_dir():
            raise ModelError(f"model folder {folder} does not exist")
        index = _read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
        xl = "text_encoder_2" in index
        encoders = ("text_encoder", "text_encoder_2") if xl else ("text_encoder",)
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        missing += [f"{part}/ weights" for part in ("unet", "vae") if not _has_weights(folder / part)]
        missing += [f"{e}/ weights" for e in encoders
                    if not _has_weights(folder / e) and not (folder / e / PACKAGE_MARKER).exists()]
        missing += [f"{t}/" for t in ("tokenizer", "tokenizer_2")[:len(encoders)] if not (folder / t).is_dir()]
        if missing:
            raise ModelError(f"model folder {folder} is incomplete: missing {', '.join(missing)}")
        if "unet" not in index or "vae" not in index:
            raise ModelError(f"{folder}/model_index.json does not describe a UNet + VAE (SD-family) pipeline")
        vae_cfg, unet_cfg = _read_json(folder / "vae/config.json"), _read_json(folder / "unet/config.json")
        if unet_cfg.get("in_channels", 4) not in (4, 9):
            raise ModelError(f"{folder}: a UNet with {unet_cfg['in_channels']} input channels is neither a "
                             "text-to-image (4) nor an inpainting (9) UNet")
        vae_scale = 2 ** (len(vae_cfg.get("block_out_channels", [0])) - 1)
        extra = _read_json(folder / "hallmark.json") if (folder / "hallmark.json").exists() else {}
        native = int(unet_cfg.get("sample_size", 64)) * vae_scale
        prefer = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(extra.get("torch_dtype", ""))
        return cls(path=folder, model_id=extra.get("model_id", folder.name), native_size=native,
                   output_size=extra.get("output_size"), vae_scale=vae_scale, xl=xl,
                   force_zeros_for_empty_prompt=index.get("force_zeros_for_empty_prompt", True), prefer_dtype=prefer)

    @property
    def inpaint_unet(self) -> bool:
        return self.components["unet"].config.in_channels == 9

    def check_size(self, width: int, height: int) -> None:
        if self.output_size is not None:
            if (width, height) != (self.output_size, self.output_size):
                raise ModelError(f"model {self.model_id} makes {self.output_size}×{self.output_size} images, "
                                 f"not {width}×{height}")
            return
        if width % self.vae_scale or height % self.vae_scale or not (64 <= width <= 2048 and 64 <= height <= 2048):
            raise ModelError(f"model {self.model_id} cannot make {width}×{height}: sides must be 64–2048 and "
                             f"multiples of {self.vae_scale}")

    def draw_size(self, width: int, height: int) -> tuple[int, int]:
        """Pixels the model draws for an output size: the fixed native size for the embedded model, else as asked."""
        if self.output_size is not None:
            return self.native_size, self.native_size
        return width, height

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        w, h = self.draw_size(width, height)
        return h // self.vae_scale, w // self.vae_scale

    def load(self, config: EngineConfig = EngineConfig()) -> "ModelFolder":
        """Load the torch components once onto the configured device; read-only afterwards."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import AutoTokenizer

        if self.components:
            return self
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device, self.prefer_dtype)
        try:
            unet = UNet2DConditionModel.from_pretrained(self.path / "unet", torch_dtype=self.dtype,
                                                        local_files_only=True)
            vae = AutoencoderKL.from_pretrained(self.path / "vae", torch_dtype=self.dtype, local_files_only=True)
            if self.dtype == torch.float16 and vae.config.get("force_upcast", False):
                vae = vae.to(torch.float32)  # the SDXL VAE overflows in fp16 (what diffusers' force_upcast is for)
            names = ("", "_2") if self.xl else ("",)
            tokenizers = [AutoTokenizer.from_pretrained(self.path / f"tokenizer{n}", local_files_only=True)
                          for n in names]
            encoders = [_load_any_text_encoder(self.path / f"text_encoder{n}", self.dtype) for n in names]
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"cannot load model folder {self.path}: {str(exc).splitlines()[0][:300]}") from None
        width = sum(e.config.hidden_size for e in encoders)
        if unet.config.cross_attention_dim != width:
            raise ModelError(f"{self.path}: UNet cross_attention_dim {unet.config.cross_attention_dim} ≠ text "
                             f"encoder width {width}")
        unet, vae = _place(unet, config, self.device), _place(vae, config, self.device)
        if config.compile and self.device.type == "cuda":
            unet.compile(dynamic=True)  # in place: attributes, config and LoRA loading keep working
        self.components = {"unet": unet, "vae": vae, "tokenizers": tokenizers,
                           "text_encoders": [e.to(self.device) for e in encoders],
                           "scheduler_config": _read_json(self.path / "scheduler/scheduler_config.json")}
        return self


def _place(module: torch.nn.Module, config: EngineConfig, device: torch.device) -> torch.nn.Module:
    """Frozen, on the device; on CUDA with PyTorch's SDPA attention and channels-last when configured."""
    module = module.eval().requires_grad_(False).to(device)
    if device.type == "cuda":
        from diffusers.models.attention_processor import AttnProcessor2_0

        module.set_attn_processor(AttnProcessor2_0())  # torch.nn.functional.scaled_dot_product_attention
        if config.channels_last:
            module = module.to(memory_format=torch.channels_last)
    return module


def _has_weights(part: Path) -> bool:
    return any((part / name).is_file() for name in WEIGHT_NAMES)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None


def _load_any_text_encoder(folder: Path, dtype: torch.dtype):
    """Our packaged MiniLM (BERT), or a CLIP text encoder (with projection: SDXL's second), as the folder holds."""
    arch = _read_json(folder / "config.json").get("architectures", [""])[0]
    if (folder / PACKAGE_MARKER).exists() or arch.startswith("Bert"):
        return load_text_encoder(folder, dtype)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
    return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).eval().requires_grad_(False)
