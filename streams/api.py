"""HTTP submission API: POST /v1/requests → `requests` topic (202), GET /v1/requests/{id} from the read models."""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from hallmark.config import HallmarkConfig
from hallmark.db import create_tables
from hallmark.sealing import seal_spec
from hallmark.tenants import open_registry, tenant_keys
from hallmark.web import HttpError, error, error_response, invalid, read_body
from provenance.images import ImageLimits
from provenance.store import BlobStore
from schemas import RequestSubmitted, new_event_id, producer_for
from schemas.events import GenerationSpec, RequestSubmittedPayload
from streams.apikeys import ApiKeys
from streams.kafkaio import make_producer
from streams.readmodels import AssetRow, RequestRow, open_readmodels
from streams.uploads import UploadStore, register_uploads

MAX_BODY = 1024 * 1024
USER_FIELDS = {"prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed", "n", "sampler", "model",
               "init_image", "mask", "strength", "loras"}
MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS = ImageLimits().max_bytes, ImageLimits().max_pixels  # one set of image caps
# not `region`: a tenant's region and tier come from the tenant registry, so no caller can pick a laxer policy


class AcceptedRequest(SQLModel, table=True):
    """What the API accepted, owned by the API (not a projection): answers GET before the projector catches up
    and makes Idempotency-Key replays return the first request."""

    __tablename__ = "api_requests"
    request_id: str = Field(primary_key=True)
    tenant_id: str = Field(index=True)
    idempotency_key: str | None = Field(default=None, index=True)
    body_sha256: str
    created_at: dt.datetime


def create_app(settings: HallmarkConfig) -> FastAPI:
    keys = ApiKeys.load(settings.home / "api-keys.json")
    tenants, prompt_keys = open_registry(settings), tenant_keys(settings)
    engine = open_readmodels(settings.db_url)
    create_tables(engine, [AcceptedRequest.__table__])
    blobs = BlobStore(settings.blob_dir)
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        producer = make_producer(settings.kafka_client())
        await producer.start()
        state["producer"] = producer
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(title="Hallmark submission API", version="1", lifespan=lifespan)
    app.add_exception_handler(HttpError, lambda _request, exc: error_response(exc))

    def tenant_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return keys.tenant(key)

    register_uploads(app, blobs, tenant_of, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS)  # POST /v1/uploads
    uploads = UploadStore(blobs)

    @app.post("/v1/requests", status_code=202)
    async def submit(request: Request):
        tenant = tenant_of(request)
        if tenant is None:
            return error(401, "missing or unknown API key (send 'Authorization: Bearer <key>')")
        body = await read_body(request, MAX_BODY)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return error(400, "body is not JSON")
        if not isinstance(data, dict):
            return error(400, "body must be a JSON object")
        unknown = sorted(set(data) - USER_FIELDS)
        if unknown:
            return error(422, f"unknown fields: {', '.join(unknown)}")
        registered = tenants.get(tenant)
        if registered is None or registered.shredded:
            return error(403, "this API key's tenant is not registered (hallmark tenants add) or was shredded")
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        data["region"] = registered.region
        if data.get("seed") is None:
            data["seed"] = random.randrange(2**31)  # concrete from here on, so a replay repeats the image
        try:
            spec = GenerationSpec.model_validate(data)
        except ValidationError as exc:
            raise invalid(exc.errors()) from None
        for name in ("init_image", "mask"):
            sha = getattr(spec, name)
            if sha is not None and not uploads.path(tenant, sha).is_file():
                return error(422, f"{name} is not one of your uploads (POST /v1/uploads first)")
        idem = request.headers.get("idempotency-key")
        if idem is not None and not 0 < len(idem) <= 200:
            return error(400, "Idempotency-Key must be 1–200 characters")
        row = AcceptedRequest(request_id=str(new_event_id()), tenant_id=tenant, idempotency_key=idem,
                              body_sha256=digest, created_at=dt.datetime.now(dt.timezone.utc))
        if idem is not None:
            earlier = _by_key(engine, tenant, idem)
            if earlier is not None:
                return _replay(earlier, row)
        try:
            with Session(engine) as session:
                session.add(row)
                session.commit()
                session.refresh(row)
        except IntegrityError:  # a concurrent call with the same key won the race
            return _replay(_by_key(engine, tenant, idem), row)
        sealed = spec.model_dump()
        if settings.prompt_sealing:  # sealed on the caller's behalf: no clear prompt on the bus
            key_id, public = prompt_keys.public(tenant)
            sealed = seal_spec(sealed, public, key_id, tenant, row.request_id)
        event = RequestSubmitted(event_type=RequestSubmitted.event_type_name, request_id=row.request_id,
                                 tenant_id=tenant, producer=producer_for("api"),
                                 payload=RequestSubmittedPayload(spec=GenerationSpec.model_validate(sealed),
                                                                 source="http", idempotency_key=idem))
        try:
            await state["producer"].send_and_wait("requests", event.to_bytes(), key=event.key())
        except Exception as exc:  # nothing reached the topic: forget the row so a retry can succeed
            with Session(engine) as session:
                session.delete(session.get(AcceptedRequest, row.request_id))
                session.commit()
            return error(503, f"could not enqueue the request: {exc.__class__.__name__}")
        return JSONResponse({"request_id": row.request_id}, status_code=202)

    @app.get("/v1/requests/{request_id}")
    async def status(request_id: str, request: Request):
        tenant = tenant_of(request)
        if tenant is None:
            return error(401, "missing or unknown API key")
        with Session(engine) as session:
            row = session.get(RequestRow, request_id)
            accepted = session.get(AcceptedRequest, request_id)
            assets = session.exec(select(AssetRow).where(AssetRow.request_id == request_id)).all()
        owner = row.tenant_id if row else accepted.tenant_id if accepted else None
        if owner != tenant:
            return error(404, f"no request {request_id} for this API key")
        return view(row, accepted, assets, blobs)

    @app.get("/v1/images/{sha256}.png")
    async def image(sha256: str, request: Request):
        tenant = tenant_of(request)
        if tenant is None:
            return error(401, "missing or unknown API key")
        with Session(engine) as session:
            owned = session.exec(select(AssetRow).where(AssetRow.sha256 == sha256,
                                                        AssetRow.tenant_id == tenant)).first()
        if owned is None or not blobs.path(sha256).is_file():
            return error(404, "no such image for this API key")
        return FileResponse(blobs.path(sha256), media_type="image/png")

    @app.get("/healthz")
    async def health():
        return {"ok": True}

    return app


