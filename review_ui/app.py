"""The console's FastAPI app: security headers, error pages, static files, the HTML pages and the JSON API."""
from __future__ import annotations

import time
import urllib.parse
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from hallmark.config import HallmarkConfig
from hallmark.web import declared_over, error_response, invalid
from review_ui.http import SESSION_COOKIE
from review_ui.service import Console, ConsoleConfig, ConsoleError

HERE = Path(__file__).resolve().parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null`
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def templates():
    """Jinja2 with autoescaping on for everything: prompts, reasons and names always render as text."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "—"
    env.filters["age"] = duration
    return env


def duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"{days}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes % 60}m"
    return f"{minutes}m {seconds % 60}s"


def create_app(settings: HallmarkConfig, config: ConsoleConfig | None = None,
               clock: Callable[[], float] = time.time) -> FastAPI:
    from review_ui import api, web

    console = Console(settings, config or ConsoleConfig(), clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            await console.sender.close()

    app = FastAPI(title="Hallmark reviewer console", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json")
    app.state.console, app.state.templates = console, templates()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if declared_over(request, console.config.max_body):
            response = failure(request, ConsoleError(413, f"request body larger than {console.config.max_body} bytes"))
        else:
            response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError):
        return failure(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return failure(request, ConsoleError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return failure(request, invalid(exc.errors()))

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router)
    app.include_router(web.router)

    @app.get("/healthz", include_in_schema=False)
    async def health():
        return {"ok": True}

    return app


def failure(request: Request, exc: ConsoleError):
    """JSON `{"reason": …}` for the API, an error page for browsers."""
    if request.url.path.startswith("/api/"):
        return error_response(exc)
    if exc.status == 401:  # no or expired session: to the login page, then back here
        target = request.url.path if request.method == "GET" else "/"
        response = RedirectResponse(f"/login?next={urllib.parse.quote(target)}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.app.state.console.config.secure_cookies)
        return response
    page = request.app.state.templates.get_template("error.html").render(status=exc.status, reason=exc.reason,
                                                                         user=None, csrf="")
    return HTMLResponse(page, status_code=exc.status, headers=exc.headers)
