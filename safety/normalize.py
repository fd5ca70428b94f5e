"""Text normalisation for matching: NFKC, confusable skeletons, casefold, accents off, invisible characters out.

Leetspeak and spacing are handled by the patterns in `lexical.py` (a "1" may be an i or an l, so it stays a "1"
here and each pattern letter accepts its look-alikes). Every output character remembers the input index it came from,
so a match on the normalised text maps back to a span of the original.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Cyrillic, Greek and a few Latin letters that render like a plain Latin letter (subset of Unicode TR39 confusables).
# Upper case is mapped before casefolding because e.g. Greek "Η" looks like H while its lower case "η" looks like n.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "А": "a", "а": "a", "В": "b", "в": "b", "Ь": "b", "ь": "b", "С": "c", "с": "c", "ԁ": "d", "Е": "e", "е": "e",
    "Ё": "e", "ё": "e", "Һ": "h", "һ": "h", "Н": "h", "І": "i", "і": "i", "Ї": "i", "ї": "i", "Ј": "j", "ј": "j",
    "К": "k", "к": "k", "Ӏ": "l", "ӏ": "l", "М": "m", "м": "m", "О": "o", "о": "o", "Р": "p", "р": "p", "Ԛ": "q",
    "ԛ": "q", "Ѕ": "s", "ѕ": "s", "Т": "t", "т": "t", "У": "y", "у": "y", "Х": "x", "х": "x", "Ԝ": "w", "ԝ": "w",
    "п": "n", "г": "r", "Ү": "y", "ү": "y", "н": "h",  # "н" like its capital "Н": one skeleton per letter
    # Greek
    "Α": "a", "α": "a", "Β": "b", "β": "b", "Ε": "e", "ε": "e", "Ζ": "z", "Η": "h", "η": "n", "Ι": "i", "ι": "i",
    "Κ": "k", "κ": "k", "Μ": "m", "Ν": "n", "ν": "v", "Ο": "o", "ο": "o", "ό": "o", "Ρ": "p", "ρ": "p", "Τ": "t",
    "τ": "t", "Υ": "y", "υ": "u", "Χ": "x", "χ": "x", "ω": "w", "γ": "y", "ί": "i", "ά": "a", "έ": "e",
    # Latin letters that NFD does not split into base + accent
    "ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ı": "i", "ħ": "h", "ŧ": "t", "ƅ": "b", "ɑ": "a",
    "ɡ": "g", "ɩ": "i", "ʏ": "y", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i",
    "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
    "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
}


@dataclass(frozen=True)
class Normalized:
    """Normalised text plus, for each of its characters, the index of the input character it came from."""

    text: str
    origin: tuple[int, ...]

    def span_in_source(self, start: int, end: int) -> tuple[int, int]:
        """Map a [start, end) span of the normalised text back to the input text."""
        return self.origin[start], self.origin[end - 1] + 1


# Marks that only decorate a letter (Latin/Greek/Cyrillic accents, Arabic vowel signs and hamza): dropped. Marks that
# are part of the spelling (Indic vowel signs, kana voicing) are kept, and so is any letter that has them.
_STRIPPABLE = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u064b-\u065f\u0670]")


@lru_cache(maxsize=8192)
def fold_char(ch: str) -> str:
    """One input character -> zero or more normalised characters."""
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        digit = unicodedata.decimal(c, None)  # Arabic-Indic, Devanagari, ... digits -> 0-9
        if digit is not None:
            out.append(str(digit))
            continue
        if unicodedata.category(c) == "Cf":  # zero-width joiners/spaces, bidi marks
            continue
        # a listed capital keeps its own look-alike (Greek "Η" is h); any other capital takes its lower case's
        c = CONFUSABLES[c] if c in CONFUSABLES else CONFUSABLES.get(c.casefold(), c.casefold())
        parts = unicodedata.normalize("NFD", c)
        marks = [d for d in parts if unicodedata.category(d).startswith("M")]
        if marks and all(_STRIPPABLE.match(d) for d in marks):
            out.extend(CONFUSABLES.get(d, d) for d in parts if d not in marks)
        elif not _STRIPPABLE.match(c):
            out.append(c)
    return "".join(out)


def normalize(text: str) -> Normalized:
    """NFKC + confusable skeleton + casefold + strip accents and invisible characters, keeping an origin map."""
    if text.isascii():
        return _short_runs(text.lower(), list(range(len(text))))
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        for c in fold_char(ch):
            if chars and c == chars[-1] and _is_mark(c):  # a repeated combining mark renders as one ("ड़़" is "ड़")
                continue
            chars.append(c)
            origin.append(i)
    return _short_runs("".join(chars), origin)


@lru_cache(maxsize=1024)
def _is_mark(c: str) -> bool:
    return unicodedata.category(c).startswith("M")


MAX_RUN = 4
_RUN = re.compile(r"(.)\1{%d,}" % MAX_RUN, re.S)


def _short_runs(text: str, origin: list[int]) -> Normalized:
    """Runs of one character cut to MAX_RUN: "naaaaaked" still matches ("a" may repeat), and a prompt of 80 "*"
    (a look-alike and a separator at once) cannot make the term patterns backtrack for seconds."""
    if _RUN.search(text) is None:
        return Normalized(text, tuple(origin))
    keep = [True] * len(text)
    for m in _RUN.finditer(text):
        for j in range(m.start() + MAX_RUN, m.end()):
            keep[j] = False
    return Normalized("".join(c for c, k in zip(text, keep) if k), tuple(o for o, k in zip(origin, keep) if k))
