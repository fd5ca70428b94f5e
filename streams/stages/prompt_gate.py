"""Ingress validation and the prompt gate: `requests` → `prompt-verdicts` (poison → `dlq`)."""
from __future__ import annotations

import io
from collections import defaultdict
from typing import Sequence

from PIL import Image

from hallmark.sealing import open_spec, reason_code
from hallmark.tenants import open_registry, tenant_keys
from provenance.store import BlobStore
from safety.gates import load_image_gate
from schemas import Event, OutcomeStatus, PromptVerdict
from schemas.events import GateResult, GenerationSpec, PromptVerdictPayload
from streams.base import Source, Stage, dead_letter, in_thread, outcome, warm_up
from streams.convert import fail_closed, gate_result, image_gate_config, worst
from streams.uploads import UploadStore

GATE_TIMEOUT_S = 20.0
INPUT_GATE_TIMEOUT_S = 60.0


class PromptGateStage(Stage):
    """Every request is parsed strictly by the runner (that is the ingress validation), then screened in batches."""

    name = "prompt-gate"
    sources = ("requests",)  # and every tenant's `requests.<tenant>`
    writes = ("prompt-verdicts",)
    batch_size = 32

    async def start(self) -> None:
        from safety.gates import load_prompt_gate

        from safety.embedding import EncoderConfig
        from safety.gates import PromptGateConfig

        config = PromptGateConfig(encoder=EncoderConfig(cache_dir=str(self.settings.cache_dir)))
        self.gate = self.deps.get("gate") or await in_thread(load_prompt_gate, None, config)
        self.tenants = self.deps.get("tenants") or open_registry(self.settings)
        self.keys = self.deps.get("keys") or tenant_keys(self.settings)
        self.uploads = UploadStore(BlobStore(self.settings.blob_dir))
        self.image_gate = self.deps.get("image_gate")  # loaded on the first request with an input image
        await warm_up(self.name, self.gate, ["a red circle"])

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        """Open each request's sealed prompts in memory and screen prompt and negative prompt (the worst verdict
        counts) under its tenant's region, which comes from the tenant registry, never from the request body."""
        specs: dict[int, GenerationSpec] = {}
        refused: dict[int, list[Event]] = {}
        texts: dict[str, list[tuple[int, str]]] = defaultdict(list)  # region → (item, text)
        for i, (event, source) in enumerate(items):
            tenant = self.tenants.get(event.tenant_id)
            if tenant is None or tenant.shredded:
                refused[i] = [outcome(event, self.producer, OutcomeStatus.FAILED,
                                      "unknown_tenant" if tenant is None else "tenant_shredded")]
                continue
            try:
                opened = open_spec(event.payload.spec, self.keys, event.tenant_id, event.request_id,
                                   allow_clear=not self.settings.prompt_sealing)
            except Exception as exc:  # a clear prompt on the bus, a shredded key, a ciphertext not for this request
                code = reason_code(exc)
                refused[i] = [dead_letter(self.name, source, code),
                              outcome(event, self.producer, OutcomeStatus.FAILED, code)]
                continue
            specs[i] = event.payload.spec.model_copy(update={"region": tenant.region})
            texts[tenant.region] += [(i, t) for t in opened if t.strip()]
        found: dict[int, list[GateResult]] = defaultdict(list)
        for region, pairs in texts.items():
            for (i, _), verdict in zip(pairs, await self._screen([t for _, t in pairs], region)):
                found[i].append(verdict)
        inputs: dict[int, GateResult | None] = {}
        for i in specs:
            try:
                inputs[i] = await self._screen_inputs(items[i][0], specs[i].region)
            except (OSError, ValueError):  # not among the tenant's uploads (or gone with a shredded tenant)
                refused[i] = [outcome(items[i][0], self.producer, OutcomeStatus.FAILED, "input_image_missing")]
        return [refused[i] if i in refused else
                [event.follow(PromptVerdict, PromptVerdictPayload(spec=specs[i], verdict=worst(found[i]),
                                                                  input_verdict=inputs[i]), self.producer)]
                for i, (event, _) in enumerate(items)]

    async def _screen_inputs(self, event: Event, region: str) -> GateResult | None:
        """The image checks (NSFW, faces, hash banks) of a request's init image and mask, before any generation."""
        spec = event.payload.spec
        shas = [sha for sha in (spec.init_image, spec.mask) if sha]
        if not shas:
            return None
        images = [Image.open(io.BytesIO(self.uploads.get(event.tenant_id, sha))).convert("RGB") for sha in shas]
        try:
            if self.image_gate is None:
                self.image_gate = await in_thread(load_image_gate, None, image_gate_config(self.settings))
            return worst([gate_result(v) for v in await in_thread(self.image_gate.screen, images, region,
                                                                  timeout=INPUT_GATE_TIMEOUT_S)])
        except Exception as exc:  # fail closed
            return fail_closed(f"input image gate error: {exc.__class__.__name__}")

    async def _screen(self, texts: list[str], region: str) -> list[GateResult]:
        try:
            verdicts = [gate_result(v) for v in await in_thread(self.gate.screen, texts, region,
                                                                timeout=GATE_TIMEOUT_S)]
            if len(verdicts) != len(texts):
                raise ValueError("the gate answered a different number of verdicts")
            return verdicts
        except Exception as exc:  # fail closed: errors and timeouts go to human review
            return [fail_closed(f"prompt gate error: {exc.__class__.__name__}")] * len(texts)