def _by_key(engine, tenant: str, key: str | None) -> AcceptedRequest | None:
    with Session(engine) as session:
        return session.exec(select(AcceptedRequest).where(AcceptedRequest.tenant_id == tenant,
                                                          AcceptedRequest.idempotency_key == key)).first()


def _replay(earlier: AcceptedRequest | None, new: AcceptedRequest) -> JSONResponse:
    if earlier is None:
        return error(409, "Idempotency-Key is being used by a request in progress; retry")
    if earlier.body_sha256 != new.body_sha256:
        return error(409, "Idempotency-Key was already used with a different body")
    return JSONResponse({"request_id": earlier.request_id}, status_code=202, headers={"Idempotent-Replay": "true"})


def view(row: RequestRow | None, accepted: AcceptedRequest | None, assets: list[AssetRow], blobs: BlobStore) -> dict:
    """What a requester may see: status, verdict categories, outcome, image links. Never the prompt."""
    if row is None:
        return {"request_id": accepted.request_id, "status": "accepted", "verdicts": {}, "outcome": None,
                "images": []}
    verdicts = {}
    if row.prompt_decision:
        verdicts["prompt"] = {"decision": row.prompt_decision, "categories": json.loads(row.prompt_categories)}
    if row.image_decision:
        verdicts["image"] = {"decision": row.image_decision, "categories": json.loads(row.image_categories)}
    outcome = None
    if row.outcome:
        outcome = {"status": row.outcome, "reason": row.outcome_reason,
                   "categories": json.loads(row.outcome_categories)}
    published = set(json.loads(row.asset_ids))
    images = [{"asset_id": a.asset_id, "index": a.image_index, "sha256": a.sha256, "url": f"/v1/images/{a.sha256}.png",
               "path": str(blobs.path(a.sha256)), "width": a.width, "height": a.height}
              for a in sorted(assets, key=lambda a: a.image_index) if a.asset_id in published]
    return {"request_id": row.request_id, "status": row.status, "verdicts": verdicts, "outcome": outcome,
            "images": images, "submitted_at": row.submitted_at.isoformat() if row.submitted_at else None,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None}


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m streams.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: $HALLMARK_API_PORT or 8080")
    args = parser.parse_args(argv)
    config = HallmarkConfig.from_env()
    uvicorn.run(create_app(config), host=args.host, port=args.port or config.ports.api, log_level="info")


if __name__ == "__main__":
    main()
