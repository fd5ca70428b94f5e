"""Server-side sessions: the cookie (or bearer token) is a random token; the table keeps only its sha256."""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import delete, update
from sqlmodel import Field, Session, SQLModel

from hallmark.db import create_tables


class SessionRow(SQLModel, table=True):
    __tablename__ = "review_sessions"
    token_hash: str = Field(primary_key=True)
    user: str = Field(index=True)
    csrf: str
    created_at: float
    last_seen: float
    expires_at: float  # absolute end, whatever the activity


@dataclass(frozen=True)
class LiveSession:
    user: str
    csrf: str
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Idle sessions end after `idle_s`; every session ends `absolute_s` after login."""

    def __init__(self, engine, idle_s: float = 1800.0, absolute_s: float = 12 * 3600.0,
                 clock: Callable[[], float] = time.time):
        self.engine, self.idle_s, self.absolute_s, self.clock = engine, idle_s, absolute_s, clock
        create_tables(engine, [SessionRow.__table__])

    def create(self, user: str) -> tuple[str, LiveSession]:
        """A fresh token (never reuse a pre-login one: no session fixation) and its CSRF secret."""
        now, token = self.clock(), secrets.token_urlsafe(32)
        row = SessionRow(token_hash=_digest(token), user=user, csrf=secrets.token_urlsafe(32), created_at=now,
                         last_seen=now, expires_at=now + self.absolute_s)
        live = LiveSession(user, row.csrf, row.expires_at)
        with Session(self.engine) as session:
            session.exec(delete(SessionRow).where(SessionRow.expires_at < now))  # sweep old ones now and then
            session.add(row)
            session.commit()
        return token, live

    def lookup(self, token: str | None) -> LiveSession | None:
        if not token or len(token) > 200:
            return None
        now, key = self.clock(), _digest(token)
        with Session(self.engine) as session:
            row = session.get(SessionRow, key)
            if row is None:
                return None
            if now > row.expires_at or now - row.last_seen > self.idle_s:
                session.delete(row)
                session.commit()
                return None
            live = LiveSession(row.user, row.csrf, min(row.expires_at, now + self.idle_s))
            if now - row.last_seen > 15:  # don't write on every request
                session.exec(update(SessionRow).where(SessionRow.token_hash == key).values(last_seen=now))
                session.commit()
        return live

    def end(self, token: str | None) -> None:
        if token:
            with Session(self.engine) as session:
                session.exec(delete(SessionRow).where(SessionRow.token_hash == _digest(token)))
                session.commit()

    def end_all(self, user: str) -> None:
        with Session(self.engine) as session:
            session.exec(delete(SessionRow).where(SessionRow.user == user))
            session.commit()
