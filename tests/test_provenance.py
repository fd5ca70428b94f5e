"""Provenance library: watermark, keys, C2PA signing/reading, registry, publisher."""
from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from PIL import Image, ImageEnhance

from hallmark.config import HallmarkConfig
from provenance import watermark
from provenance.c2pa_manifest import (
    GENERATION_LABEL,
    TRAINED_ALGORITHMIC_MEDIA,
    ManifestFacts,
    ManifestReader,
    ManifestSigner,
    SigningMaterial,
)
from provenance.fingerprint import PDQ_ALG, pdq, pdq_dihedral
from provenance.images import decode, encode_png
from provenance.keys import C2PA_CLAIM_SIGNING, generate_test_ca
from provenance.publisher import ProvenanceConfig, Publisher
from provenance.registry import AssetRegistry

SECRET = bytes(range(32))


def photo(name: str = "astronaut", size: int = 256) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(im.size)
    return np.asarray(im.crop((0, 0, side, side)).resize((size, size), Image.LANCZOS))


def shapes(seed: int) -> np.ndarray:
    from generator.shapes.dataset import make_example
    from generator.shapes.render import upscale

    return upscale(make_example(np.random.default_rng(seed))[0], 256)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> ProvenanceConfig:
    home = tmp_path_factory.mktemp("home")
    return ProvenanceConfig.from_settings(HallmarkConfig.from_env(home=home))


@pytest.fixture(scope="module")
def publisher(config) -> Publisher:
    return Publisher(config)


# --- watermark -------------------------------------------------------------------------------------------------

def test_payload_is_a_64_bit_hmac_of_the_asset_id_under_the_server_secret():
    import hashlib
    import hmac

    a, b = watermark.payload_for("asset-a", SECRET), watermark.payload_for("asset-b", SECRET)
    assert len(a) * 8 == watermark.PAYLOAD_BITS >= 48
    assert a == watermark.payload_for("asset-a", SECRET) and a != b
    assert a == hmac.new(SECRET, b"hallmark/watermark/v2\0asset-a", hashlib.sha256).digest()[:8]
    assert a != watermark.payload_for("asset-a", bytes(32))  # another secret, another payload
    assert a != hashlib.sha256(b"hallmark/watermark/v1\0asset-a").digest()[:8]  # not the old unkeyed one
    with pytest.raises(ValueError):
        watermark.payload_for("", SECRET)
    with pytest.raises(ValueError, match="secret"):
        watermark.payload_for("asset-a", b"short")


def test_watermark_key_is_generated_once_private_and_named(tmp_path):
    from provenance.keys import watermark_key

    key = watermark_key(tmp_path)
    path = tmp_path / "watermark.key"
    assert path.stat().st_mode & 0o777 == 0o600 and len(key.secret) == 32 and key.key_id.startswith("wm-")
    assert watermark_key(tmp_path) == key  # kept
    assert key.secret.hex() not in repr(key)


def test_decoder_matches_the_library_decoder_bit_for_bit():
    from imwatermark import WatermarkDecoder

    from provenance.watermark import _SCALE, _u_ll_blocks, _vote

    for rgb in (photo("coffee"), shapes(3), jpeg(watermark.embed(photo("rocket"), b"\x5a" * 8), 60)):
        ours, _ = _vote(_u_ll_blocks(rgb), 1.0)
        ref = WatermarkDecoder("bits", 64).decode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd",
                                                  scales=[0, _SCALE, 0])
        assert np.array_equal(ours, np.asarray(ref, bool))


@pytest.mark.parametrize("make", [lambda: photo("chelsea"), lambda: shapes(1)], ids=["photo", "shapes"])
def test_watermark_round_trip_and_survives_mild_edits(make):
    rgb = make()
    payload = watermark.payload_for("round-trip", SECRET)
    marked = watermark.embed(rgb, payload)
    assert marked.shape == rgb.shape and np.abs(marked.astype(int) - rgb).mean() < 3  # invisible-ish
    assert watermark.read(marked).agreement(payload) == 1.0
    assert watermark.read(jpeg(marked, 90)).agreement(payload) >= 0.9
    half = Image.fromarray(marked).resize((128, 128), Image.BILINEAR).resize((256, 256), Image.BILINEAR)
    assert watermark.read(np.asarray(half)).agreement(payload) >= 0.95


