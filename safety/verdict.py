"""The one interface every gate speaks: a Verdict per input, allow / review / block with reasons."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, Sequence

from PIL import Image


class Decision(str, Enum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    stage: str  # "lexical", "embedding", "nsfw", "faces", "error", ...
    policy_id: str
    policy_version: str
    categories: tuple[str, ...] = ()
    score: float | None = None
    reasons: tuple[str, ...] = field(default=())  # never the prompt text


class PromptGate(Protocol):
    def screen(self, prompts: Sequence[str], region: str = "default") -> list[Verdict]: ...


class ImageGate(Protocol):
    def screen(self, images: Sequence[Image.Image], region: str = "default") -> list[Verdict]: ...
