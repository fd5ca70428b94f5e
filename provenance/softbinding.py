"""The C2PA soft-binding resolution API: find a stripped image's manifest by watermark or PDQ fingerprint."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from provenance import watermark
from provenance.fingerprint import PDQ_BITS, PDQ_SOFT_ALG, pdq_dihedral
from provenance.images import ImageError, decode
from provenance.registry import AssetRecord
from provenance.store import ManifestArchive
from provenance.verdict import COPY_SUSPECTED
from provenance.verify import Verifier

DEFAULT_MAX_RESULTS = 10
MAX_RESULTS = 100


@dataclass(frozen=True)
class Match:
    manifest_id: str
    similarity: int  # 0..100, 100 = identical binding

    def json(self) -> dict:
        return {"manifestId": self.manifest_id, "similarityScore": self.similarity}


def _score(distance: int) -> int:
    return max(0, round(100 * (1 - distance / PDQ_BITS)))


def max_results(value: str | None) -> int:
    """The `maxResults` query parameter, checked (400 with a reason when it is not a positive integer)."""
    if value is None or value == "":
        return DEFAULT_MAX_RESULTS
    if not value.isdigit() or int(value) < 1:
        raise ImageError(400, "maxResults must be a positive integer")
    return min(int(value), MAX_RESULTS)


class SoftBindingService:
    """Resolution over the asset registry: exact keyed watermark payloads and PDQ within the match threshold."""

    def __init__(self, verifier: Verifier, manifests: ManifestArchive):
        self.verifier = verifier
        self.registry = verifier.registry
        self.manifests = manifests

    @staticmethod
    def supported_algorithms() -> dict:
        return {"watermarks": [{"alg": watermark.SOFT_ALG}], "fingerprints": [{"alg": PDQ_SOFT_ALG}]}

    def by_binding(self, alg, value, limit: int) -> dict:
        """Matches for one soft-binding value (base64, in the algorithm's own format)."""
        if not isinstance(alg, str) or not isinstance(value, str) or not alg or not value:
            raise ImageError(400, "both `alg` and `value` are required, as strings")
        raw = _b64(value)
        if alg == watermark.SOFT_ALG:
            if len(raw) * 8 != watermark.PAYLOAD_BITS:
                raise ImageError(400, f"a {alg} value is {watermark.PAYLOAD_BITS // 8} bytes")
            record = self.registry.by_watermark(raw.hex())
            return _result([Match(record.manifest_label, 100)] if record and record.manifest_label else [])
        if alg == PDQ_SOFT_ALG:
            if len(raw) * 8 != PDQ_BITS:
                raise ImageError(400, f"a {alg} value is {PDQ_BITS // 8} bytes")
            return _result(self._by_pdq([raw.hex()], limit))
        raise ImageError(400, f"unsupported algorithm {alg!r}; see /services/supportedAlgorithms")

    def by_content(self, data: bytes, alg: str | None, limit: int) -> dict:
        """Matches for an image: its watermark (only where the content is the asset's) and/or its PDQ."""
        if alg not in (None, "", watermark.SOFT_ALG, PDQ_SOFT_ALG):
            raise ImageError(400, f"unsupported algorithm {alg!r}; see /services/supportedAlgorithms")
        image = decode(data, self.verifier.limits)
        hashes = pdq_dihedral(image.rgb)
        variants = [h.value for h in hashes]
        matches: list[Match] = []
        if alg in (None, "", watermark.SOFT_ALG):
            found = self.verifier.find_watermark(image.rgb)
            if found is not None and found.record.pdq and found.record.manifest_label:
                verdict = self.verifier.watermark_verdict(found.record, hashes, image.rgb.shape[:2])
                if verdict.verdict != COPY_SUSPECTED:
                    matches.append(Match(found.record.manifest_label, _score(verdict.distance or 0)))
        if alg in (None, "", PDQ_SOFT_ALG):
            matches += self._by_pdq(variants, limit)
        return _result(_unique(matches)[:limit])

    def manifest(self, manifest_id: str) -> bytes:
        """The manifest store (`application/c2pa`) of one of our registered manifests."""
        if not manifest_id.startswith("urn:"):
            raise ImageError(400, "a manifest id is a URN such as urn:c2pa:…")
        record = self.registry.by_manifest_label(manifest_id)
        store = self.manifests.get(manifest_id) if record is not None else None
        if store is None:
            raise ImageError(404, f"no manifest {manifest_id}")
        return store

    def _by_pdq(self, variants: list[str], limit: int) -> list[Match]:
        hits: list[tuple[AssetRecord, int]] = self.registry.near_duplicates(
            variants, self.verifier.thresholds.match, limit)
        return [Match(r.manifest_label, _score(d)) for r, d in hits if r.manifest_label]


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(400, "value is not valid base64") from None


def _unique(matches: list[Match]) -> list[Match]:
    best: dict[str, Match] = {}
    for m in matches:
        if m.manifest_id not in best or m.similarity > best[m.manifest_id].similarity:
            best[m.manifest_id] = m
    return sorted(best.values(), key=lambda m: -m.similarity)


def _result(matches: list[Match]) -> dict:
    return {"matches": [m.json() for m in matches]}
