"""Publishing: watermark → C2PA sign → content-addressed store. Idempotent per asset id."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from provenance.store import BlobStore


@dataclass(frozen=True)
class ProvenanceConfig:
    """Where provenance keeps blobs, keys and the registry, and the limits of the public verifier."""

    blob_dir: Path
    keys_dir: Path
    db_url: str
    signing_key: Path | None = None  # production ES256 key (PEM); None = the local test CA under keys_dir
    cert_chain: Path | None = None  # production chain (PEM, end-entity first)
    trust_anchors: Path | None = None  # roots the verifier trusts; None = the local test CA
    software_name: str = "hallmark"
    software_version: str = "0.1.0"
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    rate_limit_per_minute: int = 60  # per client address
    verify_concurrency: int = 4  # verifications decoding at once
    false_match_rate: float = 1e-6  # watermark detection: chance that an unmarked image matches anything

    @classmethod
    def from_settings(cls, settings, env: dict[str, str] | None = None) -> "ProvenanceConfig":
        """Defaults from hallmark Settings; HALLMARK_C2PA_KEY / _CERT_CHAIN / _TRUST_ANCHORS name production files."""
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(blob_dir=Path(settings.blob_dir), keys_dir=Path(settings.keys_dir), db_url=settings.db_url,
                   signing_key=path("HALLMARK_C2PA_KEY"), cert_chain=path("HALLMARK_C2PA_CERT_CHAIN"),
                   trust_anchors=path("HALLMARK_C2PA_TRUST_ANCHORS"))

    def signing_material(self):
        """Production key and chain when configured, else the local test CA (generated on first use)."""
        from provenance.c2pa_manifest import SigningMaterial
        from provenance.keys import generate_test_ca

        if (self.signing_key is None) != (self.cert_chain is None):
            raise ValueError("configure both the C2PA signing key and its certificate chain, or neither")
        if self.signing_key is not None:
            return SigningMaterial(self.signing_key, self.cert_chain, self.trust_anchors)
        test = generate_test_ca(self.keys_dir)  # returns the existing ones
        return SigningMaterial(test.private_key, test.cert_chain, self.trust_anchors or test.trust_anchors)


@dataclass(frozen=True)
class PublishedAsset:
    asset_id: str
    sha256: str
    path: str
    watermark_payload: str  # hex; "" when the image is below the watermark's 256×256 minimum
    manifest_label: str
    width: int
    height: int
    phash: str = ""

    @property
    def fingerprints(self) -> list[tuple[str, str]]:
        """(algorithm, hex value) pairs, as they travel on `asset.published`."""
        return [("phash", self.phash)] if self.phash else []


class Publisher:
    """Marks and stores generated images. Build once per process (it holds the native C2PA signer)."""

    def __init__(self, config: ProvenanceConfig):
        from provenance.c2pa_manifest import ManifestSigner

        self.config = config
        self.blobs = BlobStore(Path(config.blob_dir))
        self._signer = ManifestSigner(config.signing_material())

    def _index_path(self, asset_id: str) -> Path:
        # The asset id → sha256 index makes retries return the first result: signatures are not deterministic.
        import hashlib

        return Path(self.config.blob_dir) / "assets" / f"{hashlib.sha256(asset_id.encode()).hexdigest()}.json"

    def published(self, asset_id: str) -> PublishedAsset | None:
        """The earlier result for this asset id, if it was published already."""
        index = self._index_path(asset_id)
        if not index.is_file():
            return None
        asset = PublishedAsset(**json.loads(index.read_text()))
        return asset if Path(asset.path).is_file() and asset.asset_id == asset_id else None

    def publish(self, png: bytes, asset_id: str, model_id: str, policy_version: str,
                output_format: str = "png") -> PublishedAsset:
        """Watermark, sign and store one image (PNG/JPEG/WebP in; signed PNG, or JPEG, out).

        The same asset id returns the first result, whatever the later arguments.
        """
        from provenance import watermark
        from provenance.c2pa_manifest import ManifestFacts
        from provenance.images import ImageLimits, decode, encode_jpeg, encode_png
        from provenance.registry import perceptual_hash

        if not asset_id:
            raise ValueError("asset_id is empty")
        earlier = self.published(asset_id)
        if earlier is not None:
            return earlier
        image = decode(png, ImageLimits(self.config.max_upload_bytes, self.config.max_pixels))
        rgb, payload = image.rgb, ""
        if watermark.can_embed(image.width, image.height):
            mark = watermark.payload_for(asset_id)
            rgb, payload = watermark.embed(rgb, mark), mark.hex()
        facts = ManifestFacts(asset_id, model_id, policy_version, self.config.software_name,
                              self.config.software_version)
        if output_format == "png":
            signed, label = self._signer.sign(encode_png(rgb), "image/png", facts)
        elif output_format == "jpeg":
            signed, label = self._signer.sign(encode_jpeg(rgb), "image/jpeg", facts)
        else:
            raise ValueError(f"output_format must be png or jpeg, not {output_format!r}")
        suffix = ".png" if output_format == "png" else ".jpg"
        sha = self.blobs.put(signed, suffix)
        asset = PublishedAsset(asset_id=asset_id, sha256=sha, path=str(self.blobs.path(sha, suffix)),
                               watermark_payload=payload, manifest_label=label, width=image.width,
                               height=image.height, phash=perceptual_hash(rgb))
        index = self._index_path(asset_id)
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(asset)))
        os.replace(tmp, index)
        return asset
