"""Issue 16 acceptance 5: the C2PA soft-binding resolution API brings a stripped image back to its manifest."""
from __future__ import annotations

import base64
import datetime as dt
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hallmark.config import HallmarkConfig
from provenance import watermark
from provenance.api import create_app
from provenance.c2pa_manifest import GENERATION_LABEL
from provenance.fingerprint import PDQ_SOFT_ALG, pdq
from provenance.images import decode, encode_png
from provenance.publisher import ProvenanceConfig, Publisher
from provenance.registry import AssetRegistry

CREATED = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def photo(name: str) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(im.size)
    return np.asarray(im.crop((0, 0, side, side)).resize((256, 256), Image.LANCZOS))


def strip(data: bytes, fmt: str = "PNG", **kw) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format=fmt, **kw)
    return out.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    config = ProvenanceConfig.from_settings(HallmarkConfig.from_env(home=tmp_path_factory.mktemp("home")))
    publisher, registry = Publisher(config), AssetRegistry(config.db_url)
    assets = {}
    for asset_id, name in (("sb-astronaut", "astronaut"), ("sb-rocket", "rocket")):
        a = publisher.publish(encode_png(photo(name)), asset_id, "shapes-ldm-v1", "policy-9")
        registry.upsert(asset_id=a.asset_id, sha256=a.sha256, watermark_payload=a.watermark_payload,
                        manifest_label=a.manifest_label, model_id="shapes-ldm-v1", policy_version="policy-9",
                        width=a.width, height=a.height, created_at=CREATED, fingerprints=a.fingerprints)
        assets[asset_id] = a
    return TestClient(create_app(config)), assets, config


def read_store(store: bytes, config) -> dict:
    import c2pa

    from provenance.c2pa_manifest import _context

    reader = c2pa.Reader("application/c2pa", io.BytesIO(store),
                         context=_context(config.signing_material().trust_anchors))
    return json.loads(reader.json())


def test_supported_algorithms_lists_our_watermark_and_fingerprint(service):
    client, _, _ = service
    body = client.get("/services/supportedAlgorithms").json()
    assert body == {"watermarks": [{"alg": watermark.SOFT_ALG}], "fingerprints": [{"alg": PDQ_SOFT_ALG}]}


@pytest.mark.parametrize("fmt,kw,ctype", [("PNG", {}, "image/png"), ("JPEG", {"quality": 80}, "image/jpeg")])
def test_stripped_image_comes_back_to_its_manifest_by_content(service, fmt, kw, ctype):
    client, assets, config = service
    asset = assets["sb-astronaut"]
    stripped = strip(open(asset.path, "rb").read(), fmt, **kw)
    assert b"c2pa" not in stripped and b"jumb" not in stripped  # no manifest left in the file
    r = client.post("/matches/byContent", content=stripped, headers={"content-type": ctype})
    assert r.status_code == 200
    matches = r.json()["matches"]
    assert matches[0]["manifestId"] == asset.manifest_label and 0 <= matches[0]["similarityScore"] <= 100
    assert {m["manifestId"] for m in matches} == {asset.manifest_label}  # not the other asset
    m = client.get(f"/manifests/{matches[0]['manifestId']}")
    assert m.status_code == 200 and m.headers["content-type"] == "application/c2pa"
    store = read_store(m.content, config)
    assert store["active_manifest"] == asset.manifest_label
    manifest = store["manifests"][asset.manifest_label]
    generation = next(a["data"] for a in manifest["assertions"] if a["label"] == GENERATION_LABEL)
    assert generation["asset_id"] == "sb-astronaut"
    assert {a["data"]["alg"] for a in manifest["assertions"] if a["label"].startswith("c2pa.soft-binding")} == {
        watermark.SOFT_ALG, PDQ_SOFT_ALG}


