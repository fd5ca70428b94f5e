"""Prompt classifier: character n-grams of the normalised prompt, one multinomial logistic regression.

A third signal beside the word lists and the English encoder, trained on the development sets in every covered
language. Character n-grams (2-5, inside words) see stems, inflections and compounds the lists do not spell out, in
any script, after the same normalisation (confusables, accents, casefold) the lexical gate uses. A long prompt is
also scored in windows of a few words, and its most harmful segment counts. It only ever asks for review: it never
blocks on its own and never clears what another stage flagged.

    model = train(texts, labels)                   # scikit-learn's LogisticRegression, ~10 s on the development sets
    model.save("classifier.npz")                   # arrays only, no pickle
    harm, category = PromptClassifier.load("classifier.npz").harm(["..."])   # (n,) 1 - P(benign), likeliest class
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from .normalize import normalize
from .policy import BENIGN_ANCHOR as BENIGN  # the benign label of the development sets


@dataclass(frozen=True)
class FeatureConfig:
    ngram_min: int = 2
    ngram_max: int = 5
    buckets: int = 2**18  # hashed feature space (a power of two)

    def __post_init__(self):
        if not 1 <= self.ngram_min <= self.ngram_max or self.buckets < 2 or self.buckets & (self.buckets - 1):
            raise ValueError(f"bad n-gram features {self}: need 1 <= min <= max and buckets a power of two")


@dataclass(frozen=True)
class TrainConfig:
    features: FeatureConfig = FeatureConfig()
    window: int = 10  # a prompt longer than this many words is also scored in windows of it (0: whole prompt only)
    c: float = 10.0  # inverse L2 strength of the logistic regression
    folds: int = 5  # out-of-fold scores for the review threshold
    seed: int = 0


_PRIME = np.uint64(1_000_003)
_MIX = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's multiplier: spreads the polynomial hash over the top bits


def ngram_counts(texts: Sequence[str], fc: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, bucket, count) of the character n-grams of each whitespace word, padded with one space each side.

    Vectorised over the whole batch: the padded words of every text are laid end to end (" a  b  c "), so an n-gram
    that holds two spaces in a row crosses a word and is dropped; the rest are hashed as a polynomial over code points.
    """
    padded = ["".join(f" {w} " for w in normalize(t).text.split()) for t in texts]
    lengths = np.fromiter((len(p) for p in padded), np.int64, len(padded))
    n_max, length = fc.ngram_max, int(lengths.sum())
    c = np.zeros(length + n_max, np.uint64)  # (L + n_max,) code points, zero-padded past the end
    c[:length] = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), np.uint32)
    h = np.empty((n_max, length), np.uint64)  # h[n - 1, i]: hash of c[i:i + n]
    h[0] = c[:length]
    for n in range(2, n_max + 1):
        h[n - 1] = h[n - 2] * _PRIME + c[n - 1:n - 1 + length]
    space = c == 32
    double = np.cumsum(space[:-1] & space[1:])  # double[k]: pairs of spaces among pairs (0, 1) .. (k, k + 1)
    double = np.r_[0, double]  # (L + n_max,)
    n = np.arange(1, n_max + 1)[:, None]  # (N, 1)
    i = np.arange(length)[None, :]  # (1, L)
    # an n-gram is kept when it fits in the batch and holds no two spaces in a row (it would cross a word)
    ok = (i + n <= length) & (double[np.minimum(i + n - 1, length + n_max - 1)] == double[i]) & (n >= fc.ngram_min)
    bits = int(fc.buckets).bit_length() - 1
    bucket = (((h ^ n.astype(np.uint64)) * _MIX) >> np.uint64(64 - bits))[ok].astype(np.int64)
    row = np.broadcast_to(np.repeat(np.arange(len(texts)), lengths)[None, :], ok.shape)[ok]
    key, count = np.unique(row * fc.buckets + bucket, return_counts=True)
    return key // fc.buckets, key % fc.buckets, count


