"""Ingress validation and the prompt gate: `requests` → `prompt-verdicts` (poison → `dlq`)."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from schemas import Event, PromptVerdict
from schemas.events import PromptVerdictPayload
from streams.base import Source, Stage, in_thread, warm_up
from streams.convert import fail_closed, gate_result

GATE_TIMEOUT_S = 20.0


class PromptGateStage(Stage):
    """Every request is parsed strictly by the runner (that is the ingress validation), then screened in batches."""

    name = "prompt-gate"
    sources = ("requests",)
    batch_size = 32

    async def start(self) -> None:
        from safety.gates import load_prompt_gate

        self.gate = self.deps.get("gate") or await in_thread(load_prompt_gate)
        await warm_up(self.name, self.gate, ["a red circle"])

    async def handle_batch(self, items: Sequence[tuple[Event, Source]]) -> list[list[Event]]:
        by_region: dict[str, list[int]] = defaultdict(list)
        for i, (event, _) in enumerate(items):
            by_region[event.payload.spec.region].append(i)
        results = {}
        for region, idx in by_region.items():
            prompts = [items[i][0].payload.spec.prompt for i in idx]
            try:
                verdicts = [gate_result(v) for v in await in_thread(self.gate.screen, prompts, region,
                                                                    timeout=GATE_TIMEOUT_S)]
                if len(verdicts) != len(prompts):
                    raise ValueError(f"gate returned {len(verdicts)} verdicts for {len(prompts)} prompts")
            except Exception as exc:  # fail closed: errors and timeouts go to human review
                verdicts = [fail_closed(f"prompt gate error: {exc.__class__.__name__}")] * len(prompts)
            results.update(zip(idx, verdicts))
        return [[event.follow(PromptVerdict, PromptVerdictPayload(spec=event.payload.spec, verdict=results[i]),
                              self.producer)] for i, (event, _) in enumerate(items)]