def test_by_content_restricted_to_one_algorithm(service):
    client, assets, _ = service
    stripped = strip(open(assets["sb-rocket"].path, "rb").read())
    for alg in (watermark.SOFT_ALG, PDQ_SOFT_ALG):
        r = client.post("/matches/byContent", params={"alg": alg, "maxResults": "1"}, content=stripped,
                        headers={"content-type": "image/png"})
        assert [m["manifestId"] for m in r.json()["matches"]] == [assets["sb-rocket"].manifest_label]


def test_by_binding_get_and_post_find_the_manifest(service):
    client, assets, _ = service
    asset = assets["sb-rocket"]
    mark = base64.b64encode(bytes.fromhex(asset.watermark_payload)).decode()
    r = client.get("/matches/byBinding", params={"alg": watermark.SOFT_ALG, "value": mark})
    assert r.json() == {"matches": [{"manifestId": asset.manifest_label, "similarityScore": 100}]}
    stripped_pdq = pdq(decode(strip(open(asset.path, "rb").read(), "JPEG", quality=70)).rgb).value
    value = base64.b64encode(bytes.fromhex(stripped_pdq)).decode()
    r = client.post("/matches/byBinding", json={"alg": PDQ_SOFT_ALG, "value": value})
    assert r.status_code == 200 and r.json()["matches"][0]["manifestId"] == asset.manifest_label


def test_unrelated_or_copied_content_finds_nothing(service):
    client, assets, _ = service
    other = photo("coffee")
    stolen = bytes.fromhex(assets["sb-astronaut"].watermark_payload)
    for rgb in (other, watermark.embed(other, stolen)):  # a copied watermark does not resolve to our manifest
        r = client.post("/matches/byContent", content=encode_png(rgb), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json() == {"matches": []}


@pytest.mark.parametrize("request_,status", [
    (lambda c: c.get("/matches/byBinding", params={"alg": "com.example.unknown", "value": "AAAA"}), 400),
    (lambda c: c.get("/matches/byBinding", params={"alg": PDQ_SOFT_ALG, "value": "not base64!"}), 400),
    (lambda c: c.get("/matches/byBinding", params={"alg": PDQ_SOFT_ALG, "value": "AAAA"}), 400),  # 3 bytes
    (lambda c: c.get("/matches/byBinding", params={"alg": PDQ_SOFT_ALG}), 400),
    (lambda c: c.get("/matches/byBinding", params={"alg": watermark.SOFT_ALG, "value": "AAAAAAAAAAA=",
                                                   "maxResults": "-1"}), 400),
    (lambda c: c.post("/matches/byBinding", content=b"{nope", headers={"content-type": "application/json"}), 400),
    (lambda c: c.post("/matches/byBinding", json=["a"]), 400),
    (lambda c: c.post("/matches/byBinding", json={"alg": PDQ_SOFT_ALG, "value": 12345}), 400),
    (lambda c: c.post("/matches/byContent", content=b"%PDF-1.4", headers={"content-type": "application/pdf"}), 415),
    (lambda c: c.post("/matches/byContent", content=encode_png(photo("coffee"))[:5000],
                      headers={"content-type": "image/png"}), 422),  # truncated
    (lambda c: c.post("/matches/byContent", params={"alg": "x"}, content=b"", headers={"content-type": "image/png"}),
     400),
    (lambda c: c.get("/manifests/urn:c2pa:00000000-0000-0000-0000-000000000000"), 404),
    (lambda c: c.get("/manifests/not-a-urn"), 400),
])
def test_bad_soft_binding_requests_get_a_reason(service, request_, status):
    client, _, _ = service
    r = request_(client)
    assert r.status_code == status, r.text
    assert r.json()["reason"]


def test_unknown_watermark_value_matches_nothing(service):
    client, _, _ = service
    r = client.get("/matches/byBinding", params={"alg": watermark.SOFT_ALG, "value": "AAAAAAAAAAA="})
    assert r.status_code == 200 and r.json() == {"matches": []}
