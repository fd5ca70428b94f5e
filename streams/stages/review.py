"""Human decisions resume the flow: approve → onward from where it stopped, reject → `outcomes` (rejected)."""
from __future__ import annotations

from schemas import Event, ImageVerdict, JobCreated, OutcomeStatus
from schemas.events import Decision, GateResult, ImageVerdictPayload, JobCreatedPayload
from streams.base import FirstSeen, Source, Stage, outcome


class ReviewStage(Stage):
    """The first decision on a task wins (by log order, so a restart or replay picks the same one)."""

    name = "review"
    sources = ("review-decisions",)

    async def start(self) -> None:
        self.decided = await FirstSeen("review-decisions", key_of=lambda e: str(e.payload.task_id)).load(
            self.settings.kafka_bootstrap)

    async def handle(self, event: Event, source: Source) -> list[Event]:
        p = event.payload
        if p.decision == "escalate":
            return []  # the task stays open for a senior reviewer; the console tracks escalation
        if not self.decided.claim(str(p.task_id), str(event.event_id)):
            return []
        if p.decision == "reject":
            return [outcome(event, self.producer, OutcomeStatus.REJECTED, f"{p.gate} rejected by a reviewer")]
        if p.gate == "prompt":
            return [event.follow(JobCreated, JobCreatedPayload(spec=p.spec, policy_version=p.policy_version,
                                                               reviewed=True), self.producer)]
        if not p.images or not p.model_id:
            return [outcome(event, self.producer, OutcomeStatus.FAILED, "image approval without images or model")]
        verdict = GateResult(decision=Decision.ALLOW, stage="human-review", reasons=["approved by a reviewer"],
                             policy_id="human-review", policy_version=p.policy_version)
        return [event.follow(ImageVerdict, ImageVerdictPayload(spec=p.spec, model_id=p.model_id, images=p.images,
                                                               verdict=verdict), self.producer)]
