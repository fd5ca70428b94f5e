"""Prompt gate: input checks, then the lexical gate, then (for what lexical did not block) the embedding clusters."""
from __future__ import annotations

import re
import threading
from dataclasses import replace
from typing import Sequence

import numpy as np

from .classifier import PromptClassifier
from .embedding import ClusterIndex, Encoder, EncoderConfig
from .inputs import as_text, prompt_problem
from .langpacks import LanguageDetector
from .lexical import LexicalAnalysis, LexicalFinding, LexicalGate
from .policy import BENIGN_ANCHOR, ClassifierPolicy, Cluster, PolicyPack, RegionPolicy
from .verdict import Decision, Verdict

SEVERITY = {Decision.ALLOW: 0, Decision.REVIEW: 1, Decision.BLOCK: 2}
# A recheck is a second encoder call with its own fixed cost (the weights stream through once per call): for a
# single prompt, int8 + an fp32 recheck takes longer than fp32 alone, so small calls skip the fast pass (the ~8 % of
# prompts that would be rechecked set a single prompt's p99).
FAST_MIN_BATCH = 8
_LATIN = re.compile("[A-Za-z\u00c0-\u024f\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a]")  # incl. full-width


def lexical_verdict(rp: RegionPolicy, findings: list[LexicalFinding]) -> Verdict | None:
    """The most severe lexical finding as a verdict (None when nothing matched)."""
    if not findings:
        return None
    findings = sorted(findings, key=lambda f: -SEVERITY[f.action])
    top = findings[0]
    cats = tuple(dict.fromkeys(f.category for f in findings if f.action == top.action))
    reasons = tuple(
        f"rule={f.rule} action={f.action.value} spans=" + ",".join(f"{a}-{b}" for a, b in f.spans) for f in findings
    )
    return Verdict(top.action, "lexical", rp.pack_id, rp.version, cats, 1.0, reasons)


def contrast(clusters: Sequence[Cluster], sims: np.ndarray) -> np.ndarray:
    """Similarities discounted by benign anchors: s - max(0, b - s), b the best benign-anchor similarity.

    A prompt nearer to a benign anchor ("a suicide prevention hotline poster") than to a prohibited cluster loses
    that difference; anchor columns come back as -1. Works on one row (n_clusters,) or a batch (n, n_clusters).
    """
    anchor = np.array([c.category == BENIGN_ANCHOR for c in clusters], bool)
    out = np.array(sims, np.float32, copy=True)
    if anchor.any():
        b = out[..., anchor].max(axis=-1, keepdims=True)
        out = out - np.maximum(0.0, b - out)
    out[..., anchor] = -1.0
    return out


def second_opinion(rp: RegionPolicy, cluster: Cluster, score: float, lex: LexicalAnalysis | None) -> str | None:
    """Why an embedding block stands ("margin" or "lexical"), or None when it needs a second signal and has none.

    A block stands when the lexical gate saw one of the category's signal sets in the prompt, or when the score clears
    the block threshold by the pack's margin on an English prompt (the encoder is English-only) in a category that
    does not always ask for the lexical signal.
    """
    if lex is None:
        return "margin"
    so = rp.second_opinion
    if set(so.signals.get(cluster.category, ())) & lex.sets:
        return "lexical"
    if cluster.category not in so.always and lex.language == "en" and score >= cluster.block + so.margin:
        return "margin"
    return None


def needs_exact(rp: RegionPolicy, adjusted: np.ndarray, within: float) -> np.ndarray:
    """(n,) bool: rows a fast (int8) score may not decide. It decides only clear allows: every cluster's contrasted
    score below its review threshold by more than `within`. Anything else (a score near or above a review
    threshold, where which cluster wins, its band and its second opinion all follow the scores; NaN) is rescored."""
    cols = [j for j, c in enumerate(rp.clusters) if c.category != BENIGN_ANCHOR]
    if not cols:
        return np.zeros(len(adjusted), bool)
    review = np.array([rp.clusters[j].review for j in cols], np.float32)  # (k,)
    return ~(adjusted[:, cols] < review - within).all(axis=1)


