"""The one refusal every Hallmark API answers with (no web framework here, so pure libraries may raise it)."""
from __future__ import annotations

from typing import Any


class HttpError(Exception):
    """A refused request: the HTTP status and a reason safe to show (a fixed phrase, never user text)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(reason)
        self.status, self.reason, self.headers, self.extra = status, reason, headers or {}, extra
