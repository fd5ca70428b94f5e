"""Review queues, leases, users, sessions and the console's refusals — without a broker (SQLite in tmp_path)."""
from __future__ import annotations

import itertools
import random
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, SQLModel, select

from schemas import ReviewDecided, ReviewTaskCreated
from schemas.envelope import Producer
from schemas.events import Decision, GateResult, GenerationSpec, ReviewDecidedPayload, ReviewTaskCreatedPayload
from streams.readmodels import engine_for
from streams.review_claims import ClaimError, ClaimStore, ReviewClaimRow
from streams.review_queue import SENIOR, TABLES, ReviewQueueRow, apply, primary_category
from streams.review_tasks import SLA, task_id

P = Producer(service="test", version="1")
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
PASSWORD = "correct horse battery staple"


class Clock:
    """A settable clock handed to the stores (UTC epoch seconds)."""

    def __init__(self, t: float = T0.timestamp()):
        self.t = t

    def __call__(self) -> float:
        return self.t


def task_event(request_id: str, severity: int = 3, categories=("violence",), at: datetime = T0, stage="lexical"):
    verdict = GateResult(decision=Decision.REVIEW, stage=stage, categories=list(categories), score=0.7,
                         reasons=["matched a review-band term"], policy_id="hallmark-default", policy_version="1.0.0")
    payload = ReviewTaskCreatedPayload(task_id=task_id(request_id, "prompt"), gate="prompt", verdict=verdict,
                                       severity=severity, sla_deadline=at + SLA[severity],
                                       spec=GenerationSpec(prompt="a massacre of green triangles"))
    return ReviewTaskCreated(event_type=ReviewTaskCreated.event_type_name, request_id=request_id, tenant_id="t",
                             producer=P, occurred_at=at, payload=payload)


def decided(task, decision: str, reviewer: str, at: datetime):
    p = task.payload
    payload = ReviewDecidedPayload(task_id=p.task_id, gate=p.gate, decision=decision, reviewer=reviewer,
                                   reason="because", spec=p.spec, policy_version="1.0.0")
    event = task.follow(ReviewDecided, payload, P)
    return event.model_copy(update={"occurred_at": at})


@pytest.fixture
def engine(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'review.db'}")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    return engine


def project(engine, *events) -> None:
    with Session(engine) as session:
        for offset, event in enumerate(events):
            apply(session, event, "review-tasks" if event.event_type == "review.task_created" else "review-decisions",
                  0, offset)
        session.commit()


def rows(engine) -> list[tuple]:
    with Session(engine) as session:
        return sorted((r.task_id, r.category, r.severity, r.escalated_by, r.decision, r.decided_by, r.task_event_id)
                      for r in session.exec(select(ReviewQueueRow)).all())


# ---- the read model -----------------------------------------------------------------------------------------

def test_queue_is_the_urgent_category_then_the_first_and_gate_errors_have_their_own():
    assert primary_category(["violence", "sexual_minor"], "lexical") == "sexual_minor"
    assert primary_category(["weapons", "hate"], "embedding") == "hate"
    assert primary_category([], "error") == "gate-error"
    assert primary_category([], "lexical") == "uncategorised"


def test_projection_does_not_depend_on_arrival_order():
    task = task_event("r-order")
    resent = task.model_copy(update={"event_id": uuid.uuid4(), "occurred_at": T0 + timedelta(seconds=5)})
    events = [task, resent, decided(task, "escalate", "ann", T0 + timedelta(minutes=1)),
              decided(task, "reject", "boss", T0 + timedelta(minutes=2)),
              decided(task, "approve", "late", T0 + timedelta(minutes=3))]
    results = set()
    for order in random.Random(0).sample(list(itertools.permutations(events)), 12):
        engine = engine_for("sqlite://")  # in memory
        SQLModel.metadata.create_all(engine, tables=TABLES)
        project(engine, *order)
        results.add(tuple(rows(engine)))
    assert len(results) == 1
    (row,) = results.pop()
    assert row[1:6] == ("violence", 3, "ann", "reject", "boss") and row[6] == str(task.event_id)


# ---- claims and leases ----------------------------------------------------------------------------------------

def test_claim_next_takes_severity_first_then_the_oldest(engine):
    old3 = task_event("r-old3", 3, at=T0)
    new1 = task_event("r-new1", 1, ("sexual_minor",), at=T0 + timedelta(minutes=5))
    new3 = task_event("r-new3", 3, at=T0 + timedelta(minutes=10))
    project(engine, new3, new1, old3)
    store = ClaimStore(engine, clock=Clock(T0.timestamp() + 3600))
    order = [store.claim_next("ann", senior=False).task_id for _ in range(3)]
    assert order == [str(e.payload.task_id) for e in (new1, old3, new3)]
    assert store.claim_next("ann", senior=False) is None
    violence = store.claim_next("bob", senior=False, queue="violence")
    assert violence is None  # both held by ann


