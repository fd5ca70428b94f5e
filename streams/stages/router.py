"""Routing on both gates' verdicts: allow → onward, review → `review-tasks`, block → `outcomes` (rejected)."""
from __future__ import annotations

from review.tasks import review_task
from schemas import Event, JobCreated, OutcomeStatus, PromptVerdict
from schemas.events import Decision, JobCreatedPayload
from streams.base import Source, Stage, outcome
from streams.convert import worst


class RouterStage(Stage):
    name = "router"
    sources = ("prompt-verdicts", "image-verdicts")
    writes = ("jobs", "review-tasks")

    async def start(self) -> None:
        from safety.policy import load_pack

        self.review_policy = self.deps.get("review_policy") or load_pack().review  # severities and SLAs: policy data

    async def handle(self, event: Event, source: Source) -> list[Event]:
        verdict = worst([v for v in (event.payload.verdict, getattr(event.payload, "input_verdict", None)) if v])
        gate = "prompt" if event.event_type == PromptVerdict.event_type_name else "image"
        if verdict.decision == Decision.BLOCK:
            return [outcome(event, self.producer, OutcomeStatus.REJECTED, f"{gate} blocked by {verdict.stage}",
                            categories=verdict.categories)]
        if verdict.decision == Decision.REVIEW:
            if gate == "prompt":
                return [review_task(event, gate, verdict, self.producer, self.review_policy)]
            return [review_task(event, gate, verdict, self.producer, self.review_policy, event.payload.model_id,
                                event.payload.images)]
        if gate == "prompt":
            return [event.follow(JobCreated, JobCreatedPayload(spec=event.payload.spec,
                                                               policy_version=verdict.policy_version), self.producer)]
        return []  # an allowed image is the publisher's
