"""Samplers: diffusers' schedulers give each request its schedule; batched steps here do the arithmetic.

`SAMPLERS` is the one implementation map for `schemas.events.SamplerName`. At admission a request's own diffusers
scheduler sets its timesteps and sigmas, which `plan` turns into a per-step coefficient table. Each denoiser step
then advances all running rows of one sampler at once, elementwise with per-row coefficients, so a row's numbers do
not depend on its batch-mates. The arithmetic is diffusers' `step`, op for op (tests/test_generator_samplers.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

SAMPLERS = {
    "ddim": DDIMScheduler,  # Song et al. 2021
    "euler": EulerDiscreteScheduler,  # Karras et al. 2022, Algorithm 2 without churn
    "dpmpp_2m": DPMSolverMultistepScheduler,  # Lu et al. 2022, DPM-Solver++(2M)
}
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
COEFS = 6  # sampler coefficients per step; table columns: timestep, input divisor, COEFS, re-noise (ka, kn)


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


@dataclass(frozen=True)
class Plan:
    """One request's remaining steps: row j of `table` holds step j's UNet timestep and sampler coefficients."""

    sampler: str
    prediction: str  # what the model outputs: epsilon, v_prediction or sample
    table: torch.Tensor  # (S, 2 + COEFS + 2) float32, on the model's device

    def __len__(self) -> int:
        return len(self.table)


def plan(name: str, scheduler, begin: int, device: torch.device) -> Plan:
    """The table of a scheduler (after set_timesteps) for its steps from schedule index `begin` on."""
    prediction = scheduler.config.prediction_type
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction type {prediction!r} is not supported")
    timesteps = scheduler.timesteps.cpu()
    i = torch.arange(begin, len(timesteps))
    in_div, coefs, ka, kn = TABLES[name](scheduler, timesteps, i)
    coefs += [torch.zeros_like(in_div)] * (COEFS - len(coefs))
    table = torch.stack([timesteps[i].float(), in_div, *coefs, ka, kn], dim=1).float()  # (S, 10)
    return Plan(name, prediction, table.to(device))


def _ddim_table(s, timesteps: torch.Tensor, i: torch.Tensor) -> tuple:
    acp, t = s.alphas_cumprod, timesteps[i]
    prev = t - s.config.num_train_timesteps // s.num_inference_steps
    a_t = acp[t]
    a_prev = torch.where(prev >= 0, acp[prev.clamp(min=0)], s.final_alpha_cumprod)
    a_next = acp[timesteps[(i + 1).clamp(max=len(timesteps) - 1)]]  # add_noise at the next timestep (inpainting)
    std_dev = 0.0  # eta = 0
    return (torch.ones_like(a_t), [(1 - a_t) ** 0.5, a_t ** 0.5, a_prev ** 0.5, (1 - a_prev - std_dev ** 2) ** 0.5],
            a_next ** 0.5, (1 - a_next) ** 0.5)


def _euler_table(s, timesteps: torch.Tensor, i: torch.Tensor) -> tuple:
    sigma, sigma_next = s.sigmas[i], s.sigmas[i + 1]
    sigma_hat = sigma * (0.0 + 1)  # gamma = 0: no churn
    return ((sigma ** 2 + 1) ** 0.5, [sigma_hat, sigma_next - sigma_hat, -sigma / (sigma ** 2 + 1) ** 0.5,
                                      sigma ** 2 + 1], torch.ones_like(sigma), sigma_next)


def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = 1 / ((sigma ** 2 + 1) ** 0.5)
    return alpha, sigma * alpha


def _dpm_table(s, timesteps: torch.Tensor, i: torch.Tensor) -> tuple:
    c, n = s.config, len(timesteps)
    alpha_t, sigma_t = _alpha_sigma(s.sigmas[i + 1])
    alpha_s0, sigma_s0 = _alpha_sigma(s.sigmas[i])
    alpha_s1, sigma_s1 = _alpha_sigma(s.sigmas[i - 1])  # unused on first-order rows
    lambda_t, lambda_s0 = torch.log(alpha_t) - torch.log(sigma_t), torch.log(alpha_s0) - torch.log(sigma_s0)
    lambda_s1 = torch.log(alpha_s1) - torch.log(sigma_s1)
    h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
    final = c.euler_at_final or (c.lower_order_final and n < 15) or c.final_sigmas_type == "zero"
    first = (i == i[0]) | ((i == n - 1) & final)  # diffusers' lower_order_nums < 1 or lower_order_final
    b = alpha_t * (torch.exp(-h) - 1.0)
    zero = torch.zeros_like(b)
    return (torch.ones_like(b), [alpha_s0, sigma_s0, sigma_t / sigma_s0, b, torch.where(first, zero, 0.5 * b),
                                 torch.where(first, zero, 1.0 / (h_0 / h))], alpha_t, sigma_t)


TABLES = {"ddim": _ddim_table, "euler": _euler_table, "dpmpp_2m": _dpm_table}


def _col(c: torch.Tensor, k: int) -> torch.Tensor:
    return c[:, k].view(-1, 1, 1, 1)  # (B, 1, 1, 1)


def ddim_step(x: torch.Tensor, out: torch.Tensor, c: torch.Tensor, prediction: str, _prev=None) -> tuple:
    """DDIM, η = 0 (Song et al. 2021, eq. 12): rows x (B, C, h, w), model outputs, table rows c (B, 10)."""
    sb, sa, sap, sd = (_col(c, k) for k in range(2, 6))
    if prediction == "epsilon":
        x0, eps = (x - sb * out) / sa, out
    elif prediction == "v_prediction":
        x0, eps = sa * x - sb * out, sa * out + sb * x
    else:
        x0 = out
        eps = (x - sa * x0) / sb
    return sap * x0 + sd * eps, x0


def euler_step(x: torch.Tensor, out: torch.Tensor, c: torch.Tensor, prediction: str, _prev=None) -> tuple:
    """Euler (Karras et al. 2022, Alg. 2, no churn) on rows x (B, C, h, w) with table rows c (B, 10)."""
    sigma_hat, dt, c_out, c_skip_div = (_col(c, k) for k in range(2, 6))
    if prediction == "epsilon":
        x0 = x - sigma_hat * out
    elif prediction == "v_prediction":
        x0 = out * c_out + (x / c_skip_div)
    else:
        x0 = out
    derivative = (x - x0) / sigma_hat
    return x + derivative * dt, x0


def dpmpp_2m_step(x: torch.Tensor, out: torch.Tensor, c: torch.Tensor, prediction: str, prev) -> tuple:
    """DPM-Solver++(2M) (Lu et al. 2022), midpoint; first-order rows have zero 2nd-order terms; prev: last x0."""
    alpha_s0, sigma_s0, ratio, b, half_b, inv_r0 = (_col(c, k) for k in range(2, 8))
    if prediction == "epsilon":
        x0 = (x - sigma_s0 * out) / alpha_s0
    elif prediction == "v_prediction":
        x0 = alpha_s0 * x - sigma_s0 * out
    else:
        x0 = out
    d1 = inv_r0 * (x0 - (x0 if prev is None else prev))
    return ratio * x - b * x0 - half_b * d1, x0


STEPS = {"ddim": ddim_step, "euler": euler_step, "dpmpp_2m": dpmpp_2m_step}
MULTISTEP = {"dpmpp_2m"}  # samplers that keep the previous x0 prediction


def renoise(image_latents: torch.Tensor, noise: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The scheduler's add_noise at the next step's noise level (inpainting's kept region): ka·x + kn·noise."""
    return _col(c, -2) * image_latents + _col(c, -1) * noise
