"""Human decisions resume the flow: approve → onward from where it stopped, reject → `outcomes` (rejected)."""
from __future__ import annotations

from review.decisions import DecisionLog, LoggedDecision
from schemas import Event, ImageVerdict, JobCreated, OutcomeStatus, PoisonMessage, parse_event
from schemas.events import Decision, GateResult, ImageVerdictPayload, JobCreatedPayload
from streams.base import Source, Stage, outcome


def logged(event: Event, partition: int, offset: int) -> LoggedDecision:
    p = event.payload
    return LoggedDecision(str(p.task_id), str(event.event_id), p.decision, partition, offset)


class ReviewStage(Stage):
    """Acts on the decision that counts for each task (`review.decisions`: the first final one in log order)."""

    name = "review"
    sources = ("review-decisions",)

    async def start(self) -> None:
        self.decisions = DecisionLog()
        async for record in self.log.read("review-decisions"):
            try:
                self.decisions.offer(logged(parse_event(record.value), record.partition, record.offset))
            except PoisonMessage:
                continue

    async def handle(self, event: Event, source: Source) -> list[Event]:
        p = event.payload
        if not self.decisions.offer(logged(event, source.partition, source.offset)):
            return []  # an escalation (the console tracks it), or a later decision on a decided task
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
