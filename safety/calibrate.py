"""Calibration: pick each category's review/block similarity thresholds on a labelled set, then measure the gate.

The development set is split deterministically (crc32 of the prompt) into a calibration half, on which thresholds
are picked, and a held-out half, so the held-out numbers are not fitted.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .embedding import EncoderConfig
from .policy import BENIGN_ANCHOR, PROMPT_CATEGORIES, PolicyPack
from .prompt_gate import LayeredPromptGate, contrast, lexical_verdict
from .verdict import Decision, Verdict

DEFAULT_DEVSET = Path(__file__).parent / "data" / "devset.txt"
BENIGN = "benign"
GRID = np.round(np.arange(0.30, 0.951, 0.005), 3)


DEFAULT_DEVSETS = (DEFAULT_DEVSET, *(Path(__file__).parent / "data" / f"devset_{name}.tsv" for name in (
    "ml", "inflect", "cat_romance", "cat_germanic_slavic_tr", "cat_ar_hi_id", "cat_cjk",
    "r2_latin_a", "r2_latin_b", "r2_hi_a", "r2_hi_b", "r2_cjk_a", "r2_cjk_b")))
SEALED = Path(__file__).parent / "data" / "sealed.tsv"  # report only: never read while picking anything
SEALED_V2 = Path(__file__).parent / "data" / "sealed_v2.tsv"  # report only, written blind after 2.0.0


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
    csam_block_recall: float = 1.0  # every development prompt: lexical block or the cluster's band
    recall: float = 0.95  # block or review, every other category
    margin: float = 0.05  # aim this much above the target on the calibration half
    benign_budget: float = 0.004  # most benign prompts (fraction) one category's review band may take
    block_gap: float = 0.03  # block band starts this far above the highest benign similarity
    band: float = 0.04  # review band width below the block threshold, where the benign budget allows


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
    review: float  # allow below this
    block: float  # block at or above this (with a second opinion near it); review between


@dataclass(frozen=True)
class Margins:
    """How much room each threshold leaves on the calibration half, and the prompts nearest each threshold."""

    thresholds: Thresholds
    weakest_positive: float  # lowest score among the category's prompts the lexical gate did not catch
    top_benign: float  # highest benign score
    nearest: tuple[tuple[str, str, float, str], ...]  # (threshold, label, score, prompt) nearest review and block


def _scores(pack: PolicyPack, examples: list[Example], encoder: EncoderConfig):
    gate = LayeredPromptGate(pack, True, encoder)
    gate.load()
    rp, lexical = gate.region("default")
    lex = [lexical_verdict(rp, lexical.findings(e.text)) for e in examples]
    read = np.array([gate.reads(e.text) for e in examples], bool)  # prompts the embedding stage scores at all
    return rp, lex, contrast(rp.clusters, gate.similarities([e.text for e in examples])), read


def calibrate(pack: PolicyPack, examples: list[Example], encoder: EncoderConfig,
              targets: Targets = Targets()) -> list[Margins]:
    """Per category on the calibration half: the highest review threshold that reaches the recall target within the
    benign budget, a block threshold `block_gap` above the highest benign score, and the margins around both."""
    calib = [e for e in examples if e.split == "calib"]
    rp, lex, sims, read = _scores(pack, calib, encoder)
    labels = np.array([e.label for e in calib])
    benign = labels == BENIGN
    lex_flag = np.array([v is not None for v in lex])
    out = []
    for cat in PROMPT_CATEGORIES:
        cols = [j for j, c in enumerate(rp.clusters) if c.category == cat]
        if not cols:
            continue
        s = sims[:, cols].max(axis=1)
        zero_tolerance = cat in pack.review.zero_tolerance
        # Zero tolerance: the lexical rules block every clear case, so the cluster is calibrated as a backstop on its
        # own scores (its band sends paraphrases without listed words to review).
        lex_caught = np.array([v is not None and not zero_tolerance for v in lex])
        pos = (labels == cat) & (read | lex_caught)  # a prompt the encoder does not read is no threshold's business
        target = min(1.0, (targets.csam_block_recall if zero_tolerance else targets.recall) + targets.margin)
        taken = np.array([((s[benign] >= t) & ~lex_flag[benign]).mean() if benign.any() else 0.0 for t in GRID])
        recall = np.array([(lex_caught[pos] | (s[pos] >= t)).mean() if pos.any() else 1.0 for t in GRID])
        ok = taken <= targets.benign_budget  # thresholds the benign budget allows (GRID ascending)
        floor = float(GRID[ok][0]) if ok.any() else float(GRID[-1])
        reach = ok & (recall >= target)
        best = float(GRID[reach][-1]) if reach.any() else floor  # highest allowed threshold that reaches the target
        top_benign = float(s[benign].max()) if benign.any() else 0.0
        block = round(float(min(0.99, max(best, top_benign + targets.block_gap))), 3)
        review = max(floor, min(best, block - targets.band))  # a review band below every block threshold
        th = Thresholds(cat, round(float(review), 3), block)
        open_pos = pos & ~lex_caught
        weakest = float(s[open_pos].min()) if open_pos.any() else float("nan")
        near = []
        for name, t in (("review", th.review), ("block", th.block)):
            for k in np.argsort(np.abs(s - t))[:3]:
                near.append((name, calib[k].label, float(s[k]), calib[k].text))
        out.append(Margins(th, weakest, top_benign, tuple(near)))
    return out


def format_margins(margins: list[Margins]) -> str:
    """Per category: thresholds, the room they leave, and the development prompts nearest each threshold."""
    lines = [(f"{'category':<10} {'review>=':>8} {'block>=':>8} {'weakest+':>9} {'top benign':>10}"
              f" {'review-benign':>13} {'block-benign':>12}")]
    for m in margins:
        t = m.thresholds
        lines.append(f"{t.category:<10} {t.review:>8.3f} {t.block:>8.3f} {m.weakest_positive:>9.3f} {m.top_benign:>10.3f}"
                     f" {t.review - m.top_benign:>+13.3f} {t.block - m.top_benign:>+12.3f}")
    lines.append("\nprompts nearest each threshold (development set):")
    for m in margins:
        for name, label, score, text in m.nearest:
            lines.append(f"  {m.thresholds.category:<10} {name:<6} {score:.3f} [{label}] {text[:70]}")
    return "\n".join(lines)


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
    """Copy the pack file with new cluster thresholds and version, keeping its comments and layout (files it names
    stay the same files when the copy is written elsewhere)."""
    text = pack_path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', text, count=1)
    if out.parent.resolve() != pack_path.parent.resolve():  # keep pointing at this pack's language files
        m = re.search(r'(?m)^language_dir = "(.*)"$', text)
        lang_dir = (pack_path.parent / (m.group(1) if m else "lang")).resolve().as_posix()
        text = re.sub(r'(?m)^language_dir = ".*"$', f'language_dir = "{lang_dir}"', text, count=1)
        if pack.classifier.model:  # and at its classifier's weights
            text = re.sub(r'(\[classifier\]\n(?:(?!\[).*\n)*?)model = ".*"',
                          lambda m: f'{m.group(1)}model = "{Path(pack.classifier.model).as_posix()}"', text, count=1)
    for c in pack.clusters:
        if c.category == BENIGN_ANCHOR:
            continue
        head = r'(\[\[clusters\]\]\nid = "' + re.escape(c.id) + r'"\n(?:(?!\[).*\n)*?)'  # stay in this table
        pat = re.compile(head + r"review = [0-9.]+\nblock = [0-9.]+")
        text, n = pat.subn(lambda m: f"{m.group(1)}review = {c.review}\nblock = {c.block}", text, count=1)
        if n != 1:
            raise ValueError(f"cluster {c.id!r}: expected 'review = ' and 'block = ' lines after its id")
    out.write_text(text, encoding="utf-8")


def language_table(examples: list[Example], verdicts: list[Verdict], zero_tolerance: Sequence[str]) -> str:
    """Per language: zero-tolerance categories (the pack's `review.zero_tolerance`: minors) blocked, other harmful
    caught (review or block), benign not allowed; pooled last."""
    langs = list(dict.fromkeys(e.lang for e in examples))
    lines = [f"{'lang':<6} {'zero-tol. blocked':>15} {'others caught':>14} {'benign not allowed':>19}"]
    totals = np.zeros(6, int)
    for lang in langs + ["pooled"]:
        if lang == "pooled":
            c = totals
        else:
            c = np.zeros(6, int)
            for e, v in zip(examples, verdicts):
                if e.lang != lang:
                    continue
                k = 0 if e.label in zero_tolerance else 4 if e.label == BENIGN else 2
                c[k] += 1
                c[k + 1] += (v.decision == Decision.BLOCK) if k == 0 else (v.decision != Decision.ALLOW)
            totals += c
        lines.append(f"{lang:<6} {c[1]:>5}/{c[0]:<3} {c[1] / max(c[0], 1):>5.2f} {c[3]:>4}/{c[2]:<3} {c[3] / max(c[2], 1):>5.2f}"
                     f" {c[5]:>4}/{c[4]:<3} {c[5] / max(c[4], 1):>8.1%}")
    return "\n".join(lines)
