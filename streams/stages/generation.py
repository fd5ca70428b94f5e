"""The generation consumer: batches compatible `jobs`, runs the diffusion runtime, stores PNGs → `images`."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

from generator.api import GenerationRequest
from provenance.store import BlobStore
from schemas import Event, ImageGenerated, OutcomeStatus
from schemas.events import ImageGeneratedPayload, ImageRef
from streams.base import Source, Stage, in_thread, outcome

MAX_IMAGES_PER_CALL = 8
TIMEOUT_BASE_S, TIMEOUT_PER_IMAGE_STEP_S = 240.0, 1.0  # generous: a shared CPU can be slow; a hang still ends


def requests_for(event: Event) -> list[GenerationRequest]:
    """One job asks for n images: seeds seed, seed+1, …"""
    s = event.payload.spec
    return [GenerationRequest(prompt=s.prompt, negative_prompt=s.negative_prompt, seed=s.seed + i, steps=s.steps,
                              guidance=s.guidance, sampler=s.sampler, width=s.width, height=s.height)
            for i in range(s.n)]


class GenerationStage(Stage):
    name = "generation"
    sources = ("jobs",)
    writes = ("images",)
    batch_size = 8
    batch_within_s = 0.3

    async def start(self) -> None:
        from generator.runtime.engine import validate

        self.validate = validate
        self.blobs = BlobStore(self.settings.blob_dir)
        self.generator, self.load_error = None, ""
        await self._load()

    async def _load(self) -> None:
        """Load the model; on failure jobs end `failed` (no hang) and the next batch tries again."""
        from generator.runtime import Generator

        try:
            self.generator = await in_thread(Generator.load, self.settings.model_dir or None)
        except Exception as exc:
            self.load_error = f"{exc.__class__.__name__}: {str(exc)[:200]}"

    async def _generate(self, reqs: list[GenerationRequest]):
        limit = TIMEOUT_BASE_S + TIMEOUT_PER_IMAGE_STEP_S * sum(r.steps for r in reqs)
        return await in_thread(self.generator.generate, reqs, timeout=limit)

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        results: dict[int, list] = defaultdict(list)
        failures: dict[int, str] = {}
        groups: dict[tuple, list[tuple[int, GenerationRequest]]] = defaultdict(list)
        if self.generator is None:
            await self._load()
        for i, (event, _) in enumerate(items):
            if self.generator is None:
                failures[i] = f"generator unavailable: {self.load_error}"
                continue
            reqs = requests_for(event)
            try:  # one unservable job must not fail the batch it shares
                for req in reqs:
                    self.validate(req, self.generator.model)
            except ValueError as exc:
                failures[i] = f"bad generation request: {str(exc)[:200]}"
                continue
            for req in reqs:
                groups[req.batch_key()].append((i, req))
        elapsed: dict[int, float] = defaultdict(float)
        for members in groups.values():
            for start in range(0, len(members), MAX_IMAGES_PER_CALL):
                chunk = members[start:start + MAX_IMAGES_PER_CALL]
                t0 = time.perf_counter()
                try:
                    images = await self._generate([req for _, req in chunk])
                except Exception as exc:
                    for i, _ in chunk:
                        failures[i] = f"generation failed: {exc.__class__.__name__}: {str(exc)[:200]}"
                    continue
                ms = (time.perf_counter() - t0) * 1000
                for (i, req), image in zip(chunk, images):
                    results[i].append((req, image))
                    elapsed[i] += ms / len(chunk)
        out = []
        for i, (event, _) in enumerate(items):
            if i in failures:
                out.append([outcome(event, self.producer, OutcomeStatus.FAILED, failures[i])])
                continue
            refs, model_id = [], ""
            for index, (req, image) in enumerate(results[i]):
                sha = self.blobs.put(image.png_bytes(include_prompt=False))  # no prompt text at rest
                refs.append(ImageRef(sha256=sha, index=index, width=image.image.width,
                                     height=image.image.height, seed=req.seed))
                model_id = image.model_id
            payload = ImageGeneratedPayload(spec=event.payload.spec, policy_version=event.payload.policy_version,
                                            model_id=model_id, images=refs, generation_ms=elapsed[i])
            out.append([event.follow(ImageGenerated, payload, self.producer)])
        return out
