"""Human decisions resume the flow: approve → onward from where it stopped, reject → `outcomes` (rejected).

Re-derive, don't trust: a decision only names a task. What resumes (spec, images, model, policy version) comes
from the task event the router wrote on `review-tasks`; a decision for a task that does not exist, or one whose
copy of the task differs from it, is refused with a reason code in `dlq` (and so in the audit), and nothing moves.
"""
from __future__ import annotations

from review.decisions import DecisionLog, LoggedDecision
from schemas import Event, ImageVerdict, JobCreated, OutcomeStatus
from schemas.events import Decision, GateResult, ImageVerdictPayload, JobCreatedPayload
from streams.base import Source, Stage, TopicIndex, dead_letter, outcome


def logged(event: Event, partition: int, offset: int) -> LoggedDecision:
    p = event.payload
    return LoggedDecision(str(p.task_id), str(event.event_id), p.decision, partition, offset)


def mismatch(decision: Event, task: Event) -> str | None:
    """The reason code when a decision does not answer this task as the task stands, else None."""
    d, t = decision.payload, task.payload
    if (decision.request_id, decision.tenant_id) != (task.request_id, task.tenant_id) or d.gate != t.gate:
        return "decision_not_for_this_task"
    if d.spec != t.spec or d.model_id != t.model_id or d.images != t.images:
        return "decision_differs_from_task"
    return None


class ReviewStage(Stage):
    """Acts on the decision that counts for each task (`review.decisions`: the first final one in log order)."""

    name = "review"
    sources = ("review-decisions",)
    reads = ("review-tasks",)
    writes = ("jobs", "image-verdicts")

    async def start(self) -> None:
        self.tasks: dict[str, Event] = {}
        self.task_index = TopicIndex("review-tasks", lambda e, _r: self.tasks.setdefault(str(e.payload.task_id), e))
        self.decisions = DecisionLog()
        await TopicIndex("review-decisions", lambda e, r: self.decisions.offer(logged(e, r.partition, r.offset))
                         ).catch_up(self.log)

    async def handle(self, event: Event, source: Source) -> list[Event]:
        p = event.payload
        if p.decision not in ("approve", "reject"):
            return []  # an escalation: the task stays open for a senior reviewer; the console tracks it
        task_id = str(p.task_id)
        if task_id not in self.tasks:
            await self.task_index.catch_up(self.log)
        task = self.tasks.get(task_id)
        refused = "unknown_task" if task is None else mismatch(event, task)
        if refused:
            return [dead_letter(self.name, source, refused)]
        if not self.decisions.offer(logged(event, source.partition, source.offset)):
            return []  # a later decision on a decided task
        t = task.payload
        if p.decision == "reject":
            return [outcome(event, self.producer, OutcomeStatus.REJECTED, f"{t.gate} rejected by a reviewer")]
        policy_version = t.verdict.policy_version
        if t.gate == "prompt":
            return [event.follow(JobCreated, JobCreatedPayload(spec=t.spec, policy_version=policy_version,
                                                               reviewed=True), self.producer)]
        if not t.images or not t.model_id:
            return [outcome(event, self.producer, OutcomeStatus.FAILED, "image approval without images or model")]
        verdict = GateResult(decision=Decision.ALLOW, stage="human-review", reasons=["approved by a reviewer"],
                             policy_id="human-review", policy_version=policy_version)
        return [event.follow(ImageVerdict, ImageVerdictPayload(spec=t.spec, model_id=t.model_id, images=t.images,
                                                               verdict=verdict), self.producer)]
