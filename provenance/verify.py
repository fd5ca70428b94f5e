"""Verification: what the three signals (C2PA, watermark, registry) say about an image. Never names the requester."""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

from provenance import watermark
from provenance.c2pa_manifest import ManifestReader
from provenance.images import ImageLimits, decode
from provenance.publisher import ProvenanceConfig
from provenance.registry import AssetRecord, AssetRegistry, perceptual_hash

PHASH_MAX_DISTANCE = 8  # of 64 bits; JPEG q50 and 50% resizes stay within ~4


def chance_of_agreement(agreement: float, bits: int = watermark.PAYLOAD_BITS) -> float:
    """P(`bits` random bits agree with a fixed payload at least this well): the binomial tail."""
    k = round(agreement * bits)
    return sum(math.comb(bits, i) for i in range(k, bits + 1)) / 2**bits


@dataclass(frozen=True)
class RegistryMatch:
    record: AssetRecord
    method: str  # sha256 | c2pa | watermark | perceptual_hash
    phash_distance: int | None = None


class Verifier:
    """Answers POST /v1/verify and `hallmark verify`; thread-safe, build once."""

    def __init__(self, config: ProvenanceConfig, registry: AssetRegistry | None = None):
        self.config = config
        self.limits = ImageLimits(config.max_upload_bytes, config.max_pixels)
        self.registry = registry or AssetRegistry(config.db_url)
        self.reader = ManifestReader(config.signing_material().trust_anchors)

    def verify(self, data: bytes) -> dict:
        """The verification answer as JSON-ready dict; raises images.ImageError for input we refuse."""
        image = decode(data, self.limits)
        c2pa = self.reader.read(data, image.mime)
        wm, wm_match = self._watermark(image.rgb)
        match = self._match(data, c2pa, wm_match, image.rgb)
        return {"c2pa": c2pa.public(), "watermark": wm, "registry": _registry_json(match)}

    def _watermark(self, rgb) -> tuple[dict, AssetRecord | None]:
        """Read the watermark as published, then (if that finds nothing) as cropped; test against the registry."""
        answer = {"detected": False, "payload": None, "bit_agreement": None}
        # A cropped reading is known only up to rotation: each of the 64 rotations is one more chance to match.
        for read, tries in ((watermark.read, 1), (watermark.read_cropped, watermark.PAYLOAD_BITS)):
            reading = read(rgb)
            if reading is None:
                continue
            best = self.registry.nearest_watermark(reading)
            if answer["payload"] is None:
                answer.update(payload=reading.payload_hex, bit_agreement=best and round(best.agreement, 4))
            if best is None:
                break
            # Bonferroni over registry and rotations: the chance that an unmarked image matches anything this well.
            chance = chance_of_agreement(best.agreement, int(reading.known_mask.sum()))
            if self.registry_size() * tries * chance <= self.config.false_match_rate:
                aligned = reading.aligned_to(bytes.fromhex(best.record.watermark_payload))
                answer.update(detected=True, payload=aligned.payload_hex, bit_agreement=round(best.agreement, 4))
                return answer, best.record
        return answer, None

    def registry_size(self) -> int:
        return max(1, self.registry.count_watermarked())

    def _match(self, data: bytes, c2pa, wm_match: AssetRecord | None, rgb) -> RegistryMatch | None:
        record = self.registry.by_sha256(hashlib.sha256(data).hexdigest())
        if record is not None:
            return RegistryMatch(record, "sha256")
        asset_id = (c2pa.generation or {}).get("asset_id") if c2pa.valid and c2pa.trusted else None
        if asset_id and (record := self.registry.get(asset_id)) is not None:
            return RegistryMatch(record, "c2pa")
        if wm_match is not None:
            return RegistryMatch(wm_match, "watermark")
        near = self.registry.near_duplicates(perceptual_hash(rgb), PHASH_MAX_DISTANCE, limit=1)
        if near:
            return RegistryMatch(near[0][0], "perceptual_hash", near[0][1])
        return None


def _registry_json(match: RegistryMatch | None) -> dict:
    if match is None:
        return {"match": False, "asset_id": None, "created_at": None, "model_id": None, "policy_version": None,
                "method": None, "phash_distance": None}
    r = match.record
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)  # SQLite drops tz
    return {"match": True, "asset_id": r.asset_id, "created_at": created.isoformat(), "model_id": r.model_id,
            "policy_version": r.policy_version, "method": match.method, "phash_distance": match.phash_distance}
