"""Request plumbing shared by the pages and the API: who is calling, CSRF, bounded and strict body parsing."""
from __future__ import annotations

import hmac
import json
import urllib.parse
from dataclasses import dataclass

from fastapi import Request

from hallmark.web import invalid, read_body
from review_ui.service import Console, ConsoleError
from review_ui.sessions import LiveSession
from review_ui.users import User

SESSION_COOKIE = "hallmark_review"
LOGIN_COOKIE = "hallmark_review_login"  # the login form's CSRF token (double submit), before any session exists
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Caller:
    user: User
    session: LiveSession
    token: str
    via_cookie: bool


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


async def caller(console: Console, request: Request) -> Caller | None:
    """The logged-in user from the bearer token (API clients) or the session cookie (browsers)."""
    from starlette.concurrency import run_in_threadpool

    token = bearer(request)
    via_cookie = token is None
    token = token or request.cookies.get(SESSION_COOKIE)
    session = await run_in_threadpool(console.sessions.lookup, token)
    if session is None:
        return None
    user = await run_in_threadpool(console.users.get, session.user)
    if user is None:  # deactivated since login
        return None
    return Caller(user, session, token, via_cookie)


def same_origin(request: Request) -> bool:
    """A browser's Origin (when sent) must be this host: a second guard besides the CSRF token."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return urllib.parse.urlsplit(origin).netloc == host


def check_csrf(request: Request, who: Caller, sent: str | None) -> None:
    """Cookie-authenticated changes need the session's CSRF token; bearer tokens are never sent by browsers."""
    if not who.via_cookie:
        return
    if not same_origin(request):
        raise ConsoleError(403, "cross-origin request refused")
    if not sent or not hmac.compare_digest(sent.encode(), who.session.csrf.encode()):
        raise ConsoleError(403, "missing or wrong CSRF token; reload the page and try again")


async def form(request: Request, limit: int, fields: set[str], required: set[str]) -> dict[str, str]:
    """An url-encoded form with exactly known fields, each at most once; anything else is a 4xx."""
    body = await read_body(request, limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype != "application/x-www-form-urlencoded":
        raise ConsoleError(415, "forms must be application/x-www-form-urlencoded")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                                       max_num_fields=len(fields) + 2)
    except (UnicodeDecodeError, ValueError):
        raise ConsoleError(400, "malformed form body") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in fields:
            raise ConsoleError(400, f"unexpected form field {key[:40]!r}")
        if key in out:
            raise ConsoleError(400, f"form field {key!r} given twice")
        out[key] = value
    missing = sorted(required - set(out))
    if missing:
        raise ConsoleError(400, f"missing form fields: {', '.join(missing)}")
    return out


async def json_body(request: Request, limit: int, model):
    """A JSON object (an empty body counts as `{}`) validated by a pydantic model → 415/413/400/422 with reasons."""
    from pydantic import ValidationError

    body = await read_body(request, limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype != "application/json":
        raise ConsoleError(415, "send application/json")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ConsoleError(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise ConsoleError(400, "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc.errors()) from None


def safe_next(target: str | None) -> str:
    """Only same-site paths after login (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def client_address(request: Request) -> str:
    """The peer's address for login throttling (behind a proxy, run uvicorn with --proxy-headers so this is the
    client's rather than the proxy's)."""
    return request.client.host if request.client else "unknown"
