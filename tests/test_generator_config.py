"""Device and precision selection (the CUDA choices are checked with torch.cuda patched; no GPU needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from generator.runtime import EngineConfig, ModelFolder
from generator.runtime.config import resolve_device, resolve_dtype
from tests.tiny_sd import build_tiny_sd

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_auto_device_is_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize("name, device, prefer, bf16, expected", [
    ("auto", CPU, torch.float16, True, torch.float32),  # CPU is always float32 unless asked
    ("auto", CUDA, None, True, torch.bfloat16),
    ("auto", CUDA, None, False, torch.float16),
    ("auto", CUDA, torch.float16, True, torch.float16),  # the folder's own precision wins on CUDA
    ("float16", CPU, None, True, torch.float16),
])
def test_dtype_choice(monkeypatch, name, device, prefer, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert resolve_dtype(name, device, prefer) == expected


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8", CPU)


def test_folder_precision_and_kind_are_read_without_loading(tmp_path):
    folder = build_tiny_sd(tmp_path / "xl", xl=True)
    (folder / "hallmark.json").write_text(json.dumps({"torch_dtype": "float16"}))
    model = ModelFolder.open(folder)
    assert model.xl and model.prefer_dtype == torch.float16 and not model.components
    assert model.load(EngineConfig(device="cpu")).dtype == torch.float32
    assert model.components["unet"].device.type == "cpu"


def test_engine_config_picks_the_default_model():
    config = EngineConfig(models={"a": Path("/models/a"), "b": Path("/models/b")})
    assert config.model_name(None) == "a" and config.model_name("b") == "b"
    assert EngineConfig(models={"a": Path("/models/a")}, default_model="z").model_name(None) == "z"
