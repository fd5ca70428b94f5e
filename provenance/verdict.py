"""The verdict rules: which evidence may claim authorship (`verified`), which only similarity, and how it is phrased."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from provenance.fingerprint import PDQ_MIN_QUALITY, min_distance
from provenance.registry import AssetRecord

VERIFIED, SIMILAR, COPY_SUSPECTED, UNKNOWN = "verified", "similar", "copy_suspected", "unknown"


@dataclass(frozen=True)
class Thresholds:
    """PDQ distances (of 256 bits) that bound a claim: `match` for verified, `similar` for a watermark's candidate."""

    match: int
    similar: int


@dataclass(frozen=True)
class Verdict:
    verdict: str
    method: str | None  # sha256 | c2pa | watermark | fingerprint
    record: AssetRecord | None = None
    asset_from_manifest: dict | None = None  # a trusted manifest's own facts when the registry lacks the asset
    distance: int | None = None  # PDQ distance between the image and the named asset

    def summary(self, thresholds: Thresholds) -> str:
        """One sentence a person can read; `similar` is never phrased as authorship."""
        name = self.record.asset_id if self.record else (self.asset_from_manifest or {}).get("asset_id", "?")
        if self.verdict == VERIFIED:
            return f"Hallmark published this image as asset {name} (evidence: {self.method})."
        if self.verdict == SIMILAR and self.method == "watermark":
            return (f"The image carries the watermark of asset {name} and resembles it (PDQ distance {self.distance}"
                    f" ≤ {thresholds.similar}, to the asset or an edited view of it) without matching it closely "
                    f"enough: an edited version, perhaps; not a claim that Hallmark made this image.")
        if self.verdict == SIMILAR:
            return (f"The image is visually similar to asset {name} (PDQ distance {self.distance} ≤ "
                    f"{thresholds.match}); similarity is not a claim that Hallmark made this image.")
        if self.verdict == COPY_SUSPECTED:
            return (f"The image carries the watermark of asset {name}, but its content is different (PDQ distance "
                    f"{self.distance} > {thresholds.similar}): the watermark looks copied onto another image.")
        return "No evidence that Hallmark made this image."


def by_watermark(record: AssetRecord, variants: list[str], quality: int, thresholds: Thresholds,
                 search: Callable[[], int | None] | None = None) -> Verdict:
    """A keyed watermark names `record`; the PDQ distance of the image (its dihedral `variants`, of `quality`) to
    that asset's fingerprint decides what it proves: verified within `match` when both hashes are of good quality;
    similar within `similar` of the plain fingerprint or a stored view (crops, small rotations); beyond, the
    watermark is on other content. Flat images give low-quality PDQ hashes that collide, so they stop at similar.
    `search` (the crop search over the asset's stored pixels) is asked only when the stored views are too far."""
    plain = min_distance(variants, record.pdq)
    if plain <= thresholds.match and min(quality, record.pdq_quality) >= PDQ_MIN_QUALITY:
        return Verdict(VERIFIED, "watermark", record, distance=plain)
    nearest = min([plain, *(min_distance(variants, v) for v in record.pdq_views.split())])
    if nearest > thresholds.similar and search is not None:
        nearest = min(nearest, search() or nearest)
    if nearest <= thresholds.similar:
        return Verdict(SIMILAR, "watermark", record, distance=nearest)
    return Verdict(COPY_SUSPECTED, "watermark", record, distance=nearest)


def asset_json(verdict: Verdict) -> dict | None:
    """The named asset's public facts (never the tenant or requester: the registry does not hold them)."""
    r = verdict.record
    if r is None:
        facts = verdict.asset_from_manifest
        return None if not facts else {"asset_id": facts.get("asset_id"), "created_at": None,
                                        "model_id": facts.get("model_id"),
                                        "policy_version": facts.get("policy_version")}
    created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=dt.timezone.utc)  # SQLite drops tz
    return {"asset_id": r.asset_id, "created_at": created.isoformat(), "model_id": r.model_id,
            "policy_version": r.policy_version}
