"""The admin view's numbers: throughput per reviewer, SLA breaches, queue depth over time (from the read models)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select

from review.claims import ReviewClaimRow
from review.queue import SENIOR, ReviewDecisionRow, ReviewQueueRow

Q, C, D = ReviewQueueRow.__table__, ReviewClaimRow.__table__, ReviewDecisionRow.__table__


@dataclass(frozen=True)
class ReviewerThroughput:
    reviewer: str
    approved: int
    rejected: int
    escalated: int
    window: int  # decisions inside the window

    @property
    def total(self) -> int:
        return self.approved + self.rejected + self.escalated


@dataclass(frozen=True)
class Breach:
    task_id: str
    request_id: str
    category: str
    severity: int
    sla_deadline: float
    closed_at: float | None  # None: still open

    def overdue_s(self, now: float) -> float:
        return (self.closed_at or now) - self.sla_deadline


@dataclass(frozen=True)
class DepthPoint:
    """The most tasks waiting at once in the interval that ends at `at`: overall and per queue."""

    at: float
    total: int
    depths: dict[str, int]


@dataclass(frozen=True)
class AdminStats:
    now: float
    window_s: float
    throughput: list[ReviewerThroughput]
    breaches: list[Breach]
    open_breaches: int
    closed_breaches: int
    depth: list[DepthPoint]
    queues: list[str]

    def as_json(self) -> dict:
        return {
            "now": self.now, "window_s": self.window_s,
            "throughput": [{"reviewer": t.reviewer, "approved": t.approved, "rejected": t.rejected,
                            "escalated": t.escalated, "total": t.total, "in_window": t.window}
                           for t in self.throughput],
            "sla_breaches": {"open": self.open_breaches, "closed_late": self.closed_breaches,
                             "tasks": [{"task_id": b.task_id, "request_id": b.request_id, "category": b.category,
                                        "severity": b.severity, "sla_deadline": b.sla_deadline,
                                        "closed_at": b.closed_at, "overdue_s": round(b.overdue_s(self.now), 1)}
                                       for b in self.breaches]},
            "queue_depth": [{"at": p.at, "total": p.total, "queues": p.depths} for p in self.depth],
        }


def admin_stats(engine, now: float, window_s: float = 24 * 3600.0, buckets: int = 24) -> AdminStats:
    start = now - window_s
    with engine.connect() as conn:
        decisions = conn.execute(select(D.c.reviewer, D.c.decision, D.c.occurred_at)).all()
        rows = conn.execute(
            select(Q.c.task_id, Q.c.request_id, Q.c.category, Q.c.severity, Q.c.created_at, Q.c.sla_deadline,
                   Q.c.escalated_at, Q.c.decided_at, C.c.escalated_at.label("local_escalated_at"),
                   C.c.decided_at.label("local_decided_at"))
            .select_from(Q.outerjoin(C, Q.c.task_id == C.c.task_id))
            .where(Q.c.created_at <= now, or_(Q.c.decided_at.is_(None), Q.c.decided_at >= start))).all()
    per: dict[str, dict[str, int]] = {}
    for reviewer, decision, at in decisions:
        counts = per.setdefault(reviewer, {"approve": 0, "reject": 0, "escalate": 0, "window": 0})
        counts[decision] = counts.get(decision, 0) + 1
        counts["window"] += at >= start
    throughput = sorted((ReviewerThroughput(r, c["approve"], c["reject"], c["escalate"], c["window"])
                         for r, c in per.items()), key=lambda t: (-t.window, -t.total, t.reviewer))
    breaches, open_breaches, closed_breaches = [], 0, 0
    spans = []
    for r in rows:
        closed = r.decided_at if r.decided_at is not None else r.local_decided_at
        escalated = r.escalated_at if r.escalated_at is not None else r.local_escalated_at
        spans.append((r.category, r.created_at, escalated, closed))
        late = (closed is None and r.sla_deadline < now) or (closed is not None and closed > r.sla_deadline)
        if late:
            breaches.append(Breach(r.task_id, r.request_id, r.category, r.severity, r.sla_deadline, closed))
            open_breaches += closed is None
            closed_breaches += closed is not None
    breaches.sort(key=lambda b: -b.overdue_s(now))
    depth = depth_over_time(spans, start, window_s, buckets)
    queues = {q for point in depth for q in point.depths}
    return AdminStats(now, window_s, throughput, breaches[:100], open_breaches, closed_breaches, depth,
                      sorted(queues, key=lambda q: (q != SENIOR, q)))


def depth_over_time(spans, start: float, window_s: float, buckets: int) -> list[DepthPoint]:
    """Sweep (category, created, escalated, closed) spans: peak depth per interval, so short waits still show."""
    changes = []
    for category, created, escalated, closed in spans:
        changes.append((created, 1, category))
        last = category
        if escalated is not None and (closed is None or escalated < closed):
            changes += [(escalated, -1, category), (escalated, 1, SENIOR)]
            last = SENIOR
        if closed is not None:
            changes.append((closed, -1, last))
    changes.sort(key=lambda c: (c[0], c[1]))  # at the same instant, leaving before arriving
    current: dict[str, int] = {}
    i, points = 0, []
    while i < len(changes) and changes[i][0] <= start:
        current[changes[i][2]] = current.get(changes[i][2], 0) + changes[i][1]
        i += 1
    for k in range(1, buckets + 1):
        end = start + window_s * k / buckets
        peak, peak_total = dict(current), sum(current.values())
        while i < len(changes) and changes[i][0] <= end:
            current[changes[i][2]] = current.get(changes[i][2], 0) + changes[i][1]
            i += 1
            for queue, n in current.items():
                peak[queue] = max(peak.get(queue, 0), n)
            peak_total = max(peak_total, sum(current.values()))
        points.append(DepthPoint(end, peak_total, {q: n for q, n in peak.items() if n}))
    return points
