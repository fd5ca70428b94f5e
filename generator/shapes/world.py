"""Constants and scene types of the shapes world, exactly as in shapes-world.md."""
from __future__ import annotations

from dataclasses import dataclass

CANVAS = 64
PUBLISHED = 256
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128)}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220),
    "yellow": (235, 205, 40), "purple": (140, 60, 190), "orange": (240, 130, 30)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, tuple[int, int]] = {"small": (12, 16), "large": (24, 30)}  # inclusive px
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("purple", "triangle"), ("orange", "circle"), ("green", "square")})
SEEN_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
MIN_GAP = 2  # px between bounding boxes


@dataclass(frozen=True)
class Obj:
    """One shape; its bounding box has side size_px and centre (cx, cy) in pixel-edge coordinates."""
    shape: str
    color: str
    size_px: int
    cx: float
    cy: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Bounding box (x0, y0, x1, y1), half-open."""
        h = self.size_px / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    @property
    def centroid(self) -> tuple[float, float]:
        """Area centroid of the drawn shape (a triangle's sits h/6 below its box centre)."""
        if self.shape == "triangle":
            return (self.cx, self.cy + self.size_px * 3 ** 0.5 / 12)
        return (self.cx, self.cy)


@dataclass(frozen=True)
class Scene:
    """A background name and 1-4 objects."""
    background: str
    objects: tuple[Obj, ...]
