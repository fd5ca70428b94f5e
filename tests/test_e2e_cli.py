"""The main job as a user runs it: `hallmark up`, `submit … --wait`, `down` (own broker, own directory)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from hallmark.broker import free_port
from hallmark.stack import hallmark_argv

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_up_submit_wait_down(tmp_path):
    env = {**os.environ, "HALLMARK_HOME": str(tmp_path / "var"), "HALLMARK_KAFKA": f"127.0.0.1:{free_port()}",
           "HALLMARK_API_PORT": str(free_port()), "HALLMARK_VERIFY_PORT": str(free_port()),
           "HALLMARK_REVIEW_PORT": str(free_port())}

    def hallmark(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run(hallmark_argv(*args), env=env, capture_output=True, text=True, timeout=timeout)

    try:
        up = hallmark("up")
        assert up.returncode == 0, up.stderr + up.stdout
        assert f"http://127.0.0.1:{env['HALLMARK_API_PORT']}" in up.stdout and "kafka" in up.stdout
        assert "api key" in up.stdout
        again = hallmark("up")  # idempotent: nothing new starts
        assert again.returncode == 0 and again.stdout.splitlines()[:2] == up.stdout.splitlines()[:2]
        submit = hallmark("submit", "a red circle above a blue square", "--seed", "1", "--wait")
        result = json.loads(submit.stdout)
        assert result["status"] == "published", result
        assert set(result) >= {"request_id", "status", "images"} and len(result["images"]) == 1
        with Image.open(Path(result["images"][0])) as image:
            assert image.format == "PNG"
    finally:
        down = hallmark("down")
    assert down.returncode == 0 and "kafka" in down.stdout
    assert not list((tmp_path / "var" / "run").glob("*.pid"))
    assert "nothing was running" in hallmark("down").stdout
