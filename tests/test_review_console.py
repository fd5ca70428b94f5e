"""The console's JSON API against the real broker and every stage: claims, refusals, reject and escalate paths."""
from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from sqlmodel import Session, select

from tests.test_spine_flow import REVIEW, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PASSWORD = "correct horse battery staple"
USERS = {"ann": ("reviewer", True), "bob": ("reviewer", False), "boss": ("admin", True)}


def start_console(spine) -> str:
    """`hallmark review serve` as its own process on the session's stack (started once, stopped with the stack)."""
    from review_ui.users import UserStore
    from hallmark.db import engine_for
    from hallmark.stack import web_services

    users = UserStore(engine_for(spine.settings.db_url))
    for name, (role, prompt_access) in USERS.items():
        users.add(name, role, PASSWORD, prompt_access, replace=True)
    port = spine.stack.ports.review
    (service,) = [s for s in web_services(spine.stack.ports) if s.port == port]  # as `hallmark up` runs it
    spine.stack.start(service)
    late = spine.stack.wait_ready([service], timeout=120)
    assert not late, (spine.settings.home / "logs" / f"{service.name}.log").read_text()[-3000:]
    return f"http://127.0.0.1:{port}"


def wait_task(spine, request_id: str, timeout: float = 120.0, audited: bool = False):
    """The review task of a request once the review-queue stage projected it (and, if asked, its audit record)."""
    from hallmark.db import engine_for
    from review.queue import ReviewHistoryRow, ReviewQueueRow

    engine = engine_for(spine.settings.db_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as session:
            task = session.exec(select(ReviewQueueRow).where(ReviewQueueRow.request_id == request_id)).first()
            record = task and session.exec(select(ReviewHistoryRow).where(
                ReviewHistoryRow.source_event_id == task.task_event_id)).first()
        if task is not None and (record is not None or not audited):
            return task
        time.sleep(0.5)
    raise AssertionError(f"no review task for {request_id} after {timeout:.0f}s")


def api(base: str, name: str) -> httpx.Client:
    token = httpx.post(f"{base}/api/v1/login", json={"name": name, "password": PASSWORD}, timeout=30).json()["token"]
    return httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def console(spine):
    return start_console(spine)


def audited_activity(spine, request_id: str, action: str, reviewer: str):
    return spine.wait_for("audit", lambda e: e.request_id == request_id
                          and e.payload.source_event_type == "review.activity"
                          and e.payload.redacted_event["payload"]["action"] == action
                          and e.payload.redacted_event["payload"]["reviewer"] == reviewer,
                          timeout=60, what=f"an audited {action} by {reviewer}")


def test_reject_ends_rejected_and_only_the_holder_decides(spine, console):
    event = kafka_request(REVIEW, seed=21)
    spine.produce_event(event)
    task = wait_task(spine, event.request_id, audited=True)
    tid = task.task_id
    ann, bob = api(console, "ann"), api(console, "bob")
    queues = {q["name"]: q for q in ann.get("/queues").json()["queues"]}
    assert queues["violence"]["count"] >= 1 and queues["violence"]["oldest_age_s"] >= 0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two reviewers claim at the same moment
        race = list(pool.map(lambda client: client.post(f"/tasks/{tid}/claim"), (ann, bob)))
    assert sorted(r.status_code for r in race) == [200, 409], [r.text for r in race]
    if race[1].status_code == 200:
        bob.post(f"/tasks/{tid}/release")
    claim = ann.post(f"/tasks/{tid}/claim").json() if race[0].status_code != 200 else race[0].json()
    assert claim["holder"] == "ann"
    assert bob.post(f"/tasks/{tid}/claim").status_code == 409
    assert bob.get(f"/tasks/{tid}").status_code == 403
    stolen = bob.post(f"/tasks/{tid}/decision", json={"decision": "approve", "reason": "mine now",
                                                       "claim_token": claim["claim_token"]})
    assert stolen.status_code == 409
    view = ann.get(f"/tasks/{tid}").json()
    assert view["prompt"] == REVIEW and view["queue"] == "violence" and view["gate"] == "prompt"
    assert view["severity"] == 3 and view["policy_version"] and view["reasons"]
    assert any(h["event_type"] == "request.submitted" for h in view["history"])
    ann.post(f"/tasks/{tid}/release")  # released, then claimed again: the old claim token is stale
    again = ann.post(f"/tasks/{tid}/claim").json()
    stale = ann.post(f"/tasks/{tid}/decision", json={"decision": "reject", "reason": "x",
                                                      "claim_token": claim["claim_token"]})
    assert stale.status_code == 409
    decided = ann.post(f"/tasks/{tid}/decision", json={"decision": "reject", "reason": "graphic violence",
                                                        "claim_token": again["claim_token"]})
    assert decided.status_code == 202, decided.text
    outcome = spine.outcome(event.request_id)
    assert outcome.payload.status.value == "rejected" and "reviewer" in outcome.payload.reason
    assert spine.events("jobs", event.request_id) == []
    (decision,) = spine.events("review-decisions", event.request_id)
    assert (decision.payload.reviewer, decision.payload.decision, decision.payload.reason) == \
        ("ann", "reject", "graphic violence")
    assert str(decision.event_id) == decided.json()["event_id"]
    assert ann.post(f"/tasks/{tid}/decision", json={"decision": "approve", "reason": "changed my mind",
                                                     "claim_token": again["claim_token"]}).status_code == 409
    viewed = audited_activity(spine, event.request_id, "viewed", "ann")[0]
    assert "prompt" in viewed.payload.redacted_event["payload"]["shown"]
    assert REVIEW not in viewed.model_dump_json()  # the audit says that the prompt was shown, never what it was


def test_escalate_goes_to_the_senior_queue_and_a_senior_approval_resumes_generation(spine, console):
    event = kafka_request(REVIEW, seed=22)
    spine.produce_event(event)
    tid = wait_task(spine, event.request_id).task_id
    bob, boss = api(console, "bob"), api(console, "boss")
    claim = bob.post(f"/tasks/{tid}/claim").json()
    view = bob.get(f"/tasks/{tid}").json()
    assert view["prompt"] is None and "prompt access" in view["prompt_note"]  # bob may not read prompts
    assert bob.post(f"/tasks/{tid}/decision", json={"decision": "escalate", "reason": "unsure: context?",
                                                     "claim_token": claim["claim_token"]}).status_code == 202
    senior = {q["name"]: q for q in bob.get("/queues").json()["queues"]}["senior"]
    assert senior["count"] >= 1 and not senior["claimable_by_you"]
    assert bob.post(f"/tasks/{tid}/claim").status_code == 403
    assert bob.post("/claims", json={"queue": "senior"}).status_code == 403
    taken = boss.post(f"/tasks/{tid}/claim").json()
    assert boss.get(f"/tasks/{tid}").json()["queue"] == "senior"
    assert boss.post(f"/tasks/{tid}/decision", json={"decision": "approve", "reason": "fictional shapes",
                                                      "claim_token": taken["claim_token"]}).status_code == 202
    outcome = spine.outcome(event.request_id, timeout=300)
    assert outcome.payload.status.value == "published", outcome.payload.reason
    jobs = spine.events("jobs", event.request_id)
    assert len(jobs) == 1 and jobs[0].payload.reviewed
    decisions = [(d.payload.reviewer, d.payload.decision) for d in spine.events("review-decisions", event.request_id)]
    assert decisions == [("bob", "escalate"), ("boss", "approve")]
    stats = boss.get("/admin/stats").json()
    by_reviewer = {t["reviewer"]: t for t in stats["throughput"]}
    assert by_reviewer["boss"]["approved"] >= 1 and by_reviewer["bob"]["escalated"] >= 1
    assert bob.get("/admin/stats").status_code == 403
