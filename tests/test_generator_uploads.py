"""`POST /v1/uploads` on a tiny app: tenant-scoped storage, size and pixel caps, bombs and garbage refused."""
from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from provenance.store import BlobStore
from streams.uploads import UploadStore, register_uploads

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}


@pytest.fixture
def client(tmp_path):
    app = FastAPI()
    blobs = BlobStore(tmp_path / "blobs")

    def tenant_of(request: Request) -> str | None:
        return KEYS.get(request.headers.get("authorization", "")[7:])

    register_uploads(app, blobs, tenant_of, max_bytes=200_000, max_pixels=300_000)
    client = TestClient(app)
    client.store = UploadStore(blobs)
    return client


def png(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "private metadata")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG",
                                                                                                 pnginfo=info)
    return buf.getvalue()


def bomb(side: int = 30_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


def post(client, data: bytes, key: str = "key-a"):
    return client.post("/v1/uploads", files={"file": ("x.png", data, "image/png")},
                       headers={"Authorization": f"Bearer {key}"})


def test_upload_stores_a_clean_png_under_the_tenant_and_returns_its_address(client):
    r = post(client, png())
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (64, 48)
    stored = client.store.get("tenant-a", body["sha256"])
    assert hashlib.sha256(stored).hexdigest() == body["sha256"]
    assert "comment" not in Image.open(io.BytesIO(stored)).info  # metadata stripped
    with pytest.raises(FileNotFoundError):
        client.store.get("tenant-b", body["sha256"])  # another tenant cannot use the address
    assert post(client, png()).json()["sha256"] == body["sha256"]  # same picture, same address
    client.store.shred("tenant-a")
    with pytest.raises(FileNotFoundError):
        client.store.get("tenant-a", body["sha256"])


@pytest.mark.parametrize("data, status", [
    (b"", 422), (b"this is not an image", 415), (png()[:80], 422), (bomb(), 413), (png(600, 600), 413),
])
def test_bad_uploads_are_refused_with_a_reason(client, data, status):
    r = post(client, data)
    assert r.status_code == status, r.text
    assert r.json()["reason"]


def test_upload_needs_a_key_and_a_file(client):
    assert client.post("/v1/uploads", files={"file": ("x.png", png(), "image/png")}).status_code == 401
    assert client.post("/v1/uploads", headers={"Authorization": "Bearer key-a"}).status_code == 422