def segments(text: str, window: int) -> list[str]:
    """The prompt and, when it is longer than `window` words, its windows of `window` words at a stride of half.

    Features are normalised over what is scored, so unrelated words dilute a harmful phrase ("..., highly detailed,
    8k, cinematic lighting, trending on artstation"); a window keeps the phrase with few neighbours.
    """
    words = text.split()
    if window <= 0 or len(words) <= window:
        return [text]
    step = max(1, window // 2)
    return [text] + [" ".join(words[i:i + window]) for i in range(0, len(words) - step, step)]


def tfidf(texts: Sequence[str], fc: FeatureConfig, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, bucket, value): sublinear tf (1 + log count) times idf, each row L2-normalised."""
    row, col, count = ngram_counts(texts, fc)
    return row, col, _weigh(row, col, count, idf, len(texts))


def _weigh(row: np.ndarray, col: np.ndarray, count: np.ndarray, idf: np.ndarray, n: int) -> np.ndarray:
    x = (1.0 + np.log(count)) * idf[col]
    norm = np.sqrt(np.bincount(row, x * x, minlength=n))
    return x / norm[row]


@dataclass(frozen=True, eq=False)
class PromptClassifier:
    """Trained weights: idf (buckets,), coef (classes, buckets), intercept (classes,). Scores are probabilities."""

    features: FeatureConfig
    classes: tuple[str, ...]
    idf: np.ndarray  # (V,)
    coef: np.ndarray  # (K, V)
    intercept: np.ndarray  # (K,)
    window: int = 0  # words a scoring window holds (segments); 0: the whole prompt only

    @cached_property
    def coef_t(self) -> np.ndarray:
        """(V, K): one gather per n-gram instead of one per class."""
        return np.ascontiguousarray(self.coef.T)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, K) class probabilities; a text with no n-grams gets the intercepts' softmax."""
        row, col, x = tfidf(texts, self.features, self.idf)
        logits = np.tile(self.intercept.astype(np.float64), (len(texts), 1))  # (n, K)
        if len(row):
            start = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])  # rows come sorted from np.unique
            logits[row[start]] += np.add.reduceat(self.coef_t[col] * x[:, None], start, axis=0)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def harm(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """(n,) 1 - P(benign) of each text's most harmful segment (the whole text or one of its windows), and that
        segment's likeliest harmful class."""
        segs = [segments(t, self.window) for t in texts]
        p = self.probabilities([s for ss in segs for s in ss])  # (segments, K)
        b = self.classes.index(BENIGN)
        seg_harm = 1.0 - p[:, b]
        p[:, b] = -1.0
        out, cats, start = np.zeros(len(texts)), [], 0
        for k, ss in enumerate(segs):
            j = start + int(np.argmax(seg_harm[start:start + len(ss)]))
            out[k] = seg_harm[j]
            cats.append(self.classes[int(p[j].argmax())])
            start += len(ss)
        return out, cats

    def save(self, path: str | Path) -> None:
        fc = self.features
        nz = np.flatnonzero(np.abs(self.coef).max(axis=0) > 0)  # buckets no training n-gram reached: weight zero
        np.savez_compressed(
            path, classes=np.array(self.classes), ngram=np.array([fc.ngram_min, fc.ngram_max, fc.buckets]),
            buckets=nz.astype(np.int32), idf=self.idf[nz].astype(np.float32), idf_unseen=self.idf.max(),
            coef=self.coef[:, nz].astype(np.float32), intercept=self.intercept.astype(np.float32),
            window=np.array(self.window),
        )

    @classmethod
    def load(cls, path: str | Path) -> "PromptClassifier":
        with np.load(path, allow_pickle=False) as z:
            lo, hi, buckets = (int(v) for v in z["ngram"])
            nz, classes = z["buckets"], tuple(str(c) for c in z["classes"])
            idf = np.full(buckets, z["idf_unseen"], np.float32)  # n-grams no training prompt had: the top idf
            coef = np.zeros((len(classes), buckets), np.float32)
            idf[nz], coef[:, nz] = z["idf"], z["coef"]
            intercept = z["intercept"].astype(np.float32)
            window = int(z["window"]) if "window" in z.files else 0
        if BENIGN not in classes:
            raise ValueError(f"classifier {path}: no {BENIGN!r} class")
        return cls(FeatureConfig(lo, hi, buckets), classes, idf, coef, intercept, window)


def _fit(texts: Sequence[str], labels: np.ndarray, classes: Sequence[str], tc: TrainConfig) -> PromptClassifier:
    """Smoothed idf (as scikit-learn's TfidfTransformer) and a class-balanced multinomial logistic regression."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    fc = tc.features
    row, col, count = ngram_counts(texts, fc)
    df = np.bincount(col, minlength=fc.buckets)
    idf = (np.log((1 + len(texts)) / (1 + df)) + 1.0).astype(np.float32)
    x = _weigh(row, col, count, idf, len(texts))
    used = np.flatnonzero(df)  # fit on the buckets some prompt reached: a far smaller problem for L-BFGS
    column = np.zeros(fc.buckets, np.int64)
    column[used] = np.arange(len(used))
    lr = LogisticRegression(C=tc.c, max_iter=3000, class_weight="balanced")
    lr.fit(csr_matrix((x, (row, column[col])), shape=(len(texts), len(used))), labels)
    w, b = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:  # scikit-learn keeps one row for two classes: softmax of logits (0, w.x + b)
        w, b = np.vstack([np.zeros_like(w), w]), np.r_[0.0, b]
    order = [list(lr.classes_).index(c) for c in classes]
    coef = np.zeros((len(classes), fc.buckets), np.float32)
    coef[:, used] = w[order]
    return PromptClassifier(fc, tuple(classes), idf, coef, b[order].astype(np.float32), tc.window)


def _classes(labels: Sequence[str], least: int) -> tuple[str, ...]:
    """The sorted labels, after checking there are benign and harmful ones, at least `least` of each."""
    counts = {c: list(labels).count(c) for c in sorted(set(labels))}
    if BENIGN not in counts or len(counts) < 2 or min(counts.values()) < least:
        raise ValueError(f"training needs benign prompts and at least one harmful category, {least}+ of each "
                         f"label: {counts}")
    return tuple(counts)


def train(texts: Sequence[str], labels: Sequence[str], tc: TrainConfig = TrainConfig()) -> PromptClassifier:
    """One model on every labelled prompt (labels: BENIGN or a category)."""
    return _fit(texts, np.asarray(labels), _classes(labels, 1), tc)


def out_of_fold_harm(texts: Sequence[str], labels: Sequence[str], tc: TrainConfig = TrainConfig()) -> np.ndarray:
    """(n,) each prompt's 1 - P(benign) from a model that did not see it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    classes = _classes(labels, tc.folds)
    out = np.zeros(len(y))
    for fit_idx, held in StratifiedKFold(tc.folds, shuffle=True, random_state=tc.seed).split(np.zeros(len(y)), y):
        model = _fit([texts[i] for i in fit_idx], y[fit_idx], classes, tc)
        out[held] = model.harm([texts[i] for i in held])[0]
    return out


def review_threshold(oof_harm: np.ndarray, labels: Sequence[str], benign_rate: float) -> float:
    """The lowest score that flags at most `benign_rate` of the benign prompts out of fold."""
    benign = np.sort(oof_harm[np.asarray(labels) == BENIGN])[::-1]
    k = int(np.floor(benign_rate * len(benign)))
    return float(np.nextafter(benign[k], 1.0)) if k < len(benign) else 0.0
