"""Claims with leases, escalation, release and reassignment, and the admin statistics over the queue."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import Session, SQLModel, select

from hallmark.db import engine_for
from review.claims import ClaimError, ClaimStore, ReviewClaimRow
from review.queue import SENIOR, TABLES
from tests.review_helpers import T0, Clock, decided, project, task_event

def test_claim_next_takes_severity_first_then_the_oldest(engine):
    old3 = task_event("r-old3", 3, at=T0)
    new1 = task_event("r-new1", 1, ("sexual_minor",), at=T0 + timedelta(minutes=5))
    new3 = task_event("r-new3", 3, at=T0 + timedelta(minutes=10))
    project(engine, new3, new1, old3)
    store = ClaimStore(engine, clock=Clock(T0.timestamp() + 3600))
    order = [store.claim_next("ann", senior=False).task_id for _ in range(3)]
    assert order == [str(e.payload.task_id) for e in (new1, old3, new3)]
    assert store.claim_next("ann", senior=False) is None
    violence = store.claim_next("bob", senior=False, queue="violence")
    assert violence is None  # both held by ann


def test_an_expired_lease_returns_the_task_and_the_stale_claim_cannot_decide(engine):
    task = task_event("r-lease")
    project(engine, task)
    clock = Clock(T0.timestamp())
    store = ClaimStore(engine, lease_s=60, clock=clock)
    tid = str(task.payload.task_id)
    first = store.claim("ann", False, tid)
    with pytest.raises(ClaimError) as refused:
        store.claim("bob", False, tid)
    assert refused.value.status == 409 and "another reviewer" in refused.value.reason
    assert store.claim_next("bob", False) is None
    clock.t += 61  # ann's lease ran out: the task is back in its queue
    assert [t.task_id for t in store.open_tasks(claimable=True)] == [tid]
    second = store.claim_next("bob", False)
    assert second.task_id == tid and second.token != first.token
    with pytest.raises(ClaimError, match="live claim"):
        store.begin_decision("ann", tid, first.token, "approve")
    store.begin_decision("bob", tid, second.token, "approve")
    assert store.open_tasks() == []
    with pytest.raises(ClaimError, match="decided"):
        store.claim("ann", False, tid)


def test_a_claim_expired_in_the_holders_hands_cannot_decide(engine):
    task = task_event("r-expired")
    project(engine, task)
    clock = Clock()
    store = ClaimStore(engine, lease_s=30, clock=clock)
    claim = store.claim("ann", False, str(task.payload.task_id))
    clock.t += 31
    with pytest.raises(ClaimError, match="expired"):
        store.begin_decision("ann", claim.task_id, claim.token, "reject")


def test_two_concurrent_claims_never_both_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    setup = engine_for(url)
    SQLModel.metadata.create_all(setup, tables=TABLES)
    tasks = [task_event(f"r-race-{i}") for i in range(15)]
    project(setup, *tasks)
    stores = [ClaimStore(engine_for(url)) for _ in range(2)]  # two engines, as two console processes
    for task in tasks:
        tid, barrier, results = str(task.payload.task_id), threading.Barrier(2), [None, None]

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                results[i] = stores[i].claim(f"reviewer{i}", False, tid)
            except ClaimError as exc:
                results[i] = exc

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if not isinstance(r, ClaimError)]
        assert len(winners) == 1, results
        assert stores[0].claim_of(tid).holder == winners[0].holder
    # claim-next from both sides over the remaining pool hands out each task exactly once
    with Session(setup) as session:
        for row in session.exec(select(ReviewClaimRow)).all():
            row.holder, row.lease_expires = None, 0.0
        session.commit()
    got: list[list[str]] = [[], []]

    def drain(i: int) -> None:
        while (claim := stores[i].claim_next(f"reviewer{i}", False)) is not None:
            got[i].append(claim.task_id)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[0] + got[1]) == sorted(str(t.payload.task_id) for t in tasks)


def test_escalation_moves_the_task_to_the_senior_queue(engine):
    task = task_event("r-escalate")
    project(engine, task)
    store = ClaimStore(engine, clock=Clock())
    tid = str(task.payload.task_id)
    claim = store.claim("ann", False, tid)
    store.begin_decision("ann", tid, claim.token, "escalate")
    assert [(t.task_id, t.queue, t.holder) for t in store.open_tasks()] == [(tid, SENIOR, None)]
    assert store.claim_next("bob", senior=False) is None
    with pytest.raises(ClaimError) as refused:
        store.claim("bob", False, tid)
    assert refused.value.status == 403
    with pytest.raises(ClaimError) as refused:
        store.claim_next("bob", False, queue=SENIOR)
    assert refused.value.status == 403
    senior = store.claim_next("boss", senior=True, queue=SENIOR)
    assert senior.task_id == tid
    with pytest.raises(ClaimError, match="senior queue"):
        store.begin_decision("boss", tid, senior.token, "escalate")
    store.begin_decision("boss", tid, senior.token, "approve")
    assert store.open_tasks() == []


def test_an_escalation_seen_only_in_the_log_also_counts(engine):
    task = task_event("r-escalate-log")
    project(engine, task, decided(task, "escalate", "elsewhere", T0 + timedelta(minutes=1)))
    store = ClaimStore(engine, clock=Clock())
    assert [t.queue for t in store.open_tasks()] == [SENIOR]
    assert store.claim_next("bob", senior=False) is None
    assert store.claim_next("boss", senior=True).task_id == str(task.payload.task_id)


def test_release_and_reassign(engine):
    task = task_event("r-reassign")
    project(engine, task)
    store = ClaimStore(engine, clock=Clock())
    tid = str(task.payload.task_id)
    claim = store.claim("ann", False, tid)
    with pytest.raises(ClaimError, match="do not hold"):
        store.release("bob", tid)
    store.release("ann", tid)
    assert store.claim_next("bob", False).task_id == tid
    moved = store.reassign(tid, "cy", to_senior=False)
    assert store.claim_of(tid).holder == "cy" and store.live_claim("bob", tid) is None
    with pytest.raises(ClaimError):
        store.begin_decision("bob", tid, claim.token, "approve")
    store.begin_decision("cy", tid, moved.token, "reject")


def test_undo_restores_the_claim_when_the_decision_could_not_be_sent(engine):
    task = task_event("r-undo")
    project(engine, task)
    store = ClaimStore(engine, clock=Clock())
    tid = str(task.payload.task_id)
    claim = store.claim("ann", False, tid)
    before = store.begin_decision("ann", tid, claim.token, "escalate")
    store.undo_decision(before)
    assert store.live_claim("ann", tid) == claim
    assert [t.queue for t in store.open_tasks()] == ["violence"]


def test_admin_stats_count_throughput_breaches_and_peak_depth(engine):
    from review_ui.stats import admin_stats

    hour, minute = timedelta(hours=1), timedelta(minutes=1)
    ClaimStore(engine)
    quick = task_event("r-quick", at=T0 + 30 * minute)  # waits ten minutes, then rejected
    late = task_event("r-late", 1, ("sexual_minor",), at=T0 + 90 * minute)  # 1 h SLA, decided 3 h later
    moved = task_event("r-moved", at=T0 + 150 * minute)  # escalated, still open
    stale = task_event("r-stale", 3, at=T0 - 30 * hour)  # open long past its 24 h SLA
    project(engine, quick, late, moved, stale, decided(quick, "reject", "ann", T0 + 40 * minute),
            decided(late, "approve", "ann", T0 + 270 * minute), decided(moved, "escalate", "bob", T0 + 210 * minute))
    stats = admin_stats(engine, now=(T0 + 6 * hour).timestamp(), window_s=6 * 3600, buckets=6)  # from T0
    assert [(t.reviewer, t.approved, t.rejected, t.escalated) for t in stats.throughput] == \
        [("ann", 1, 1, 0), ("bob", 0, 0, 1)]
    assert {b.task_id for b in stats.breaches} == {str(late.payload.task_id), str(stale.payload.task_id)}
    assert (stats.open_breaches, stats.closed_breaches) == (1, 1)
    assert [p.total for p in stats.depth] == [2, 2, 3, 3, 3, 2]  # the ten-minute wait shows in its hour
    assert stats.depth[-1].depths == {"violence": 1, SENIOR: 1}