def embedding_verdict(rp: RegionPolicy, sims: np.ndarray, lex: LexicalAnalysis | None = None,
                      adjusted: np.ndarray | None = None) -> Verdict:
    """Per-cluster bands on contrasted similarity: below review -> allow, review band -> review, >= block -> block
    if a second opinion agrees (else review); the most severe cluster decides. `adjusted`: `contrast` of sims, when
    the caller has it for a whole batch."""
    adj = contrast(rp.clusters, sims) if adjusted is None else adjusted
    best: tuple[int, float, Cluster, float] | None = None
    for c, s, raw in zip(rp.clusters, adj.tolist(), sims.tolist()):
        if c.category == BENIGN_ANCHOR:
            continue
        level = 2 if s >= c.block else 1 if s >= c.review else 0
        if best is None or (level, s) > (best[0], best[1]):
            best = (level, s, c, raw)
    if best is None:
        return Verdict(Decision.ALLOW, "embedding", rp.pack_id, rp.version, (), None, ("no clusters in pack",))
    level, s, c, raw = best
    reasons = [f"cluster={c.id} similarity={s:.3f} raw={raw:.3f} review>={c.review:.3f} block>={c.block:.3f}"]
    if level == 2:
        why = second_opinion(rp, c, s, lex)
        reasons.append(f"second_opinion={why or 'none'}")
        level = 2 if why else 1
    decision = (Decision.ALLOW, Decision.REVIEW, Decision.BLOCK)[level]
    cats = (c.category,) if level else ()
    return Verdict(decision, "embedding", rp.pack_id, rp.version, cats, round(s, 4), tuple(reasons))


def classifier_verdict(rp: RegionPolicy, v: Verdict, harm: float, category: str) -> Verdict:
    """An allow the n-gram classifier disputes becomes review (it never blocks, never clears another stage's flag)."""
    cp: ClassifierPolicy = rp.classifier
    if v.decision != Decision.ALLOW or harm < cp.review or category not in cp.categories:
        return v
    why = f"classifier={category} score={harm:.3f} review>={cp.review:.3f}"
    return Verdict(Decision.REVIEW, "classifier", rp.pack_id, rp.version, (category,), round(harm, 4),
                   v.reasons + (why,))


