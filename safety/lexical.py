"""Lexical gate: per-category term sets matched on whole words of normalised text, robust to common obfuscation.

A term like "naked" compiles to a pattern whose letters accept their leetspeak look-alikes and repeats
("n4k3d", "naaaked", "n@k*d"), plus a fully spaced form ("n a k e d", "n.a.k.e.d"). All terms go into one
prefix-merged regex, so a prompt is scanned once. Terms ending in "*" also match longer words ("behead*").
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .langpacks import Inflection, LanguageDetector, base_set, set_language
from .normalize import Normalized, normalize
from .verdict import Decision

# What each letter may be written as, after normalisation. "*" stands in for any masked vowel.
LEET: dict[str, str] = {
    "a": "4@^*", "b": "8", "c": "(<", "e": "3*", "g": "9", "h": "#", "i": "1!|*", "l": "1|", "o": "0*",
    "s": "5$", "t": "7+", "u": "*", "z": "2",
}
_W = r"[^\W_]"  # a letter or digit of any script
_NW = r"[\W_]"  # anything else
# Splits a list term into words: like _NW, but Indic vowel signs and kana voicing marks belong to their word.
_KEY_SEP = re.compile("(?:(?![\u0900-\u0dff\u3099\u309a])[\\W_])+")
_KEY = re.compile("(?:(?![\u0900-\u0dff\u3099\u309a])[\\W_]|\\s)")
_GAP = f"{_NW}*"  # between the words of a multi-word term: any spacing, or none ("childporn")
_SEP = f"{_NW}{{1,3}}?"  # between the letters of a spaced-out word (lazy: leave look-alikes to letters)
# Words of the spaced alphabets (Latin, Greek, Cyrillic, digits) end where no letter of those alphabets follows: a
# Latin word glued to Japanese or Korean text ("JKのエロ", "sexy사진") is still a word.
_A = "[0-9a-z\u00b5\u00df-\u00f6\u00f8-\u024f\u0370-\u052f\u1e00-\u1eff]"
_BEFORE = f"(?<!{_A})"
_LEET_MARKS = re.escape("".join(sorted({c for v in LEET.values() for c in v if not c.isalnum()})))
# A word ends where no letter follows, nor a look-alike mark that a letter follows ("kidd!e" is one word).
_AFTER = f"(?!{_A}|[{_LEET_MARKS}]+{_A})"
# Scripts written without spaces between words (Han, kana, Thai) or with particles attached (Hangul) match inside
# longer runs, with no word boundary on either side; Arabic, whose clitics ("و", "ال") attach in front, has no
# boundary before a term but one after it.
_UNSPACED = re.compile("[\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf"
                       "\u4e00-\u9fff\uac00-\ud7af]")
# Devanagari (Hindi) is written with spaces and separate postpositions: its terms are whole words. Python's regex does
# not count its vowel signs, virama or nukta as word characters, so its words are runs of the block's letters, signs
# and digits (not the dandas "।", "॥"): "बंदर" (monkey) is not inside "बंदरगाह" (harbour), nor "लाश" inside "तलाश".
_DEVA = "\u0900-\u0963\u0966-\u096f\u0971-\u097f\ua8e0-\ua8ff"
_DEVANAGARI = re.compile(f"[{_DEVA}]")
_DEVA_BEFORE = f"(?<!{_W})(?<![{_DEVA}])"
_DEVA_AFTER = f"(?!{_W}|[{_DEVA}]|[{_LEET_MARKS}]+{_W})"
_DEVA_NW = f"(?:(?![{_DEVA}]){_NW})"  # spacing and punctuation, never a vowel sign ("नीच लोग" is not "नीचे लोग")
_DEVA_CONSONANT = re.compile("[\u0915-\u0939\u0958-\u095f\u0978-\u097f]")
_NUKTA = "\u093c"
_OPEN_START = re.compile("[\u0600-\u06ff\u0750-\u077f]")
_AFTER_ANY = f"(?!{_W}|[{_LEET_MARKS}]+{_W})"  # Arabic words end where no letter of any script follows
# Text that a term of those three (unspaced scripts, Arabic, Devanagari) can match in holds a letter of one of them.
_OPEN_TEXT = re.compile(f"{_UNSPACED.pattern}|{_OPEN_START.pattern}|{_DEVANAGARI.pattern}")


def open_script(key: str) -> bool:
    """Whether a term key matches without a word boundary before it (unspaced scripts, Arabic; not Devanagari)."""
    return bool(_UNSPACED.search(key) or _OPEN_START.search(key))
_NUMERALS = "0123456789一二三四五六七八九十百千两〇零"
_NUM_BEFORE = f"(?<![{_NUMERALS}])"  # "8岁" must not match inside "18岁"


def _letter(ch: str) -> str:
    if _DEVANAGARI.match(ch):
        # Devanagari spelling variants: a consonant with or without its nukta ("ज़"/"ज", "ड़"/"ड"), candrabindu and
        # anusvara ("गोलियाँ"/"गोलियां"), the loanword o-sign as "ो" or "ा" ("पॉर्न"/"पोर्न").
        if _DEVA_CONSONANT.match(ch):
            return f"(?:{re.escape(ch)}{_NUKTA}?)"
        return {"\u0901": "[\u0901\u0902]", "\u0902": "[\u0901\u0902]", "\u0949": "[\u0949\u094b\u093e]"}.get(
            ch, re.escape(ch))
    alts = LEET.get(ch, "")
    return "[" + re.escape(ch + alts) + "]" if alts else re.escape(ch)


def term_key(term: str) -> str:
    """Canonical form of a list term: normalised, punctuation as spaces, single-spaced."""
    return " ".join(_KEY_SEP.sub(" ", normalize(term).text).split())


def _compact_atoms(key: str) -> list[str]:
    atoms: list[str] = []
    deva = bool(_DEVANAGARI.search(key))
    if deva:
        key = key.replace(_NUKTA, "")  # every consonant atom takes an optional nukta
    for word_i, word in enumerate(key.split(" ")):
        if word_i:
            atoms.append(f"{_DEVA_NW}*" if deva else _GAP)
        for run in re.finditer(r"(.)\1*", word):  # "kill" -> k+ i+ l{2,}: stretched letters still match
            # written "k k*": an alternative that starts with a letter (not a repeat) is skipped by the regex engine
            # without entering it when the letter differs, and shares its first letter with the spaced form
            letter = _letter(run.group(1))
            atoms += [letter] * len(run.group()) + [letter + "*"]
    return atoms


def _spaced_atoms(key: str) -> list[str]:
    deva = bool(_DEVANAGARI.search(key))
    letters = [ch for ch in (key.replace(_NUKTA, "") if deva else key) if ch != " "]
    sep = f"{_DEVA_NW}{{1,3}}?" if deva else _SEP
    atoms: list[str] = []
    for i, ch in enumerate(letters):
        atoms.append((sep if i else "") + _letter(ch))
    return atoms


@dataclass(frozen=True)
class TermHit:
    term_set: str
    term: str  # the list term (never the prompt's text)
    span: tuple[int, int]  # [start, end) in the original prompt


class TermMatcher:
    """Finds every listed term of every set in a text: at each start, one term per base set.

    `inflections` (by set language, None for the untagged base sets) adds each term's inflected forms to the same
    pattern: endings that add to the word ("sexy" + s) as an optional tail, endings that replace one ("nena" ->
    "nenitas") as a branch at the stem. A hit on any form reports the listed term.
    """

    def __init__(self, sets: dict[str, tuple[str, ...]],
                 inflections: Mapping[str | None, tuple[Inflection, ...]] | None = None):
        self.owners: list[tuple[tuple[str, str], ...]] = []  # leaf id -> ((set, term), ...)
        # One scan per channel: a regex reports one alternative per start, so a term of one base set ("脱がす", a
        # sexual word) would hide another set's term at the same place (the same word, listed as non-consensual).
        # Within a channel any hit at a start reports the right base set; across channels nothing hides.
        channels: dict[str, dict[str, tuple[str, ...]]] = {}
        for set_name, terms in sets.items():
            channels.setdefault(_channel(set_name), {})[set_name] = terms
        # Each scan with the language it is conditional on (None: it always counts).
        scans: tuple[list, list, list] = ([], [], [])
        for channel, channel_sets in channels.items():
            lang, cond = set_language(channel)
            for k, trie in enumerate(self._tries(channel_sets, inflections or {})):
                if trie:
                    scans[k].append((lang if cond else None, re.compile((_BEFORE if k < 2 else "") + _emit(trie))))
        self._scans = tuple(tuple(s) for s in scans)
        # A term is evidence of its language only when no other language (nor the base lists) has it: "sexy" is not.
        by_key: dict[tuple[str, bool], list[tuple[str, str]]] = {}
        for set_name, terms in sets.items():
            for term in terms:
                by_key.setdefault((term_key(term.rstrip("=").rstrip("*")), term.rstrip("=").endswith("*")),
                                  []).append((set_name, term))
        self.evidence = frozenset(owner for owners in by_key.values() for owner in owners
                                  if len({set_language(s)[0] for s, _ in owners}) == 1 and set_language(owner[0])[0])

    def _tries(self, sets: dict[str, tuple[str, ...]],
               inflections: Mapping[str | None, tuple[Inflection, ...]]) -> tuple[dict, dict, dict]:
        """The tries of one channel (bounded ASCII, bounded other scripts, own boundaries); leaves added to owners."""
        leaves: dict[tuple[str, bool], int] = {}
        languages: dict[int, set[str | None]] = {}
        for set_name, terms in sets.items():
            for term in terms:
                exact = term.endswith("=")  # "tanga=": as listed only, never inflected ("tango" is not a tanga)
                prefix = term.rstrip("=").endswith("*")
                key = term_key(term.rstrip("=").rstrip("*"))
                if not key or key.startswith(" ") or "  " in key or _KEY.sub(" ", key) != key:
                    raise ValueError(f"term set {set_name!r}: term {term!r} has no letters or odd characters")
                leaf = leaves.setdefault((key, prefix), len(self.owners))
                if leaf == len(self.owners):
                    self.owners.append(())
                    languages[leaf] = set()
                self.owners[leaf] += ((set_name, term),)
                languages[leaf].add(EXACT if exact else set_language(set_name)[0])
        tries: tuple[dict, dict, dict] = ({}, {}, {})
        for (key, prefix), leaf in leaves.items():
            # A word of another script whose skeleton is all Latin ("гор" -> "rop") is already ambiguous with Latin
            # words: its inflected skeletons ("rope") would be more so. It matches as listed only.
            skeleton = key.isascii() and not any(_latin(term) for _, term in self.owners[leaf])
            rules = [] if skeleton or EXACT in languages[leaf] else [
                r for lang in sorted(languages[leaf], key=str) for r in inflections.get(lang, ())]
            _insert(tries, leaf, key, prefix, rules)
        return tries

    def find(self, text: str) -> list[TermHit]:
        return self.find_normalized(normalize(text))

    def find_normalized(self, norm: Normalized, languages: Callable[[str | None], bool] = lambda lang: True
                        ) -> list[TermHit]:
        """Hits of the scans whose conditional language (None for a scan that always counts) `languages` accepts."""
        hits: list[TermHit] = []
        text = norm.text
        # ASCII text (after normalisation) can only hold ASCII terms; the third scan only text of its scripts.
        scans = self._scans[0] if text.isascii() else self._scans[0] + self._scans[1] + (
            self._scans[2] if _OPEN_TEXT.search(text) else ())
        for lang, regex in scans:
            if not languages(lang):
                continue
            m = regex.search(text)
            while m is not None:  # every start, not just non-overlapping matches: "a n a k e d" has "anak", "naked"
                leaf = int(m.lastgroup[1:].split("_")[0])
                span = norm.span_in_source(m.start(), m.end())
                hits.extend(TermHit(s, t, span) for s, t in self.owners[leaf])
                m = regex.search(text, m.start() + 1)
        return hits


def _channel(set_name: str) -> str:
    """The scan a set's terms go into: its base set; a conditional set its own (whether it counts depends on its
    language, so an Italian "negro" must not hide behind a French one)."""
    return set_name if set_language(set_name)[1] else base_set(set_name)


EXACT = "="  # a term marked "word=" is matched as listed, without its language's inflections
# prefix, unspaced script, whole word, Arabic word, Devanagari word
_TAILS = {"*": f"{_W}*", "~": "", "": _AFTER, "a": _AFTER_ANY, "d": _DEVA_AFTER}


def _latin(term: str) -> bool:
    """Whether every letter of a list term is a Latin letter (accents allowed)."""
    return all(c.isascii() or unicodedata.name(c, "").startswith("LATIN") for c in term if c.isalpha())


def _endings(endings: set[str]) -> str:
    """An alternation of inflection endings, longest first, letters as written (look-alikes stay with the stem)."""
    alts = sorted((re.escape(e) for e in endings), key=lambda a: (-len(a), a))
    return "(?:" + "|".join(alts) + ")"


def _insert(tries: tuple[dict, dict, dict], leaf: int, key: str, prefix: bool, rules: list[Inflection]) -> None:
    """Add one term's forms to the trie of its script: compact (with its added endings as an optional tail),
    spaced out, and one branch per inflection stem."""
    unspaced = bool(_UNSPACED.search(key))
    open_start = open_script(key)
    deva = not open_start and bool(_DEVANAGARI.search(key))
    end = "*" if prefix else "~" if unspaced else "a" if open_start else "d" if deva else ""
    stems: dict[str, set[str]] = {}
    for rule in rules:
        found = rule.stems(key)
        if found:
            stems.setdefault(found[0], set()).update(found[1])
    added = stems.pop(key, set())  # endings that add to the whole word: an optional tail (needed for whole words only)
    forms = [(_compact_atoms(key), _endings(added) + "?" if added and end in ("", "a", "d") else "")]
    if len(key.replace(" ", "")) >= 3 and not open_start:
        forms.append((_spaced_atoms(key), ""))
    forms += [(_compact_atoms(stem) + [_endings(endings)], "") for stem, endings in sorted(stems.items())]
    for form, (atoms, tail) in enumerate(forms):
        node = tries[2 if open_start or deva else 0 if key.isascii() else 1]
        if open_start and key[0] in _NUMERALS:
            node = node.setdefault(_NUM_BEFORE, {})
        if deva:  # its own boundary before: no letter of any script, no Devanagari sign
            node = node.setdefault(_DEVA_BEFORE, {})
        for atom in atoms:
            node = node.setdefault(atom, {})
        node.setdefault(None, set()).add((leaf, form, end, tail))


def _emit(node: dict) -> str:
    parts = [atom + _emit(child) for atom, child in node.items() if atom is not None]
    for leaf, form, end, tail in sorted(node.get(None, ())):
        parts.append(tail + _TAILS[end] + f"(?P<t{leaf}_{form}>)")
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


def live_hits(hits: list[TermHit]) -> list[TermHit]:
    """The hits that no allow phrase covers ("naked" inside "naked mole rat"), allow hits dropped."""
    allowed = [h.span for h in hits if base_set(h.term_set) == ALLOW_SET]
    if not allowed:
        return hits
    return [h for h in hits if base_set(h.term_set) != ALLOW_SET
            and not any(a[0] <= h.span[0] and h.span[1] <= a[1] for a in allowed)]


@dataclass(frozen=True)
class LexicalAnalysis:
    """What the lexical gate saw in one prompt: rule findings, the base sets hit, and the likeliest language."""

    findings: list[LexicalFinding]
    sets: frozenset[str]
    language: str


class LexicalGate:
    """Term sets + rules -> findings for one prompt. Pure, no models: microseconds per prompt.

    Set names may carry a language: "minor#es" counts as "minor"; "minor@de" (a homograph) counts as "minor" only when
    the prompt shows German evidence (stopwords, script, or another German term).
    """

    def __init__(self, sets: dict[str, tuple[str, ...]], rules: tuple[LexicalRule, ...],
                 matcher: TermMatcher | None = None, detector: LanguageDetector | None = None,
                 inflections: Mapping[str | None, tuple[Inflection, ...]] | None = None):
        known = {base_set(s) for s in sets}
        for rule in rules:
            missing = [s for s in rule.all_of if s not in known]
            if missing:
                raise ValueError(f"lexical rule {rule.id!r} names unknown term sets {missing}")
        self.sets = sets
        self.rules = rules
        self.matcher = matcher or TermMatcher(sets, inflections)
        self.detector = detector

    def with_rules(self, rules: tuple[LexicalRule, ...]) -> LexicalGate:
        """Same compiled terms, other rules (a region's overrides change actions, not terms)."""
        return LexicalGate(self.sets, rules, self.matcher, self.detector)

    def findings(self, text: str) -> list[LexicalFinding]:
        return self.analyse(text).findings

    def analyse(self, text: str) -> LexicalAnalysis:
        norm = normalize(text)
        hits = self.matcher.find_normalized(norm, lambda lang: lang is None)
        scores = self.detector.scores(text, norm.text) if self.detector else {}
        for h in live_hits(hits):
            if (h.term_set, h.term) in self.matcher.evidence:
                lang = set_language(h.term_set)[0]
                scores[lang] = scores.get(lang, 0.0) + 1
        # A homograph reads as its language's word where that language has evidence and no other language has more
        # ("de" makes no Spanish prompt French: "cinturones negros" is not the French slur). English is left out of
        # the comparison: image prompts end in English style tags ("Kinder nackt, in the style of a polaroid").
        # Evidence comes from the unconditional scans only, so a conditional set is scanned only where it can count.
        rival = max((v for code, v in scores.items() if code != "en"), default=0.0)
        counted = {code for code, v in scores.items() if 0.0 < v >= rival}
        if counted:
            hits += self.matcher.find_normalized(norm, lambda lang: lang in counted)
        live = live_hits(hits)
        by_set: dict[str, list[tuple[int, int]]] = {}
        for h in live:
            lang, cond = set_language(h.term_set)
            if not cond or 0.0 < scores.get(lang, 0.0) >= rival:
                by_set.setdefault(base_set(h.term_set), []).append(h.span)
        out = []
        for rule in self.rules if by_set else ():
            if all(s in by_set for s in rule.all_of):
                spans = sorted({sp for s in rule.all_of for sp in by_set[s]})
                out.append(LexicalFinding(rule.id, rule.category, rule.action, tuple(spans)))
        return LexicalAnalysis(out, frozenset(by_set), LanguageDetector.top(scores))
