"""HTTP plumbing every Hallmark web server shares: one error shape, bounded body reads, validation problems."""
from __future__ import annotations

from typing import Sequence

from fastapi import Request
from fastapi.responses import JSONResponse

from hallmark.errors import HttpError


def error(status: int, reason: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    """The error body for a refusal answered directly rather than raised."""
    return error_response(HttpError(status, reason, headers, **extra))


def error_response(exc: HttpError) -> JSONResponse:
    """The one error body of every Hallmark API: `{"reason": "...", ...}`."""
    return JSONResponse({"reason": exc.reason, **exc.extra}, status_code=exc.status, headers=exc.headers)


def declared_over(request: Request, limit: int) -> bool:
    """Whether the declared Content-Length already passes `limit` bytes (a malformed one counts as over)."""
    declared = request.headers.get("content-length")
    return declared is not None and (not declared.isdigit() or int(declared) > limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it (or its declared length) passes `limit` bytes."""
    if declared_over(request, limit):
        raise HttpError(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HttpError(413, f"request body larger than {limit} bytes")
    return bytes(body)


def problems(errors: Sequence[dict], limit: int = 5) -> list[dict[str, str]]:
    """pydantic's validation errors as `{"field", "problem"}` pairs (the input values are never echoed)."""
    return [{"field": ".".join(map(str, e["loc"])) or "body", "problem": e["msg"]} for e in list(errors)[:limit]]


def invalid(errors: Sequence[dict]) -> HttpError:
    """A 422 naming each invalid field."""
    found = problems(errors)
    return HttpError(422, "; ".join(f"{p['field']}: {p['problem']}" for p in found), errors=found)
