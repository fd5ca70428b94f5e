"""The output gate: `images` → `image-verdicts`; the strictest verdict over a request's images wins."""
from __future__ import annotations

import io
from typing import Sequence

from PIL import Image

from provenance.store import BlobStore
from schemas import Event, ImageVerdict
from schemas.events import ImageVerdictPayload
from streams.base import Source, Stage, in_thread, warm_up
from streams.convert import fail_closed, gate_result, image_gate_config, worst

GATE_TIMEOUT_S = 60.0


class OutputGateStage(Stage):
    name = "output-gate"
    sources = ("images",)
    writes = ("image-verdicts",)
    batch_size = 8

    async def start(self) -> None:
        from safety.gates import load_image_gate

        self.blobs = BlobStore(self.settings.blob_dir)
        self.gate = self.deps.get("gate") or await in_thread(load_image_gate, None, image_gate_config(self.settings))
        await warm_up(self.name, self.gate, [Image.new("RGB", (256, 256), "white")])

    def _load(self, sha256: str) -> Image.Image:
        return Image.open(io.BytesIO(self.blobs.get(sha256))).convert("RGB")

    async def _screen(self, event: Event) -> list:
        images = [self._load(ref.sha256) for ref in event.payload.images]
        verdicts = await in_thread(self.gate.screen, images, event.payload.spec.region, timeout=GATE_TIMEOUT_S)
        if len(verdicts) != len(images):
            raise ValueError(f"gate returned {len(verdicts)} verdicts for {len(images)} images")
        return [gate_result(v) for v in verdicts]

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        out = []
        for event, _ in items:
            try:
                verdict = worst(await self._screen(event))
            except Exception as exc:  # fail closed: unreadable images, gate errors and timeouts go to review
                verdict = fail_closed(f"image gate error: {exc.__class__.__name__}")
            p = event.payload
            out.append([event.follow(ImageVerdict, ImageVerdictPayload(spec=p.spec, model_id=p.model_id,
                                                                       images=p.images, verdict=verdict),
                                     self.producer)])
        return out
