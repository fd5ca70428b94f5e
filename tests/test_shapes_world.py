"""Shapes world: renderer vs checker ceiling, dataset hygiene, determinism, grammar, checker failures."""
import numpy as np
import pytest

from generator.shapes.captions import (CATEGORIES, format_prompt, load_eval_prompts, parse_prompt,
                                       sample_prompt)
from generator.shapes.checker import check, detect, score
from generator.shapes.dataset import iter_examples, make_batch, make_example
from generator.shapes.render import render, upscale
from generator.shapes.scenes import scene_for_prompt
from generator.shapes.world import HELD_OUT, Obj, Scene


def _sampled(seed, n, held_out=True):
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = sample_prompt(rng, CATEGORIES[i % 6], allow_held_out=held_out, paraphrase=bool(i % 2))
        yield p, render(scene_for_prompt(p, rng))


@pytest.mark.parametrize("size", [64, 256])
def test_renderer_hits_checker_ceiling(size):
    res = [check(img if size == 64 else upscale(img, size), p) for p, img in _sampled(size, 720)]
    rep = score(res)
    assert rep.overall >= 0.99 and rep.held_out >= 0.99 and rep.seen >= 0.99, rep
    assert set(rep.per_category) == set(CATEGORIES)


def test_dataset_never_emits_held_out():
    rng = np.random.default_rng(7)
    for _ in range(3000):
        img, cap, cat = make_example(rng)
        p = parse_prompt(cap, cat)
        assert not p.uses_held_out, cap
        r = check(img, p)
        assert r.passed, cap
        assert not any((o.color, o.shape) in HELD_OUT for o in r.objects), cap


def test_determinism():
    a, b = make_batch(np.random.default_rng(3), 50), make_batch(np.random.default_rng(3), 50)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    it1, it2 = iter_examples(5), iter_examples(5)
    for _ in range(20):
        (i1, c1, k1), (i2, c2, k2) = next(it1), next(it2)
        assert np.array_equal(i1, i2) and (c1, k1) == (c2, k2)
    assert make_batch(np.random.default_rng(4), 5)[1] != a[1][:5]


def test_category_weights_set_the_training_mix():
    weights = (0, 0, 1, 0, 3, 0)  # CATEGORIES order: counting and position only, 1:3
    _, captions, cats = make_batch(np.random.default_rng(5), 400, weights)
    assert set(cats) == {"counting", "position"}
    assert 0.65 < cats.count("position") / len(cats) < 0.85
    assert [parse_prompt(c).category for c in captions] == cats
    again = make_batch(np.random.default_rng(5), 400, weights)
    assert again[1] == captions


def test_parse_round_trips_templates_and_paraphrases():
    rng = np.random.default_rng(11)
    for i in range(3000):
        cat = CATEGORIES[i % 6]
        p = sample_prompt(rng, cat, allow_held_out=True, paraphrase=bool(i % 2))
        assert parse_prompt(p.text, cat).facts() == p.facts(), p.text
        canon = format_prompt(cat, p.objects, p.relation, p.background)
        assert parse_prompt(canon, cat).facts() == p.facts(), canon
    assert parse_prompt("3 red balls on a grey background").objects == \
        (("red", "circle", None),) * 3
    assert parse_prompt("a red circle to the left of a blue box").relation == "left of"
    assert parse_prompt("A big Orange Disc.").objects == (("orange", "circle", "large"),)


@pytest.mark.parametrize("name,per_category,held_out", [("eval.tsv", 25, 36), ("eval-large.tsv", 50, 60)])
def test_eval_prompts_file(name, per_category, held_out):
    ps = load_eval_prompts(f"generator/shapes/prompts/{name}")
    for c in CATEGORIES:
        assert sum(p.category == c and not p.uses_held_out for p in ps) == per_category
    assert sum(p.uses_held_out for p in ps) == held_out
    assert len({p.text for p in ps}) == len(ps)


@pytest.mark.parametrize("text", ["", "a red circle next to a blue square", "five red circles",
                                  "one red circle", "a pink circle", "a red hexagon",
                                  "a red circle and", "a circle that is red and blue",
                                  "a red circle on a green background"])
def test_bad_prompt_raises(text):
    with pytest.raises(ValueError):
        parse_prompt(text)


def test_color_attr_needs_distinct_colours_and_shapes():
    with pytest.raises(ValueError):
        parse_prompt("a red circle and a red square", "color_attr")


def _img(*objs, bg="white"):
    return render(Scene(bg, tuple(Obj(*o) for o in objs)))


RC, BS = ("circle", "red", 26, 16.0, 32.0), ("square", "blue", 26, 48.0, 32.0)


@pytest.mark.parametrize("prompt,objs,ok", [
    ("a red circle", [RC], True),
    ("a blue circle", [RC], False),                                   # wrong colour
    ("a small red circle", [RC], False),                              # wrong size
    ("a red circle", [RC, BS], False),                                # extra object
    ("a square that is blue", [BS], True),
    ("a red circle and a blue square", [RC, BS], True),
    ("a red square and a blue circle", [RC, BS], False),              # swapped colour binding
    ("a red circle and a blue square", [RC], False),                  # missing object
    ("two red circles", [RC, ("circle", "red", 14, 48.0, 12.0)], True),
    ("three red circles", [RC, ("circle", "red", 14, 48.0, 12.0)], False),  # wrong count
    ("two red circles", [RC, ("circle", "red", 14, 48.0, 12.0), BS[:3] + (48.0, 48.0)], False),
    ("a red circle left of a blue square", [RC, BS], True),
    ("a red circle right of a blue square", [RC, BS], False),         # swapped position
    ("a red circle above a blue square", [RC, BS], False),
])
def test_check_verdicts(prompt, objs, ok):
    img = _img(*objs)
    assert check(img, prompt).passed is ok
    assert check(upscale(img), prompt).passed is ok


def test_detect_on_black_and_gray_backgrounds():
    for bg in ("black", "gray"):
        bg_rgb, objs = detect(_img(RC, BS, ("triangle", "purple", 14, 20.0, 10.0), bg=bg))
        assert sorted((o.color, o.shape, o.size) for o in objs) == [
            ("blue", "square", "large"), ("purple", "triangle", "small"), ("red", "circle", "large")]


def test_eval_prompt_writer_refuses_more_distinct_prompts_than_exist(tmp_path):
    from generator.shapes.captions import write_eval_prompts

    with pytest.raises(ValueError, match="ran out of distinct colors prompts"):
        write_eval_prompts(str(tmp_path / "eval.tsv"), per_category=100)  # colors has 60 distinct seen prompts
