"""Verification API and CLI: the verdict on published, stripped, re-encoded, cropped and unrelated images; bad input,
the concurrency slot before the body, rate limits (IPv6 by /64), the CLI."""
from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hallmark.config import HallmarkConfig
from provenance.api import create_app
from provenance.images import encode_png
from provenance.publisher import ProvenanceConfig, Publisher
from provenance.registry import AssetRegistry
from provenance.verify import Verifier

CREATED = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def photo(name: str, size: int = 256) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(im.size)
    return np.asarray(im.crop((0, 0, side, side)).resize((size, size), Image.LANCZOS))


def shapes(seed: int) -> np.ndarray:
    from generator.shapes.dataset import make_example
    from generator.shapes.render import upscale

    return upscale(make_example(np.random.default_rng(seed))[0], 256)


def reencode(data: bytes, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format=fmt, **kw)
    return out.getvalue()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A published photo and a published shapes render, registered as the `assets` projection would."""
    home = tmp_path_factory.mktemp("home")
    config = ProvenanceConfig.from_settings(HallmarkConfig.from_env(home=home))
    publisher, registry = Publisher(config), AssetRegistry(config.db_url)
    assets = {}
    for asset_id, rgb in (("photo-1", photo("astronaut")), ("shapes-1", shapes(11))):
        a = publisher.publish(encode_png(rgb), asset_id, "shapes-ldm-v1", "policy-2025-06")
        registry.upsert(asset_id=a.asset_id, sha256=a.sha256, watermark_payload=a.watermark_payload,
                        manifest_label=a.manifest_label, model_id="shapes-ldm-v1", policy_version="policy-2025-06",
                        width=a.width, height=a.height, created_at=CREATED, fingerprints=a.fingerprints)
        assets[asset_id] = open(a.path, "rb").read()
    return config, assets


@pytest.fixture(scope="module")
def client(env):
    config, _ = env
    return TestClient(create_app(config))


def post(client, data: bytes, ctype: str = "image/png"):
    return client.post("/v1/verify", content=data, headers={"content-type": ctype})


ASSET = {"created_at": CREATED.isoformat(), "model_id": "shapes-ldm-v1", "policy_version": "policy-2025-06"}


def test_published_image_is_verified_with_all_evidence(client, env):
    r = post(client, env[1]["photo-1"])
    assert r.status_code == 200
    body = r.json()
    assert body["verdict"] == "verified" and body["method"] == "sha256"
    assert body["asset"] == {"asset_id": "photo-1", **ASSET}
    evidence = body["evidence"]
    assert evidence["sha256_match"] and evidence["c2pa"]["valid"] and evidence["c2pa"]["trusted"]
    assert "Hallmark Development Signer" in evidence["c2pa"]["signer"] and evidence["c2pa"]["errors"] == []
    assert evidence["c2pa"]["claim_generator"].startswith("hallmark")
    mark = evidence["watermark"]
    assert mark["detected"] and mark["asset_id"] == "photo-1" and mark["bit_agreement"] == 1.0
    assert mark["key_id"].startswith("wm-") and "payload" not in mark
    assert evidence["fingerprint"]["match_threshold"] == 31
    assert "tenant" not in r.text and "requester" not in r.text and "testclient" not in r.text


@pytest.mark.parametrize("asset_id", ["photo-1", "shapes-1"])
def test_stripped_metadata_is_verified_by_the_keyed_watermark_and_pdq(client, env, asset_id):
    body = post(client, reencode(env[1][asset_id], "PNG")).json()
    assert not body["evidence"]["c2pa"]["present"]
    # A flat render's PDQ has a low quality score (it could collide with other flat images): similar, not verified.
    good = body["evidence"]["fingerprint"]["quality"] >= 50
    assert body["verdict"] == ("verified" if good else "similar") and body["method"] == "watermark"
    assert good or asset_id == "shapes-1"
    assert body["asset"]["asset_id"] == asset_id and body["evidence"]["fingerprint"]["distance"] <= 31
    assert body["evidence"]["watermark"]["bit_agreement"] == 1.0


@pytest.mark.parametrize("asset_id", ["photo-1", "shapes-1"])
def test_jpeg_q75_is_verified_or_similar_with_the_right_asset(client, env, asset_id):
    body = post(client, reencode(env[1][asset_id], "JPEG", quality=75), "image/jpeg").json()
    assert body["verdict"] in ("verified", "similar") and body["asset"]["asset_id"] == asset_id
    if body["verdict"] == "similar":
        assert "not a claim" in body["summary"]


@pytest.mark.parametrize("asset_id", ["photo-1", "shapes-1"])
def test_cropped_image_is_found_by_the_watermark_and_called_similar(client, env, asset_id):
    im = Image.open(io.BytesIO(env[1][asset_id])).convert("RGB")
    buf = io.BytesIO()
    im.crop((13, 13, 243, 243)).save(buf, format="PNG")
    body = post(client, buf.getvalue()).json()
    assert body["evidence"]["watermark"]["detected"] and body["evidence"]["watermark"]["bit_agreement"] == 1.0
    assert body["verdict"] == "similar" and body["method"] == "watermark" and body["asset"]["asset_id"] == asset_id
    fp = body["evidence"]["fingerprint"]  # the distance to the nearest stored view (here: the centred 10% crop)
    assert fp["distance"] <= fp["similar_threshold"] and "not a claim" in body["summary"]


@pytest.mark.parametrize("rgb", [lambda: photo("coffee"), lambda: shapes(12)], ids=["photo", "shapes"])
def test_unrelated_image_is_unknown_and_shows_no_watermark_bits(client, rgb):
    body = post(client, encode_png(rgb())).json()
    assert body["verdict"] == "unknown" and body["asset"] is None and body["method"] is None
    assert body["evidence"]["watermark"] == {"detected": False, "alg": body["evidence"]["watermark"]["alg"]}
    assert body["evidence"]["fingerprint"]["distance"] is None


def test_multipart_upload_is_accepted(client, env):
    r = client.post("/v1/verify", files={"file": ("x.png", env[1]["shapes-1"], "image/png")})
    assert r.status_code == 200 and r.json()["asset"]["asset_id"] == "shapes-1"


def _png_of_size(w: int, h: int) -> bytes:
    """A valid PNG header claiming w×h, with a few bytes of pixel data: what a decompression bomb looks like."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1-bit greyscale
    pixels = chunk(b"IDAT", zlib.compress(bytes(1024)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


@pytest.mark.parametrize("case,status", [
    ("text", 415), ("json_type", 415), ("no_type", 415), ("truncated", 422), ("empty", 422), ("garbage_png", 422),
    ("bomb", 413), ("huge_bomb", 413), ("too_big", 413), ("too_big_chunked", 413), ("form_without_file", 422),
    ("broken_form", 422), ("gif", 415), ("pdf_as_png", 415),
])
def test_bad_input_is_answered_with_a_reason(env, case, status):
    config, assets = env
    small = ProvenanceConfig(**{**config.__dict__, "max_upload_bytes": 2_000_000})
    client = TestClient(create_app(small))
    png = assets["photo-1"]
    requests = {
        "text": lambda: post(client, b"hello, I am not an image", "image/png"),
        "json_type": lambda: post(client, b'{"a": 1}', "application/json"),
        "no_type": lambda: client.post("/v1/verify", content=png),
        "truncated": lambda: post(client, png[: len(png) // 2]),
        "empty": lambda: post(client, b""),
        "garbage_png": lambda: post(client, png[:60] + bytes(2000)),
        "bomb": lambda: post(client, _png_of_size(8000, 8000)),  # 64 Mpx, a few kB of file
        "huge_bomb": lambda: post(client, _png_of_size(20000, 20000)),  # past Pillow's own bomb limit
        "too_big": lambda: post(client, png + bytes(2_500_000)),
        "too_big_chunked": lambda: client.post("/v1/verify", content=iter([png, bytes(2_500_000)]),
                                               headers={"content-type": "image/png"}),  # no Content-Length
        "gif": lambda: post(client, b"GIF89a" + bytes(100), "image/gif"),
        "pdf_as_png": lambda: post(client, b"%PDF-1.7\n" + bytes(500)),
        "form_without_file": lambda: client.post("/v1/verify", data={"x": "1"}, files={"other": ("a", b"b")}),
        "broken_form": lambda: post(client, b"--nope\r\n", "multipart/form-data; boundary=zzz"),
    }
    r = requests[case]()
    assert r.status_code == status, r.text
    assert r.json()["reason"]


def test_rate_limit_answers_429_with_retry_after_per_client(env):
    config, assets = env
    clock = Clock()
    app = create_app(ProvenanceConfig(**{**config.__dict__, "rate_limit_per_minute": 3}), clock=clock)
    alice, bob = TestClient(app, client=("10.0.0.1", 1)), TestClient(app, client=("10.0.0.2", 1))
    png = encode_png(shapes(3))
    assert [post(alice, png).status_code for _ in range(3)] == [200, 200, 200]
    r = post(alice, png)
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 20 and r.json()["reason"]
    assert post(bob, png).status_code == 200  # another client is not throttled
    clock.now += 20
    assert post(alice, png).status_code == 200


def test_rate_limit_keys_ipv6_clients_by_their_64_prefix(env):
    from provenance.api import client_key

    config, _ = env
    app = create_app(ProvenanceConfig(**{**config.__dict__, "rate_limit_per_minute": 2}), clock=Clock())
    png = encode_png(shapes(4))
    one = TestClient(app, client=("2001:db8:1:2::1", 1))
    same_64 = TestClient(app, client=("2001:db8:1:2:ffff:0:0:9", 1))
    other_64 = TestClient(app, client=("2001:db8:1:3::1", 1))
    assert [post(one, png).status_code, post(same_64, png).status_code] == [200, 200]
    assert post(same_64, png).status_code == 429  # another address in the same /64 shares the bucket
    assert post(other_64, png).status_code == 200
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7" and client_key("10.0.0.7") == "10.0.0.7"
    assert client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


def test_upload_body_is_not_read_before_a_concurrency_slot_is_free(env):
    import asyncio

    config, assets = env
    app = create_app(ProvenanceConfig(**{**config.__dict__, "verify_concurrency": 1}))
    png = assets["shapes-1"]
    reads, statuses = {"a": 0, "b": 0}, []

    def scope(host: str) -> dict:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/v1/verify", "raw_path": b"/v1/verify", "query_string": b"", "root_path": "",
                "headers": [(b"content-type", b"image/png")], "client": (host, 1), "server": ("test", 80)}

    async def scenario():
        rest = asyncio.Event()

        async def receive_a():  # the first upload takes the only slot, then stalls halfway
            reads["a"] += 1
            if reads["a"] == 1:
                return {"type": "http.request", "body": png[:1000], "more_body": True}
            await rest.wait()
            return {"type": "http.request", "body": png[1000:], "more_body": False}

        async def receive_b():
            reads["b"] += 1
            return {"type": "http.request", "body": png, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        a = asyncio.create_task(app(scope("10.0.0.1"), receive_a, send))
        await asyncio.sleep(0.3)
        b = asyncio.create_task(app(scope("10.0.0.2"), receive_b, send))
        await asyncio.sleep(0.3)
        waiting = reads["b"]
        rest.set()
        await asyncio.wait_for(asyncio.gather(a, b), 60)
        return waiting

    assert asyncio.run(scenario()) == 0  # the second upload was not read while the slot was taken
    assert reads["b"] == 1 and statuses == [200, 200]


def test_cli_mark_then_verify(tmp_path, monkeypatch, capsys):
    from hallmark.cli import main

    monkeypatch.setenv("HALLMARK_HOME", str(tmp_path / "home"))
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    src.write_bytes(encode_png(photo("chelsea")))
    assert main(["provenance", "mark", str(src), str(out), "--asset-id", "cli-1", "--model-id", "ext-m"]) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["verdict"] == "verified" and body["evidence"]["c2pa"]["valid"]
    assert body["evidence"]["watermark"]["detected"]
    assert body["asset"]["asset_id"] == "cli-1" and body["asset"]["model_id"] == "ext-m"
    stripped = tmp_path / "stripped.jpg"
    stripped.write_bytes(reencode(out.read_bytes(), "JPEG", quality=90))
    assert main(["verify", str(stripped)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["verdict"] == "verified" and body["method"] == "watermark" and body["asset"]["asset_id"] == "cli-1"
    (tmp_path / "other.png").write_bytes(encode_png(photo("coffee")))
    assert main(["verify", str(tmp_path / "other.png")]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "unknown"
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["verify", str(tmp_path / "notes.txt")]) == 2
    assert "not a PNG, JPEG or WebP" in capsys.readouterr().err
    assert main(["provenance", "mark", str(src), str(tmp_path / "out.gif")]) == 2


def test_verifier_is_usable_without_http(env):
    config, assets = env
    assert Verifier(config).verify(assets["shapes-1"])["asset"]["asset_id"] == "shapes-1"
