"""Ingress validation and the prompt gate: `requests` → `prompt-verdicts` (poison → `dlq`)."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from hallmark.tenants import TenantRegistry
from schemas import Event, OutcomeStatus, PromptVerdict
from schemas.events import GateResult, GenerationSpec, PromptVerdictPayload
from streams.base import Source, Stage, in_thread, outcome, warm_up
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

        self.gate = self.deps.get("gate") or await in_thread(load_prompt_gate)
        self.tenants = self.deps.get("tenants") or TenantRegistry.load(self.settings.tenants_file)
        await warm_up(self.name, self.gate, ["a red circle"])

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        """Screen prompt and negative prompt of every request (the worst verdict counts) under its tenant's
        region: the region comes from the tenant registry, never from the request body."""
        specs: dict[int, GenerationSpec] = {}
        texts: dict[str, list[tuple[int, str]]] = defaultdict(list)  # region → (item, text)
        for i, (event, _) in enumerate(items):
            tenant = self.tenants.get(event.tenant_id)
            if tenant is None:
                continue
            specs[i] = event.payload.spec.model_copy(update={"region": tenant.region})
            texts[tenant.region] += [(i, t) for t in (specs[i].prompt, specs[i].negative_prompt) if t.strip()]
        found: dict[int, list[GateResult]] = defaultdict(list)
        for region, pairs in texts.items():
            for (i, _), verdict in zip(pairs, await self._screen([t for _, t in pairs], region)):
                found[i].append(verdict)
        return [[event.follow(PromptVerdict, PromptVerdictPayload(spec=specs[i], verdict=worst(found[i])),
                              self.producer)] if i in specs else
                [outcome(event, self.producer, OutcomeStatus.FAILED, "unknown_tenant")]
                for i, (event, _) in enumerate(items)]

    async def _screen(self, texts: list[str], region: str) -> list[GateResult]:
        try:
            verdicts = [gate_result(v) for v in await in_thread(self.gate.screen, texts, region,
                                                                timeout=GATE_TIMEOUT_S)]
            if len(verdicts) != len(texts):
                raise ValueError("the gate answered a different number of verdicts")
            return verdicts
        except Exception as exc:  # fail closed: errors and timeouts go to human review
            return [fail_closed(f"prompt gate error: {exc.__class__.__name__}")] * len(texts)
