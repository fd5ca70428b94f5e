"""Fail closed: a gate that raises or runs past its deadline yields `review` verdicts, never `allow`."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, Sequence

from .verdict import Decision, Verdict


class InnerGate(Protocol):
    pack_id: str
    pack_version: str

    def load(self) -> None: ...

    def screen(self, items: Sequence, region: str = "default") -> list[Verdict]: ...


@dataclass(frozen=True)
class Deadline:
    """Time allowed for one screen() call: base + per item. Model loading is not counted."""

    base_s: float = 5.0
    per_item_s: float = 0.1

    def for_batch(self, n: int) -> float:
        return self.base_s + self.per_item_s * n


def error_verdict(pack_id: str, version: str, reason: str, stage: str = "error") -> Verdict:
    return Verdict(Decision.REVIEW, stage, pack_id, version, (), None, (reason,))


class _Timeout(Exception):
    pass


def _call_with_deadline(fn, args: tuple, limit_s: float):
    """Run fn(*args) in a daemon thread; a stuck call is abandoned (it cannot block process exit)."""
    result: list = []
    error: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # handed to the caller below
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name="safety-gate", daemon=True).start()
    if not done.wait(limit_s):
        raise _Timeout()
    if error:
        raise error[0]
    return result[0]


class FailClosed:
    """Wraps an inner gate: loads it once, runs each batch in a worker thread under a deadline."""

    def __init__(self, inner: InnerGate, deadline: Deadline, echo_errors: bool = False):
        self.inner = inner
        self.deadline = deadline
        self._echo = echo_errors  # prompt gates never echo exception text: it could quote the prompt

    @property
    def pack_id(self) -> str:
        return self.inner.pack_id

    @property
    def pack_version(self) -> str:
        return self.inner.pack_version

    def _reason(self, what: str, exc: BaseException) -> str:
        detail = f": {str(exc)[:200]}" if self._echo and str(exc) else ""
        return f"{what} failed ({type(exc).__name__}{detail}); routed to review"

    def screen(self, items: Sequence, region: str = "default") -> list[Verdict]:
        """One verdict per item, in order; never raises."""
        try:
            items = list(items)
        except Exception as exc:
            return [error_verdict(self.pack_id, self.pack_version, self._reason("reading the batch", exc))]
        if not items:
            return []

        def fail(reason: str) -> list[Verdict]:
            return [error_verdict(self.pack_id, self.pack_version, reason)] * len(items)

        try:
            self.inner.load()
        except Exception as exc:
            return fail(self._reason("loading the gate", exc))
        limit = self.deadline.for_batch(len(items))
        try:
            verdicts = _call_with_deadline(self.inner.screen, (items, region), limit)
        except _Timeout:
            return fail(f"gate timed out after {limit:.1f}s; routed to review")
        except Exception as exc:
            return fail(self._reason("screening", exc))
        if not isinstance(verdicts, list) or len(verdicts) != len(items):
            return fail(f"gate returned a malformed result for {len(items)} items; routed to review")
        return verdicts
