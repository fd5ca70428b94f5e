"""Per-language lexical packs (safety/packs/lang/*.toml) and the language evidence that weighs their homographs.

Every pack's terms run on every prompt. A pack file holds `sets` (terms merged into the base sets, tagged with the
pack's language), `conditional` (homographs of common words elsewhere, e.g. German "kind": they count only when the
prompt shows evidence of that language), `expand` entries (ages and school grades generated from templates) and
`stopwords` for the language detector.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .normalize import normalize

TAG = "#"  # "minor#es": a Spanish term of the base set "minor"
COND = "@"  # "minor@de": a German homograph, counted only with German evidence


def base_set(name: str) -> str:
    """The base set a (possibly tagged) set name belongs to."""
    return name.split(TAG)[0].split(COND)[0]


def set_language(name: str) -> tuple[str | None, bool]:
    """(language code or None, whether the set is conditional on that language's evidence)."""
    for mark, cond in ((COND, True), (TAG, False)):
        if mark in name:
            return name.split(mark, 1)[1], cond
    return None, False


@dataclass(frozen=True)
class Inflection:
    """A listed word ending in `ends` (after normalisation) also matches with that ending replaced by any of `forms`,
    when at least `min_stem` letters of its last word stay: es "sexy" -> "sexys", "nena" -> "nenitas"."""

    ends: str
    forms: tuple[str, ...]
    min_stem: int = 3

    def stems(self, key: str) -> tuple[str, tuple[str, ...]] | None:
        """(stem, endings) for a normalised term key, or None when this rule does not apply to it."""
        last = key.rsplit(" ", 1)[-1]
        if not last.endswith(self.ends) or len(last) - len(self.ends) < self.min_stem:
            return None
        return key[:len(key) - len(self.ends)], self.forms


@dataclass(frozen=True)
class LanguagePack:
    """One language's terms, homographs, stopwords and inflection rules."""

    code: str
    name: str
    stopwords: frozenset[str]
    sets: Mapping[str, tuple[str, ...]]
    conditional: Mapping[str, tuple[str, ...]]
    inflections: tuple[Inflection, ...] = ()


def expand(entry: Mapping) -> list[str]:
    """Terms from templates: each "{n}" replaced by every number of `range` (inclusive) and every word."""
    values = [str(n) for n in range(entry["range"][0], entry["range"][1] + 1)] if "range" in entry else []
    values += list(entry.get("words", ()))
    return [t.replace("{n}", v) for t in entry["templates"] for v in values]


def load_language_pack(path: Path) -> LanguagePack:
    """Read one language file; raises ValueError on a malformed one."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    sets: dict[str, list[str]] = {k: list(v) for k, v in data.get("sets", {}).items()}
    for entry in data.get("expand", ()):
        sets.setdefault(entry["set"], []).extend(expand(entry))
    code = str(data["code"])
    if "allow" in data.get("conditional", {}):  # allow phrases clear hits in every language; evidence never gates them
        raise ValueError(f"language pack {code!r}: an allow set cannot be conditional; list it under [sets]")
    stop = frozenset(normalize(w).text for w in data.get("stopwords", ()))
    inflections = tuple(
        Inflection(normalize(str(r["ends"])).text, tuple(normalize(str(f)).text for f in r["forms"]),
                   int(r.get("min_stem", 3)))
        for r in data.get("inflect", ())
    )
    return LanguagePack(
        code, str(data.get("name", code)), stop, MappingProxyType({k: tuple(v) for k, v in sets.items()}),
        MappingProxyType({k: tuple(v) for k, v in data.get("conditional", {}).items()}), inflections,
    )


def inflection_table(packs: tuple[LanguagePack, ...], base: str | None) -> dict[str | None, tuple[Inflection, ...]]:
    """Inflection rules by set language: each pack's own, and the `base` language's for the untagged base sets."""
    table: dict[str | None, tuple[Inflection, ...]] = {p.code: p.inflections for p in packs}
    table[None] = table.get(base, ()) if base else ()
    return table


def merged_sets(base: Mapping[str, tuple[str, ...]], packs: tuple[LanguagePack, ...]) -> dict[str, tuple[str, ...]]:
    """Base sets plus every pack's sets under tagged names ("minor#es", "minor@de")."""
    out = dict(base)
    for p in packs:
        out |= {f"{k}{TAG}{p.code}": v for k, v in p.sets.items()}
        out |= {f"{k}{COND}{p.code}": v for k, v in p.conditional.items()}
    return out


# Scripts that name a language on their own (Han alone is Chinese; Han with kana is Japanese).
_SCRIPTS = (("ko", re.compile("[\uac00-\ud7af\u1100-\u11ff]")), ("ja", re.compile("[\u3040-\u30ff]")),
            ("zh", re.compile("[\u4e00-\u9fff]")), ("ar", re.compile("[\u0600-\u06ff]")),
            ("hi", re.compile("[\u0900-\u097f]")), ("ru", re.compile("[\u0400-\u04ff]")))
_TOKEN = re.compile(r"[^\W_]+")


class LanguageDetector:
    """Scores each pack's language by script and stopwords: evidence to weigh, never a gate on which packs run."""

    def __init__(self, packs: tuple[LanguagePack, ...]):
        self.codes = tuple(p.code for p in packs)
        self._stop: dict[str, set[str]] = {}
        self._cjk_stop: list[tuple[str, str]] = []
        for p in packs:
            for w in p.stopwords:
                if p.code in ("zh", "ja", "ko"):
                    self._cjk_stop.append((w, p.code))
                else:
                    self._stop.setdefault(w, set()).add(p.code)

    def scores(self, text: str, normalized: str) -> dict[str, float]:
        """Evidence per language code: script characters count 1/3 each, stopwords 1 each."""
        out: dict[str, float] = {}
        if not text.isascii():
            for code, pat in _SCRIPTS:
                n = len(pat.findall(text))
                if n and code in self.codes and not (code == "zh" and out.get("ja")):
                    out[code] = out.get(code, 0.0) + n / 3
            for w, code in self._cjk_stop:
                if code in out and w in normalized:
                    out[code] += 1
        for tok in _TOKEN.findall(normalized):
            for code in self._stop.get(tok, ()):
                out[code] = out.get(code, 0.0) + 1
        return out

    @staticmethod
    def top(scores: Mapping[str, float], default: str = "en") -> str:
        """The language with the most evidence (the default when there is none)."""
        return max(scores.items(), key=lambda kv: (kv[1], kv[0] == default))[0] if scores else default