def test_an_expired_lease_returns_the_task_and_the_stale_claim_cannot_decide(engine):
    task = task_event("r-lease")
    project(engine, task)
    clock = Clock(T0.timestamp())
    store = ClaimStore(engine, lease_s=60, clock=clock)
    tid = str(task.payload.task_id)
    first = store.claim("ann", False, tid)
    with pytest.raises(ClaimError) as refused:
        store.claim("bob", False, tid)
    assert refused.value.status == 409 and "another reviewer" in refused.value.reason
    assert store.claim_next("bob", False) is None
    clock.t += 61  # ann's lease ran out: the task is back in its queue
    assert [t.task_id for t in store.open_tasks(claimable=True)] == [tid]
    second = store.claim_next("bob", False)
    assert second.task_id == tid and second.token != first.token
    with pytest.raises(ClaimError, match="live claim"):
        store.begin_decision("ann", tid, first.token, "approve")
    store.begin_decision("bob", tid, second.token, "approve")
    assert store.open_tasks() == []
    with pytest.raises(ClaimError, match="decided"):
        store.claim("ann", False, tid)


def test_a_claim_expired_in_the_holders_hands_cannot_decide(engine):
    task = task_event("r-expired")
    project(engine, task)
    clock = Clock()
    store = ClaimStore(engine, lease_s=30, clock=clock)
    claim = store.claim("ann", False, str(task.payload.task_id))
    clock.t += 31
    with pytest.raises(ClaimError, match="expired"):
        store.begin_decision("ann", claim.task_id, claim.token, "reject")


def test_two_concurrent_claims_never_both_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    setup = engine_for(url)
    SQLModel.metadata.create_all(setup, tables=TABLES)
    tasks = [task_event(f"r-race-{i}") for i in range(15)]
    project(setup, *tasks)
    stores = [ClaimStore(engine_for(url)) for _ in range(2)]  # two engines, as two console processes
    for task in tasks:
        tid, barrier, results = str(task.payload.task_id), threading.Barrier(2), [None, None]

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                results[i] = stores[i].claim(f"reviewer{i}", False, tid)
            except ClaimError as exc:
                results[i] = exc

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if not isinstance(r, ClaimError)]
        assert len(winners) == 1, results
        assert stores[0].claim_of(tid).holder == winners[0].holder
    # claim-next from both sides over the remaining pool hands out each task exactly once
    with Session(setup) as session:
        for row in session.exec(select(ReviewClaimRow)).all():
            row.holder, row.lease_expires = None, 0.0
        session.commit()
    got: list[list[str]] = [[], []]

    def drain(i: int) -> None:
        while (claim := stores[i].claim_next(f"reviewer{i}", False)) is not None:
            got[i].append(claim.task_id)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[0] + got[1]) == sorted(str(t.payload.task_id) for t in tasks)


def test_escalation_moves_the_task_to_the_senior_queue(engine):
    task = task_event("r-escalate")
    project(engine, task)
    store = ClaimStore(engine, clock=Clock())
    tid = str(task.payload.task_id)
    claim = store.claim("ann", False, tid)
    store.begin_decision("ann", tid, claim.token, "escalate")
    assert [(t.task_id, t.queue, t.holder) for t in store.open_tasks()] == [(tid, SENIOR, None)]
    assert store.claim_next("bob", senior=False) is None
    with pytest.raises(ClaimError) as refused:
        store.claim("bob", False, tid)
    assert refused.value.status == 403
    with pytest.raises(ClaimError) as refused:
        store.claim_next("bob", False, queue=SENIOR)
    assert refused.value.status == 403
    senior = store.claim_next("boss", senior=True, queue=SENIOR)
    assert senior.task_id == tid
    with pytest.raises(ClaimError, match="senior queue"):
        store.begin_decision("boss", tid, senior.token, "escalate")
    store.begin_decision("boss", tid, senior.token, "approve")
    assert store.open_tasks() == []


def test_an_escalation_seen_only_in_the_log_also_counts(engine):
    task = task_event("r-escalate-log")
    project(engine, task, decided(task, "escalate", "elsewhere", T0 + timedelta(minutes=1)))
    store = ClaimStore(engine, clock=Clock())
    assert [t.queue for t in store.open_tasks()] == [SENIOR]
    assert store.claim_next("bob", senior=False) is None
    assert store.claim_next("boss", senior=True).task_id == str(task.payload.task_id)


