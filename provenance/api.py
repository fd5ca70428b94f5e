"""Public verification API: POST /v1/verify (one verdict with evidence) and the C2PA soft-binding resolution API."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from hallmark.errors import HttpError
from hallmark.web import declared_over, error, error_response, read_body
from provenance.images import ImageError
from provenance.publisher import ProvenanceConfig
from provenance.softbinding import SoftBindingService, max_results
from provenance.store import ManifestArchive
from provenance.verify import Verifier

IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp"}
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file


@dataclass
class RateLimiter:
    """Token bucket per client: `per_minute` requests, bursting up to the same number."""

    per_minute: int
    clock: callable = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, client: str) -> float:
        """Spend one token; 0.0 if allowed, else the seconds until the next token."""
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > 100_000:  # forget idle clients so the table cannot grow without bound
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 120}
            return (1.0 - tokens) / rate


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64 (one site or host holds a whole /64)."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


async def _image_bytes(request: Request, max_bytes: int) -> bytes:
    """The uploaded image: a raw image/* body, or the `file` field of a multipart form."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in IMAGE_TYPES:
        return await read_body(request, max_bytes)
    if ctype == "multipart/form-data":
        return await _form_file(request, await read_body(request, max_bytes + _FORM_OVERHEAD), max_bytes)
    raise ImageError(415, f"content type {ctype or 'missing'}; send image/png, image/jpeg, image/webp or multipart")


async def _form_file(request: Request, body: bytes, max_bytes: int) -> bytes:
    # Parse from the capped body, so a chunked upload cannot spool an unbounded file to disk first.
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=4)
    except (HTTPException, MultiPartException) as exc:
        raise ImageError(422, f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ImageError(422, "multipart upload needs the image in a `file` field")
    data = await upload.read()
    if len(data) > max_bytes:
        raise ImageError(413, f"upload is larger than the limit of {max_bytes} bytes")
    return data


def create_app(config: ProvenanceConfig, verifier: Verifier | None = None, clock=time.monotonic) -> FastAPI:
    """The verification app; all state (verifier, limiter, concurrency slots) lives on this instance."""
    app = FastAPI(title="Hallmark provenance verification", version="1")
    verifier = verifier or Verifier(config)
    service = SoftBindingService(verifier, ManifestArchive(config.blob_dir))
    limiter = RateLimiter(config.rate_limit_per_minute, clock)
    busy = asyncio.Semaphore(config.verify_concurrency)  # bounds memory: a 40 Mpx decode holds ~0.5 GB

    async def guarded(request: Request, work, upload: bool):
        """Rate limit, then a concurrency slot, and only then read the body (if any) and do the work."""
        wait = limiter.take(client_key(request.client.host if request.client else None))
        if wait > 0:
            return error(429, "rate limit exceeded", {"Retry-After": str(max(1, math.ceil(wait)))})
        try:
            if upload and declared_over(request, config.max_upload_bytes + _FORM_OVERHEAD):  # refuse before reading
                raise ImageError(413, f"upload is larger than the limit of {config.max_upload_bytes} bytes")
            async with busy:
                data = await _image_bytes(request, config.max_upload_bytes) if upload else None
                return await run_in_threadpool(work, data)
        except HttpError as exc:
            return error_response(exc)

    @app.post("/v1/verify")
    async def verify(request: Request):
        return await guarded(request, verifier.verify, upload=True)

    @app.get("/services/supportedAlgorithms")
    def supported_algorithms():
        return service.supported_algorithms()

    @app.get("/matches/byBinding")
    async def by_binding_get(request: Request, alg: str | None = None, value: str | None = None,
                             maxResults: str | None = None):  # noqa: N803 (the C2PA API's parameter name)
        return await guarded(request, lambda _: service.by_binding(alg, value, max_results(maxResults)), False)

    @app.post("/matches/byBinding")
    async def by_binding_post(request: Request, maxResults: str | None = None):  # noqa: N803
        try:
            body = await read_body(request, 64 * 1024)
            query = json.loads(body or b"null")
        except (ValueError, HttpError):
            return error(400, "send a JSON object {\"alg\": …, \"value\": …} of at most 64 KiB")
        if not isinstance(query, dict):
            return error(400, "send a JSON object {\"alg\": …, \"value\": …}")
        return await guarded(request, lambda _: service.by_binding(
            query.get("alg"), query.get("value"), max_results(maxResults)), False)

    @app.post("/matches/byContent")
    async def by_content(request: Request, alg: str | None = None, maxResults: str | None = None):  # noqa: N803
        return await guarded(request, lambda data: service.by_content(data, alg, max_results(maxResults)), True)

    @app.get("/manifests/{manifest_id:path}")
    async def manifest(request: Request, manifest_id: str):
        result = await guarded(request, lambda _: service.manifest(manifest_id), False)
        return result if isinstance(result, Response) else Response(result, media_type="application/c2pa")

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app
