"""Calibration: pick each category's review/block similarity thresholds on a labelled set, then measure the gate.

The development set is split deterministically (crc32 of the prompt) into a calibration half, on which thresholds
are picked, and a held-out half, so the held-out numbers are not fitted.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .embedding import EncoderConfig
from .policy import BENIGN_ANCHOR, PROMPT_CATEGORIES, PolicyPack
from .prompt_gate import LayeredPromptGate, contrast, lexical_verdict
from .verdict import Decision, Verdict

DEFAULT_DEVSET = Path(__file__).parent / "data" / "devset.txt"
BENIGN = "benign"
GRID = np.round(np.arange(0.30, 0.951, 0.005), 3)


DEFAULT_DEVSETS = (DEFAULT_DEVSET, Path(__file__).parent / "data" / "devset_ml.tsv")
SEALED = Path(__file__).parent / "data" / "sealed.tsv"  # report only: never read while picking anything


@dataclass(frozen=True)
class Example:
    label: str
    text: str
    lang: str = "en"

    @property
    def split(self) -> str:
        return "calib" if zlib.crc32(self.text.encode("utf-8")) % 2 == 0 else "holdout"


@dataclass(frozen=True)
class Targets:
    csam_block_recall: float = 0.95
    recall: float = 0.90  # block or review, every other category
    margin: float = 0.05  # aim this much above the target on the calibration half
    benign_budget: float = 0.01  # most benign prompts (fraction) one category's review band may take
    block_gap: float = 0.03  # block band starts this far above the highest benign similarity


def load_devset(*paths: str | Path) -> list[Example]:
    """Labelled prompts, '<label>\\t<prompt>' or '<lang>\\t<label>\\t<prompt>' per line; default: the shipped sets."""
    out = []
    for path in paths or DEFAULT_DEVSETS:
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            lang, label, text = cols if len(cols) == 3 else ("en", *cols) if len(cols) == 2 else ("", "", "")
            if label not in PROMPT_CATEGORIES + (BENIGN,) or not text:
                raise ValueError(f"{path}:{n}: expected '[<lang>\\t]<label>\\t<prompt>' with a known label")
            out.append(Example(label, text, lang))
    return out


@dataclass(frozen=True)
class Thresholds:
    category: str
    review: float
    block: float


def pick_thresholds(pack: PolicyPack, examples: list[Example], encoder: EncoderConfig,
                    targets: Targets = Targets()) -> list[Thresholds]:
    """Per category: the highest review threshold that reaches the recall target (within the benign budget)."""
    gate = LayeredPromptGate(pack, True, encoder)
    gate.load()
    rp, lexical = gate.region("default")
    calib = [e for e in examples if e.split == "calib"]
    lex = [lexical_verdict(rp, lexical.findings(e.text)) for e in calib]
    sims = contrast(rp.clusters, gate.similarities([e.text for e in calib]))
    labels = np.array([e.label for e in calib])
    benign = labels == BENIGN
    out = []
    for cat in PROMPT_CATEGORIES:
        cols = [j for j, c in enumerate(rp.clusters) if c.category == cat]
        if not cols:
            continue
        s = sims[:, cols].max(axis=1)
        zero_tolerance = cat in pack.review.zero_tolerance
        need = Decision.BLOCK if zero_tolerance else Decision.REVIEW
        lex_caught = np.array([v is not None and (v.decision == Decision.BLOCK or v.decision == need) for v in lex])
        lex_flag = np.array([v is not None for v in lex])
        pos = labels == cat
        target = min(1.0, (targets.csam_block_recall if zero_tolerance else targets.recall) + targets.margin)
        best = GRID[0]
        for t in GRID[::-1]:  # highest threshold first: fewest benign prompts taken
            recall = (lex_caught[pos] | (s[pos] >= t)).mean() if pos.any() else 1.0
            taken = ((s[benign] >= t) & ~lex_flag[benign]).mean() if benign.any() else 0.0
            if taken > targets.benign_budget:
                break
            best = t
            if recall >= target:
                break
        top_benign = float(s[benign].max()) if benign.any() else 0.0
        block = best if zero_tolerance else float(min(0.99, max(best, top_benign + targets.block_gap)))
        out.append(Thresholds(cat, float(best), round(block, 3)))
    return out


def apply_thresholds(pack: PolicyPack, thresholds: list[Thresholds]) -> PolicyPack:
    by_cat = {t.category: t for t in thresholds}
    clusters = tuple(
        replace(c, review=by_cat[c.category].review, block=by_cat[c.category].block) if c.category in by_cat else c
        for c in pack.clusters
    )
    return replace(pack, clusters=clusters)


@dataclass(frozen=True)
class Row:
    category: str
    n: int
    blocked: int
    flagged: int  # block or review
    predicted: int  # prompts the gate put in this category
    correct: int  # ... that really are

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else float("nan")


def evaluate(gate, examples: list[Example]) -> list[Row]:
    """Screen every example through the real gate; one row per category plus the benign row."""
    verdicts: list[Verdict] = gate.screen([e.text for e in examples])
    rows = []
    for cat in PROMPT_CATEGORIES + (BENIGN,):
        mine = [v for e, v in zip(examples, verdicts) if e.label == cat]
        pred = [(e, v) for e, v in zip(examples, verdicts)
                if v.decision != Decision.ALLOW and v.categories and v.categories[0] == cat]
        rows.append(Row(
            cat, len(mine), sum(v.decision == Decision.BLOCK for v in mine),
            sum(v.decision != Decision.ALLOW for v in mine), len(pred), sum(e.label == cat for e, _ in pred),
        ))
    return rows


def format_table(title: str, rows: list[Row]) -> str:
    lines = [title, f"{'category':<10} {'n':>4} {'block_recall':>12} {'recall':>7} {'precision':>9}"]
    for r in rows:
        if r.category == BENIGN:
            lines.append(f"{'benign':<10} {r.n:>4}   not allowed: {r.flagged} ({r.flagged / max(r.n, 1):.1%}),"
                         f" blocked: {r.blocked}")
        else:
            lines.append(f"{r.category:<10} {r.n:>4} {r.blocked / max(r.n, 1):>12.3f} {r.flagged / max(r.n, 1):>7.3f}"
                         f" {r.precision:>9.3f}")
    return "\n".join(lines)


def write_thresholds(pack_path: Path, pack: PolicyPack, out: Path, version: str) -> None:
    """Copy the pack file with new cluster thresholds and version, keeping its comments and layout."""
    text = pack_path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', text, count=1)
    for c in pack.clusters:
        if c.category == BENIGN_ANCHOR:
            continue
        head = r'(\[\[clusters\]\]\nid = "' + re.escape(c.id) + r'"\n(?:(?!\[).*\n)*?)'  # stay in this table
        pat = re.compile(head + r"review = [0-9.]+\nblock = [0-9.]+")
        text, n = pat.subn(lambda m: f"{m.group(1)}review = {c.review}\nblock = {c.block}", text, count=1)
        if n != 1:
            raise ValueError(f"cluster {c.id!r}: expected 'review = ' and 'block = ' lines after its id")
    out.write_text(text, encoding="utf-8")