def test_release_and_reassign(engine):
    task = task_event("r-reassign")
    project(engine, task)
    store = ClaimStore(engine, clock=Clock())
    tid = str(task.payload.task_id)
    claim = store.claim("ann", False, tid)
    with pytest.raises(ClaimError, match="do not hold"):
        store.release("bob", tid)
    store.release("ann", tid)
    assert store.claim_next("bob", False).task_id == tid
    moved = store.reassign(tid, "cy", to_senior=False)
    assert store.claim_of(tid).holder == "cy" and store.live_claim("bob", tid) is None
    with pytest.raises(ClaimError):
        store.begin_decision("bob", tid, claim.token, "approve")
    store.begin_decision("cy", tid, moved.token, "reject")


def test_undo_restores_the_claim_when_the_decision_could_not_be_sent(engine):
    task = task_event("r-undo")
    project(engine, task)
    store = ClaimStore(engine, clock=Clock())
    tid = str(task.payload.task_id)
    claim = store.claim("ann", False, tid)
    before = store.begin_decision("ann", tid, claim.token, "escalate")
    store.undo_decision(before)
    assert store.live_claim("ann", tid) == claim
    assert [t.queue for t in store.open_tasks()] == ["violence"]


def test_admin_stats_count_throughput_breaches_and_peak_depth(engine):
    from review_ui.stats import admin_stats

    hour, minute = timedelta(hours=1), timedelta(minutes=1)
    ClaimStore(engine)
    quick = task_event("r-quick", at=T0 + 30 * minute)  # waits ten minutes, then rejected
    late = task_event("r-late", 1, ("sexual_minor",), at=T0 + 90 * minute)  # 1 h SLA, decided 3 h later
    moved = task_event("r-moved", at=T0 + 150 * minute)  # escalated, still open
    stale = task_event("r-stale", 3, at=T0 - 30 * hour)  # open long past its 24 h SLA
    project(engine, quick, late, moved, stale, decided(quick, "reject", "ann", T0 + 40 * minute),
            decided(late, "approve", "ann", T0 + 270 * minute), decided(moved, "escalate", "bob", T0 + 210 * minute))
    stats = admin_stats(engine, now=(T0 + 6 * hour).timestamp(), window_s=6 * 3600, buckets=6)  # from T0
    assert [(t.reviewer, t.approved, t.rejected, t.escalated) for t in stats.throughput] == \
        [("ann", 1, 1, 0), ("bob", 0, 0, 1)]
    assert {b.task_id for b in stats.breaches} == {str(late.payload.task_id), str(stale.payload.task_id)}
    assert (stats.open_breaches, stats.closed_breaches) == (1, 1)
    assert [p.total for p in stats.depth] == [2, 2, 3, 3, 3, 2]  # the ten-minute wait shows in its hour
    assert stats.depth[-1].depths == {"violence": 1, SENIOR: 1}


# ---- users and sessions ---------------------------------------------------------------------------------------

def test_passwords_are_hashed_with_scrypt_and_checked(engine):
    from review_ui.users import UserRow, UserStore, hash_password, verify_password

    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in stored
    assert stored != hash_password(PASSWORD)  # salted
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "!", stored)
    users = UserStore(engine)
    users.add("ann", "reviewer", PASSWORD)
    with Session(engine) as session:
        assert PASSWORD not in repr(session.get(UserRow, "ann"))
    assert users.authenticate("ann", PASSWORD).role == "reviewer"
    assert users.authenticate("ann", "wrong password!") is None
    assert users.authenticate("nobody", PASSWORD) is None
    for bad, why in [(("<b>", "reviewer", PASSWORD), "user names"), (("bo", "root", PASSWORD), "role"),
                     (("bo", "reviewer", "short"), "passwords"), (("ann", "admin", PASSWORD), "exists")]:
        with pytest.raises(ValueError, match=why):
            users.add(*bad)


def test_sessions_end_when_idle_and_at_their_absolute_limit(engine):
    from review_ui.sessions import SessionRow, SessionStore

    clock = Clock()
    sessions = SessionStore(engine, idle_s=600, absolute_s=3600, clock=clock)
    token, live = sessions.create("ann")
    with Session(engine) as session:
        assert token not in repr(session.exec(select(SessionRow)).all())  # only its hash is stored
    for _ in range(5):
        clock.t += 599
        assert sessions.lookup(token).user == "ann"
    clock.t += 3600
    assert sessions.lookup(token) is None
    token, _ = sessions.create("ann")
    clock.t += 601
    assert sessions.lookup(token) is None and sessions.lookup("forged") is None


