"""Margins instead of cliffs: review bands, a second opinion before an embedding block, calibration output."""
from __future__ import annotations

import io
import sys
from dataclasses import replace

import numpy as np
import pytest

from hallmark.cli import main
from safety.calibrate import (
    Margins,
    Thresholds,
    format_margins,
    language_table,
    load_devset,
)
from safety.embedding import EncoderConfig
from safety.lexical import LexicalAnalysis
from safety.policy import BENIGN_ANCHOR, load_pack
from safety.prompt_gate import LayeredPromptGate, embedding_verdict
from safety.verdict import Decision

PACK = load_pack()
RP = PACK.for_region("default")
ENC = EncoderConfig(threads=1)


@pytest.fixture(scope="module")
def gate() -> LayeredPromptGate:
    g = LayeredPromptGate(PACK, True, ENC)
    g.load()
    return g


def _row(category: str, score: float) -> np.ndarray:
    """Similarities where one cluster of `category` scores `score` and everything else (anchors too) is far."""
    sims = np.full(len(RP.clusters), -1.0, np.float32)
    j = next(k for k, c in enumerate(RP.clusters) if c.category == category)
    sims[j] = score
    return sims


def _lex(sets: tuple[str, ...] = (), language: str = "en") -> LexicalAnalysis:
    return LexicalAnalysis([], frozenset(sets), language)


def _cluster(category: str):
    return next(c for c in RP.clusters if c.category == category)


@pytest.mark.parametrize("category", ["csam", "ncii", "violence", "extremism", "self_harm", "hate"])
def test_every_category_has_a_review_band_below_its_block_threshold(category):
    for c in RP.clusters:
        if c.category == category:
            assert c.review < c.block, c.id


def test_self_harm_embedding_scores_alone_review_however_high():
    c = _cluster("self_harm")
    v = embedding_verdict(RP, _row("self_harm", c.block + 0.3), _lex())
    assert v.decision == Decision.REVIEW and "second_opinion=none" in v.reasons
    assert embedding_verdict(RP, _row("self_harm", c.block + 0.3), _lex(("self_harm",))).decision == Decision.BLOCK


@pytest.mark.parametrize("category", ["csam", "violence", "hate"])
def test_bands_allow_review_and_block_by_score(category):
    c, margin = _cluster(category), RP.second_opinion.margin
    below = embedding_verdict(RP, _row(category, c.review - 0.01), _lex())
    band = embedding_verdict(RP, _row(category, (c.review + c.block) / 2), _lex())
    clear = embedding_verdict(RP, _row(category, c.block + margin + 0.01), _lex())
    assert below.decision == Decision.ALLOW
    assert band.decision == Decision.REVIEW and band.categories == (category,)
    assert clear.decision == Decision.BLOCK and "second_opinion=margin" in clear.reasons


@pytest.mark.parametrize("category", ["csam", "ncii", "violence", "extremism", "self_harm", "hate"])
def test_a_near_threshold_block_needs_a_second_signal(category):
    c = _cluster(category)
    near = _row(category, c.block + RP.second_opinion.margin / 2)
    alone = embedding_verdict(RP, near, _lex())
    assert alone.decision == Decision.REVIEW and "second_opinion=none" in alone.reasons
    signal = RP.second_opinion.signals[category][0]
    backed = embedding_verdict(RP, near, _lex((signal,)))
    assert backed.decision == Decision.BLOCK and "second_opinion=lexical" in backed.reasons


def test_off_english_the_embedding_never_blocks_alone():
    c = _cluster("violence")
    far = _row("violence", c.block + RP.second_opinion.margin + 0.1)
    assert embedding_verdict(RP, far, _lex(language="es")).decision == Decision.REVIEW
    assert embedding_verdict(RP, far, _lex(("gore",), language="es")).decision == Decision.BLOCK


def test_the_real_gate_routes_a_near_threshold_prompt_to_review(gate):
    text = "a shadowy figure standing over a motionless body in an alley"
    sims = gate.similarities([text])[0]  # the gate's own scores decide which cluster is nearest
    best = int(np.argmax([s if c.category != BENIGN_ANCHOR else -1 for c, s in zip(RP.clusters, sims)]))
    s = float(sims[best])
    target = RP.clusters[best].category
    clusters = tuple(replace(c, review=s - 0.01, block=s + 0.01) if c.category == target else
                     replace(c, review=0.99, block=0.99) if c.category != BENIGN_ANCHOR else c for c in PACK.clusters)
    near = LayeredPromptGate(replace(PACK, clusters=clusters), True, ENC)
    near._clusters, near._lexical = gate._clusters, gate._lexical  # same model and lists, other thresholds
    (v,) = near.screen([text])
    assert v.decision == Decision.REVIEW and v.categories == (target,), v


@pytest.mark.parametrize("text", ["a bloody knife on the floor", "a bloody knife on the floor, horror film prop",
                                  "a woman in lingerie, boudoir photo"])
def test_the_cliffs_of_issue_18_no_longer_block(gate, text):
    (v,) = gate.screen([text])
    assert v.decision != Decision.BLOCK, v
    if "lingerie" in text or "prop" in text:
        assert v.decision == Decision.ALLOW, v


def test_calibrate_prints_margins_for_every_category_and_the_nearest_prompts(monkeypatch, capsys, tmp_path):
    dev = tmp_path / "dev.tsv"
    rows = load_devset()
    keep = [e for cat in ("csam", "ncii", "violence", "extremism", "self_harm", "hate", "benign")
            for e in [r for r in rows if r.label == cat][:8]]
    dev.write_text("".join(f"{e.lang}\t{e.label}\t{e.text}\n" for e in keep), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["safety", "calibrate", "--devset", str(dev), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("thresholds and margins"):]
    for cat in ("csam", "ncii", "violence", "extremism", "self_harm", "hate"):
        assert f"\n{cat:<10} " in table, cat
    assert "prompts nearest each threshold" in table and "review-benign" in table
    assert "[per language" in out and "pooled" in out
    assert "without the n-gram classifier" in out  # it saw every development prompt: in-sample it would flag them all


def test_format_margins_and_language_table_shapes():
    m = Margins(Thresholds("violence", 0.5, 0.56), 0.52, 0.47, (("review", "benign", 0.49, "a quiet lake"),))
    text = format_margins([m])
    assert "violence      0.500    0.560" in text and "+0.030" in text and "a quiet lake" in text
    ex = load_devset()[:3]
    table = language_table(ex, [replace_decision(Decision.BLOCK)] * 3, ("csam",))
    assert table.splitlines()[0].startswith("lang") and table.splitlines()[-1].startswith("pooled")


def replace_decision(decision: Decision):
    from safety.verdict import Verdict

    return Verdict(decision, "test", "p", "1")
