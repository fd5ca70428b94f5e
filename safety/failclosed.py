"""Fail closed: a gate that raises or runs past its deadline yields `review` verdicts, never `allow`."""
from __future__ import annotations

import queue
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


class _Job:
    def __init__(self, fn, args: tuple):
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class _Workers:
    """Daemon threads kept between calls (starting a thread per call cost 0.5-2 ms on a busy machine, a fifth of a
    single prompt's screen). A call takes an idle worker or starts one; a worker whose call overruns its deadline is
    left to finish it (it cannot block process exit) and only then becomes idle again; a worker idle for `idle_s`
    exits, so a gate that is dropped is not kept alive by its workers."""

    def __init__(self, name: str, idle_s: float = 60.0):
        self._name, self._idle_s = name, idle_s
        self._idle: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    def call(self, fn, args: tuple, limit_s: float):
        job = _Job(fn, args)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=self._name, daemon=True).start()
        inbox.put(job)
        if not job.done.wait(limit_s):
            raise _Timeout()
        if job.error is not None:
            raise job.error
        return job.result

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            try:
                job = inbox.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # else a caller has just taken it: its job is on the way
                        self._idle.remove(inbox)
                        return
                continue
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:  # handed to the caller
                job.error = exc
            with self._lock:
                self._idle.append(inbox)
            job.done.set()
            job = None  # an idle worker holds neither the gate nor the last prompts


class FailClosed:
    """Wraps an inner gate: loads it once, runs each batch on a worker thread under a deadline."""

    def __init__(self, inner: InnerGate, deadline: Deadline, echo_errors: bool = False):
        self.inner = inner
        self.deadline = deadline
        self._echo = echo_errors  # prompt gates never echo exception text: it could quote the prompt
        self._workers = _Workers("safety-gate")

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
            verdicts = self._workers.call(self.inner.screen, (items, region), limit)
        except _Timeout:
            return fail(f"gate timed out after {limit:.1f}s; routed to review")
        except Exception as exc:
            return fail(self._reason("screening", exc))
        if not isinstance(verdicts, list) or len(verdicts) != len(items):
            return fail(f"gate returned a malformed result for {len(items)} items; routed to review")
        return verdicts
