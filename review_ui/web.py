"""The server-rendered pages: login, queues, item view, decisions, admin. Every change is a CSRF-checked POST."""
from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from review_ui.http import (LOGIN_COOKIE, SESSION_COOKIE, Caller, caller, check_csrf, client_address, form,
                            safe_next)
from review_ui.service import Console, ConsoleError

router = APIRouter(include_in_schema=False)
MESSAGES = {"empty": "Nothing to claim in that queue right now.", "decided": "Decision sent.",
            "escalated": "Escalated to the senior queue.", "released": "Task released to its queue.",
            "reassigned": "Task reassigned.", "loggedout": "You are logged out."}


def _console(request: Request) -> Console:
    return request.app.state.console


def render(request: Request, name: str, who: Caller | None, status: int = 200, **context) -> HTMLResponse:
    page = request.app.state.templates.get_template(name).render(
        user=who.user if who else None, csrf=who.session.csrf if who else "", **context)
    return HTMLResponse(page, status_code=status)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=_console(request).config.secure_cookies)


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict",
                           secure=_console(request).config.secure_cookies)


async def need(request: Request) -> Caller:
    who = await caller(_console(request), request)
    if who is None:
        raise ConsoleError(401, "log in first")
    return who


async def posted(request: Request, fields: set[str], required: set[str] = frozenset()) -> tuple[Caller, dict]:
    """The caller and the form of a change: logged in, form well-formed, CSRF token right."""
    who = await need(request)
    data = await form(request, _console(request).config.max_body, fields | {"csrf_token"}, set(required))
    check_csrf(request, who, data.get("csrf_token"))
    return who, data


# ---- login --------------------------------------------------------------------------------------------------

@router.get("/login")
async def login_page(request: Request, next: str = "/"):
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, login_csrf=token, next=safe_next(next), error="")
    set_cookie(request, response, LOGIN_COOKIE, token, 3600)
    return response


@router.post("/login")
async def login(request: Request):
    console = _console(request)
    data = await form(request, console.config.max_body, {"name", "password", "csrf_token", "next"},
                      {"name", "password", "csrf_token"})
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), data["csrf_token"].encode()):
        raise ConsoleError(403, "the login form expired or was not ours; reload the login page")
    user = await run_in_threadpool(console.authenticate, data["name"], data["password"], client_address(request))
    if user is None:
        token = secrets.token_urlsafe(32)
        response = render(request, "login.html", None, 401, login_csrf=token, next=safe_next(data.get("next")),
                          error="Unknown user or wrong password.")
        set_cookie(request, response, LOGIN_COOKIE, token, 3600)
        return response
    token, session = await run_in_threadpool(console.sessions.create, user.name)
    response = RedirectResponse(safe_next(data.get("next")), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, int(console.config.session_absolute_s))
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request):
    who, _ = await posted(request, set())
    await run_in_threadpool(_console(request).sessions.end, who.token)
    response = RedirectResponse("/login?next=/", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


# ---- queues and claims --------------------------------------------------------------------------------------

@router.get("/")
async def queues(request: Request, msg: str = ""):
    who = await need(request)
    console = _console(request)
    summaries = await run_in_threadpool(console.queues)
    mine = await run_in_threadpool(console.my_tasks, who.user)
    return render(request, "queues.html", who, queues=summaries, mine=mine, now=console.clock(),
                  message=MESSAGES.get(msg, ""))


@router.post("/claim")
async def claim_next(request: Request):
    who, data = await posted(request, {"queue"})
    claim = await _console(request).claim_next(who.user, data.get("queue") or None)
    if claim is None:
        return RedirectResponse("/?msg=empty", status_code=303)
    return RedirectResponse(f"/tasks/{claim.task_id}", status_code=303)


@router.post("/tasks/{task_id}/claim")
async def claim_task(request: Request, task_id: str):
    who, _ = await posted(request, set())
    claim = await _console(request).claim(who.user, task_id)
    return RedirectResponse(f"/tasks/{claim.task_id}", status_code=303)


# ---- the item view and decisions ----------------------------------------------------------------------------

@router.get("/tasks/{task_id}")
async def task_page(request: Request, task_id: str):
    who = await need(request)
    console = _console(request)
    view = await console.view(who.user, task_id)
    reviewers = await run_in_threadpool(console.users.names) if who.user.is_admin else []
    return render(request, "task.html", who, view=view, now=console.clock(), reviewers=reviewers)


@router.get("/tasks/{task_id}/images/{index}")
async def task_image(request: Request, task_id: str, index: int, variant: str = "blurred"):
    who = await need(request)
    if variant not in ("blurred", "full"):
        raise ConsoleError(422, "variant is blurred or full")
    data = await _console(request).image(who.user, task_id, index, variant == "full")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/tasks/{task_id}/decide")
async def decide(request: Request, task_id: str):
    who, data = await posted(request, {"decision", "reason", "claim_token"}, {"decision", "reason", "claim_token"})
    await _console(request).decide(who.user, task_id, data["decision"], data["reason"], data["claim_token"])
    return RedirectResponse("/?msg=" + ("escalated" if data["decision"] == "escalate" else "decided"),
                            status_code=303)


@router.post("/tasks/{task_id}/release")
async def release(request: Request, task_id: str):
    who, _ = await posted(request, set())
    await _console(request).release(who.user, task_id)
    return RedirectResponse("/?msg=released", status_code=303)


@router.post("/tasks/{task_id}/reassign")
async def reassign(request: Request, task_id: str):
    who, data = await posted(request, {"to"}, {"to"})
    await _console(request).reassign(who.user, task_id, data["to"])
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


# ---- admin --------------------------------------------------------------------------------------------------

@router.get("/admin")
async def admin(request: Request):
    from review_ui.stats import admin_stats

    who = await need(request)
    if not who.user.is_admin:
        raise ConsoleError(403, "the admin view is for admins")
    console = _console(request)
    stats = await run_in_threadpool(admin_stats, console.engine, console.clock())
    summaries = await run_in_threadpool(console.queues)
    return render(request, "admin.html", who, stats=stats, queues=summaries, now=console.clock())
