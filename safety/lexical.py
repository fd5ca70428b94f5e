"""Lexical gate: per-category term sets matched on whole words of normalised text, robust to common obfuscation.

A term like "naked" compiles to a pattern whose letters accept their leetspeak look-alikes and repeats
("n4k3d", "naaaked", "n@k*d"), plus a fully spaced form ("n a k e d", "n.a.k.e.d"). All terms go into one
prefix-merged regex, so a prompt is scanned once. Terms ending in "*" also match longer words ("behead*").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .normalize import normalize
from .verdict import Decision

# What each letter may be written as, after normalisation. "*" stands in for any masked vowel.
LEET: dict[str, str] = {
    "a": "4@^*", "b": "8", "c": "(<", "e": "3*", "g": "9", "h": "#", "i": "1!|*", "l": "1|", "o": "0*",
    "s": "5$", "t": "7+", "u": "*", "z": "2",
}
_WORD = "a-z0-9"
_GAP = f"[^{_WORD}]*"  # between the words of a multi-word term: any spacing, or none ("childporn")
_SEP = f"[^{_WORD}]{{1,3}}?"  # between the letters of a spaced-out word (lazy: leave look-alikes to letters)
_BEFORE = f"(?<![{_WORD}])"
_LEET_MARKS = re.escape("".join(sorted({c for v in LEET.values() for c in v if not c.isalnum()})))
# A word ends where no letter follows, nor a look-alike mark that a letter follows ("kidd!e" is one word).
_AFTER = f"(?![{_WORD}]|[{_LEET_MARKS}]+[{_WORD}])"


def _letter(ch: str) -> str:
    alts = LEET.get(ch, "")
    return "[" + re.escape(ch + alts) + "]" if alts else re.escape(ch)


def term_key(term: str) -> str:
    """Canonical form of a list term: normalised, punctuation as spaces, single-spaced."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", normalize(term).text).split())


def _compact_atoms(key: str) -> list[str]:
    atoms: list[str] = []
    for word_i, word in enumerate(key.split(" ")):
        if word_i:
            atoms.append(_GAP)
        for run in re.finditer(r"(.)\1*", word):  # "kill" -> k+ i+ l{2,}: stretched letters still match
            n = len(run.group())
            atoms.append(_letter(run.group(1)) + ("+" if n == 1 else f"{{{n},}}"))
    return atoms


def _spaced_atoms(key: str) -> list[str]:
    letters = [ch for ch in key if ch != " "]
    atoms: list[str] = []
    for i, ch in enumerate(letters):
        atoms.append((_SEP if i else "") + _letter(ch))
    return atoms


@dataclass(frozen=True)
class TermHit:
    term_set: str
    term: str  # the list term (never the prompt's text)
    span: tuple[int, int]  # [start, end) in the original prompt


class TermMatcher:
    """Finds every listed term of every set in a text; longest term wins where terms overlap."""

    def __init__(self, sets: dict[str, tuple[str, ...]]):
        self._owners: list[tuple[tuple[str, str], ...]] = []  # leaf id -> ((set, term), ...)
        leaves: dict[tuple[str, bool], int] = {}
        trie: dict = {}
        for set_name, terms in sets.items():
            for term in terms:
                prefix = term.endswith("*")
                key = term_key(term.rstrip("*"))
                if not re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", key):
                    raise ValueError(f"term set {set_name!r}: term {term!r} has no letters or odd characters")
                leaf = leaves.setdefault((key, prefix), len(leaves))
                if leaf == len(self._owners):
                    self._owners.append(())
                self._owners[leaf] += ((set_name, term),)
                forms = [_compact_atoms(key)]
                if len(key.replace(" ", "")) >= 3:
                    forms.append(_spaced_atoms(key))
                for form, atoms in enumerate(forms):
                    node = trie
                    for atom in atoms:
                        node = node.setdefault(atom, {})
                    node.setdefault(None, set()).add((leaf, form, prefix))
        self._regex = re.compile(_BEFORE + _emit(trie)) if trie else None

    def find(self, text: str) -> list[TermHit]:
        if self._regex is None:
            return []
        norm = normalize(text)
        hits: list[TermHit] = []
        for m in self._regex.finditer(norm.text):
            leaf = int(m.lastgroup[1:].split("_")[0])
            span = norm.span_in_source(m.start(), m.end())
            hits.extend(TermHit(s, t, span) for s, t in self._owners[leaf])
        return hits


def _emit(node: dict) -> str:
    parts = [atom + _emit(child) for atom, child in node.items() if atom is not None]
    for leaf, form, prefix in sorted(node.get(None, ())):
        parts.append((f"[{_WORD}]*" if prefix else _AFTER) + f"(?P<t{leaf}_{form}>)")
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


@dataclass(frozen=True)
class LexicalRule:
    """Fires when every named term set has a hit in the prompt (one set: a plain term list; two: co-occurrence)."""

    id: str
    category: str
    action: Decision
    all_of: tuple[str, ...]


@dataclass(frozen=True)
class LexicalFinding:
    rule: str
    category: str
    action: Decision
    spans: tuple[tuple[int, int], ...]


ALLOW_SET = "allow"  # phrases that clear the hits they overlap ("naked mole rat", "shooting star")


class LexicalGate:
    """Term sets + rules -> findings for one prompt. Pure, no models: microseconds per prompt."""

    def __init__(self, sets: dict[str, tuple[str, ...]], rules: tuple[LexicalRule, ...],
                 matcher: TermMatcher | None = None):
        for rule in rules:
            missing = [s for s in rule.all_of if s not in sets]
            if missing:
                raise ValueError(f"lexical rule {rule.id!r} names unknown term sets {missing}")
        self.sets = sets
        self.rules = rules
        self.matcher = matcher or TermMatcher(sets)

    def with_rules(self, rules: tuple[LexicalRule, ...]) -> LexicalGate:
        """Same compiled terms, other rules (a region's overrides change actions, not terms)."""
        return LexicalGate(self.sets, rules, self.matcher)

    def findings(self, text: str) -> list[LexicalFinding]:
        hits = self.matcher.find(text)
        allowed = [h.span for h in hits if h.term_set == ALLOW_SET]
        by_set: dict[str, list[tuple[int, int]]] = {}
        for h in hits:
            if h.term_set != ALLOW_SET and not any(a[0] <= h.span[0] and h.span[1] <= a[1] for a in allowed):
                by_set.setdefault(h.term_set, []).append(h.span)
        out = []
        for rule in self.rules:
            if all(s in by_set for s in rule.all_of):
                spans = sorted({sp for s in rule.all_of for sp in by_set[s]})
                out.append(LexicalFinding(rule.id, rule.category, rule.action, tuple(spans)))
        return out