class LayeredPromptGate:
    """The prompt gate behind `FailClosed`: heavy pieces are built once, on the first `load()`."""

    def __init__(self, pack: PolicyPack, use_embedding: bool = True, encoder: EncoderConfig = EncoderConfig()):
        self.pack = pack
        self.pack_id, self.pack_version = pack.id, pack.version
        self.use_embedding = use_embedding
        self._encoder_config = encoder
        self._lock = threading.Lock()
        self._lexical: LexicalGate | None = None
        self._clusters: ClusterIndex | None = None
        self._classifier: PromptClassifier | None = None
        self._regions: dict[str, tuple[RegionPolicy, LexicalGate]] = {}

    def load(self) -> None:
        with self._lock:
            if self._lexical is None:
                detector = LanguageDetector(self.pack.languages)
                self._lexical = LexicalGate(dict(self.pack.term_sets), self.pack.rules, detector=detector,
                                            inflections=self.pack.inflections)
            if self.pack.classifier.model and self._classifier is None:
                self._classifier = PromptClassifier.load(self.pack.classifier.model)
            if self.use_embedding and self._clusters is None:
                self._clusters = ClusterIndex(Encoder(self._encoder_config), self.pack.clusters)

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n clusters) similarity of each text to each cluster of the pack (for calibration and tools)."""
        self.load()
        if self._clusters is None:
            raise RuntimeError("this prompt gate was built without the embedding stage")
        sims = np.full((len(texts), len(self.pack.clusters)), -1.0, np.float32)  # prompts it does not read: no score
        read = [k for k, text in enumerate(texts) if self.reads(text)]
        if read:
            sims[read] = self._clusters.similarities([texts[k] for k in read])
        return sims

    def region(self, region: str) -> tuple[RegionPolicy, LexicalGate]:
        if region not in self._regions:
            rp = self.pack.for_region(region)
            self._regions[region] = (rp, self._lexical.with_rules(rp.rules))
        return self._regions[region]

    def screen(self, prompts: Sequence[str], region: str = "default") -> list[Verdict]:
        self.load()
        rp, lexical = self.region(region)
        verdicts: list[Verdict | None] = [None] * len(prompts)
        pending: list[tuple[int, str, LexicalAnalysis, Verdict | None]] = []
        for i, prompt in enumerate(prompts):
            problem = prompt_problem(prompt, rp.limits)
            if problem:
                verdicts[i] = Verdict(Decision.REVIEW, "input", rp.pack_id, rp.version, (), None, (problem,))
                continue
            text = as_text(prompt)
            analysis = lexical.analyse(text)
            lex = lexical_verdict(rp, analysis.findings)
            if lex is not None and lex.decision == Decision.BLOCK:
                verdicts[i] = _with_language(lex, analysis)
            else:
                pending.append((i, text, analysis, lex))
        read = [k for k, (_, text, _, _) in enumerate(pending) if self.reads(text)] if self._clusters else []
        sims, exact = self._similarities(rp, [pending[k][1] for k in read]) if read else (None, None)
        adjusted = contrast(rp.clusters, sims) if sims is not None else None
        row = {k: r for r, k in enumerate(read)}
        skipped = ("embedding=skipped script",) if self._clusters else ()
        harm, harm_cat = (self._classifier.harm([t for _, t, _, _ in pending]) if self._classifier and pending
                          else (None, None))
        for k, (i, _, analysis, lex) in enumerate(pending):
            r = row.get(k)
            emb = embedding_verdict(rp, sims[r], analysis, adjusted[r]) if r is not None else None
            if emb is not None:
                emb = replace(emb, reasons=emb.reasons + (f"encoder={'fp32' if exact[r] else 'int8'}",))
            if emb is None or (lex is not None and SEVERITY[lex.decision] >= SEVERITY[emb.decision]):
                emb = lex or Verdict(Decision.ALLOW, "lexical", rp.pack_id, rp.version, (), None,
                                     skipped if r is None else ())
            if harm is not None:
                emb = classifier_verdict(rp, emb, float(harm[k]), harm_cat[k])
            verdicts[i] = _with_language(emb, analysis)
        return verdicts

    def _similarities(self, rp: RegionPolicy, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, n clusters) similarities and (n,) which rows are fp32: a fast (int8) pass over every text, then fp32
        for each text the fast pass cannot clear (`needs_exact`: within `[embedding] recheck_within` of a review
        threshold, or above one), which then decides. Calls of fewer than FAST_MIN_BATCH texts go straight to fp32."""
        within = self.pack.embedding.recheck_within
        if not self._clusters.encoder.has_fast or within >= 1 or len(texts) < FAST_MIN_BATCH:
            return self._clusters.similarities(texts), np.ones(len(texts), bool)
        sims = self._clusters.similarities(texts, exact=False)
        exact = needs_exact(rp, contrast(rp.clusters, sims), within)
        if exact.any():
            sims[exact] = self._clusters.similarities([t for t, e in zip(texts, exact) if e])
        return sims, exact

    def reads(self, text: str) -> bool:
        """Whether the embedding stage scores this prompt (the pack's `embedding.scripts`)."""
        return self.pack.embedding.scripts == "any" or _LATIN.search(text) is not None


def _with_language(v: Verdict, analysis: LexicalAnalysis) -> Verdict:
    """The verdict with the prompt's likeliest language as a reason code (evidence only; every pack ran)."""
    return replace(v, reasons=v.reasons + (f"lang={analysis.language}",))
