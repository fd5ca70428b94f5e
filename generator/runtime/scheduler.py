"""The step scheduler (vLLM v1 style): requests join and leave the running set at step boundaries.

Each step runs one group of running sequences that can share a denoiser call (same model, adapters and latent
size); groups take turns oldest-first, so a new arrival never waits for the current batch to finish.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from generator.runtime.sequence import Sequence


@dataclass
class Waiting:
    request_id: int
    request: object  # GenerationRequest
    inputs: tuple  # (init image, mask) decoded at admission checks, or (None, None)


@dataclass
class StepScheduler:
    max_running: int
    waiting: deque[Waiting] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)

    def admit(self) -> list[Waiting]:
        """Waiting requests that may start now (FIFO, up to the running cap); the engine prepares them."""
        n = max(0, min(self.max_running - len(self.running), len(self.waiting)))
        return [self.waiting.popleft() for _ in range(n)]

    def next_group(self) -> list[Sequence]:
        """The running sequences to step now: the group of the oldest running sequence (request ids are FIFO)."""
        if not self.running:
            return []
        oldest = min(self.running, key=lambda s: s.request_id)
        return [s for s in self.running if s.key() == oldest.key()]

    def retire(self) -> list[Sequence]:
        """Remove and return finished sequences."""
        done = [s for s in self.running if s.done]
        self.running = [s for s in self.running if not s.done]
        return done