def test_brightness_change_is_undone_by_the_gain_search():
    payload = watermark.payload_for("bright", SECRET)
    marked = Image.fromarray(watermark.embed(photo("coffee"), payload))
    for factor in (0.9, 1.1):
        reading = watermark.read(np.asarray(ImageEnhance.Brightness(marked).enhance(factor)))
        assert reading.agreement(payload) >= 0.95
        assert reading.gain == pytest.approx(factor, abs=0.03)


@pytest.mark.parametrize("box", [(13, 13, 243, 243), (0, 0, 230, 230), (7, 19, 240, 250)])
def test_crop_search_recovers_the_payload_up_to_rotation(box):
    payload = watermark.payload_for("cropped", SECRET)
    cropped = np.asarray(Image.fromarray(watermark.embed(photo("astronaut"), payload)).crop(box))
    reading = watermark.read_cropped(cropped)
    assert reading.rotated and reading.known_mask.sum() >= 48
    assert reading.agreement(payload) == 1.0
    aligned = reading.aligned_to(payload)
    assert np.array_equal(aligned.bits[aligned.known_mask], watermark.payload_bits(payload)[aligned.known_mask])
    other = watermark.payload_for("some-other-asset", SECRET)
    assert reading.agreement(other) < 0.85  # best of 64 rotations of an unrelated payload


def test_unmarked_images_read_at_chance_level():
    payload = watermark.payload_for("never-embedded", SECRET)
    agreements = [watermark.read(rgb).agreement(payload) for rgb in (photo("astronaut"), photo("rocket"), shapes(2))]
    assert all(0.25 <= a <= 0.75 for a in agreements)


def test_small_images_are_not_marked_or_read():
    small = photo(size=128)
    assert watermark.read(small) is None
    with pytest.raises(ValueError, match="too small"):
        watermark.embed(small, watermark.payload_for("x", SECRET))


# --- keys and C2PA ---------------------------------------------------------------------------------------------

def test_test_ca_issues_a_c2pa_signing_certificate(tmp_path):
    paths = generate_test_ca(tmp_path)
    ee, ca = x509.load_pem_x509_certificates(paths.cert_chain.read_bytes())
    assert ca.subject == ee.issuer and ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not ee.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = ee.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ee.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert C2PA_CLAIM_SIGNING in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
    ee.verify_directly_issued_by(ca)
    assert paths.private_key.stat().st_mode & 0o077 == 0
    before = paths.cert_chain.read_bytes()
    assert generate_test_ca(tmp_path).cert_chain.read_bytes() == before  # kept unless overwritten


def test_concurrent_first_use_yields_one_matching_key_and_chain(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from cryptography.hazmat.primitives import serialization

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: generate_test_ca(tmp_path), range(4)))
    assert len({r.cert_chain.read_bytes() for r in results}) == 1
    key = serialization.load_pem_private_key(results[0].private_key.read_bytes(), None)
    ee = x509.load_pem_x509_certificates(results[0].cert_chain.read_bytes())[0]
    assert ee.public_key() == key.public_key()


@pytest.fixture(scope="module")
def material(config) -> SigningMaterial:
    return config.signing_material()


