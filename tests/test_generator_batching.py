"""Acceptance 2: step-level batching. A request that joins a running batch at step k gives the same image as alone
(within 1/255); requests with different steps, samplers, guidance, sizes and models share the engine."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from generator.api import GenerationRequest
from generator.runtime import Engine, EngineConfig
from tests.tiny_sd import build_tiny_sd

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("batching")
    return Engine(EngineConfig(models={"sd": build_tiny_sd(root / "sd"), "xl": build_tiny_sd(root / "xl", xl=True)},
                               max_batch=8))


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def req(model: str, seed: int, **kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": f"request {seed}", "seed": seed, "steps": 8, "guidance": 5.0,
                                "width": 64, "height": 64, "model": model, **kw})


def pixels(result) -> np.ndarray:
    return np.asarray(result.image).astype(int)


def run_until_done(engine: Engine, ids: set[int]) -> dict:
    results = {}
    while not ids <= results.keys():
        results.update(engine.step())
    return results


@pytest.mark.parametrize("model", ["sd", "xl"])
@pytest.mark.parametrize("join_at", [1, 4])
def test_joining_mid_way_gives_the_same_image_as_alone(engine, model, join_at):
    late = req(model, 99, steps=6, sampler="euler", guidance=7.0, negative_prompt="noise")
    (alone,) = engine.generate([late])
    running = [req(model, 1, steps=10), req(model, 2, steps=7, sampler="ddim", guidance=3.0),
               req(model, 3, steps=9, sampler="euler", init_image=png(3), strength=0.7)]
    ids = {engine.add_request(r) for r in running}
    for _ in range(join_at):
        assert not any(isinstance(r, Exception) for _, r in engine.step())
    late_id = engine.add_request(late)
    results = run_until_done(engine, ids | {late_id})
    assert np.abs(pixels(results[late_id]) - pixels(alone)).max() <= 1
    for i, r in zip(sorted(ids), running):  # the running ones are unchanged by the newcomer too
        assert np.abs(pixels(results[i]) - pixels(engine.generate([r])[0])).max() <= 1


def test_mixed_step_counts_share_denoiser_calls(engine):
    requests = [req("sd", s, steps=steps, sampler=sampler)
                for s, (steps, sampler) in enumerate([(4, "ddim"), (6, "euler"), (8, "dpmpp_2m"), (5, "euler")])]
    ids = {engine.add_request(r) for r in requests}
    calls, results = 0, {}
    while not ids <= results.keys():
        results.update(engine.step())
        calls += 1
    assert calls == 8  # the longest request's steps, not 4 + 6 + 8 + 5: every step carried every running request
    assert all(results[i].image.size == (64, 64) for i in ids)


def test_models_and_sizes_form_their_own_groups(engine):
    requests = [req("sd", 5), req("xl", 6), req("sd", 7, width=128, height=64), req("sd", 8)]
    together = engine.generate(requests)
    assert [r.image.size for r in together] == [(64, 64), (64, 64), (128, 64), (64, 64)]
    for r, t in zip(requests, together):
        assert np.abs(pixels(engine.generate([r])[0]) - pixels(t)).max() <= 1


def test_running_set_is_capped_and_new_arrivals_wait_for_a_step_boundary(tmp_path):
    engine = Engine(EngineConfig(models={"sd": build_tiny_sd(tmp_path / "sd")}, max_batch=2))
    ids = [engine.add_request(req("sd", s, steps=3)) for s in range(3)]
    engine.step()
    assert len(engine.scheduler.running) == 2 and len(engine.scheduler.waiting) == 1
    results = run_until_done(engine, set(ids))
    assert all(results[i].image.size == (64, 64) for i in ids)
