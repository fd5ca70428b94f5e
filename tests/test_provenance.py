"""Provenance library: watermark, keys, C2PA signing/reading, registry, publisher."""
from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from PIL import Image, ImageEnhance

from hallmark.config import Settings
from provenance import watermark
from provenance.c2pa_manifest import (
    GENERATION_LABEL,
    TRAINED_ALGORITHMIC_MEDIA,
    ManifestFacts,
    ManifestReader,
    ManifestSigner,
    SigningMaterial,
)
from provenance.images import decode, encode_png
from provenance.keys import C2PA_CLAIM_SIGNING, generate_test_ca
from provenance.publisher import ProvenanceConfig, Publisher
from provenance.registry import AssetRegistry, perceptual_hash


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
    return ProvenanceConfig.from_settings(Settings(home=home), env={})


@pytest.fixture(scope="module")
def publisher(config) -> Publisher:
    return Publisher(config)


# --- watermark -------------------------------------------------------------------------------------------------

def test_payload_is_64_bits_derived_from_the_asset_id():
    a, b = watermark.payload_for("asset-a"), watermark.payload_for("asset-b")
    assert len(a) * 8 == watermark.PAYLOAD_BITS >= 48
    assert a == watermark.payload_for("asset-a") and a != b
    with pytest.raises(ValueError):
        watermark.payload_for("")


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
    payload = watermark.payload_for("round-trip")
    marked = watermark.embed(rgb, payload)
    assert marked.shape == rgb.shape and np.abs(marked.astype(int) - rgb).mean() < 3  # invisible-ish
    assert watermark.read(marked).agreement(payload) == 1.0
    assert watermark.read(jpeg(marked, 90)).agreement(payload) >= 0.9
    half = Image.fromarray(marked).resize((128, 128), Image.BILINEAR).resize((256, 256), Image.BILINEAR)
    assert watermark.read(np.asarray(half)).agreement(payload) >= 0.95


def test_brightness_change_is_undone_by_the_gain_search():
    payload = watermark.payload_for("bright")
    marked = Image.fromarray(watermark.embed(photo("coffee"), payload))
    for factor in (0.9, 1.1):
        reading = watermark.read(np.asarray(ImageEnhance.Brightness(marked).enhance(factor)))
        assert reading.agreement(payload) >= 0.95
        assert reading.gain == pytest.approx(factor, abs=0.03)


@pytest.mark.parametrize("box", [(13, 13, 243, 243), (0, 0, 230, 230), (7, 19, 240, 250)])
def test_crop_search_recovers_the_payload_up_to_rotation(box):
    payload = watermark.payload_for("cropped")
    cropped = np.asarray(Image.fromarray(watermark.embed(photo("astronaut"), payload)).crop(box))
    reading = watermark.read_cropped(cropped)
    assert reading.rotated and reading.known_mask.sum() >= 48
    assert reading.agreement(payload) == 1.0
    aligned = reading.aligned_to(payload)
    assert np.array_equal(aligned.bits[aligned.known_mask], watermark.payload_bits(payload)[aligned.known_mask])
    other = watermark.payload_for("some-other-asset")
    assert reading.agreement(other) < 0.85  # best of 64 rotations of an unrelated payload


def test_unmarked_images_read_at_chance_level():
    payload = watermark.payload_for("never-embedded")
    agreements = [watermark.read(rgb).agreement(payload) for rgb in (photo("astronaut"), photo("rocket"), shapes(2))]
    assert all(0.25 <= a <= 0.75 for a in agreements)


def test_small_images_are_not_marked_or_read():
    small = photo(size=128)
    assert watermark.read(small) is None
    with pytest.raises(ValueError, match="too small"):
        watermark.embed(small, watermark.payload_for("x"))


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

