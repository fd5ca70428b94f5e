"""Acceptance 5: LoRA adapters made on the fly change the output, scale 0 equals no adapter, and requests with
different adapters in one run each get their own."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.api import GenerationRequest, Lora, RequestError
from generator.runtime import Engine, EngineConfig
from tests.tiny_sd import build_tiny_lora, build_tiny_sd

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("lora")
    sd = build_tiny_sd(root / "sd")
    adapters = {"ink": build_tiny_lora(sd, root / "ink", seed=1), "clay": build_tiny_lora(sd, root / "clay", seed=2)}
    return Engine(EngineConfig(models={"sd": sd}, adapters=adapters))


def req(*loras: Lora, seed: int = 3) -> GenerationRequest:
    return GenerationRequest(prompt="a bowl of fruit", seed=seed, steps=5, sampler="euler", width=64, height=64,
                             loras=loras)


def pixels(result) -> np.ndarray:
    return np.asarray(result.image).astype(int)


def test_adapter_changes_output_and_scale_zero_equals_no_adapter(engine):
    base, inked, zero = engine.generate([req(), req(Lora("ink", 1.0)), req(Lora("ink", 0.0))])
    assert np.abs(pixels(inked) - pixels(base)).mean() > 1.0
    assert np.array_equal(pixels(zero), pixels(base))
    (half,) = engine.generate([req(Lora("ink", 0.5))])
    assert 0 < np.abs(pixels(half) - pixels(base)).mean() < np.abs(pixels(inked) - pixels(base)).mean()


def test_different_adapters_in_one_run_each_get_their_own(engine):
    mixed = [req(Lora("ink", 1.0)), req(Lora("clay", 1.0)), req(), req(Lora("ink", 1.0), Lora("clay", 0.5))]
    together = engine.generate(mixed)
    alone = [engine.generate([r])[0] for r in mixed]
    for t, a in zip(together, alone):
        assert np.abs(pixels(t) - pixels(a)).max() <= 1
    assert np.abs(pixels(together[0]) - pixels(together[1])).mean() > 1.0
    assert len({tuple(pixels(t).ravel()[:64]) for t in together}) == 4


def test_adapters_load_once_and_unknown_adapter_fails_only_its_request(engine):
    fresh = Engine(engine.config)
    unet = fresh.model("sd")[1].components["unet"]
    loads, load = [], unet.load_lora_adapter
    unet.load_lora_adapter = lambda *a, **k: loads.append(k["adapter_name"]) or load(*a, **k)
    good, again, bad = fresh.generate([req(Lora("ink", 1.0)), req(Lora("ink", 0.5)), req(Lora("velvet", 1.0))])
    fresh.generate([req(Lora("ink", 1.0), seed=4)])
    assert good.image.size == again.image.size == (64, 64)
    assert isinstance(bad, RequestError) and bad.code == "unknown_adapter"
    assert loads == ["ink"]
