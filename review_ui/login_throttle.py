"""Failed-login throttling: a password guesser gets a few tries per account and per client, then waits."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import delete
from sqlmodel import Field, Session, SQLModel, select

from hallmark.db import create_tables


@dataclass(frozen=True)
class ThrottleConfig:
    per_account: int = 5  # failures on one account name within the window before it is locked
    per_client: int = 20  # failures from one client address within the window (spraying many names)
    window_s: float = 900.0


class LoginFailureRow(SQLModel, table=True):
    __tablename__ = "review_login_failures"
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(index=True)  # "account:<casefolded name>" or "client:<address>"
    at: float = Field(index=True)


class LoginThrottle:
    """Sliding-window failure counts in the shared database, so every console process behind a load balancer
    sees the same counts. Checked before the password is, so a locked account costs the attacker no scrypt work
    from us either."""

    def __init__(self, engine, config: ThrottleConfig, clock: Callable[[], float] = time.time):
        self.engine, self.config, self.clock = engine, config, clock
        create_tables(engine, [LoginFailureRow.__table__])

    @staticmethod
    def _account_scope(account: str) -> str:
        return f"account:{account.casefold()}"  # any casing of a name is the same account

    def _scopes(self, account: str, client: str) -> tuple[str, str]:
        return self._account_scope(account), f"client:{client}"

    def retry_after(self, account: str, client: str) -> int:
        """Seconds until another attempt is allowed for this account from this client; 0 when it is allowed now."""
        now, waits = self.clock(), []
        with Session(self.engine) as session:
            for scope, limit in zip(self._scopes(account, client), (self.config.per_account, self.config.per_client)):
                recent = session.exec(select(LoginFailureRow.at)
                                      .where(LoginFailureRow.scope == scope,
                                             LoginFailureRow.at > now - self.config.window_s)
                                      .order_by(LoginFailureRow.at.desc()).limit(limit)).all()
                if len(recent) >= limit:  # the oldest of the last `limit` failures must age out first
                    waits.append(recent[-1] + self.config.window_s - now)
        return max(1, math.ceil(max(waits))) if waits else 0

    def failed(self, account: str, client: str) -> None:
        now = self.clock()
        with Session(self.engine) as session:
            session.exec(delete(LoginFailureRow).where(LoginFailureRow.at <= now - self.config.window_s))
            session.add_all([LoginFailureRow(scope=scope, at=now) for scope in self._scopes(account, client)])
            session.commit()

    def succeeded(self, account: str) -> None:
        with Session(self.engine) as session:
            session.exec(delete(LoginFailureRow).where(LoginFailureRow.scope == self._account_scope(account)))
            session.commit()
