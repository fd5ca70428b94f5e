"""Training examples: (64x64 image, caption, category), deterministic from a seed, no held-out pairs."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .captions import CATEGORIES, sample_prompt
from .render import render
from .scenes import scene_for_prompt

PARAPHRASE_PROB = 0.3
BACKGROUND_PROB = 0.5


def make_example(rng: np.random.Generator,
                 category_weights: Sequence[float] | None = None) -> tuple[np.ndarray, str, str]:
    """One training example; the image holds only the caption's objects, so no held-out pair appears.
    Categories are uniform unless `category_weights` (one per CATEGORIES entry) says otherwise."""
    if category_weights is None:
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    else:
        w = np.asarray(category_weights, dtype=float)
        cat = CATEGORIES[int(rng.choice(len(CATEGORIES), p=w / w.sum()))]
    p = sample_prompt(rng, cat, allow_held_out=False,
                      paraphrase=bool(rng.random() < PARAPHRASE_PROB), bg_prob=BACKGROUND_PROB)
    return render(scene_for_prompt(p, rng)), p.text, cat


def make_batch(rng: np.random.Generator, n: int,
               category_weights: Sequence[float] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """n examples -> (images (n, 64, 64, 3) uint8, captions, categories)."""
    ex = [make_example(rng, category_weights) for _ in range(n)]
    return np.stack([e[0] for e in ex]), [e[1] for e in ex], [e[2] for e in ex]


def iter_examples(seed: int) -> Iterator[tuple[np.ndarray, str, str]]:
    """Endless stream of examples, fully determined by seed."""
    rng = np.random.default_rng(seed)
    while True:
        yield make_example(rng)
