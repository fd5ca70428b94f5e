"""No raw prompt is stored anywhere, tried with a unique marker against the real broker, and shredding a tenant
makes its prompts unreadable everywhere: the broker's segment files, tables, blobs, logs, dlq and audit."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hallmark.stack import hallmark_argv
from tests.test_review_console import api, console, wait_task  # noqa: F401 (fixture)
from tests.test_spine_flow import REVIEW, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
MARKER = "zqvx7marker"


def files_containing(roots: list[Path], needle: bytes) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                if path.is_file() and needle in path.read_bytes():
                    found.append(str(path))
            except OSError:  # a file removed while we looked (a rolled log, a compacted segment)
                continue
    return found


def test_a_marker_prompt_is_in_clear_nowhere_and_shredding_leaves_it_unreadable(spine, kafka, console):
    prompt = f"{REVIEW} {MARKER}"
    with spine.http() as http:
        response = http.post("/v1/requests", json={"prompt": prompt, "negative_prompt": f"no {MARKER}", "seed": 5})
    assert response.status_code == 202, response.text
    over_http = response.json()["request_id"]
    over_kafka = kafka_request(prompt, tenant="shred-me")
    spine.produce_event(over_kafka)  # sealed with the tenant's public key, as a backend does with the helper
    tasks = {rid: wait_task(spine, rid, audited=True) for rid in (over_http, over_kafka.request_id)}
    time.sleep(3)  # let every stage, the projectors and the audit settle on these events
    roots = [kafka.home, spine.settings.home]
    assert files_containing(roots, MARKER.encode()) == []
    for topic in ("dlq", "audit", "review-tasks", "requests", "requests.shred-me", "prompt-verdicts"):
        assert all(MARKER.encode() not in r.value for r in spine.records(topic)), topic

    boss = api(console, "boss")  # an admin with prompt access reads it through the console, opened server-side
    tid = tasks[over_kafka.request_id].task_id
    boss.post(f"/tasks/{tid}/claim")
    assert boss.get(f"/tasks/{tid}").json()["prompt"] == prompt

    shred = subprocess.run(hallmark_argv("tenants", "shred", "shred-me"), env={**os.environ, **spine.settings.to_env()},
                           capture_output=True, text=True, timeout=120)
    assert shred.returncode == 0, shred.stderr
    view = boss.get(f"/tasks/{tid}").json()
    assert view["prompt"] is None and "shredded" in view["prompt_note"]
    from hallmark.tenant_keys import Shredded
    from hallmark.tenants import tenant_keys

    with pytest.raises(Shredded):
        tenant_keys(spine.settings).public("shred-me")
    assert not list((spine.settings.keys_dir / "tenants").glob("shred-me*"))
    http_task = tasks[over_http]  # another tenant's prompt still opens
    boss.post(f"/tasks/{http_task.task_id}/claim")
    assert boss.get(f"/tasks/{http_task.task_id}").json()["prompt"] == prompt
