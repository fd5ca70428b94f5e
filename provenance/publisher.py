"""Publishing: watermark → C2PA sign → content-addressed store. Idempotent per asset id."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from provenance.fingerprint import PDQ_ALG, PDQ_MATCH_DISTANCE, PDQ_QUALITY_ALG, pdq, pdq_views
from provenance.store import BlobStore, ManifestArchive

PDQ_SIMILAR_DISTANCE = 52  # to the nearest stored view; chosen from measured distances, see docs/provenance.md


@dataclass(frozen=True)
class ProvenanceConfig:
    """Where provenance keeps blobs, keys and the registry, and the limits of the public verifier."""

    blob_dir: Path
    keys_dir: Path
    db_url: str
    signing_key: Path | None = None  # production ES256 key (PEM); None = the local test CA under keys_dir
    cert_chain: Path | None = None  # production chain (PEM, end-entity first)
    trust_anchors: Path | None = None  # roots the verifier trusts; None = the local test CA
    tsa_url: str = ""  # RFC 3161 timestamp authority for manifests; "" = off
    software_name: str = "hallmark"
    software_version: str = "0.1.0"
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    rate_limit_per_minute: int = 60  # per client address (IPv6: per /64)
    verify_concurrency: int = 4  # verifications reading and decoding at once
    false_match_rate: float = 1e-6  # watermark detection: chance that an unmarked image matches anything
    pdq_match_distance: int = PDQ_MATCH_DISTANCE  # watermark + PDQ within this → verified; PDQ alone → similar
    pdq_similar_distance: int = PDQ_SIMILAR_DISTANCE  # watermark + PDQ within this → similar; beyond → copy_suspected

    @classmethod
    def from_settings(cls, settings) -> "ProvenanceConfig":
        """From the hallmark config root: its paths, and the optional C2PA key, chain, trust anchors and TSA URL."""

        def path(name: str) -> Path | None:
            value = getattr(settings, name, None)
            return Path(value) if value else None

        return cls(blob_dir=Path(settings.blob_dir), keys_dir=Path(settings.keys_dir), db_url=settings.db_url,
                   signing_key=path("c2pa_key"), cert_chain=path("c2pa_cert_chain"),
                   trust_anchors=path("c2pa_trust_anchors"), tsa_url=getattr(settings, "tsa_url", None) or "")

    def signing_material(self):
        """Production key and chain when configured, else the local test CA (generated on first use)."""
        from provenance.c2pa_manifest import SigningMaterial
        from provenance.keys import generate_test_ca

        if (self.signing_key is None) != (self.cert_chain is None):
            raise ValueError("configure both the C2PA signing key and its certificate chain, or neither")
        if self.signing_key is not None:
            return SigningMaterial(self.signing_key, self.cert_chain, self.trust_anchors, self.tsa_url)
        test = generate_test_ca(self.keys_dir)  # returns the existing ones
        return SigningMaterial(test.private_key, test.cert_chain, self.trust_anchors or test.trust_anchors,
                               self.tsa_url)

    def watermark_key(self):
        """The server watermark secret and its key id (generated under keys_dir on first use)."""
        from provenance.keys import watermark_key

        return watermark_key(self.keys_dir)


@dataclass(frozen=True)
class PublishedAsset:
    asset_id: str
    sha256: str
    path: str
    watermark_payload: str  # hex; "" when the image is below the watermark's 256×256 minimum
    manifest_label: str
    width: int
    height: int
    pdq: str = ""  # PDQ of the published pixels, 64 hex
    watermark_key_id: str = ""
    pdq_views: dict[str, str] = field(default_factory=dict)  # view name (fingerprint.VIEWS) → PDQ hex
    pdq_quality: int = -1  # PDQ's own quality score (0–100; below 50 the hash says little); -1 unknown

    @property
    def fingerprints(self) -> list[tuple[str, str]]:
        """(algorithm, hex value) pairs, as they travel on `asset.published`: `pdq`, its quality (`pdq-quality`,
        0–100 in hex), then `pdq:<view>` for each stored view."""
        if not self.pdq:
            return []
        return [(PDQ_ALG, self.pdq), (PDQ_QUALITY_ALG, f"{max(self.pdq_quality, 0):02x}"),
                *((f"{PDQ_ALG}:{name}", value) for name, value in self.pdq_views.items())]

    @classmethod
    def from_json(cls, data: dict) -> "PublishedAsset":
        """From a recorded result; fields this version does not know (an earlier `phash`) are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Publisher:
    """Marks and stores generated images. Build once per process (it holds the native C2PA signer)."""

    def __init__(self, config: ProvenanceConfig):
        from provenance.c2pa_manifest import ManifestSigner

        self.config = config
        self.blobs = BlobStore(Path(config.blob_dir))
        self.manifests = ManifestArchive(Path(config.blob_dir))
        self._signer = ManifestSigner(config.signing_material())
        self._key = config.watermark_key()

    def _index_path(self, asset_id: str) -> Path:
        # The asset id → sha256 index makes retries return the first result: signatures are not deterministic.
        import hashlib

        return Path(self.config.blob_dir) / "assets" / f"{hashlib.sha256(asset_id.encode()).hexdigest()}.json"

    def published(self, asset_id: str) -> PublishedAsset | None:
        """The earlier result for this asset id, if it was published already."""
        index = self._index_path(asset_id)
        if not index.is_file():
            return None
        asset = PublishedAsset.from_json(json.loads(index.read_text()))
        return asset if Path(asset.path).is_file() and asset.asset_id == asset_id else None

    def publish(self, png: bytes, asset_id: str, model_id: str, policy_version: str,
                output_format: str = "png") -> PublishedAsset:
        """Watermark, sign and store one image (PNG/JPEG/WebP in; signed PNG, or JPEG, out).

        The same asset id returns the first result, whatever the later arguments.
        """
        from provenance import watermark
        from provenance.images import ImageLimits, decode, encode_jpeg, encode_png

        if not asset_id:
            raise ValueError("asset_id is empty")
        if output_format not in ("png", "jpeg"):
            raise ValueError(f"output_format must be png or jpeg, not {output_format!r}")
        earlier = self.published(asset_id)
        if earlier is not None:
            return earlier
        image = decode(png, ImageLimits(self.config.max_upload_bytes, self.config.max_pixels))
        rgb, payload = image.rgb, b""
        if watermark.can_embed(image.width, image.height):
            payload = watermark.payload_for(asset_id, self._key.secret)
            rgb = watermark.embed(rgb, payload)
        fingerprint = pdq(rgb)
        facts = self._facts(asset_id, model_id, policy_version, payload, fingerprint.value)
        mime, encoded = ("image/png", encode_png(rgb)) if output_format == "png" else ("image/jpeg", encode_jpeg(rgb))
        signed, label, store = self._signer.sign_with_store(encoded, mime, facts)
        self.manifests.put(label, store)
        suffix = ".png" if output_format == "png" else ".jpg"
        sha = self.blobs.put(signed, suffix)
        asset = PublishedAsset(asset_id=asset_id, sha256=sha, path=str(self.blobs.path(sha, suffix)),
                               watermark_payload=payload.hex(), manifest_label=label, width=image.width,
                               height=image.height, pdq=fingerprint.value,
                               watermark_key_id=self._key.key_id if payload else "", pdq_views=pdq_views(rgb),
                               pdq_quality=fingerprint.quality)
        index = self._index_path(asset_id)
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(asset)))
        os.replace(tmp, index)
        return asset

    def _facts(self, asset_id: str, model_id: str, policy_version: str, payload: bytes, fingerprint: str):
        from provenance import watermark
        from provenance.c2pa_manifest import ManifestFacts, SoftBinding
        from provenance.fingerprint import PDQ_SOFT_ALG

        bindings = [SoftBinding(PDQ_SOFT_ALG, bytes.fromhex(fingerprint), "PDQ fingerprint (256 bits)")]
        if payload:
            bindings.insert(0, SoftBinding(watermark.SOFT_ALG, payload, f"keyed watermark, key {self._key.key_id}"))
        return ManifestFacts(asset_id, model_id, policy_version, self.config.software_name,
                             self.config.software_version, tuple(bindings))
