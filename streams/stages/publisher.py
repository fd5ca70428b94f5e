"""The publisher: allowed image verdicts → watermark + C2PA + store → `assets`, then the `published` outcome.

Re-derive, don't trust: it signs only images the generation stage produced for that very request (their sha256s
on `images`), with the model that produced them, and only for a request without a terminal outcome. Anything
else is refused with a reason code in `dlq` (and so in the audit); nothing is signed.
"""
from __future__ import annotations

import uuid

from schemas import AssetPublished, Event, Outcome, OutcomeStatus
from schemas.events import AssetPublishedPayload, Decision, Fingerprint, ImageRef
from streams.base import Source, Stage, TopicIndex, dead_letter, in_thread, outcome

ASSET_NAMESPACE = uuid.UUID("2f0b9a4e-8c61-4d3a-b7f5-1e9d0c6a5b42")


def asset_id(request_id: str, index: int) -> str:
    """Deterministic, so a replay republishes the same asset (the publisher is idempotent per asset id)."""
    return str(uuid.uuid5(ASSET_NAMESPACE, f"{request_id}/{index}"))


class PublisherStage(Stage):
    name = "publisher"
    sources = ("image-verdicts", "outcomes")  # outcomes: which requests are final, as other stages decide them
    reads = ("images",)
    writes = ("assets",)

    async def start(self) -> None:
        from provenance.publisher import ProvenanceConfig, Publisher

        self.generated: dict[str, dict[str, str]] = {}  # request id → sha256 → the model that made it
        self.images = TopicIndex("images", lambda e, _r: self.generated.setdefault(e.request_id, {}).update(
            {ref.sha256: e.payload.model_id for ref in e.payload.images}))

        self.publisher = self.deps.get("publisher") or await in_thread(Publisher,
                                                                         ProvenanceConfig.from_settings(self.settings))

    async def refusal(self, event: Event) -> str | None:
        """The reason code when this allow must not be published, else None."""
        wanted = {ref.sha256 for ref in event.payload.images}
        if not wanted or not wanted <= set(self.generated.get(event.request_id, {})):
            await self.images.catch_up(self.log)
        await self.outcomes.catch_up(self.log)  # outcomes other stages sent that this one has not consumed yet
        if self.terminal(event.request_id):
            return "request_already_final"
        made = self.generated.get(event.request_id, {})
        if not wanted or not wanted <= set(made):
            return "image_not_generated_for_request"
        if {made[sha] for sha in wanted} != {event.payload.model_id}:
            return "model_differs_from_generation"
        return None

    async def handle(self, event: Event, source: Source) -> list[Event]:
        p = event.payload
        if isinstance(event, Outcome):
            self.outcomes.claim_event(event)
            return []
        if p.verdict.decision != Decision.ALLOW or self.terminal(event.request_id) == OutcomeStatus.PUBLISHED.value:
            return []  # not for publishing, or published already (a redelivery after a crash): nothing new
        refused = await self.refusal(event)
        if refused:
            return [dead_letter(self.name, source, refused)]
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
