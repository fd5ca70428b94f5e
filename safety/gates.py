"""Public entry points: build the prompt and image gates from a policy pack, wrapped to fail closed.

    gate = load_prompt_gate()               # cheap: models load on the first screen() call, once per gate
    verdicts = gate.screen(["a red fox"], region="default")

`screen` never raises: an exception or a deadline overrun inside gives `review` verdicts with stage "error";
input the gate will not judge (empty, > 10,000 chars, binary; broken or bomb images) gives `review` with stage
"input" and the reason. A missing or malformed pack raises `PolicyError` here, at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .embedding import EncoderConfig
from .failclosed import Deadline, FailClosed
from .image_gate import ImageChecksConfig, LayeredImageGate
from .policy import load_pack
from .prompt_gate import LayeredPromptGate
from .verdict import ImageGate, PromptGate


@dataclass(frozen=True)
class PromptGateConfig:
    embedding: bool = True  # False: no encoder (lexical lists, and the pack's n-gram classifier if it has one)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    deadline: Deadline = field(default_factory=lambda: Deadline(base_s=5.0, per_item_s=0.05))


def load_prompt_gate(policy_path: str | None = None, config: PromptGateConfig | None = None) -> PromptGate:
    """Prompt gate for the pack at policy_path (default: the shipped pack)."""
    config = config or PromptGateConfig()
    inner = LayeredPromptGate(load_pack(policy_path), config.embedding, config.encoder)
    return FailClosed(inner, config.deadline, echo_errors=False)


@dataclass(frozen=True)
class ImageGateConfig:
    checks: ImageChecksConfig = field(default_factory=ImageChecksConfig)
    deadline: Deadline = field(default_factory=lambda: Deadline(base_s=10.0, per_item_s=1.0))


def load_image_gate(policy_path: str | None = None, config: ImageGateConfig | None = None) -> ImageGate:
    """Image gate for the pack at policy_path (default: the shipped pack)."""
    config = config or ImageGateConfig()
    inner = LayeredImageGate(load_pack(policy_path), config.checks)
    return FailClosed(inner, config.deadline, echo_errors=True)
