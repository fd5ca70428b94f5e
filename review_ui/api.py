"""The console's actions as a JSON API under /api/v1 (bearer token from /api/v1/login, or the browser session)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from review_ui.http import CSRF_HEADER, Caller, caller, check_csrf, client_address, json_body
from review_ui.service import Console, ConsoleError
from review_ui.stats import admin_stats
from review.claims import Claim

router = APIRouter(prefix="/api/v1")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class ClaimBody(Body):
    queue: str | None = Field(default=None, max_length=128)


class DecisionBody(Body):
    decision: Literal["approve", "reject", "escalate"]
    reason: str = Field(min_length=1, max_length=2000)
    claim_token: str = Field(min_length=1, max_length=100)


class ReassignBody(Body):
    to: str = Field(min_length=1, max_length=64)


def _console(request: Request) -> Console:
    return request.app.state.console


async def need(request: Request) -> Caller:
    who = await caller(_console(request), request)
    if who is None:
        raise ConsoleError(401, "not logged in or session expired (POST /api/v1/login)")
    return who


async def change(request: Request, model=None):
    """Caller and body of a state change: authenticated, CSRF-checked for cookie sessions, body validated."""
    who = await need(request)
    check_csrf(request, who, request.headers.get(CSRF_HEADER))
    body = await json_body(request, _console(request).config.max_body, model or Body)
    return who, body


def claim_json(claim: Claim) -> dict:
    return {"task_id": claim.task_id, "holder": claim.holder, "claim_token": claim.token,
            "lease_expires": claim.lease_expires}


@router.post("/login")
async def login(request: Request):
    console = _console(request)
    body = await json_body(request, console.config.max_body, LoginBody)
    user = await run_in_threadpool(console.authenticate, body.name, body.password, client_address(request))
    if user is None:
        raise ConsoleError(401, "unknown user or wrong password")
    token, session = await run_in_threadpool(console.sessions.create, user.name)
    return {"token": token, "csrf_token": session.csrf, "user": user.name, "role": user.role,
            "expires_at": session.expires_at}


@router.post("/logout")
async def logout(request: Request):
    who, _ = await change(request)
    await run_in_threadpool(_console(request).sessions.end, who.token)
    return {"ok": True}


@router.get("/me")
async def me(request: Request):
    who = await need(request)
    return {"user": who.user.name, "role": who.user.role, "prompt_access": who.user.prompt_access,
            "senior": who.user.senior}


@router.get("/queues")
async def queues(request: Request):
    who = await need(request)
    console = _console(request)
    summaries = await run_in_threadpool(console.queues)
    mine = await run_in_threadpool(console.my_tasks, who.user)
    return {"now": console.clock(),
            "queues": [{"name": q.name, "count": q.count, "claimed": q.claimed, "oldest_created": q.oldest_created,
                        "oldest_age_s": round(console.clock() - q.oldest_created, 1),
                        "next_sla_deadline": q.next_deadline, "sla_breached": q.breached,
                        "by_severity": q.by_severity, "claimable_by_you": q.name != "senior" or who.user.senior}
                       for q in summaries],
            "claimed_by_you": [{"task_id": t.task_id, "queue": t.queue, "severity": t.severity,
                                "lease_expires": t.lease_expires, "sla_deadline": t.sla_deadline} for t in mine]}


@router.post("/claims")
async def claim_next(request: Request):
    who, body = await change(request, ClaimBody)
    claim = await _console(request).claim_next(who.user, body.queue)
    if claim is None:
        return JSONResponse({"reason": "nothing to claim"}, status_code=404)
    return claim_json(claim)


@router.post("/tasks/{task_id}/claim")
async def claim_task(request: Request, task_id: str):
    who, _ = await change(request)
    return claim_json(await _console(request).claim(who.user, task_id))


@router.get("/tasks/{task_id}")
async def task(request: Request, task_id: str):
    who = await need(request)
    return (await _console(request).view(who.user, task_id)).as_json()


@router.get("/tasks/{task_id}/images/{index}")
async def image(request: Request, task_id: str, index: int, variant: Literal["blurred", "full"] = "blurred"):
    who = await need(request)
    data = await _console(request).image(who.user, task_id, index, variant == "full")
    return Response(data, media_type="image/png")


@router.post("/tasks/{task_id}/decision")
async def decide(request: Request, task_id: str):
    who, body = await change(request, DecisionBody)
    event_id = await _console(request).decide(who.user, task_id, body.decision, body.reason, body.claim_token)
    return JSONResponse({"task_id": task_id, "decision": body.decision, "event_id": event_id}, status_code=202)


@router.post("/tasks/{task_id}/release")
async def release(request: Request, task_id: str):
    who, _ = await change(request)
    await _console(request).release(who.user, task_id)
    return {"task_id": task_id, "released": True}


@router.post("/tasks/{task_id}/reassign")
async def reassign(request: Request, task_id: str):
    who, body = await change(request, ReassignBody)
    return claim_json(await _console(request).reassign(who.user, task_id, body.to))


@router.get("/admin/stats")
async def stats(request: Request, window_hours: float = 24.0):
    who = await need(request)
    if not who.user.is_admin:
        raise ConsoleError(403, "admin only")
    if not 0 < window_hours <= 24 * 31:
        raise ConsoleError(422, "window_hours is in (0, 744]")
    console = _console(request)
    result = await run_in_threadpool(admin_stats, console.engine, console.clock(), window_hours * 3600.0)
    return result.as_json()
