"""Korean and Japanese verbs listed in their dictionary form match their conjugated forms (ko.toml/ja.toml
[[inflect]] rules), and the generated forms do not fire on everyday words that share letters with them."""
from pathlib import Path

import pytest

from safety.langpacks import load_language_pack
from safety.lexical import TermMatcher, live_hits, term_key

PACKS = Path(__file__).resolve().parents[1] / "safety" / "packs" / "lang"


def _matcher(code: str) -> TermMatcher:
    pack = load_language_pack(PACKS / f"{code}.toml")
    sets = {f"{k}#{code}": v for k, v in pack.sets.items()}
    return TermMatcher(sets, {code: pack.inflections})


@pytest.fixture(scope="module")
def ko():
    return _matcher("ko")


@pytest.fixture(scope="module")
def ja():
    return _matcher("ja")


def _sets(m: TermMatcher, text: str) -> set[str]:
    """The sets the gate's rules would see: hits inside an allow phrase ("ナチ" in "ナチュラル") are cleared."""
    return {h.term_set.split("#")[0] for h in live_hits(m.find(text))}


@pytest.mark.parametrize("code,rule_end,term,forms", [
    ("ko", "이다", "죽이다", ["죽여", "죽였", "죽인", "죽일", "죽이고"]),
    ("ko", "하다", "추방하다", ["추방해", "추방했", "추방한", "추방할", "추방하는"]),
    ("ko", "찌르다", "칼로 찌르다", ["칼로 찔러", "칼로 찔렀", "칼로 찌른"]),
    ("ja", "す", "殺す", ["殺し", "殺さ", "殺せ", "殺そ"]),
    ("ja", "つ", "銃で撃つ", ["銃で撃ち", "銃で撃っ", "銃で撃た"]),
])
def test_rules_apply_to_unspaced_scripts(code, rule_end, term, forms):
    """Inflection.stems() works on Hangul and kana keys: the rule's stem and endings are what the pack says."""
    pack = load_language_pack(PACKS / f"{code}.toml")
    rule = next(r for r in pack.inflections if r.ends == rule_end)
    stem, endings = rule.stems(term_key(term))
    assert {stem + e for e in endings} >= {term_key(f) for f in forms}


@pytest.mark.parametrize("text,category", [
    ("남자를 칼로 찔렀다", "violent_acts"),
    ("사람들을 총으로 쐈던 장면", "violent_acts"),
    ("그 남자를 죽였어", "violent_acts"),
    ("포로의 목을 벴다", "gore"),
    ("사진 속 옷을 다 벗겨줘", "ncii_direct"),
    ("손목을 그었던 자국", "self_harm"),
    ("목을 맨 사람", "self_harm"),
    ("옥상에서 뛰어내렸다", "self_harm"),
    ("난민을 쫓아낸 뒤", "dehumanize"),
    ("이민자를 몰살했다", "dehumanize"),
])
def test_korean_conjugated_forms_match(ko, text, category):
    assert category in _sets(ko, text)


@pytest.mark.parametrize("text,category", [
    ("男をナイフで刺した", "violent_acts"),
    ("人々を銃で撃った", "violent_acts"),
    ("捕虜の首をはねた", "gore"),
    ("手首を切った跡", "self_harm"),
    ("首を吊った人", "self_harm"),
    ("もう死にたかった", "self_harm"),
    ("睡眠薬を大量に飲んだ", "self_harm"),
    ("移民を追い出した", "dehumanize"),
    ("ヒトラーを崇めた", "glorify"),
])
def test_japanese_conjugated_forms_match(ja, text, category):
    assert category in _sets(ja, text)


@pytest.mark.parametrize("text", [
    "칼로리가 낮은 샐러드", "전성기 시절의 선수", "감자 껍질을 벗기는 과정", "펜싱 선수가 상대를 찌르는 순간",
    "가능성을 엿보다", "버스가 사람을 태우다", "이민자 차별을 없애다", "헤어 디자이너가 머리를 자르다", "호박죽이 맛있다",
])
def test_korean_everyday_words_stay_clear(ko, text):
    assert not _sets(ko, text) & {"ncii_direct", "gore", "violent_acts", "self_harm", "dehumanize", "slurs"}


@pytest.mark.parametrize("text", [
    "ナチュラルメイク", "刺身の盛り合わせ", "野菜を切り刻む", "じゃがいもの皮をむく", "トランスフォーマーの玩具",
    "殺菌された器具", "偏見を一掃する",
])
def test_japanese_everyday_words_stay_clear(ja, text):
    assert not _sets(ja, text) & {"ncii_direct", "gore", "violent_acts", "self_harm", "dehumanize", "slurs",
                                   "extremist_groups"}
