"""Training stages: seeded, resumable, and the learning-rate schedule they document (tiny models, a few steps)."""
from __future__ import annotations

import argparse
import dataclasses
import shutil

import pytest
import torch

from generator.training import autoencoder, denoiser
from generator.training.common import (AutoencoderConfig, DenoiserConfig, TrainConfig, learning_rate, load_checkpoint,
                                       parse_category_weights)

TINY_VAE = AutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=8)
TINY_UNET = DenoiserConfig(block_out_channels=(32, 32, 32), attention_head_dim=8)


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    return autoencoder.train(TINY_VAE, TrainConfig(out=out, steps=2, batch_size=4, lr=1e-3, threads=1))


def _train_denoiser(out, vae_ckpt, **overrides):
    cfg = TrainConfig(out=out, steps=6, batch_size=4, lr=1e-3, warmup=2, threads=1, batch_reuse=2, decay_from=3,
                      ckpt_every=100)
    return load_checkpoint(denoiser.train(TINY_UNET, dataclasses.replace(cfg, **overrides), vae_ckpt))


def test_denoiser_run_stopped_and_resumed_matches_an_uninterrupted_one(tmp_path, vae_ckpt):
    whole = _train_denoiser(tmp_path / "whole", vae_ckpt)
    # a time limit of ~0 stops at the first step where a fresh batch is due, after checkpointing
    stopped = _train_denoiser(tmp_path / "split", vae_ckpt, time_limit_min=1e-9)
    assert stopped["step"] == 2
    resumed = _train_denoiser(tmp_path / "split", vae_ckpt)
    assert resumed["step"] == whole["step"] == 6
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert whole["ema"]["shadow_params"][0].equal(resumed["ema"]["shadow_params"][0])


def test_denoiser_training_is_reproducible_from_its_seed(tmp_path, vae_ckpt):
    a = _train_denoiser(tmp_path / "a", vae_ckpt, steps=2)
    b = _train_denoiser(tmp_path / "b", vae_ckpt, steps=2)
    c = _train_denoiser(tmp_path / "c", vae_ckpt, steps=2, seed=7)
    key = next(iter(a["model"]))
    assert torch.equal(a["model"][key], b["model"][key])
    assert not torch.equal(a["model"][key], c["model"][key])


def test_learning_rate_warms_up_holds_then_cools_down_to_zero():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup=100, decay_from=600)
    lr = [learning_rate(cfg, s) for s in range(1001)]
    assert lr[0] == pytest.approx(1e-5) and lr[99] == pytest.approx(1e-3)
    assert lr[100:601] == [pytest.approx(1e-3)] * 501
    assert lr[800] == pytest.approx(5e-4) and lr[1000] == 0.0
    assert all(a >= b for a, b in zip(lr[600:], lr[601:]))
    assert learning_rate(dataclasses.replace(cfg, decay_from=0), 999) == pytest.approx(1e-3)


def test_autoencoder_run_resumes_from_its_checkpoint(tmp_path, vae_ckpt):
    shutil.copy(vae_ckpt, tmp_path / "autoencoder.pt")
    ckpt = autoencoder.train(TINY_VAE, TrainConfig(out=tmp_path, steps=3, batch_size=4, lr=1e-3, threads=1))
    assert load_checkpoint(ckpt)["step"] == 3


def test_grown_unet_starts_as_the_shallower_one_and_its_new_blocks_learn():
    shallow = denoiser.build_unet(dataclasses.replace(TINY_UNET, transformer_layers_per_block=(1, 1, 1))).eval()
    deep = denoiser.build_unet(dataclasses.replace(TINY_UNET, transformer_layers_per_block=(1, 2, 2))).eval()
    new = denoiser.load_grown(deep, shallow.state_dict())
    assert new and all(".transformer_blocks.1." in k for k in new)
    x, t, emb = torch.randn(2, 4, 16, 16), torch.tensor([5, 800]), torch.randn(2, 24, 384)
    with torch.no_grad():
        assert torch.allclose(shallow(x, t, emb).sample, deep(x, t, emb).sample, atol=1e-6)
    deep.train()
    deep(x, t, emb).sample.square().mean().backward()
    grads = dict(deep.named_parameters())
    assert any(grads[k].grad is not None and grads[k].grad.abs().sum() > 0 for k in new if k.endswith("to_out.0.weight"))