def test_login_failures_are_counted_across_console_processes_sharing_one_database(engine):
    from review_ui.login_throttle import LoginThrottle, ThrottleConfig

    clock = Clock()
    config = ThrottleConfig(per_account=3, per_client=5, window_s=100)
    first, second = (LoginThrottle(engine, config, clock) for _ in range(2))  # two console replicas
    for replica in (first, second, first):
        assert replica.retry_after("Ann", "10.0.0.1") == 0
        replica.failed("Ann", "10.0.0.1")
        clock.t += 10
    assert second.retry_after("ANN", "10.0.0.2") == 70  # the oldest of the three (t0) ages out at t0 + 100
    second.failed("bob", "10.0.0.1")
    second.failed("cy", "10.0.0.1")
    assert first.retry_after("dee", "10.0.0.1") > 0  # one client spraying five names
    assert first.retry_after("dee", "10.0.0.3") == 0
    clock.t += 71
    assert first.retry_after("ann", "10.0.0.2") == 0
    first.failed("ann", "10.0.0.2")
    first.failed("ann", "10.0.0.2")
    assert second.retry_after("ann", "10.0.0.2") > 0
    second.succeeded("ANN")  # a correct password clears the account's count everywhere
    assert first.retry_after("ann", "10.0.0.2") == 0


# ---- the console over HTTP (no broker: what it refuses before anything is sent) -------------------------------

@pytest.fixture
def console(tmp_path):
    from fastapi.testclient import TestClient

    from hallmark.config import Settings
    from review_ui.app import create_app
    from review_ui.service import ConsoleConfig

    clock = Clock()
    settings = Settings(home=tmp_path / "home", kafka_bootstrap="127.0.0.1:9", database_url="", model_dir="")
    app = create_app(settings, ConsoleConfig(session_idle_s=600, max_body=4096), clock)
    app.state.console.users.add("ann", "reviewer", PASSWORD, prompt_access=True)
    app.state.console.users.add("boss", "admin", PASSWORD, prompt_access=True)
    project(app.state.console.engine, task_event("r-http"))
    with TestClient(app, base_url="https://testserver") as client:  # https: the cookies are Secure
        client.clock = clock
        yield client


def browser_login(client, name: str) -> str:
    """Log in through the form like a browser; returns the session's CSRF token from the next page."""
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token, "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert all(flag in cookie for flag in ("hallmark_review=", "HttpOnly", "Secure", "SameSite=strict"))
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)


def api_login(client, name: str) -> dict:
    response = client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_unauthenticated_requests_are_refused_or_redirected(console):
    tid = str(task_id("r-http", "prompt"))
    for path in ("/", "/admin", f"/tasks/{tid}", f"/tasks/{tid}/images/0"):
        response = console.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    for method, path in [("GET", "/api/v1/queues"), ("POST", "/api/v1/claims"), ("GET", f"/api/v1/tasks/{tid}"),
                         ("POST", f"/api/v1/tasks/{tid}/decision"), ("GET", "/api/v1/admin/stats")]:
        response = console.request(method, path)
        assert response.status_code == 401 and "reason" in response.json()
    assert console.get("/api/v1/queues", headers={"Authorization": "Bearer forged"}).status_code == 401
    assert console.post("/api/v1/login", json={"name": "ann", "password": "wrong password"}).status_code == 401


def test_repeated_failed_logins_lock_the_account_for_a_while(console):
    for _ in range(5):
        assert console.post("/api/v1/login", json={"name": "ann", "password": "guess"}).status_code == 401
    locked = console.post("/api/v1/login", json={"name": "ann", "password": PASSWORD})  # even the right password
    assert locked.status_code == 429 and "too many failed logins" in locked.json()["reason"]
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    page = console.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = console.post("/login", data={"name": "ANN", "password": PASSWORD, "csrf_token": token, "next": "/"},
                        follow_redirects=False)
    assert form.status_code == 429 and "Retry-After" in form.headers  # the form and any casing are locked too
    api_login(console, "boss")  # other accounts are not
    console.clock.t += 901
    api_login(console, "ann")


def test_one_client_spraying_many_names_is_throttled(console):
    for i in range(20):
        assert console.post("/api/v1/login", json={"name": f"user{i}", "password": "x"}).status_code == 401
    assert console.post("/api/v1/login", json={"name": "boss", "password": PASSWORD}).status_code == 429


