"""Policy packs: parsing, region overrides, and rewriting thresholds without losing the file's layout."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from safety.calibrate import (
    Example,
    Thresholds,
    apply_thresholds,
    load_devset,
    write_thresholds,
)
from safety.policy import DEFAULT_PACK, PROMPT_CATEGORIES, PolicyError, load_pack
from safety.verdict import Decision


def test_shipped_pack_covers_every_prompt_category():
    pack = load_pack()
    assert pack.id and pack.version
    assert {c.category for c in pack.clusters} >= set(PROMPT_CATEGORIES)
    assert {r.category for r in pack.rules} >= set(PROMPT_CATEGORIES)
    for c in pack.clusters:
        assert c.review <= c.block
    # Zero tolerance is the lexical rules' (an age or child word with a sexual word blocks); the minors cluster
    # catches paraphrases without listed words, and its band sends the ambiguous ones to review.
    assert all(c.review < c.block for c in pack.clusters if c.category == "csam")
    assert {r.id for r in pack.rules if r.category == "csam" and r.action == Decision.BLOCK} >= {
        "csam.age-sexual", "csam.minor-sexual", "csam.direct"}


def test_region_overrides_change_only_what_they_name():
    pack = load_pack()
    strict, default = pack.for_region("strict"), pack.for_region("default")
    assert strict.image.sexual_block < default.image.sexual_block
    actions = {r.id: r.action for r in strict.rules}
    assert actions["violence.acts"] == Decision.BLOCK
    assert {r.id: r.action for r in default.rules}["violence.acts"] == Decision.REVIEW
    assert strict.clusters == default.clusters
    with pytest.raises(PolicyError, match="no region"):
        pack.for_region("atlantis")


def test_cluster_overrides_by_category_and_id(tmp_path):
    pack = load_pack()
    over = replace(pack, regions={"x": {"clusters": {"hate": {"review": 0.1}, "hate.symbols": {"review": 0.2}}}})
    by_id = {c.id: c for c in over.for_region("x").clusters}
    assert by_id["hate.dehumanizing"].review == 0.1 and by_id["hate.symbols"].review == 0.2


def test_json_packs_load_too(tmp_path):
    p = tmp_path / "pack.json"
    p.write_text(json.dumps({
        "id": "tiny", "version": "7",
        "lexical": {"sets": {"g": ["gore"]}, "rules": [{"id": "v", "category": "violence", "action": "block",
                                                         "all_of": ["g"]}]},
    }))
    pack = load_pack(p)
    assert (pack.id, pack.version, pack.rules[0].action) == ("tiny", "7", Decision.BLOCK)


def test_write_thresholds_keeps_comments_and_bumps_version(tmp_path):
    pack = load_pack()
    tuned = apply_thresholds(pack, [Thresholds("hate", 0.611, 0.722)])
    out = tmp_path / "pack.toml"
    write_thresholds(DEFAULT_PACK, tuned, out, "9.9.9")
    again = load_pack(out)
    assert again.version == "9.9.9"
    assert {(c.review, c.block) for c in again.clusters if c.category == "hate"} == {(0.611, 0.722)}
    assert [c.review for c in again.clusters if c.category == "csam"] == [c.review for c in pack.clusters
                                                                            if c.category == "csam"]
    assert out.read_text().count("#") == DEFAULT_PACK.read_text().count("#")


def test_devset_has_every_category_and_a_stable_split():
    ex = load_devset()
    labels = {e.label for e in ex}
    assert labels == set(PROMPT_CATEGORIES) | {"benign"}
    assert Example("benign", "a red fox").split == Example("csam", "a red fox").split
    assert {e.split for e in ex} == {"calib", "holdout"}


def test_devsets_cover_every_language_and_stay_apart_from_the_sealed_split():
    from safety.calibrate import SEALED, SEALED_V2

    dev, sealed, sealed_v2 = load_devset(), load_devset(SEALED), load_devset(SEALED_V2)
    langs = {p.code for p in load_pack().languages}
    for lang in langs:
        mine = [e for e in dev if e.lang == lang]
        assert sum(e.label == "benign" for e in mine) >= 8 and sum(e.label == "csam" for e in mine) >= 6, lang
        held = [e for e in sealed if e.lang == lang]
        assert sum(e.label == "benign" for e in held) >= 10 and sum(e.label != "benign" for e in held) >= 10, lang
        held_v2 = [e for e in sealed_v2 if e.lang == lang]
        assert sum(e.label == "benign" for e in held_v2) >= 10 and sum(e.label != "benign" for e in held_v2) >= 10, lang
    sealed_texts = {e.text for e in sealed} | {e.text for e in sealed_v2}
    assert not {e.text for e in dev} & sealed_texts  # no sealed prompt in the development data
