"""The console over HTTP with no broker: what it refuses before anything is sent, and the add-user command."""
from __future__ import annotations

import re

import pytest

from hallmark.db import engine_for
from review.tasks import task_id
from tests.review_helpers import PASSWORD, Clock, project, task_event

@pytest.fixture
def console(tmp_path):
    from fastapi.testclient import TestClient

    from hallmark.config import HallmarkConfig
    from review_ui.app import create_app
    from review_ui.service import ConsoleConfig

    clock = Clock()
    settings = HallmarkConfig(home=tmp_path / "home", kafka_bootstrap="127.0.0.1:9", database_url="", model_dir="")
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
    from hallmark.stack import hallmark_argv

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
