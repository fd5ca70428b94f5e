"""Claims with leases on review tasks: who holds what, until when. Owned by the console (not a projection).

Every change is one conditional SQL UPDATE whose WHERE clause states what must still be true (free or lease
expired, not decided, not escalated for non-seniors, the caller's token); `rowcount == 1` means it won. Two
concurrent claims therefore can never both succeed, on SQLite (writes serialise) or PostgreSQL (the second UPDATE
re-checks the row after the first commits). An expired lease needs no sweeper: it simply counts as free.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import and_, exists, false, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from hallmark.db import create_tables
from review.queue import SENIOR, ReviewQueueRow


class ReviewClaimRow(SQLModel, table=True):
    __tablename__ = "review_claims"
    task_id: str = Field(primary_key=True)
    holder: str | None = Field(default=None, index=True)
    token: str | None = None  # changes with every claim: a decision must name the claim it was made under
    claimed_at: float | None = None
    lease_expires: float = 0.0
    decided: str | None = None  # approve | reject, once this console sent the decision
    decided_at: float | None = None
    escalated: bool = False
    escalated_at: float | None = None
    escalated_by: str | None = None
    version: int = 0


Q, C = ReviewQueueRow.__table__, ReviewClaimRow.__table__


class ClaimError(Exception):
    """A refused claim operation, with the HTTP status that says why (404 unknown, 403 not allowed, 409 conflict)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Claim:
    task_id: str
    holder: str
    token: str
    lease_expires: float


@dataclass(frozen=True)
class OpenTask:
    """A task still waiting for a decision, with its queue and claim state."""

    task_id: str
    request_id: str
    queue: str
    category: str
    severity: int
    created_at: float
    sla_deadline: float
    holder: str | None  # only while the lease is live
    lease_expires: float | None


@dataclass(frozen=True)
class QueueSummary:
    name: str
    count: int
    claimed: int
    oldest_created: float
    next_deadline: float
    breached: int
    by_severity: dict[int, int]


def _escalated():
    return or_(Q.c.escalated_at.isnot(None), func.coalesce(C.c.escalated, false()) == true())


def _open():
    return and_(Q.c.decision.is_(None), C.c.decided.is_(None))