def test_registry_upsert_is_idempotent_and_looks_up_every_way(tmp_path):
    reg = AssetRegistry(f"sqlite:///{tmp_path / 'r.db'}")
    rgb = photo("chelsea")
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    fields = dict(asset_id="a1", sha256="ab" * 32, watermark_payload=watermark.payload_for("a1").hex(),
                  model_id="m", policy_version="p", width=256, height=256, created_at=when, phash=perceptual_hash(rgb))
    reg.upsert(**fields)
    reg.upsert(**fields)
    reg.upsert(**{**fields, "asset_id": "a2", "sha256": "cd" * 32,
                  "watermark_payload": watermark.payload_for("a2").hex(), "phash": perceptual_hash(photo("rocket"))})
    assert reg.count_watermarked() == 2
    assert reg.get("a1").policy_version == "p" and reg.by_sha256("ab" * 32).asset_id == "a1"
    best = reg.nearest_watermark(watermark.WatermarkReading(watermark.payload_bits(watermark.payload_for("a2")), 1.0))
    assert best.record.asset_id == "a2" and best.agreement == 1.0
    near = reg.near_duplicates(perceptual_hash(jpeg(rgb, 50)), max_distance=8)
    assert [r.asset_id for r, _ in near] == ["a1"]
    reg.delete_all()  # a projection rebuild starts from an empty table
    assert reg.get("a1") is None and reg.count_watermarked() == 0


def test_registry_computes_the_phash_from_the_blob(publisher, config, tmp_path):
    asset = publisher.publish(encode_png(photo("astronaut")), "blob-phash", "m", "p")
    reg = AssetRegistry(f"sqlite:///{tmp_path / 'r.db'}", blobs=publisher.blobs)
    record = reg.upsert(asset_id=asset.asset_id, sha256=asset.sha256, watermark_payload=asset.watermark_payload,
                        model_id="m", policy_version="p", width=256, height=256,
                        created_at=dt.datetime.now(dt.timezone.utc))
    assert record.phash == asset.phash
    with pytest.raises(ValueError, match="blob store"):
        AssetRegistry(f"sqlite:///{tmp_path / 'r2.db'}").upsert(
            asset_id="x", sha256=asset.sha256, watermark_payload="", model_id="m", policy_version="p",
            width=1, height=1, created_at=dt.datetime.now(dt.timezone.utc))


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
    assert asset.watermark_payload == watermark.payload_for("asset-pub-1").hex()
    assert watermark.read(decode(stored).rgb).payload_hex == asset.watermark_payload
    c2pa = ManifestReader(config.signing_material().trust_anchors).read(stored, "image/png")
    assert c2pa.valid and c2pa.trusted and c2pa.label == asset.manifest_label
    assert b"hallmark" not in Image.open(io.BytesIO(stored)).info  # input tEXt metadata is not carried over


def test_publish_small_image_skips_the_watermark_but_signs(publisher):
    asset = publisher.publish(encode_png(photo(size=128)), "asset-small", "m", "p")
    assert asset.watermark_payload == "" and asset.manifest_label and (asset.width, asset.height) == (128, 128)


def test_config_from_settings_and_production_keys(tmp_path):
    settings = Settings(home=tmp_path)
    cfg = ProvenanceConfig.from_settings(settings, env={})
    assert cfg.blob_dir == settings.blob_dir and cfg.db_url == settings.db_url and cfg.signing_key is None
    prod = generate_test_ca(tmp_path / "prod")
    env = {"HALLMARK_C2PA_KEY": str(prod.private_key), "HALLMARK_C2PA_CERT_CHAIN": str(prod.cert_chain),
           "HALLMARK_C2PA_TRUST_ANCHORS": str(prod.trust_anchors)}
    material = ProvenanceConfig.from_settings(settings, env=env).signing_material()
    assert material == SigningMaterial(prod.private_key, prod.cert_chain, prod.trust_anchors)
    with pytest.raises(ValueError, match="both"):
        ProvenanceConfig.from_settings(settings, env={"HALLMARK_C2PA_KEY": "k.pem"}).signing_material()