def test_growing_refuses_a_source_of_another_width():
    other = denoiser.build_unet(dataclasses.replace(TINY_UNET, block_out_channels=(32, 32, 64)))
    with pytest.raises(ValueError, match="does not fit"):
        denoiser.load_grown(denoiser.build_unet(TINY_UNET), other.state_dict())
    deeper = denoiser.build_unet(dataclasses.replace(TINY_UNET, transformer_layers_per_block=(1, 2, 2)))
    with pytest.raises(ValueError, match="does not fit"):
        denoiser.load_grown(denoiser.build_unet(TINY_UNET), deeper.state_dict())


def test_category_weights_parse_by_name():
    assert parse_category_weights("position=2,counting=1.5") == (1.0, 1.0, 1.5, 1.0, 2.0, 1.0)
    assert parse_category_weights("") == (1.0,) * 6
    for bad, reason in (("shapes=2", "unknown category"), ("position=x", "not a number"),
                        ("position=-1", "non-negative"), (",".join(f"{c}=0" for c in
                                                               ("single_object", "two_object", "counting", "colors",
                                                                "position", "color_attr")), "not all zero")):
        with pytest.raises(ValueError, match=reason):
            parse_category_weights(bad)


def test_loss_weights_differ_only_at_high_noise():
    sched = denoiser.noise_schedule()
    t = torch.tensor([0, 500, 999])
    clamped, min_snr = denoiser.loss_weight(sched, t, "clamped-v"), denoiser.loss_weight(sched, t, "min-snr")
    assert clamped[2] == 1.0 and min_snr[2] < 1e-6  # zero terminal SNR: pure noise in, the caption's layout out
    assert torch.allclose(clamped[0], min_snr[0])  # low noise: the same min-SNR-γ clamp
    assert (clamped >= min_snr).all()
    with pytest.raises(ValueError, match="unknown loss weighting"):
        denoiser.loss_weight(sched, t, "snr")


def test_resuming_with_another_unet_shape_is_refused(tmp_path, vae_ckpt):
    _train_denoiser(tmp_path, vae_ckpt, steps=2)
    deeper = dataclasses.replace(TINY_UNET, transformer_layers_per_block=(1, 2, 2))
    cfg = TrainConfig(out=tmp_path, steps=4, batch_size=4, threads=1)
    with pytest.raises(SystemExit, match="another shape"):
        denoiser.train(deeper, cfg, vae_ckpt)


def test_timestep_band_parses_and_rejects_bad_bands():
    assert denoiser._band("600:1000") == (600, 1000)
    for bad in ("600", "a:b", "1000:600", "0:1001", "-1:10", "5:5"):
        with pytest.raises(argparse.ArgumentTypeError, match="LO"):
            denoiser._band(bad)


def test_edge_weighted_reconstruction_loss_charges_boundary_errors_most():
    x = -torch.ones(1, 3, 16, 16)  # black canvas
    x[:, :, 4:12, 4:12] = 1.0  # white square: its rim pixels are colour boundaries
    at_edge, inside, outside = x.clone(), x.clone(), x.clone()
    at_edge[:, :, 4, 8] -= 0.5
    inside[:, :, 8, 8] -= 0.5
    outside[:, :, 0, 0] += 0.5
    loss = lambda r, kind: autoencoder.reconstruction_loss(r, x, kind).item()  # noqa: E731
    assert loss(x, "l1-edges") == loss(x, "l1+mse") == 0.0
    assert loss(at_edge, "l1-edges") > loss(inside, "l1-edges") > loss(outside, "l1-edges") > 0
    # the default keeps no edge term: an object pixel costs the same on the rim as inside
    assert loss(at_edge, "l1+mse") == pytest.approx(loss(inside, "l1+mse"))
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        autoencoder.reconstruction_loss(x, x, "l2")
