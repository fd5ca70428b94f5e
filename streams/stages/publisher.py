"""The publisher: allowed image verdicts → watermark + C2PA + store → `assets`, then the `published` outcome."""
from __future__ import annotations

import uuid

from schemas import AssetPublished, Event, OutcomeStatus
from schemas.events import AssetPublishedPayload, Decision, Fingerprint, ImageRef
from streams.base import Source, Stage, in_thread, outcome

ASSET_NAMESPACE = uuid.UUID("2f0b9a4e-8c61-4d3a-b7f5-1e9d0c6a5b42")


def asset_id(request_id: str, index: int) -> str:
    """Deterministic, so a replay republishes the same asset (the publisher is idempotent per asset id)."""
    return str(uuid.uuid5(ASSET_NAMESPACE, f"{request_id}/{index}"))


class PublisherStage(Stage):
    name = "publisher"
    sources = ("image-verdicts",)

    async def start(self) -> None:
        from provenance.publisher import ProvenanceConfig, Publisher

        self.publisher = self.deps.get("publisher") or await in_thread(Publisher,
                                                                         ProvenanceConfig.from_settings(self.settings))

    async def handle(self, event: Event, source: Source) -> list[Event]:
        p = event.payload
        if p.verdict.decision != Decision.ALLOW:
            return []
        from provenance.store import BlobStore

        blobs = BlobStore(self.settings.blob_dir)
        assets, refs = [], []
        for ref in p.images:
            aid = asset_id(event.request_id, ref.index)
            published = await in_thread(self.publisher.publish, blobs.get(ref.sha256), aid, p.model_id,
                                         p.verdict.policy_version)
            assets.append(event.follow(AssetPublished, AssetPublishedPayload(
                asset_id=aid, sha256=published.sha256, image_index=ref.index, model_id=p.model_id,
                policy_version=p.verdict.policy_version, watermark_payload=published.watermark_payload,
                manifest_label=published.manifest_label or None, width=published.width, height=published.height,
                fingerprints=[Fingerprint(alg=alg, value=value) for alg, value in published.fingerprints]),
                self.producer))
            refs.append(ImageRef(sha256=published.sha256, index=ref.index, width=published.width,
                                 height=published.height, seed=ref.seed))
        return assets + [outcome(event, self.producer, OutcomeStatus.PUBLISHED, "published",
                                 asset_ids=[a.payload.asset_id for a in assets], images=refs)]
