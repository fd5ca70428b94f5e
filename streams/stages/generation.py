"""The generation consumer: runs `jobs` through the step-level-batching engine, stores PNGs → `images`.

Each job asks for n images (seeds seed, seed+1, …). One engine, stepped by its own thread (ServingLoop), serves
every batch in the stage: up to `concurrency` Kafka batches are in at once, so a job that arrives while others are
generating joins the running batch at the next step boundary, and jobs with different step counts, samplers, sizes,
adapters and inputs share denoiser steps. A request the engine cannot serve fails its own job with a reason code
(`unknown_model`, `init_image_missing`, …); the rest go on.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from generator.api import GeneratedImage, GenerationRequest, Lora, RequestError
from generator.runtime import Engine, EngineConfig
from generator.runtime.loading import DEFAULT_MODEL_DIR
from generator.runtime.serving import ServingLoop
from provenance.store import BlobStore
from schemas import Event, ImageGenerated, OutcomeStatus
from schemas.events import GenerationSpec, ImageGeneratedPayload, ImageRef
from streams.base import Source, Stage, in_thread, outcome
from streams.uploads import UploadStore

EMBEDDED_MODEL = "shapes-ldm"
TIMEOUT_BASE_S, TIMEOUT_PER_IMAGE_STEP_S = 240.0, 1.0  # generous: a shared CPU can be slow; a hang still ends


def engine_config(settings) -> EngineConfig:
    """The embedded model, plus `model_dir`: one model folder or a folder of them, each under its folder name;
    LoRA adapters from `<model_dir>/loras/<name>/`."""
    models, adapters = {EMBEDDED_MODEL: DEFAULT_MODEL_DIR}, {}
    if settings.model_dir:
        root = Path(settings.model_dir)
        folders = [p for p in sorted(root.glob("*")) if (p / "model_index.json").is_file()]
        if (root / "model_index.json").is_file() or not folders:
            folders = [root]  # one model (a broken or missing one fails its requests with model_unavailable)
        models |= {p.name: p for p in folders}
        if (root / "loras").is_dir():
            adapters = {p.name: p for p in sorted((root / "loras").iterdir()) if p.is_dir()}
    return EngineConfig(models=models, default_model=EMBEDDED_MODEL, adapters=adapters,
                        device=settings.generator_device, compile=settings.generator_compile)


def requests_for(spec: GenerationSpec, prompt: str, negative: str, init_image: bytes | None,
                 mask: bytes | None) -> list[GenerationRequest]:
    """The job's n requests; prompts are passed in as clear text (opened by the caller), images as bytes."""
    loras = tuple(Lora(a.name, a.scale) for a in spec.loras)
    return [GenerationRequest(prompt=prompt, negative_prompt=negative, seed=spec.seed + i, steps=spec.steps,
                              guidance=spec.guidance, sampler=spec.sampler, width=spec.width, height=spec.height,
                              model=spec.model, strength=spec.strength, loras=loras, init_image=init_image, mask=mask)
            for i in range(spec.n)]


class GenerationStage(Stage):
    name = "generation"
    sources = ("jobs",)
    writes = ("images",)
    batch_size = 16
    batch_within_s = 0.3
    # Kafka batches in the engine at once (offsets commit up to the oldest unfinished one). The engine queues what
    # does not fit its step batch, so this only bounds what waits outside it: with 4, a burst that reached the stage
    # in five or more small batches left the fifth waiting for a whole batch to finish (bench/pipeline.py: rounds
    # with 30 s generation tails whenever the gate's batches split a burst).
    concurrency = 16

    async def start(self) -> None:
        self.blobs = BlobStore(self.settings.blob_dir)
        self.uploads = UploadStore(self.blobs)
        self.engine = self.deps.get("engine") or Engine(engine_config(self.settings))
        self.serving = ServingLoop(self.engine)
        self.keys = self.deps.get("keys")  # tenant keys for sealed prompts, loaded on first use
        try:  # load the default model before the first message; a failure shows up per request instead
            await in_thread(self.engine.model, None)
        except RequestError:
            pass

    def texts(self, event: Event) -> tuple[str, str]:
        """The job's prompt and negative prompt; sealed ones are opened here, in memory, with the tenant's key."""
        spec = event.payload.spec
        from hallmark.sealing import open_spec, reason_code
        from hallmark.tenants import tenant_keys

        if self.keys is None:
            self.keys = tenant_keys(self.settings)
        try:
            return open_spec(spec, self.keys, event.tenant_id, event.request_id, allow_clear=True)
        except Exception as exc:  # by reason code only: never the text
            raise RequestError(reason_code(exc), "the job's prompt cannot be opened") from None

    def inputs(self, event: Event) -> tuple[bytes | None, bytes | None]:
        """The job's init image and mask from its tenant's uploads; RequestError when one is gone."""
        spec, out = event.payload.spec, []
        for what in ("init_image", "mask"):
            sha = getattr(spec, what)
            try:
                out.append(None if sha is None else self.uploads.get(event.tenant_id, sha))
            except (OSError, ValueError):
                raise RequestError(f"{what}_missing", f"{what} {sha} is not among this tenant's uploads") from None
        return out[0], out[1]

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        failures: dict[int, str] = {}
        reqs: list[tuple[int, GenerationRequest]] = []
        for i, (event, _) in enumerate(items):
            try:
                reqs += [(i, r) for r in requests_for(event.payload.spec, *self.texts(event), *self.inputs(event))]
            except RequestError as exc:
                failures[i] = exc.reason()
        # Generous: a shared CPU can be slow, and other batches in the engine share its steps; a hang still ends.
        limit = TIMEOUT_BASE_S + TIMEOUT_PER_IMAGE_STEP_S * self.concurrency * sum(r.steps for _, r in reqs)
        results: dict[int, list] = defaultdict(list)
        try:
            finished = await asyncio.wait_for(self.serving.generate([r for _, r in reqs]), limit) if reqs else []
            for (i, req), done in zip(reqs, finished):
                results[i].append((req, done.result, done.ms))
        except Exception as exc:  # by class only: a message could quote a prompt
            results, failures = {}, failures | {i: f"generation_error: {exc.__class__.__name__}" for i, _ in reqs}
        return [[self._outcome(event, results.get(i, []), failures.get(i))] for i, (event, _) in enumerate(items)]

    def _outcome(self, event: Event, results: list, failure: str | None) -> Event:
        bad = next((r for _, r, _ in results if isinstance(r, RequestError)), None)
        if failure or bad is not None or not results:
            return outcome(event, self.producer, OutcomeStatus.FAILED, failure or (bad.reason() if bad else
                                                                                   "generation_error: no result"))
        refs, model_id = [], ""
        for index, (req, image, _) in enumerate(sorted(results, key=lambda x: x[0].seed)):
            assert isinstance(image, GeneratedImage)
            sha = self.blobs.put(image.png_bytes(include_prompt=False))  # no prompt text at rest
            refs.append(ImageRef(sha256=sha, index=index, width=image.image.width, height=image.image.height,
                                 seed=req.seed))
            model_id = image.model_id
        payload = ImageGeneratedPayload(spec=event.payload.spec, policy_version=event.payload.policy_version,
                                        model_id=model_id, images=refs, generation_ms=max(ms for *_, ms in results))
        return event.follow(ImageGenerated, payload, self.producer)
