"""Verification: one verdict (verified | similar | copy_suspected | unknown) with evidence, never the requester."""
from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

from provenance import watermark
from provenance.c2pa_manifest import C2paResult, ManifestReader
from provenance.fingerprint import PDQ_ALG, Pdq, crop_search, pdq_dihedral
from provenance.images import ImageLimits, decode
from provenance.publisher import ProvenanceConfig
from provenance.registry import AssetRecord, AssetRegistry
from provenance.store import BlobStore
from provenance.verdict import SIMILAR, UNKNOWN, VERIFIED, Thresholds, Verdict, asset_json, by_watermark

MAX_CROP = 0.3  # the crop search covers images cut to 70% of a side (a 25% crop is 75%)


def chance_of_agreement(agreement: float, bits: int = watermark.PAYLOAD_BITS) -> float:
    """P(`bits` random bits agree with a fixed payload at least this well): the binomial tail."""
    k = round(agreement * bits)
    return sum(math.comb(bits, i) for i in range(k, bits + 1)) / 2**bits


@dataclass(frozen=True)
class WatermarkFinding:
    """A watermark reading that names a registered asset beyond chance, under our key."""

    record: AssetRecord
    bit_agreement: float
    key_id: str


class Verifier:
    """Answers POST /v1/verify and `hallmark verify`; thread-safe, build once."""

    def __init__(self, config: ProvenanceConfig, registry: AssetRegistry | None = None):
        self.config = config
        self.limits = ImageLimits(config.max_upload_bytes, config.max_pixels)
        self.registry = registry or AssetRegistry(config.db_url)
        self.reader = ManifestReader(config.signing_material().trust_anchors)
        self.key = config.watermark_key()
        self.thresholds = Thresholds(config.pdq_match_distance, config.pdq_similar_distance)
        self.blobs = BlobStore(config.blob_dir)

    def verify(self, data: bytes) -> dict:
        """The verification answer as a JSON-ready dict; raises images.ImageError for input we refuse."""
        image = decode(data, self.limits)
        c2pa = self.reader.read(data, image.mime)
        hashes = pdq_dihedral(image.rgb)
        found = self.find_watermark(image.rgb)
        verdict = self.decide(hashlib.sha256(data).hexdigest(), c2pa, found, hashes, image.rgb.shape[:2])
        return self.answer(verdict, c2pa, found, hashes[0].quality)

    def decide(self, sha256: str, c2pa: C2paResult, found: WatermarkFinding | None, hashes: list[Pdq],
               size: tuple[int, int]) -> Verdict:
        """The strongest evidence wins: exact file, our signed manifest, keyed watermark + PDQ, PDQ alone."""
        record = self.registry.by_sha256(sha256)
        if record is not None:
            return Verdict(VERIFIED, "sha256", record)
        if c2pa.valid and c2pa.trusted:
            asset_id = (c2pa.generation or {}).get("asset_id")
            record = self.registry.get(asset_id) if asset_id else None
            return Verdict(VERIFIED, "c2pa", record, asset_from_manifest=c2pa.generation)
        variants = [h.value for h in hashes]
        if found is not None and found.record.pdq:
            return self.watermark_verdict(found.record, hashes, size)
        near = self.registry.near_duplicates(variants, self.thresholds.match, limit=1)
        if near:
            return Verdict(SIMILAR, "fingerprint", near[0][0], distance=near[0][1])
        return Verdict(UNKNOWN, None)

    def watermark_verdict(self, record: AssetRecord, hashes: list[Pdq], size: tuple[int, int]) -> Verdict:
        """What a keyed watermark naming `record` proves about an image with these hashes and (height, width)."""
        variants = [h.value for h in hashes]

        def search() -> int | None:
            original = self._published_pixels(record.sha256)
            return None if original is None else crop_search(original, size, variants)

        return by_watermark(record, variants, hashes[0].quality, self.thresholds, search)

    def _published_pixels(self, sha256: str):
        for suffix in (".png", ".jpg"):
            path = self.blobs.path(sha256, suffix)
            if path.is_file():
                return decode(path.read_bytes(), self.limits).rgb
        return None

    def find_watermark(self, rgb) -> WatermarkFinding | None:
        """Read the watermark as published, then (if that finds nothing) as cropped; look the bits up in the registry.

        A reading counts when the chance that an unmarked image matches anything in the registry this well is under
        `false_match_rate`, and the asset's payload is the HMAC of its id under our key (so a forged registry row
        cannot vouch for itself)."""
        for read, tries in ((watermark.read, 1), (self._read_cropped, watermark.PAYLOAD_BITS)):
            reading = read(rgb)
            if reading is None:
                continue
            best = self.registry.nearest_watermark(reading)
            if best is None:
                return None
            # Bonferroni over registry and rotations: a cropped reading is known only up to one of 64 rotations.
            chance = chance_of_agreement(best.agreement, int(reading.known_mask.sum()))
            if self.registry_size() * tries * chance <= self.config.false_match_rate and self._ours(best.record):
                return WatermarkFinding(best.record, round(best.agreement, 4), self.key.key_id)
        return None

    @staticmethod
    def _read_cropped(rgb):
        return watermark.read_cropped(rgb, max_crop=MAX_CROP)

    def _ours(self, record: AssetRecord) -> bool:
        expected = watermark.payload_for(record.asset_id, self.key.secret).hex()
        return hmac.compare_digest(expected, record.watermark_payload)

    def registry_size(self) -> int:
        return max(1, self.registry.watermarked())

    def answer(self, verdict: Verdict, c2pa: C2paResult, found: WatermarkFinding | None, quality: int) -> dict:
        """The public JSON: verdict, a sentence, the named asset and the evidence (no raw watermark bits)."""
        mark = {"detected": found is not None, "alg": watermark.SOFT_ALG}
        if found is not None:
            mark.update(asset_id=found.record.asset_id, key_id=found.key_id, bit_agreement=found.bit_agreement)
        fingerprint = {"alg": PDQ_ALG, "quality": quality, "distance": verdict.distance,
                       "match_threshold": self.thresholds.match, "similar_threshold": self.thresholds.similar}
        return {"verdict": verdict.verdict, "method": verdict.method, "summary": verdict.summary(self.thresholds),
                "asset": asset_json(verdict),
                "evidence": {"sha256_match": verdict.method == "sha256", "c2pa": c2pa.public(), "watermark": mark,
                             "fingerprint": fingerprint}}
