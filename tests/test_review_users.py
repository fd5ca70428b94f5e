"""Reviewer accounts: scrypt password hashes, sessions with idle and absolute limits, shared login throttling."""
from __future__ import annotations


import pytest
from sqlmodel import Session, select

from tests.review_helpers import PASSWORD, Clock

def test_passwords_are_hashed_with_scrypt_and_checked(engine):
    from review_ui.users import UserRow, UserStore, hash_password, verify_password

    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in stored
    assert stored != hash_password(PASSWORD)  # salted
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "!", stored)
    users = UserStore(engine)
    users.add("ann", "reviewer", PASSWORD)
    with Session(engine) as session:
        assert PASSWORD not in repr(session.get(UserRow, "ann"))
    assert users.authenticate("ann", PASSWORD).role == "reviewer"
    assert users.authenticate("ann", "wrong password!") is None
    assert users.authenticate("nobody", PASSWORD) is None
    for bad, why in [(("<b>", "reviewer", PASSWORD), "user names"), (("bo", "root", PASSWORD), "role"),
                     (("bo", "reviewer", "short"), "passwords"), (("ann", "admin", PASSWORD), "exists")]:
        with pytest.raises(ValueError, match=why):
            users.add(*bad)


def test_sessions_end_when_idle_and_at_their_absolute_limit(engine):
    from review_ui.sessions import SessionRow, SessionStore

    clock = Clock()
    sessions = SessionStore(engine, idle_s=600, absolute_s=3600, clock=clock)
    token, live = sessions.create("ann")
    with Session(engine) as session:
        assert token not in repr(session.exec(select(SessionRow)).all())  # only its hash is stored
    for _ in range(5):
        clock.t += 599
        assert sessions.lookup(token).user == "ann"
    clock.t += 3600
    assert sessions.lookup(token) is None
    token, _ = sessions.create("ann")
    clock.t += 601
    assert sessions.lookup(token) is None and sessions.lookup("forged") is None


def test_login_failures_are_counted_across_console_processes_sharing_one_database(engine):
    from review_ui.login_throttle import LoginThrottle, ThrottleConfig

    clock = Clock()
    config = ThrottleConfig(per_account=3, per_client=5, window_s=100)
    first, second = (LoginThrottle(engine, config, clock) for _ in range(2))  # two console replicas
    for replica in (first, second, first):
        assert replica.retry_after("Ann", "10.0.0.1") == 0
        replica.failed("Ann", "10.0.0.1")
        clock.t += 10
    assert second.retry_after("ANN", "10.0.0.2") == 70  # the oldest of the three (t0) ages out at t0 + 100
    second.failed("bob", "10.0.0.1")
    second.failed("cy", "10.0.0.1")
    assert first.retry_after("dee", "10.0.0.1") > 0  # one client spraying five names
    assert first.retry_after("dee", "10.0.0.3") == 0
    clock.t += 71
    assert first.retry_after("ann", "10.0.0.2") == 0
    first.failed("ann", "10.0.0.2")
    first.failed("ann", "10.0.0.2")
    assert second.retry_after("ann", "10.0.0.2") > 0
    second.succeeded("ANN")  # a correct password clears the account's count everywhere
    assert first.retry_after("ann", "10.0.0.2") == 0