@pytest.mark.parametrize("mime", ["image/png", "image/jpeg"])
def test_signed_manifest_reads_back_valid_with_our_assertions(material, mime):
    buf = io.BytesIO()
    Image.fromarray(photo("coffee")).save(buf, format="PNG" if mime == "image/png" else "JPEG")
    facts = ManifestFacts("asset-c2pa", "shapes-ldm-v1", "policy-7")
    signed, label = ManifestSigner(material).sign(buf.getvalue(), mime, facts)
    result = ManifestReader(material.trust_anchors).read(signed, mime)
    assert result.present and result.valid and result.trusted and result.errors == []
    assert result.label == label and "Hallmark Development Signer" in result.signer
    assert result.generation == {"asset_id": "asset-c2pa", "model_id": "shapes-ldm-v1", "policy_version": "policy-7"}
    import c2pa

    store = json.loads(c2pa.Reader(mime, io.BytesIO(signed)).json())
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert actions[0]["softwareAgent"]["name"] == "hallmark"
    assert actions[0]["parameters"] == {"model_id": "shapes-ldm-v1", "policy_version": "policy-7"}
    assert manifest["signature_info"]["alg"].lower() == "es256"
    assert GENERATION_LABEL in result.assertions


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        chunks.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def _with_one_pixel_changed(png: bytes) -> bytes:
    """Flip a bit of one pixel and re-pack the PNG, keeping every other chunk (the caBX manifest too) as it was."""
    import zlib

    chunks = _png_chunks(png)
    raw = bytearray(zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT")))
    raw[-1] ^= 0x40  # the last sample: no later pixel is predicted from it
    out, done = [png[:8]], False
    for kind, data in chunks:
        if kind == b"IDAT":
            if done:
                continue
            kind, data, done = b"IDAT", zlib.compress(bytes(raw)), True
        out.append(len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big"))
    return b"".join(out)


def test_changing_pixels_after_signing_invalidates_the_manifest(material):
    signed, _ = ManifestSigner(material).sign(encode_png(photo("rocket")), "image/png",
                                              ManifestFacts("asset-t", "m", "p"))
    tampered = _with_one_pixel_changed(signed)
    assert np.count_nonzero(decode(tampered).rgb != decode(signed).rgb) == 1
    result = ManifestReader(material.trust_anchors).read(tampered, "image/png")
    assert result.present and not result.valid
    assert any(e.startswith("assertion.dataHash.mismatch") for e in result.errors)


def test_untrusted_signer_is_valid_but_not_trusted(material, tmp_path):
    signed, _ = ManifestSigner(material).sign(encode_png(shapes(0)), "image/png", ManifestFacts("a", "m", "p"))
    other_ca = generate_test_ca(tmp_path).trust_anchors
    result = ManifestReader(other_ca).read(signed, "image/png")
    assert result.present and result.valid and not result.trusted
    assert any(e.startswith("signingCredential.untrusted") for e in result.errors)
    assert not ManifestReader(material.trust_anchors).read(encode_png(shapes(0)), "image/png").present


# --- registry --------------------------------------------------------------------------------------------------

def _fingerprints(rgb: np.ndarray) -> list[tuple[str, str]]:
    return [(PDQ_ALG, pdq(rgb).value)]


def test_registry_upsert_is_idempotent_and_looks_up_every_way(tmp_path):
    reg = AssetRegistry(f"sqlite:///{tmp_path / 'r.db'}")
    rgb = photo("chelsea")
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    fields = dict(asset_id="a1", sha256="ab" * 32, watermark_payload=watermark.payload_for("a1", SECRET).hex(),
                  model_id="m", policy_version="p", width=256, height=256, created_at=when,
                  manifest_label="urn:c2pa:a1", fingerprints=_fingerprints(rgb))
    reg.upsert(**fields)
    reg.upsert(**fields)
    reg.upsert(**{**fields, "asset_id": "a2", "sha256": "cd" * 32, "manifest_label": "urn:c2pa:a2",
                  "watermark_payload": watermark.payload_for("a2", SECRET).hex(),
                  "fingerprints": _fingerprints(photo("rocket"))})
    assert reg.count_watermarked() == 2
    assert reg.get("a1").policy_version == "p" and reg.by_sha256("ab" * 32).asset_id == "a1"
    assert reg.by_manifest_label("urn:c2pa:a2").asset_id == "a2"
    assert reg.by_watermark(watermark.payload_for("a1", SECRET).hex()).asset_id == "a1"
    best = reg.nearest_watermark(watermark.WatermarkReading(
        watermark.payload_bits(watermark.payload_for("a2", SECRET)), 1.0))
    assert best.record.asset_id == "a2" and best.agreement == 1.0
    near = reg.near_duplicates([h.value for h in pdq_dihedral(jpeg(rgb, 50))])
    assert [r.asset_id for r, _ in near] == ["a1"] and near[0][1] <= 31
    flipped = [h.value for h in pdq_dihedral(np.ascontiguousarray(rgb[:, ::-1]))]
    assert reg.near_duplicates(flipped)[0][0].asset_id == "a1"  # dihedral variants find mirrored copies
    reg.delete_all()  # a projection rebuild starts from an empty table
    assert reg.get("a1") is None and reg.count_watermarked() == 0 and reg.near_duplicates(flipped) == []


def test_registry_computes_the_fingerprints_from_the_blob(publisher, config, tmp_path):
    asset = publisher.publish(encode_png(photo("astronaut")), "blob-pdq", "m", "p")
    reg = AssetRegistry(f"sqlite:///{tmp_path / 'r.db'}", blobs=publisher.blobs)
    record = reg.upsert(asset_id=asset.asset_id, sha256=asset.sha256, watermark_payload=asset.watermark_payload,
                        model_id="m", policy_version="p", width=256, height=256,
                        created_at=dt.datetime.now(dt.timezone.utc), fingerprints=[("phash", "00" * 8)])
    assert record.pdq == asset.pdq and record.pdq_views.split() == list(asset.pdq_views.values())
    assert record.pdq_quality == asset.pdq_quality
    with pytest.raises(ValueError, match="blob store"):
        AssetRegistry(f"sqlite:///{tmp_path / 'r2.db'}").upsert(
            asset_id="x", sha256=asset.sha256, watermark_payload="", model_id="m", policy_version="p",
            width=1, height=1, created_at=dt.datetime.now(dt.timezone.utc))


def test_registry_replaces_a_table_from_before_pdq(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE provenance_assets (asset_id VARCHAR PRIMARY KEY, phash VARCHAR NOT NULL)")
    reg = AssetRegistry(f"sqlite:///{db}")
    reg.upsert(asset_id="a", sha256="ab" * 32, watermark_payload="", model_id="m", policy_version="p", width=1,
               height=1, created_at=dt.datetime.now(dt.timezone.utc), fingerprints=_fingerprints(photo("coffee")))
    assert reg.get("a").pdq


# --- publisher -------------------------------------------------------------------------------------------------

def test_publish_marks_signs_and_stores_idempotently(publisher, config):
    png = encode_png(shapes(5))
    asset = publisher.publish(png, "asset-pub-1", "shapes-ldm-v1", "policy-3")
    again = publisher.publish(png, "asset-pub-1", "shapes-ldm-v1", "policy-3")
    assert again == asset
    stored = Path(asset.path).read_bytes()
    import hashlib

    assert hashlib.sha256(stored).hexdigest() == asset.sha256 and Path(asset.path).is_relative_to(config.blob_dir)
    assert (asset.width, asset.height) == (256, 256)
    key = config.watermark_key()
    assert asset.watermark_payload == watermark.payload_for("asset-pub-1", key.secret).hex()
    assert asset.watermark_key_id == key.key_id
    assert asset.fingerprints[0] == ("pdq", pdq(decode(stored).rgb).value)
    assert asset.fingerprints[1] == ("pdq-quality", f"{asset.pdq_quality:02x}") and 0 <= asset.pdq_quality <= 100
    assert {alg for alg, _ in asset.fingerprints[2:]} == {f"pdq:{v}" for v in asset.pdq_views}
    assert watermark.read(decode(stored).rgb).payload_hex == asset.watermark_payload
    c2pa = ManifestReader(config.signing_material().trust_anchors).read(stored, "image/png")
    assert c2pa.valid and c2pa.trusted and c2pa.label == asset.manifest_label
    assert b"hallmark" not in Image.open(io.BytesIO(stored)).info  # input tEXt metadata is not carried over


def test_publish_small_image_skips_the_watermark_but_signs(publisher):
    asset = publisher.publish(encode_png(photo(size=128)), "asset-small", "m", "p")
    assert asset.watermark_payload == "" and asset.manifest_label and (asset.width, asset.height) == (128, 128)


@dataclass(frozen=True)
class RootSettings:
    """The attributes ProvenanceConfig.from_settings reads from the hallmark config root."""

    blob_dir: Path
    keys_dir: Path
    db_url: str
    c2pa_key: Path | None = None
    c2pa_cert_chain: Path | None = None
    c2pa_trust_anchors: Path | None = None
    tsa_url: str = ""


def test_config_from_settings_and_production_keys(tmp_path, monkeypatch):
    settings = HallmarkConfig.from_env(home=tmp_path)
    monkeypatch.setenv("HALLMARK_C2PA_KEY", str(tmp_path / "ignored.pem"))  # the environment is not read
    cfg = ProvenanceConfig.from_settings(settings)
    assert cfg.blob_dir == settings.blob_dir and cfg.db_url == settings.db_url and cfg.signing_key is None
    assert cfg.tsa_url == ""  # timestamps are off by default
    prod = generate_test_ca(tmp_path / "prod")
    root = RootSettings(tmp_path / "b", tmp_path / "k", "sqlite://", prod.private_key, prod.cert_chain,
                        prod.trust_anchors, "http://tsa.example/")
    material = ProvenanceConfig.from_settings(root).signing_material()
    assert material == SigningMaterial(prod.private_key, prod.cert_chain, prod.trust_anchors, "http://tsa.example/")
    with pytest.raises(ValueError, match="both"):
        ProvenanceConfig.from_settings(RootSettings(tmp_path, tmp_path, "sqlite://", Path("k.pem"))).signing_material()


def test_manifest_carries_soft_bindings_and_still_reads_valid(publisher, config):
    import base64

    from provenance.fingerprint import PDQ_SOFT_ALG

    asset = publisher.publish(encode_png(photo("coffee")), "asset-soft", "m", "p")
    result = ManifestReader(config.signing_material().trust_anchors).read(Path(asset.path).read_bytes(), "image/png")
    assert result.valid and result.trusted and result.errors == []
    assert result.assertions.count("c2pa.soft-binding") == 2
    values = {b["alg"]: base64.b64decode(b["blocks"][0]["value"]) for b in result.soft_bindings}
    assert values == {watermark.SOFT_ALG: bytes.fromhex(asset.watermark_payload),
                      PDQ_SOFT_ALG: bytes.fromhex(asset.pdq)}
    assert all(alg.startswith("org.hallmark.") for alg in values)  # neither is on the C2PA list: our namespace
    assert publisher.manifests.get(asset.manifest_label).startswith(b"\x00\x00")  # the store, JUMBF boxes


def test_registry_memory_catches_up_with_other_writers(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    reader, writer = AssetRegistry(url, poll_seconds=0.0), AssetRegistry(url)
    when = dt.datetime.now(dt.timezone.utc)

    def put(asset_id: str, name: str):
        writer.upsert(asset_id=asset_id, sha256=asset_id * 64, watermark_payload=watermark.payload_for(
            asset_id, SECRET).hex(), model_id="m", policy_version="p", width=1, height=1, created_at=when,
            fingerprints=_fingerprints(photo(name)))

    put("a", "astronaut")
    assert reader.watermarked() == 1
    put("b", "rocket")  # another process's write: read incrementally (by seq), not by a full reload
    loaded = reader._memory.loaded_at
    assert reader.watermarked() == 2 and reader._memory.loaded_at == loaded
    assert reader.near_duplicates([h.value for h in pdq_dihedral(photo("rocket"))])[0][0].asset_id == "b"
    put("b", "coffee")  # replaced: the old fingerprint no longer answers
    assert reader.near_duplicates([pdq(photo("rocket")).value]) == []
    assert reader.near_duplicates([pdq(photo("coffee")).value])[0][0].asset_id == "b"
    writer.delete_all()  # a rebuild elsewhere: its removals show at the next full read
    assert reader.watermarked() == 2
    reader.cache_seconds = 0.0
    assert reader.watermarked() == 0


def test_registry_rows_are_a_pure_function_of_the_events(tmp_path):
    import sqlite3
    import time

    fields = dict(asset_id="a", sha256="ab" * 32, watermark_payload=watermark.payload_for("a", SECRET).hex(),
                  model_id="m", policy_version="p", width=256, height=256, manifest_label="urn:c2pa:a",
                  created_at=dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc), fingerprints=_fingerprints(photo()))
    rows = []
    for name in ("first.db", "rebuilt.db"):
        AssetRegistry(f"sqlite:///{tmp_path / name}").upsert(**fields)
        with sqlite3.connect(tmp_path / name) as conn:
            rows.append(conn.execute("SELECT * FROM provenance_assets").fetchall())
        time.sleep(0.01)
    assert rows[0] == rows[1]  # a projection rebuild yields identical rows (the write time lives in another table)
