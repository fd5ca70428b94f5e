"""Between the safety library's Verdict and the GateResult carried in events."""
from __future__ import annotations

from safety.verdict import Decision as SafetyDecision, Verdict
from schemas.events import Decision, GateResult

_RANK = {Decision.ALLOW: 0, Decision.REVIEW: 1, Decision.BLOCK: 2}


def gate_result(verdict: Verdict) -> GateResult:
    return GateResult(decision=Decision(SafetyDecision(verdict.decision).value), stage=verdict.stage,
                      categories=list(verdict.categories), score=verdict.score, reasons=list(verdict.reasons),
                      policy_id=verdict.policy_id, policy_version=verdict.policy_version)


def image_gate_config(settings):
    """The image gate of the stages: the shipped pack's checks plus the operator's hash banks (`var/banks`)."""
    from safety.gates import ImageGateConfig
    from safety.image_gate import ImageChecksConfig

    return ImageGateConfig(checks=ImageChecksConfig(banks=str(settings.banks_dir)))


def fail_closed(reason: str, policy_id: str = "unknown", policy_version: str = "unknown") -> GateResult:
    """What a gate that errored or timed out yields: review, never allow."""
    return GateResult(decision=Decision.REVIEW, stage="error", reasons=[reason[:300]], policy_id=policy_id,
                      policy_version=policy_version)


def worst(results: list[GateResult]) -> GateResult:
    """One verdict for several images: the strictest decision, with every category and reason."""
    top = max(results, key=lambda r: (_RANK[r.decision], r.score or 0.0))
    cats = sorted({c for r in results for c in r.categories})
    reasons = list(dict.fromkeys(x for r in results if r.decision == top.decision for x in r.reasons))
    return top.model_copy(update={"categories": cats, "reasons": reasons})
