"""Caption grammar: the six spec templates, fact-preserving paraphrases, sampling and parsing."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .world import ALL_PAIRS, BACKGROUNDS, COLORS, HELD_OUT, SEEN_PAIRS, SHAPES, SIZES

CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {"two": 2, "three": 3, "four": 4}
Spec = tuple[str, str, "str | None"]  # (color, shape, size or None)

# Paraphrase vocabulary; the first entry is the canonical form. Every variant keeps the facts
# (nothing like "next to", which a checker cannot verify).
_SHAPE_WORDS = {"circle": ("circle", "disc", "ball"), "square": ("square", "box", "block"),
                "triangle": ("triangle",)}
_PLURAL = {"circle": "circles", "disc": "discs", "ball": "balls", "square": "squares",
           "box": "boxes", "block": "blocks", "triangle": "triangles"}
_SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
_REL_WORDS = {"left of": ("left of", "to the left of", "placed left of"),
              "right of": ("right of", "to the right of", "placed right of"),
              "above": ("above", "placed above", "higher than"),
              "below": ("below", "placed below", "beneath", "lower than")}
_NUM_WORDS = {2: ("two", "2"), 3: ("three", "3"), 4: ("four", "4")}
_AND = (" and ", " along with ")
_THAT_IS = (" that is ", " colored ")
_BG = (" on a {} background", " against a {} background")

# Rewrites from any paraphrase back to canonical words, applied before the template regexes.
_CANON = {"disc": "circle", "ball": "circle", "discs": "circles", "balls": "circles",
          "box": "square", "block": "square", "boxes": "squares", "blocks": "squares",
          "tiny": "small", "little": "small", "big": "large", "grey": "gray", "an": "a",
          "2": "two", "3": "three", "4": "four", "colored": "that is", "along with": "and",
          "to the left of": "left of", "to the right of": "right of", "placed left of": "left of",
          "placed right of": "right of", "placed above": "above", "higher than": "above",
          "placed below": "below", "beneath": "below", "lower than": "below"}
_CANON_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _CANON), key=len, reverse=True)) + r")\b")
_C, _S = "(" + "|".join(COLORS) + ")", "(circle|square|triangle)"
_O = rf"a {_C} {_S}"
_TEMPLATES = {
    "single_object": re.compile(rf"^a (?:(small|large) )?{_C} {_S}$"),
    "two_object": re.compile(rf"^{_O} and {_O}$"),
    "counting": re.compile(rf"^(two|three|four) {_C} {_S}s$"),
    "colors": re.compile(rf"^a {_S} that is {_C}$"),
    "position": re.compile(rf"^{_O} (left of|right of|above|below) {_O}$"),
}
_BG_RE = re.compile(r"^(.*?) (?:on|against) a (white|black|gray) background$")


@dataclass(frozen=True)
class Prompt:
    """A caption and the facts a checker verifies: required objects (all of them, for
    counting N copies), an optional relation of objects[0] to objects[1], and a background."""
    category: str
    text: str
    objects: tuple[Spec, ...]
    relation: str | None = None
    background: str | None = None

    @property
    def uses_held_out(self) -> bool:
        """True if the caption names a held-out colour+shape combination."""
        return any((c, s) in HELD_OUT for c, s, _ in self.objects)

    def facts(self) -> tuple:
        """Everything but the wording, for comparing a paraphrase with its canonical form."""
        return (self.category, self.objects, self.relation, self.background)


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def format_prompt(category: str, objects: tuple[Spec, ...], relation: str | None = None,
                  background: str | None = None, rng: np.random.Generator | None = None) -> str:
    """Facts -> caption; canonical if rng is None, else a random fact-preserving paraphrase."""
    w = (lambda seq: seq[0]) if rng is None else (lambda seq: _pick(rng, seq))

    def obj(c: str, s: str, size: str | None = None) -> str:
        words = " ".join(x for x in (size and w(_SIZE_WORDS[size]), c, w(_SHAPE_WORDS[s])) if x)
        return ("an " if rng is not None and words[0] in "aeiou" else "a ") + words

    (c1, s1, z1), rest = objects[0], objects[1:]
    if category == "single_object" or (category == "colors" and rng is not None and rng.random() < 0.3):
        text = obj(c1, s1, z1)  # a colors caption may be paraphrased as the plain object phrase
        category = "single_object" if category == "single_object" else category
    if category == "single_object":
        text = obj(c1, s1, z1)
    elif category in ("two_object", "color_attr"):
        text = obj(c1, s1) + w(_AND) + obj(*rest[0][:2])
    elif category == "counting":
        text = f"{w(_NUM_WORDS[len(objects)])} {c1} {_PLURAL[w(_SHAPE_WORDS[s1])]}"
    elif category == "colors":
        text = f"a {w(_SHAPE_WORDS[s1])}{w(_THAT_IS)}{c1}"
    elif category == "position":
        text = f"{obj(c1, s1)} {w(_REL_WORDS[relation])} {obj(*rest[0][:2])}"
    else:
        raise ValueError(f"unknown category {category!r}")
    if background:
        text += w(_BG).format(w(("gray", "grey")) if background == "gray" else background)
    return text
