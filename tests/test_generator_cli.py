"""`hallmark generate` and `hallmark eval shapes` as a user runs them (no Kafka)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

HALLMARK = [str(Path(sys.executable).parent / "hallmark")]  # the installed command, as users run it


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HALLMARK, *args], capture_output=True, text=True, timeout=600)


def test_generate_writes_png_with_parameters(tmp_path):
    out = tmp_path / "one.png"
    proc = run("generate", "a red circle above a blue square", "-o", str(out), "--seed", "4", "--steps", "4",
               "--sampler", "euler", "--negative", "a green triangle")
    assert proc.returncode == 0, proc.stderr
    image = Image.open(out)
    assert image.size == (256, 256)
    meta = json.loads(image.text["hallmark"])
    assert (meta["seed"], meta["steps"], meta["sampler"], meta["negative_prompt"]) == (4, 4, "euler", "a green triangle")


def test_generate_bad_input_is_one_clear_line(tmp_path):
    for args, needle in [(("--sampler", "plms"), "unknown sampler"), (("--steps", "0"), "steps must be"),
                         (("--guidance", "inf"), "guidance must be"), (("--model", str(tmp_path / "none")), "does not exist")]:
        proc = run("generate", "a red circle", "-o", str(tmp_path / "x.png"), *args)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = run("generate", "", "-o", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "prompt is empty" in proc.stderr


def test_eval_shapes_writes_images_in_line_order_and_scores(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\nsingle_object\ta red circle\n\n# another\na blue square left of a red circle\n"
                       "colors\ta triangle that is purple\n")
    proc = run("eval", "shapes", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0000.png", "0001.png", "0002.png"]
    assert json.loads(Image.open(tmp_path / "out" / "0001.png").text["hallmark"])["prompt"] == \
        "a blue square left of a red circle"
    report = json.loads(proc.stdout)
    assert report["prompts"] == 3
    assert set(report["seen"]["per_category"]) == {"single_object", "position"}
    assert report["held_out"]["prompts"] == 1  # purple triangle is a held-out combination
    assert 0.0 <= report["seen"]["overall"] <= 1.0
    rows = [line.split("\t") for line in (tmp_path / "out" / "results.tsv").read_text().splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("0000.png", "single_object", "0"), ("0001.png", "position", "0"),
                                                  ("0002.png", "colors", "1")]
    assert all(r[3] in "01" and (r[4] == "ok") == (r[3] == "1") for r in rows)


def test_eval_shapes_rejects_unparseable_prompt_file(tmp_path):
    prompts = tmp_path / "bad.txt"
    prompts.write_text("a red circle\na dog riding a bicycle\n")
    proc = run("eval", "shapes", "--prompts", str(prompts), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "bad.txt" in proc.stderr and "Traceback" not in proc.stderr


def _png(path: Path, size: tuple[int, int], fill: int) -> Path:
    Image.new("RGB", size, (fill, fill, fill)).save(path)
    return path


def test_generate_with_any_folder_at_native_size_without_resampling(tmp_path):
    import numpy as np
    import torch

    from generator.api import GenerationRequest
    from generator.runtime import Engine
    from tests.tiny_sd import build_tiny_sd

    model = build_tiny_sd(tmp_path / "tiny")
    out = tmp_path / "native.png"
    proc = run("generate", "a cat", "-o", str(out), "--model", str(model), "--steps", "3", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (64, 64)  # the folder's native size
    torch.set_num_threads(1)
    (direct,) = Engine.for_folder(model).generate([GenerationRequest(prompt="a cat", seed=2, steps=3, width=64,
                                                                     height=64)])
    assert np.abs(np.asarray(Image.open(out).convert("RGB")).astype(int) - np.asarray(direct.image)).max() <= 1
    proc = run("generate", "a cat", "-o", str(tmp_path / "wide.png"), "--model", str(model), "--steps", "2",
               "--width", "128", "--height", "64")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "wide.png").size == (128, 64)


def test_generate_img2img_inpaint_and_lora_flags(tmp_path):
    from tests.tiny_sd import build_tiny_lora, build_tiny_sd

    model = build_tiny_sd(tmp_path / "tiny")
    build_tiny_lora(model, tmp_path / "loras" / "ink", seed=1)
    init, mask = _png(tmp_path / "init.png", (64, 64), 200), _png(tmp_path / "mask.png", (64, 64), 255)
    common = ["--model", str(model), "--steps", "4"]
    proc = run("generate", "a cat", "-o", str(tmp_path / "a.png"), *common, "--init-image", str(init),
               "--mask", str(mask), "--strength", "0.9", "--lora", "ink:0.7", "--lora-dir", str(tmp_path / "loras"))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(Image.open(tmp_path / "a.png").text["hallmark"])
    assert meta["strength"] == 0.9 and meta["loras"] == [{"name": "ink", "scale": 0.7}]
    assert len(meta["init_image"]) == 64 and len(meta["mask"]) == 64
    for args, needle in [(("--init-image", str(tmp_path / "none.png")), "cannot read init image"),
                         (("--init-image", str(_png(tmp_path / "small.png", (32, 32), 9))), "init_image is 32×32"),
                         (("--init-image", str(init), "--strength", "1.5"), "strength must be in [0, 1]"),
                         (("--lora", "velvet:1", "--lora-dir", str(tmp_path / "loras")), "no adapter folder"),
                         (("--width", "60"), "cannot make 60×64")]:
        proc = run("generate", "a cat", "-o", str(tmp_path / "x.png"), *common, *args)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
