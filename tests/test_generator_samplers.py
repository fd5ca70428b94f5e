"""The sampler contract: generator.runtime.samplers.SAMPLERS is the one implementation of schemas' SamplerName."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.api import GenerationRequest, RequestError
from generator.runtime import Engine, EngineConfig
from generator.runtime.samplers import PREDICTIONS, SAMPLERS, STEPS, dpmpp_2m_step, make_scheduler, plan, renoise
from schemas.events import SAMPLERS as SCHEMA_SAMPLERS
from tests.tiny_sd import build_tiny_sd

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    return Engine(EngineConfig(models={"sd": build_tiny_sd(tmp_path_factory.mktemp("samplers") / "sd")}))


def test_implementation_names_equal_the_schema():
    assert set(SAMPLERS) == set(SCHEMA_SAMPLERS)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
class TestSamplerContract:
    def test_fresh_scheduler_per_request(self, engine, name):
        config = engine.model("sd")[1].components["scheduler_config"]
        a, b = make_scheduler(name, config), make_scheduler(name, config)
        assert a is not b
        a.set_timesteps(4)
        b.set_timesteps(9)
        assert len(a.timesteps) == 4 * a.order and len(b.timesteps) == 9 * b.order

    def test_shares_the_model_noise_schedule(self, engine, name):
        config = engine.model("sd")[1].components["scheduler_config"]
        scheduler = make_scheduler(name, config)
        assert scheduler.config.beta_schedule == config["beta_schedule"]
        assert scheduler.config.num_train_timesteps == config["num_train_timesteps"]

    def test_deterministic_for_a_seed(self, engine, name):
        def make(seed):
            return GenerationRequest(prompt="a lamp", seed=seed, steps=4, sampler=name, width=64, height=64)

        (first,), (again,), (other,) = (engine.generate([make(s)]) for s in (5, 5, 6))
        assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
        assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def test_unknown_sampler_is_a_request_error(engine):
    (result,) = engine.generate([GenerationRequest(prompt="a lamp", sampler="plms", width=64, height=64)])
    assert isinstance(result, RequestError) and result.code == "unknown_sampler" and "ddim" in str(result)


SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "steps_offset": 1, "timestep_spacing": "leading"}


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps,begin", [(7, 0), (20, 0), (10, 3)])
def test_batched_step_equals_the_diffusers_scheduler(name, prediction, steps, begin):
    """The plan's input scaling, step and inpainting re-noise are diffusers' own numbers, bit for bit."""
    g = torch.Generator().manual_seed(steps + begin)
    ref = make_scheduler(name, SD_SCHEDULE | {"prediction_type": prediction})
    ref.set_timesteps(steps)
    if begin and hasattr(ref, "set_begin_index"):  # img2img / inpainting start part-way, as the pipelines do
        ref.set_begin_index(begin)
    p = plan(name, ref, begin, torch.device("cpu"))
    assert len(p) == steps - begin
    x = torch.randn(1, 4, 8, 8, generator=g)  # (1, 4, h, w)
    ours, prev = x.clone(), None
    for j, t in enumerate(ref.timesteps[begin:]):
        out = torch.randn(1, 4, 8, 8, generator=g)
        c = p.table[j:j + 1]
        assert c[0, 0] == t.float()
        assert torch.equal(ref.scale_model_input(x, t), ours / c[:, 1].view(-1, 1, 1, 1))
        x = ref.step(out, t, x, return_dict=False)[0]
        ours, prev = STEPS[name](ours, out, c, prediction, prev)
        assert torch.equal(x, ours), f"step {j}"
        if j + 1 < len(p):
            noise = torch.randn(1, 4, 8, 8, generator=g)
            assert torch.equal(ref.add_noise(x, noise, ref.timesteps[begin + j + 1:begin + j + 2]),
                               renoise(x, noise, c))


def test_rows_step_the_same_alone_and_in_a_batch():
    """Rows at different steps of different schedules give bit-identical results stepped alone or together."""
    g = torch.Generator().manual_seed(0)
    plans = []
    for steps, begin in [(30, 0), (9, 2), (50, 0), (12, 0)]:
        s = make_scheduler("dpmpp_2m", SD_SCHEDULE)
        s.set_timesteps(steps)
        plans.append(plan("dpmpp_2m", s, begin, torch.device("cpu")))
    at = [4, 0, 17, 11]  # each row's own step index
    x, out, prev = (torch.randn(4, 4, 8, 8, generator=g) for _ in range(3))  # (B, 4, h, w)
    prev[1] = 0  # row 1 has no history yet (first step)
    c = torch.stack([p.table[j] for p, j in zip(plans, at)])  # (B, 10)
    batched, _ = dpmpp_2m_step(x, out, c, "epsilon", prev)
    for i in range(4):
        alone, _ = dpmpp_2m_step(x[i:i + 1], out[i:i + 1], c[i:i + 1], "epsilon", None if i == 1 else prev[i:i + 1])
        assert torch.equal(alone, batched[i:i + 1])
