"""Input images for img2img / inpainting: `POST /v1/uploads` stores one under its tenant and returns its address.

Uploads are tenant data: they live under `blobs/uploads/<tenant digest>/`, apart from the shared content-addressed
store, so `UploadStore.shred(tenant)` deletes them all and another tenant cannot use a leaked address.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request, UploadFile

from hallmark.web import declared_over, error, error_response
from provenance.images import ImageError, ImageLimits, decode, encode_png
from provenance.store import BlobStore

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file


class UploadStore:
    """Tenant-scoped PNGs by sha256 of their (re-encoded, metadata-free) bytes."""

    def __init__(self, blobs: BlobStore):
        self.root = Path(blobs.root) / "uploads"

    def folder(self, tenant: str) -> Path:
        return self.root / hashlib.sha256(tenant.encode()).hexdigest()[:32]

    def path(self, tenant: str, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.folder(tenant) / sha256[:2] / f"{sha256[2:]}.png"

    def put(self, tenant: str, png: bytes) -> str:
        digest = hashlib.sha256(png).hexdigest()
        target = self.path(tenant, digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:  # write-then-rename: readers never see half a file
                f.write(png)
            os.replace(tmp, target)
        return digest

    def get(self, tenant: str, sha256: str) -> bytes:
        """The upload's bytes; FileNotFoundError when this tenant has none by that address (or was shredded)."""
        return self.path(tenant, sha256).read_bytes()

    def shred(self, tenant: str) -> None:
        shutil.rmtree(self.folder(tenant), ignore_errors=True)


def register_uploads(app: FastAPI, blobs: BlobStore, tenant_of: Callable[[Request], str | None], max_bytes: int,
                     max_pixels: int) -> None:
    """Add `POST /v1/uploads` (multipart field `file`: PNG, JPEG or WebP) → 201 {"sha256", "width", "height"}."""
    store, limits = UploadStore(blobs), ImageLimits(max_bytes=max_bytes, max_pixels=max_pixels)

    @app.post("/v1/uploads", status_code=201)
    async def upload(request: Request, file: UploadFile | None = None):
        tenant = tenant_of(request)
        if tenant is None:
            return error(401, "missing or unknown API key (send 'Authorization: Bearer <key>')")
        if declared_over(request, max_bytes + MULTIPART_SLACK):
            return error(413, f"file is larger than {max_bytes} bytes")
        if file is None:
            return error(422, "send the image as multipart form field 'file'")
        data = await file.read(max_bytes + 1)
        try:
            image = decode(data, limits)  # size cap, pixel cap from the header (bombs never decode), full decode
        except ImageError as exc:
            return error_response(exc)
        sha = store.put(tenant, encode_png(image.rgb))  # re-encoded: no metadata, one address per picture
        return {"sha256": sha, "width": image.width, "height": image.height}
