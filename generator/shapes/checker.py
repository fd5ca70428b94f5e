"""The spec's deterministic checker: colour segmentation, connected components, fill-ratio shapes."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .captions import CATEGORIES, Prompt, parse_prompt
from .world import CANVAS, COLORS

COLOR_DIST = 80.0   # a pixel within this RGB distance of its nearest object colour ...
BG_DIST = 60.0      # ... and farther than this from the background is object-coloured
MIN_AREA = 20
LARGE_SIDE = 20
SPEC_MARGIN = 4.0   # position: centroid must be > 4 px beyond
_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _NAMES], np.float32)


@dataclass(frozen=True)
class Detected:
    """One detected object (a 4-connected component of one colour)."""
    color: str
    shape: str
    size: str
    area: int
    fill: float
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (half-open)
    centroid: tuple[float, float]    # x, y in pixel-edge coordinates


@dataclass(frozen=True)
class CheckResult:
    """Verdict for one image against one prompt."""
    passed: bool
    reason: str
    prompt: Prompt
    objects: tuple[Detected, ...]


def _to_base(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)[..., :3]
    if img.shape[:2] != (CANVAS, CANVAS):
        # BOX is an area average, so a NEAREST-upscaled render comes back exactly
        img = np.asarray(Image.fromarray(img.astype(np.uint8)).resize((CANVAS, CANVAS), Image.BOX))
    return img.astype(np.float32)


def _components(labels: np.ndarray) -> list[tuple[int, list[tuple[int, int, int]]]]:
    """4-connected components of equal non-negative labels via row runs + union-find."""
    pad = np.full((labels.shape[0], labels.shape[1] + 1), -1, np.int16)
    pad[:, :-1] = labels
    flat = pad.ravel()
    edges = np.flatnonzero(np.diff(flat)) + 1  # run boundaries (each row ends with a -1 sentinel)
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [flat.size]))
    keep = flat[starts] >= 0
    w = pad.shape[1]
    runs = [(int(s) // w, int(s) % w, int(e) - (int(s) // w) * w, int(flat[s]))
            for s, e in zip(starts[keep], ends[keep])]  # (row, col0, col1, label)
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    by_row: dict[int, list[int]] = {}
    for i, r in enumerate(runs):
        by_row.setdefault(r[0], []).append(i)
    for i, (row, a0, a1, lab) in enumerate(runs):
        for j in by_row.get(row - 1, ()):
            _, b0, b1, lb = runs[j]
            if lb == lab and a0 < b1 and b0 < a1:
                parent[find(i)] = find(j)
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for i, (row, a0, a1, lab) in enumerate(runs):
        groups.setdefault(find(i), []).append((row, a0, a1))
    return [(runs[k][3], g) for k, g in groups.items()]


def detect(image: np.ndarray) -> tuple[tuple[int, int, int], tuple[Detected, ...]]:
    """Image (64x64 or larger, RGB) -> (background colour, detected objects)."""
    img = _to_base(image)
    border = np.concatenate((img[0], img[-1], img[1:-1, 0], img[1:-1, -1])).astype(np.int64)
    keys, counts = np.unique(border @ np.array([1 << 16, 1 << 8, 1]), return_counts=True)
    k = int(keys[int(np.argmax(counts))])
    bg = np.array([k >> 16, (k >> 8) & 255, k & 255], np.float32)
    px = img.reshape(-1, 3)
    # squared distances by expansion: one small matmul instead of a (64, 64, 6, 3) difference
    d2 = (px * px).sum(1)[:, None] - 2 * px @ _PALETTE.T + (_PALETTE * _PALETTE).sum(1)
    idx = d2.argmin(1)
    near = d2[np.arange(len(px)), idx] <= COLOR_DIST ** 2
    ok = (near & (((px - bg) ** 2).sum(1) > BG_DIST ** 2)).reshape(CANVAS, CANVAS)
    idx = idx.reshape(CANVAS, CANVAS)
    labels = np.where(ok, idx, -1).astype(np.int16)
    found = []
    for lab, runs in _components(labels):
        area = sum(a1 - a0 for _, a0, a1 in runs)
        if area < MIN_AREA:
            continue
        ys = [r for r, _, _ in runs]
        x0, x1 = min(a0 for _, a0, _ in runs), max(a1 for _, _, a1 in runs)
        y0, y1 = min(ys), max(ys) + 1
        fill = area / ((x1 - x0) * (y1 - y0))
        shape = "square" if fill >= 0.90 else "circle" if fill >= 0.65 else "triangle"
        cx = sum((a1 - a0) * (a0 + a1) / 2 for _, a0, a1 in runs) / area
        cy = sum((a1 - a0) * (r + 0.5) for r, a0, a1 in runs) / area
        size = "large" if max(x1 - x0, y1 - y0) >= LARGE_SIDE else "small"
        found.append(Detected(_NAMES[lab], shape, size, area, fill, (x0, y0, x1, y1), (cx, cy)))
    found.sort(key=lambda o: (o.bbox[1], o.bbox[0]))
    return tuple(int(v) for v in bg), tuple(found)


def _matches(o: Detected, spec) -> bool:
    c, s, z = spec
    return o.color == c and o.shape == s and (z is None or o.size == z)


def _describe(objs) -> str:
    return ", ".join(f"{o.size} {o.color} {o.shape}" for o in objs) or "nothing"


def check(image: np.ndarray, prompt: Prompt | str) -> CheckResult:
    """All-or-nothing verdict (GenEval style). Position needs both objects and the relation;
    every other category needs exactly the named objects and nothing else."""
    p = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    _, objs = detect(image)
    if p.relation is not None:
        a = [o for o in objs if _matches(o, p.objects[0])]
        b = [o for o in objs if _matches(o, p.objects[1])]
        if not a or not b:
            return CheckResult(False, f"missing object; found {_describe(objs)}", p, objs)
        axis, sign = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[p.relation]
        if any(x is not y and sign * (x.centroid[axis] - y.centroid[axis]) > SPEC_MARGIN for x in a for y in b):
            return CheckResult(True, "ok", p, objs)
        return CheckResult(False, f"relation '{p.relation}' does not hold", p, objs)
    left = list(objs)
    # named sizes first, so an unsized spec cannot steal the only object of the named size
    for spec in sorted(p.objects, key=lambda s: s[2] is None):
        hit = next((o for o in left if _matches(o, spec)), None)
        if hit is None:
            want = " ".join(x for x in (spec[2], spec[0], spec[1]) if x)
            return CheckResult(False, f"missing {want}; found {_describe(objs)}", p, objs)
        left.remove(hit)
    if left:
        return CheckResult(False, f"extra objects: {_describe(left)}", p, objs)
    return CheckResult(True, "ok", p, objs)


@dataclass
class Report:
    """Accuracies: per category, overall (mean over categories), held-out and seen prompts."""
    per_category: dict[str, float]
    overall: float
    held_out: float | None
    seen: float | None
    counts: dict[str, int] = field(default_factory=dict)


def score(results: list[CheckResult]) -> Report:
    """Aggregate check results into a Report (None where a group is empty)."""
    def acc(rs): return sum(r.passed for r in rs) / len(rs) if rs else None
    per = {c: acc([r for r in results if r.prompt.category == c]) for c in CATEGORIES}
    per = {c: a for c, a in per.items() if a is not None}
    held = [r for r in results if r.prompt.uses_held_out]
    seen = [r for r in results if not r.prompt.uses_held_out]
    counts = dict(Counter(r.prompt.category for r in results), held_out=len(held), seen=len(seen))
    return Report(per, sum(per.values()) / len(per) if per else 0.0, acc(held), acc(seen), counts)
