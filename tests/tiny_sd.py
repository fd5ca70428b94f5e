"""Tiny, randomly initialised SD-1.x- and SDXL-shaped model folders (CLIP text encoders, 8× VAE) and LoRA adapters
for tests and the CPU benchmark. Built on the fly with diffusers'/transformers' own classes; no hub."""
from __future__ import annotations

import json
from pathlib import Path

import torch

INDEX_COMMON = {"vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                "scheduler": ["diffusers", "DDIMScheduler"]}


def _clip_tokenizer_files(folder: Path, max_length: int) -> None:
    """A byte-level BPE vocabulary with no merges: every character is a token, as CLIPTokenizer expects."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))


def tiny_shapes(xl: bool, in_channels: int = 4) -> dict:
    """Component configs of the tiny folders: 8×8 latents, 64×64 pixels, 32-wide CLIP text encoders."""
    clip = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=516)
    unet = dict(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, norm_num_groups=32,
                block_out_channels=(32, 64), cross_attention_dim=32)
    if xl:
        unet |= dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=(2, 4),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True,
                     addition_embed_type="text_time", addition_time_embed_dim=8, cross_attention_dim=64,
                     projection_class_embeddings_input_dim=6 * 8 + 32, transformer_layers_per_block=(1, 2))
    else:
        unet |= dict(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), attention_head_dim=8,
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = dict(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=32, sample_size=64)
    return {"unet": unet, "clip": [clip, clip] if xl else [clip], "vae": vae, "max_length": 16}


def build_sd_folder(folder: Path, shapes: dict, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A diffusers-format folder with random weights of the given component shapes (two text encoders: SDXL)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    xl = len(shapes["clip"]) == 2
    for i, clip in enumerate(shapes["clip"]):
        suffix = "_2" if i else ""
        _clip_tokenizer_files(folder / f"tokenizer{suffix}", shapes["max_length"])
        config = CLIPTextConfig(**clip, max_position_embeddings=max(shapes["max_length"], 16), bos_token_id=512,
                                eos_token_id=513, pad_token_id=513, projection_dim=clip["hidden_size"])
        cls = CLIPTextModelWithProjection if i else CLIPTextModel
        _cast(cls(config), dtype).save_pretrained(folder / f"text_encoder{suffix}")
    _cast(UNet2DConditionModel(**shapes["unet"]), dtype).save_pretrained(folder / "unet")
    _cast(AutoencoderKL(**shapes["vae"]), dtype).save_pretrained(folder / "vae")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(folder / "scheduler")
    index = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline", **INDEX_COMMON}
    if xl:
        index |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"], "force_zeros_for_empty_prompt": True}
    else:
        index |= {"safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    return module if dtype == torch.float32 else module.to(dtype)


def build_tiny_sd(folder: Path, seed: int = 0, xl: bool = False, in_channels: int = 4) -> Path:
    """SD-1.x shape (SDXL with `xl`; an inpainting UNet with in_channels=9); 64×64 pixels natively."""
    return build_sd_folder(folder, tiny_shapes(xl, in_channels), seed)


def build_tiny_lora(model_folder: Path, out: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA on the UNet's attention projections, saved in diffusers' format (pytorch_lora_weights)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet))
    return out
