"""The review read model: queues, and which decision counts (log order), whatever order events arrive in."""
from __future__ import annotations

import itertools
import random
import uuid
from datetime import timedelta

from sqlmodel import Session, SQLModel

from hallmark.db import engine_for
from review.decisions import DecisionLog, LoggedDecision
from review.queue import TABLES, ReviewProjector, primary_category
from tests.review_helpers import POLICY, T0, decided, project, rows, task_event


def test_queue_is_the_urgent_category_then_the_first_and_gate_errors_have_their_own():
    assert primary_category(["violence", "protected_person"], "lexical", POLICY) == "protected_person"
    assert primary_category(["weapons", "hate"], "embedding", POLICY) == "hate"
    assert primary_category([], "error", POLICY) == "gate-error"
    assert primary_category([], "lexical", POLICY) == "uncategorised"


def test_projection_does_not_depend_on_arrival_order():
    """Each event keeps its place in its topic's log; only the order they reach the projector changes. The first
    final decision in log order counts, even when a later one carries an earlier reviewer clock."""
    task = task_event("r-order")
    resent = task.model_copy(update={"event_id": uuid.uuid4(), "occurred_at": T0 + timedelta(seconds=5)})
    logged = [("review-tasks", 0, task), ("review-tasks", 1, resent),
              ("review-decisions", 0, decided(task, "escalate", "ann", T0 + timedelta(minutes=1))),
              ("review-decisions", 1, decided(task, "reject", "boss", T0 + timedelta(minutes=2))),
              ("review-decisions", 2, decided(task, "approve", "early-clock", T0 + timedelta(minutes=-3)))]
    results = set()
    for order in random.Random(0).sample(list(itertools.permutations(logged)), 12):
        engine = engine_for("sqlite://")  # in memory
        SQLModel.metadata.create_all(engine, tables=TABLES)
        with Session(engine) as session:
            for _topic, offset, event in order:
                ReviewProjector(POLICY).apply(session, event, 0, offset)
            session.commit()
        results.add(tuple(rows(engine)))
    assert len(results) == 1
    (row,) = results.pop()
    assert row[1:6] == ("violence", 3, "ann", "reject", "boss") and row[6] == str(task.event_id)


def test_the_review_stage_and_the_read_model_count_the_same_decision():
    task = task_event("r-same")
    first, later = decided(task, "approve", "ann", T0 + timedelta(minutes=9)), decided(task, "reject", "bob", T0)
    log = DecisionLog()
    tid = str(task.payload.task_id)
    assert not log.offer(LoggedDecision(tid, "e0", "escalate", 0, 0))
    assert log.offer(LoggedDecision(tid, str(first.event_id), "approve", 0, 1))
    assert not log.offer(LoggedDecision(tid, str(later.event_id), "reject", 0, 2))
    assert log.offer(LoggedDecision(tid, str(first.event_id), "approve", 0, 1))  # a redelivery still counts
    engine = engine_for("sqlite://")
    SQLModel.metadata.create_all(engine, tables=TABLES)
    project(engine, task, first, later)
    assert rows(engine)[0][4:6] == ("approve", "ann")
