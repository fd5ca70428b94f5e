"""Sampler name → a fresh diffusers scheduler: the one implementation map for `schemas.events.SamplerName`.

Schedulers are stateful (step index, multistep history): one instance per request, never shared.
"""
from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

SAMPLERS = {
    "ddim": DDIMScheduler,  # Song et al. 2021
    "euler": EulerDiscreteScheduler,  # Karras et al. 2022, Algorithm 2 without churn
    "dpmpp_2m": DPMSolverMultistepScheduler,  # Lu et al. 2022, DPM-Solver++(2M)
}
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")


def make_scheduler(name: str, model_config: dict):
    """A new scheduler of the named kind (a key of SAMPLERS) sharing the model's training noise schedule."""
    shared = {k: v for k, v in model_config.items() if k in SCHEDULER_KEYS}
    if name == "dpmpp_2m":
        shared |= {"algorithm_type": "dpmsolver++", "solver_order": 2}
        if shared.get("rescale_betas_zero_snr"):
            shared["final_sigmas_type"] = "zero"
    if name == "ddim":
        shared |= {"clip_sample": False, "set_alpha_to_one": False}
    return SAMPLERS[name](**shared)
