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
