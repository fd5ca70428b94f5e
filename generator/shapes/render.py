"""Hard-edged numpy renderer: exact colours, no anti-aliasing, so the checker can read them back."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, CANVAS, COLORS, PUBLISHED, Obj, Scene

_SQRT3_2 = math.sqrt(3) / 2


def _mask(o: Obj, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean mask of o over pixel centres xs (1, w) and ys (h, 1)."""
    r = o.size_px / 2
    dx, dy = xs - o.cx, ys - o.cy
    if o.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if o.shape == "square":
        return (np.abs(dx) < r) & (np.abs(dy) < r)
    if o.shape == "triangle":
        h = o.size_px * _SQRT3_2
        t = dy + h / 2  # depth below the apex
        return (t >= 0) & (t <= h) & (np.abs(dx) * h <= t * r)
    raise ValueError(f"unknown shape {o.shape!r}")


def render(scene: Scene) -> np.ndarray:
    """Scene -> (64, 64, 3) uint8 image."""
    img = np.empty((CANVAS, CANVAS, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        x0, y0, x1, y1 = o.box
        c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        c1, r1 = min(CANVAS, math.ceil(x1)), min(CANVAS, math.ceil(y1))
        xs = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5
        ys = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
        img[r0:r1, c0:c1][_mask(o, xs, ys)] = COLORS[o.color]
    return img


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """Scenes -> (n, 64, 64, 3) uint8."""
    out = np.empty((len(scenes), CANVAS, CANVAS, 3), np.uint8)
    for i, s in enumerate(scenes):
        out[i] = render(s)
    return out


def upscale(img: np.ndarray, size: int = PUBLISHED) -> np.ndarray:
    """Upscale to size x size with NEAREST: blocks stay exact, so a BOX downscale recovers the base image."""
    return np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST))
