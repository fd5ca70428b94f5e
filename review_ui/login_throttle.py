"""Failed-login throttling: a password guesser gets a few tries per account and per client, then waits."""
from __future__ import annotations

import math
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ThrottleConfig:
    per_account: int = 5  # failures on one account name within the window before it is locked
    per_client: int = 20  # failures from one client address within the window (spraying many names)
    window_s: float = 900.0


class LoginThrottle:
    """Sliding-window failure counts in this process (the console runs as one process; a fleet would keep them in
    the shared database). Checked before the password is, so a locked account costs the attacker no scrypt work
    from us either."""

    def __init__(self, config: ThrottleConfig, clock: Callable[[], float]):
        self.config, self.clock = config, clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        times, horizon = self._failures.get(key, deque()), self.clock() - self.config.window_s
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def retry_after(self, account: str, client: str) -> int:
        """Seconds until another attempt is allowed for this account from this client; 0 when it is allowed now."""
        with self._lock:
            waits = []
            for key, limit in ((("account", account.casefold()), self.config.per_account),
                               (("client", client), self.config.per_client)):
                times = self._recent(key)
                if len(times) >= limit:
                    waits.append(times[len(times) - limit] + self.config.window_s - self.clock())
            return max(1, math.ceil(max(waits))) if waits else 0

    def failed(self, account: str, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._failures[("account", account.casefold())].append(now)
            self._failures[("client", client)].append(now)
            if len(self._failures) > 10_000:  # forget names and clients whose failures have aged out
                for key in [k for k in self._failures if not self._recent(k)]:
                    del self._failures[key]

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(("account", account.casefold()), None)
