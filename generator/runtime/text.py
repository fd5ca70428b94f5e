"""Prompt conditioning exactly as diffusers' SD and SDXL pipelines compute it (encode_prompt, _get_add_time_ids)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from generator.runtime.loading import ModelFolder


@dataclass
class Conditioning:
    """One request's classifier-free-guidance pair: row 0 unconditional (negative), row 1 conditional."""

    embeds: torch.Tensor  # (2, T, D)
    pooled: torch.Tensor | None = None  # (2, P) SDXL only
    time_ids: torch.Tensor | None = None  # (2, 6) SDXL only: original size, crop top-left, target size


@torch.no_grad()
def encode_texts(model: ModelFolder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token embeddings (N, T, D) and, for SDXL, pooled embeddings (N, P) of distinct texts."""
    c = model.components
    if not model.xl:
        tokenizer, encoder = c["tokenizers"][0], c["text_encoders"][0]
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        mask = tokens.attention_mask.to(model.device) if getattr(encoder.config, "use_attention_mask", False) else None
        return encoder(tokens.input_ids.to(model.device), attention_mask=mask)[0].to(model.dtype), None
    parts, pooled = [], None
    for tokenizer, encoder in zip(c["tokenizers"], c["text_encoders"]):
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids.to(model.device), output_hidden_states=True)
        if pooled is None and out[0].ndim == 2:
            pooled = out[0]  # CLIPTextModelWithProjection's text_embeds  # (N, P)
        parts.append(out.hidden_states[-2])  # penultimate layer, as the SDXL pipeline (clip_skip=None)
    return torch.cat(parts, dim=-1).to(model.dtype), pooled.to(model.dtype)


def conditionings(model: ModelFolder, pairs: list[tuple[str, str]], sizes: list[tuple[int, int]]) -> list[Conditioning]:
    """(negative, prompt) and drawn (width, height) per request → its Conditioning; distinct texts encoded once."""
    zero_negative = model.xl and model.force_zeros_for_empty_prompt
    unique = list(dict.fromkeys(t for pair in pairs for t in pair if t or not zero_negative))
    row = {text: i for i, text in enumerate(unique)}
    embeds, pooled = encode_texts(model, unique)
    out = []
    for (negative, prompt), (width, height) in zip(pairs, sizes):
        pos = row[prompt]
        if negative == "" and zero_negative:  # the pipeline's force_zeros_for_empty_prompt
            e = torch.cat([torch.zeros_like(embeds[pos:pos + 1]), embeds[pos:pos + 1]])
            p = torch.cat([torch.zeros_like(pooled[pos:pos + 1]), pooled[pos:pos + 1]])
        else:
            idx = [row[negative], pos]
            e, p = embeds[idx], None if pooled is None else pooled[idx]
        ids = None
        if model.xl:  # original_size + crops_coords_top_left + target_size, (height, width) order
            ids = torch.tensor([[height, width, 0, 0, height, width]] * 2, dtype=model.dtype, device=model.device)
        out.append(Conditioning(e, p, ids))
    return out
