"""The sampler contract: generator.runtime.samplers.SAMPLERS is the one implementation of schemas' SamplerName."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.api import GenerationRequest, RequestError
from generator.runtime import Engine, EngineConfig
from generator.runtime.samplers import SAMPLERS, make_scheduler
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
