"""Ingress validation and the prompt gate: `requests` → `prompt-verdicts` (poison → `dlq`)."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from hallmark.sealing import open_spec, reason_code
from hallmark.tenants import open_registry, tenant_keys
from schemas import Event, OutcomeStatus, PromptVerdict
from schemas.events import GateResult, GenerationSpec, PromptVerdictPayload
from streams.base import Source, Stage, dead_letter, in_thread, outcome, warm_up
from streams.convert import fail_closed, gate_result, worst

GATE_TIMEOUT_S = 20.0


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
        return [refused[i] if i in refused else
                [event.follow(PromptVerdict, PromptVerdictPayload(spec=specs[i], verdict=worst(found[i])),
                              self.producer)] for i, (event, _) in enumerate(items)]

    async def _screen(self, texts: list[str], region: str) -> list[GateResult]:
        try:
            verdicts = [gate_result(v) for v in await in_thread(self.gate.screen, texts, region,
                                                                timeout=GATE_TIMEOUT_S)]
            if len(verdicts) != len(texts):
                raise ValueError("the gate answered a different number of verdicts")
            return verdicts
        except Exception as exc:  # fail closed: errors and timeouts go to human review
            return [fail_closed(f"prompt gate error: {exc.__class__.__name__}")] * len(texts)
