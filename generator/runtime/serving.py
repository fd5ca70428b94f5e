"""The engine behind a server (vLLM's AsyncLLM over its EngineCore): one thread owns the engine and steps it while
work is in; callers on any asyncio loop submit requests and await their own results. A request submitted while
others run joins the running batch at the next step boundary: nobody waits for a batch to finish.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

from generator.api import GenerationRequest, GenerationResult, RequestError
from generator.runtime.engine import Engine

log = logging.getLogger("hallmark.generator")


@dataclass(frozen=True)
class Finished:
    """One request's result and how long it took from submission (queueing included)."""

    result: GenerationResult
    ms: float


@dataclass
class _Submitted:
    request: GenerationRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    at: float  # perf_counter at submission


class ServingLoop:
    """Thread-safe front of one Engine. The engine itself is touched by the loop's thread only."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.SimpleQueue[_Submitted] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    async def generate(self, requests: list[GenerationRequest]) -> list[Finished]:
        """Results in request order; a request the engine cannot serve gives a RequestError result, not a raise."""
        loop, now = asyncio.get_running_loop(), time.perf_counter()
        items = [_Submitted(r, loop.create_future(), loop, now) for r in requests]
        self._ensure_started()
        for item in items:
            self._inbox.put(item)
        return list(await asyncio.gather(*(item.future for item in items)))

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Admit whatever arrived, run one step, hand out what finished; sleep only when there is nothing to do."""
        owners: dict[int, _Submitted] = {}
        while True:
            idle = not self.engine.has_unfinished()
            try:
                item = self._inbox.get(block=idle)
                while True:
                    owners[self.engine.add_request(item.request)] = item
                    item = self._inbox.get_nowait()
            except queue.Empty:
                pass
            try:
                done = self.engine.step()
            except Exception as exc:  # the engine fails groups itself; this is a bug: fail everyone, keep serving
                log.error("engine step failed (%s); failing %d requests", exc.__class__.__name__, len(owners))
                self.engine.abort_all()
                done = [(rid, RequestError("generation_error", f"generation failed ({exc.__class__.__name__})"))
                        for rid in owners]
            now = time.perf_counter()
            for request_id, result in done:
                item = owners.pop(request_id)
                _settle(item, Finished(result, (now - item.at) * 1000))


def _settle(item: _Submitted, value: Finished) -> None:
    def set_result() -> None:
        if not item.future.done():  # the caller may have given up (timeout)
            item.future.set_result(value)

    try:
        item.loop.call_soon_threadsafe(set_result)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting
        pass
