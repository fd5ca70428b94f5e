"""Which decision counts: the first final decision (approve/reject) on a task in log order, and the first escalation.

One request's events share a Kafka key, so all decisions on one task sit on one partition of `review-decisions`
and their offsets order them. The review stage (which acts) and every read model (which shows) use these
functions, so they always agree, on a live stream, after a restart and on a rebuild from offset 0. Reviewers'
clocks (`occurred_at`) never decide.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

FINAL = ("approve", "reject")
ESCALATE = "escalate"


class Logged(Protocol):
    """A decision with its place in the log of `review-decisions`."""

    decision: str
    log_partition: int
    log_offset: int


def position(d: Logged) -> tuple[int, int]:
    return d.log_partition, d.log_offset


def first_final(decisions: Iterable[Logged]) -> Logged | None:
    """The decision that counts: the earliest approve/reject in log order."""
    return min((d for d in decisions if d.decision in FINAL), key=position, default=None)


def first_escalation(decisions: Iterable[Logged]) -> Logged | None:
    return min((d for d in decisions if d.decision == ESCALATE), key=position, default=None)


@dataclass(frozen=True)
class LoggedDecision:
    task_id: str
    event_id: str
    decision: str
    log_partition: int
    log_offset: int


@dataclass
class DecisionLog:
    """The counting decision per task, for a consumer that sees the log in order (the review stage)."""

    counted: dict[str, LoggedDecision] = field(default_factory=dict)

    def offer(self, d: LoggedDecision) -> bool:
        """Fold one decision in; True when it is the one that counts for its task (again True on a redelivery)."""
        if d.decision not in FINAL:
            return False
        best = first_final([x for x in (self.counted.get(d.task_id), d) if x is not None])
        self.counted[d.task_id] = best
        return best.event_id == d.event_id