def test_a_reviewer_cannot_open_the_admin_view_or_an_unclaimed_task(console):
    browser_login(console, "ann")
    assert console.get("/admin").status_code == 403
    assert console.get(f"/tasks/{task_id('r-http', 'prompt')}").status_code == 403
    headers = api_login(console, "ann")
    assert console.get("/api/v1/admin/stats", headers=headers).status_code == 403
    admin = api_login(console, "boss")
    stats = console.get("/api/v1/admin/stats", headers=admin).json()
    assert stats["queue_depth"][-1]["queues"] == {"violence": 1}


def test_posts_without_the_csrf_token_are_refused(console):
    csrf = browser_login(console, "ann")
    assert console.post("/claim", data={"queue": "violence"}).status_code == 403
    assert console.post("/claim", data={"queue": "violence", "csrf_token": "guess"}).status_code == 403
    cross = console.post("/claim", data={"queue": "violence", "csrf_token": csrf},
                         headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert console.post("/api/v1/claims", json={}).status_code == 403  # cookie session, no X-CSRF-Token
    assert console.post("/logout", data={}).status_code == 403
    assert console.get("/").status_code == 200  # still logged in
    fresh = console.__class__(console.app, base_url="https://testserver")
    fresh.get("/login")
    refused = fresh.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": "guess"})
    assert refused.status_code == 403  # login CSRF: the token must match the login form's cookie


def test_malformed_and_oversized_posts_get_4xx_and_expired_sessions_go_to_login(console):
    csrf = browser_login(console, "ann")
    assert console.post("/claim", content=b"csrf_token=" + csrf.encode() + b"&queue=a&queue=b",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
    assert console.post("/claim", data={"csrf_token": csrf, "evil": "1"}).status_code == 400
    assert console.post("/claim", content=b"\xff\xfe=\xff", headers={
        "Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
    assert console.post("/claim", files={"queue": ("a", b"x")}).status_code == 415
    big = console.post("/claim", data={"csrf_token": csrf, "queue": "x" * 10_000})
    assert big.status_code == 413
    headers = api_login(console, "ann")
    assert console.post("/api/v1/claims", content=b"[1]", headers={**headers, "Content-Type": "application/json"}
                        ).status_code == 400
    assert console.post("/api/v1/claims", json={"queue": "a", "extra": 1}, headers=headers).status_code == 422
    tid = str(task_id("r-http", "prompt"))
    bad = console.post(f"/api/v1/tasks/{tid}/decision", json={"decision": "maybe", "reason": "x", "claim_token": "t"},
                       headers=headers)
    assert bad.status_code == 422
    stale = console.post(f"/api/v1/tasks/{tid}/decision", json={"decision": "approve", "reason": "ok",
                                                                 "claim_token": "t"}, headers=headers)
    assert stale.status_code == 409 and "claim" in stale.json()["reason"]
    console.clock.t += 601  # idle past the session timeout
    response = console.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/"
    assert console.get("/api/v1/queues", headers=headers).status_code == 401


def test_a_claim_that_cannot_be_audited_does_not_stand(console):
    headers = api_login(console, "ann")
    response = console.post("/api/v1/claims", json={}, headers=headers)  # the broker at :9 is unreachable
    assert response.status_code == 503 and "audit" in response.json()["reason"]
    store = console.app.state.console.claims
    assert [t.holder for t in store.open_tasks()] == [None]


def test_add_user_command_stores_a_working_login_and_refuses_bad_input(tmp_path):
    import os
    import subprocess

    from review_ui.users import UserStore
    from streams.stack import hallmark_argv

    env = {**os.environ, "HALLMARK_HOME": str(tmp_path / "home"), "HALLMARK_DATABASE_URL": ""}

    def add(*args: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
        return subprocess.run(hallmark_argv("review", "add-user", *args, "--password-stdin"), input=password + "\n",
                              env=env, capture_output=True, text=True, timeout=120)

    made = add("ann", "--role", "reviewer", "--prompt-access")
    assert made.returncode == 0 and "ann: reviewer, with prompt access" in made.stdout, made.stderr
    assert add("ann", "--role", "admin").returncode == 2  # exists: --replace needed
    short = add("bob", "--role", "admin", password="short")
    assert short.returncode == 2 and "passwords are" in short.stderr
    users = UserStore(engine_for(f"sqlite:///{tmp_path / 'home' / 'hallmark.db'}"))
    assert users.authenticate("ann", PASSWORD).prompt_access and users.get("bob") is None
