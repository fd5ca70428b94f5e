"""Caption grammar: the six spec templates, fact-preserving paraphrases, sampling and parsing."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .world import ALL_PAIRS, BACKGROUNDS, COLORS, HELD_OUT, SEEN_PAIRS

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


def sample_prompt(rng: np.random.Generator, category: str, allow_held_out: bool = False,
                  paraphrase: bool = False, bg_prob: float = 0.5) -> Prompt:
    """Random prompt of a category; held-out colour+shape pairs only if allow_held_out."""
    pairs = ALL_PAIRS if allow_held_out else SEEN_PAIRS
    bg = _pick(rng, tuple(BACKGROUNDS)) if rng.random() < bg_prob else None
    rel = None
    if category in ("single_object", "colors"):
        size = _pick(rng, (None, "small", "large")) if category == "single_object" else None
        objs = ((*_pick(rng, pairs), size),)
    elif category == "counting":
        objs = ((*_pick(rng, pairs), None),) * int(rng.integers(2, 5))
    elif category in ("two_object", "position", "color_attr"):
        while True:  # two distinct objects; color_attr needs distinct colours and shapes
            a, b = _pick(rng, pairs), _pick(rng, pairs)
            if a != b and (category != "color_attr" or (a[0] != b[0] and a[1] != b[1])):
                break
        objs = ((*a, None), (*b, None))
        rel = _pick(rng, RELATIONS) if category == "position" else None
    else:
        raise ValueError(f"unknown category {category!r}")
    text = format_prompt(category, objs, rel, bg, rng if paraphrase else None)
    return Prompt(category, text, objs, rel, bg)


def parse_prompt(text: str, category: str | None = None) -> Prompt:
    """Caption (canonical or paraphrased) -> Prompt. The two_object and color_attr templates
    are identical, so pass category="color_attr" to label one; otherwise it is inferred."""
    t = _CANON_RE.sub(lambda m: _CANON[m.group(1)], " ".join(text.lower().strip().rstrip(".").split()))
    bg = None
    if m := _BG_RE.match(t):
        t, bg = m.groups()
    for cat, rx in _TEMPLATES.items():
        if m := rx.match(t):
            break
    else:
        raise ValueError(f"unparseable shapes-world caption: {text!r}")
    g = m.groups()
    if cat == "single_object":
        objs, rel = ((g[1], g[2], g[0]),), None
    elif cat == "two_object":
        objs, rel = ((g[0], g[1], None), (g[2], g[3], None)), None
    elif cat == "counting":
        objs, rel = ((g[1], g[2], None),) * NUMBERS[g[0]], None
    elif cat == "colors":
        objs, rel = ((g[1], g[0], None),), None
    else:
        objs, rel = ((g[0], g[1], None), (g[3], g[4], None)), g[2]
    if category == "color_attr" and cat == "two_object":
        (c1, s1, _), (c2, s2, _) = objs
        if c1 == c2 or s1 == s2:
            raise ValueError(f"color_attr caption needs two colours and two shapes: {text!r}")
        cat = category
    elif category is not None and category != cat:
        raise ValueError(f"caption {text!r} is {cat}, not {category}")
    return Prompt(cat, text, objs, rel, bg)


def write_eval_prompts(path: str, seed: int = 0, per_category: int = 25, held_out: int = 36) -> None:
    """Write the fixed evaluation set: canonical seen prompts per category, then held-out ones."""
    rng = np.random.default_rng(seed)
    lines = ["# shapes-world evaluation prompts: category<TAB>prompt (canonical templates)",
             f"# generated by generator.shapes.captions.write_eval_prompts(path, seed={seed}, "
             f"per_category={per_category}, held_out={held_out})",
             "# section: seen"]
    seen: set[str] = set()

    def draw(cat: str, want_held_out: bool) -> Prompt:
        for _ in range(100_000):
            p = sample_prompt(rng, cat, allow_held_out=want_held_out, bg_prob=0.3)
            if p.uses_held_out == want_held_out and p.text not in seen:
                seen.add(p.text)
                return p
        raise ValueError(f"ran out of distinct {cat} prompts ({'held-out' if want_held_out else 'seen'}); "
                         f"ask for fewer per category")
    lines += [f"{c}\t{draw(c, False).text}" for c in CATEGORIES for _ in range(per_category)]
    lines.append("# section: held_out (uses purple triangle, orange circle or green square)")
    lines += [f"{c}\t{draw(c, True).text}" for i in range(held_out) for c in [CATEGORIES[i % 6]]]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def load_eval_prompts(path: str) -> list[Prompt]:
    """Read an eval .tsv back into Prompts."""
    with open(path) as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f if ln.strip() and not ln.startswith("#")]
    return [parse_prompt(text, cat) for cat, text in rows]
