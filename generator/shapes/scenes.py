"""Sample a scene that satisfies every fact of a prompt (bounded rejection sampling)."""
from __future__ import annotations

import numpy as np

from .captions import Prompt
from .world import CANVAS, MIN_GAP, SIZES, Obj, Scene

REL_MARGIN = 8.0  # px between centroids; the spec needs > 4, the slack absorbs pixel round-off
_REL = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}

# When a caption names no background the spec allows any of the three; we always draw white so
# the model learns one clean default instead of an average tint of three.
DEFAULT_BACKGROUND = "white"


def _apart(a: Obj, b: Obj) -> bool:
    """Bounding boxes at least MIN_GAP px apart on some axis."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return max(bx0 - ax1, ax0 - bx1) >= MIN_GAP or max(by0 - ay1, ay0 - by1) >= MIN_GAP


def relation_holds(a: Obj, b: Obj, relation: str, margin: float = REL_MARGIN) -> bool:
    """True if a's centroid is more than margin px beyond b's in the relation's direction."""
    axis, sign = _REL[relation]
    return sign * (a.centroid[axis] - b.centroid[axis]) > margin


def scene_for_prompt(prompt: Prompt, rng: np.random.Generator, tries: int = 200) -> Scene:
    """A scene holding exactly the prompt's objects (and relation), on its background."""
    bg = prompt.background or DEFAULT_BACKGROUND
    for attempt in range(tries):
        objs: list[Obj] = []
        for color, shape, size in prompt.objects:
            # unnamed sizes are drawn freely, but crowded scenes fall back to small after a while
            name = size or ("small" if attempt >= tries // 4 else ("small", "large")[int(rng.integers(2))])
            lo, hi = SIZES[name]
            s = int(rng.integers(lo, hi + 1))
            for _ in range(20):
                x0, y0 = rng.integers(0, CANVAS - s + 1, size=2)
                o = Obj(shape, color, s, x0 + s / 2, y0 + s / 2)  # integer edges keep squares exact
                if all(_apart(o, p) for p in objs):
                    objs.append(o)
                    break
            else:
                break
        if len(objs) == len(prompt.objects) and (
                prompt.relation is None or relation_holds(objs[0], objs[1], prompt.relation)):
            return Scene(bg, tuple(objs))
    raise RuntimeError(f"could not place a scene for {prompt.text!r} in {tries} tries")