class ClaimStore:
    """Queue reads and lease-guarded claim changes over one SQL engine. `clock` returns UTC epoch seconds."""

    def __init__(self, engine, lease_s: float = 900.0, clock: Callable[[], float] = time.time):
        self.engine, self.lease_s, self.clock = engine, lease_s, clock
        create_tables(engine, [C])

    # ---- reads ------------------------------------------------------------------------------------------------

    def open_tasks(self, queue: str | None = None, senior: bool = True, holder: str | None = None,
                   claimable: bool = False, limit: int | None = None) -> list[OpenTask]:
        """Open tasks ordered by severity, then age; filtered by queue, by live holder, or to those claimable now."""
        now = self.clock()
        escalated = _escalated()
        stmt = (select(Q.c.task_id, Q.c.request_id, Q.c.category, Q.c.severity, Q.c.created_at, Q.c.sla_deadline,
                       escalated.label("escalated"), C.c.holder, C.c.lease_expires)
                .select_from(Q.outerjoin(C, Q.c.task_id == C.c.task_id)).where(_open())
                .order_by(Q.c.severity, Q.c.created_at, Q.c.task_id))
        if queue == SENIOR:
            stmt = stmt.where(escalated)
        elif queue is not None:
            stmt = stmt.where(~escalated, Q.c.category == queue)
        if not senior:
            stmt = stmt.where(~escalated)
        if holder is not None:
            stmt = stmt.where(C.c.holder == holder, C.c.lease_expires > now)
        if claimable:
            stmt = stmt.where(or_(C.c.holder.is_(None), C.c.lease_expires <= now))
        if limit:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [OpenTask(r.task_id, r.request_id, SENIOR if r.escalated else r.category, r.category, r.severity,
                         r.created_at, r.sla_deadline, r.holder if r.holder and r.lease_expires > now else None,
                         r.lease_expires if r.holder and r.lease_expires > now else None) for r in rows]

    def summaries(self) -> list[QueueSummary]:
        """Every non-empty queue: counts, oldest task, nearest SLA deadline, tasks past their deadline."""
        now, groups = self.clock(), {}
        for task in self.open_tasks():
            groups.setdefault(task.queue, []).append(task)
        out = []
        for name, tasks in sorted(groups.items(), key=lambda kv: (kv[0] != SENIOR, kv[0])):
            by_severity: dict[int, int] = {}
            for t in tasks:
                by_severity[t.severity] = by_severity.get(t.severity, 0) + 1
            out.append(QueueSummary(name, len(tasks), sum(1 for t in tasks if t.holder),
                                    min(t.created_at for t in tasks), min(t.sla_deadline for t in tasks),
                                    sum(1 for t in tasks if t.sla_deadline < now), dict(sorted(by_severity.items()))))
        return out

    def claim_of(self, task_id: str) -> ReviewClaimRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(C).where(C.c.task_id == task_id)).first()
        return ReviewClaimRow(**row._mapping) if row else None

    def live_claim(self, who: str, task_id: str) -> Claim | None:
        """The caller's claim on the task if its lease is live and nothing was decided under it."""
        row = self.claim_of(task_id)
        if row and row.holder == who and row.token and row.lease_expires > self.clock() and not row.decided:
            return Claim(task_id, who, row.token, row.lease_expires)
        return None

    # ---- claims -----------------------------------------------------------------------------------------------

    def claim_next(self, who: str, senior: bool, queue: str | None = None) -> Claim | None:
        """The most urgent, oldest claimable task (in `queue`, or any the caller may work); None when there is none."""
        if queue == SENIOR and not senior:
            raise ClaimError(403, "only senior reviewers (admins) work the senior queue")
        for _ in range(3):  # candidates can be taken between the read and the update: read again
            candidates = self.open_tasks(queue=queue, senior=senior, claimable=True, limit=20)
            if not candidates:
                return None
            for task in candidates:
                claim = self._take(task.task_id, who, senior, free_only=True)
                if claim:
                    return claim
        return None

    def claim(self, who: str, senior: bool, task_id: str) -> Claim:
        """Claim one task; ClaimError says why not (unknown, decided, senior only, held by someone else)."""
        claim = self._take(task_id, who, senior, free_only=True)
        if claim:
            return claim
        raise self._why_not(task_id, who, senior)

    def _take(self, task_id: str, who: str, senior: bool, free_only: bool) -> Claim | None:
        """Give an open task to `who` with a fresh lease in one conditional UPDATE (only if unheld or its lease ran
        out, with `free_only`); None when the guard did not hold."""
        now, token = self.clock(), secrets.token_urlsafe(16)
        self._ensure_row(task_id)
        guard = [C.c.task_id == task_id, C.c.decided.is_(None),
                 exists().where(Q.c.task_id == C.c.task_id, Q.c.decision.is_(None))]
        if free_only:
            guard.append(or_(C.c.holder.is_(None), C.c.lease_expires <= now))
        if not senior:
            guard += [C.c.escalated == false(),
                      ~exists().where(Q.c.task_id == C.c.task_id, Q.c.escalated_at.isnot(None))]
        stmt = update(C).where(*guard).values(holder=who, token=token, claimed_at=now,
                                              lease_expires=now + self.lease_s, version=C.c.version + 1)
        with self.engine.begin() as conn:
            won = conn.execute(stmt).rowcount == 1
        return Claim(task_id, who, token, now + self.lease_s) if won else None

    def _ensure_row(self, task_id: str) -> None:
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(C.c.task_id).where(C.c.task_id == task_id)).first() is None:
                    conn.execute(C.insert().values(task_id=task_id, lease_expires=0.0, escalated=False, version=0))
        except IntegrityError:
            pass  # a concurrent claimer created it: the conditional UPDATE decides who wins

    def _why_not(self, task_id: str, who: str, senior: bool) -> ClaimError:
        with self.engine.connect() as conn:
            task = conn.execute(select(Q).where(Q.c.task_id == task_id)).first()
        claim = self.claim_of(task_id)
        if task is None:
            return ClaimError(404, f"no review task {task_id}")
        if task.decision or (claim and claim.decided):
            return ClaimError(409, "this task has already been decided")
        if not senior and (task.escalated_at is not None or (claim and claim.escalated)):
            return ClaimError(403, "this task is in the senior queue")
        if claim and claim.holder and claim.lease_expires > self.clock():
            owner = "you already hold" if claim.holder == who else "another reviewer holds"
            until = time.strftime("%H:%M:%S", time.gmtime(claim.lease_expires))
            return ClaimError(409, f"{owner} this task (lease until {until} UTC)")
        return ClaimError(409, "the task changed while claiming; try again")

    def release(self, who: str, task_id: str) -> None:
        """Give a held task back to its queue."""
        stmt = update(C).where(C.c.task_id == task_id, C.c.holder == who, C.c.decided.is_(None)).values(
            holder=None, token=None, lease_expires=0.0, version=C.c.version + 1)
        with self.engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                raise ClaimError(409, "you do not hold this task")

    def reassign(self, task_id: str, to: str, to_senior: bool) -> Claim:
        """Hand a task (held or not) to `to` with a fresh lease; the previous holder's claim becomes stale."""
        claim = self._take(task_id, to, to_senior, free_only=False)
        if claim is None:
            raise self._why_not(task_id, to, to_senior)
        return claim

    # ---- decisions --------------------------------------------------------------------------------------------

    def begin_decision(self, who: str, task_id: str, token: str, decision: str) -> ReviewClaimRow:
        """Mark the decision under the caller's live claim (atomically), before the event is sent.

        Returns the row as it was, for `undo_decision` if the event cannot be sent. A stale claim (expired,
        reassigned, re-claimed, released) or a task someone else decided is refused with 409.
        """
        before = self.claim_of(task_id)
        now = self.clock()
        guard = [C.c.task_id == task_id, C.c.holder == who, C.c.token == token, C.c.lease_expires > now,
                 C.c.decided.is_(None), exists().where(Q.c.task_id == C.c.task_id, Q.c.decision.is_(None))]
        if decision == "escalate":
            guard += [C.c.escalated == false(),
                      ~exists().where(Q.c.task_id == C.c.task_id, Q.c.escalated_at.isnot(None))]
            values = dict(escalated=True, escalated_at=now, escalated_by=who, holder=None, token=None,
                          lease_expires=0.0)
        else:
            values = dict(decided=decision, decided_at=now)
        stmt = update(C).where(*guard).values(**values, version=C.c.version + 1)
        with self.engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return before
        mine = before is not None and before.holder == who and before.token == token and not before.decided
        if mine and before.lease_expires <= now:
            raise ClaimError(409, "your claim on this task has expired; claim it again")
        if mine and decision == "escalate":
            raise ClaimError(409, "this task is already in the senior queue")
        raise ClaimError(409, "you do not hold a live claim on this task (claim it first)")

    def undo_decision(self, before: ReviewClaimRow) -> None:
        """Put the claim back as it was when the decision could not be sent (only if nothing changed since)."""
        values = before.model_dump()
        values["version"] = before.version + 2
        stmt = update(C).where(C.c.task_id == before.task_id, C.c.version == before.version + 1).values(**values)
        with self.engine.begin() as conn:
            conn.execute(stmt)
