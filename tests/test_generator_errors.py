"""Bad input: each problem fails its own request with a reason code (never quoting the prompt); the rest go on."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import struct
import torch
from PIL import Image

from generator.api import GenerationRequest, Lora, RequestError
from generator.runtime import Engine, EngineConfig, ImageLimits
from tests.tiny_sd import build_tiny_sd

torch.set_num_threads(2)
SECRET = "a zebra-secret-7731 prompt"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("errors")
    models = {"sd": build_tiny_sd(root / "sd"), "sd-inpaint": build_tiny_sd(root / "sd-inpaint", in_channels=9),
              "broken": root / "missing-folder"}
    return Engine(EngineConfig(models=models, default_model="sd", limits=ImageLimits(max_pixels=1_000_000)))


def png(w: int = 64, h: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def bomb(side: int = 20_000) -> bytes:
    """A tiny PNG whose header claims side² pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (side // 8 + 1) * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


BAD = [
    (dict(model="nope"), "unknown_model"),
    (dict(model="broken"), "model_unavailable"),
    (dict(loras=(Lora("velvet", 1.0),)), "unknown_adapter"),
    (dict(width=60), "bad_size"),
    (dict(width=4096), "bad_size"),
    (dict(init_image=b""), "init_image_missing"),
    (dict(init_image=b"not an image at all"), "init_image_corrupt"),
    (dict(init_image=png()[:60]), "init_image_corrupt"),
    (dict(init_image=png(32, 32)), "init_image_wrong_size"),
    (dict(init_image=bomb()), "init_image_too_large"),
    (dict(init_image=png(), mask=b"garbage"), "mask_corrupt"),
    (dict(init_image=png(), mask=png(64, 32)), "mask_wrong_size"),
    (dict(init_image=png(), mask=bomb()), "mask_too_large"),
    (dict(mask=png()), "mask_without_image"),
    (dict(init_image=png(), strength=-0.1), "bad_strength"),
    (dict(init_image=png(), strength=1.5), "bad_strength"),
    (dict(init_image=png(), strength=float("nan")), "bad_strength"),
    (dict(init_image=png(), strength=0.05), "bad_strength"),  # leaves no step of 6 to run
    (dict(model="sd-inpaint"), "mask_missing"),
    (dict(steps=0), "bad_steps"),
    (dict(guidance=float("inf")), "bad_guidance"),
    (dict(prompt=" "), "bad_prompt"),
]


def test_each_bad_request_fails_alone_with_its_code_and_the_batch_goes_on(engine):
    good = GenerationRequest(prompt=SECRET, seed=1, steps=6, width=64, height=64)
    requests = [good] + [GenerationRequest(**{"prompt": SECRET, "steps": 6, "width": 64, "height": 64, **change})
                         for change, _ in BAD] + [good]
    results = engine.generate(requests)
    assert results[0].image.size == (64, 64) and results[-1].image.size == (64, 64)
    for (change, code), result in zip(BAD, results[1:-1]):
        assert isinstance(result, RequestError), change
        assert result.code == code, (change, result.reason())
        assert "zebra" not in result.reason()


def test_good_image_inputs_run(engine):
    img2img, inpaint = engine.generate([
        GenerationRequest(prompt=SECRET, steps=4, width=64, height=64, init_image=png(), strength=0.5),
        GenerationRequest(prompt=SECRET, steps=4, width=64, height=64, init_image=png(), mask=png(),
                          model="sd-inpaint")])
    assert img2img.image.size == inpaint.image.size == (64, 64)
