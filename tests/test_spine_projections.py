"""`hallmark projections rebuild` drops the read models and replays every topic to identical rows."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.test_spine_audit import hallmark
from tests.test_spine_flow import BLOCKED, REVIEW, SAFE, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TABLES = ("requests", "review_queue", "review_decisions", "assets", "provenance_assets")


def dump(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in TABLES}


def settled(db: Path, timeout: float = 60.0) -> dict[str, list]:
    """The rows once the projector has been idle for a few seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        now = dump(db)
        if now == last:
            return now
        last = now
        time.sleep(3.0)
    raise AssertionError("the read models kept changing")


def test_rebuild_yields_the_same_rows(spine):
    events = [kafka_request(p, seed=i) for i, p in enumerate((SAFE, BLOCKED, REVIEW))]
    for event in events:
        spine.produce_event(event)
    spine.outcome(events[0].request_id), spine.outcome(events[1].request_id)
    spine.wait_for("review-tasks", lambda e: e.request_id == events[2].request_id)
    db = Path(spine.settings.db_url.removeprefix("sqlite:///"))
    before = settled(db)
    assert {r[0] for r in before["requests"]} >= {e.request_id for e in events}
    assert before["review_queue"]
    result = hallmark(spine, "projections", "rebuild")
    assert result.returncode == 0, result.stderr
    assert "rebuilt" in result.stdout
    assert dump(db) == before
