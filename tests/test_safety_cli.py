"""`hallmark safety` commands through the real dispatcher (lexical-only where a model is not the point)."""
from __future__ import annotations

import io
import json
import sys

from hallmark.cli import main


def _run(monkeypatch, capsys, argv: list[str], stdin: bytes = b"") -> tuple[int, list[dict], str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_screen_prompts_prints_one_json_line_per_input_line(monkeypatch, capsys):
    stdin = b"a naked mole rat\nn a k e d k1d\n\xff\xfe not utf-8\n\n" + b"x" * 10_001 + b"\n"
    rc, lines, _ = _run(monkeypatch, capsys, ["safety", "screen-prompts", "--lexical-only"], stdin)
    assert rc == 0 and len(lines) == 5
    assert [ln["decision"] for ln in lines] == ["allow", "block", "review", "review", "review"]
    assert lines[1]["category"] == "csam" and lines[1]["stage"] == "lexical" and lines[1]["score"] == 1.0
    assert {"decision", "category", "stage", "score"} <= set(lines[0])
    assert "UTF-8" in lines[2]["reasons"][0] and "empty" in lines[3]["reasons"][0]
    assert "too long" in lines[4]["reasons"][0]
    assert "naked" not in json.dumps(lines)  # verdicts never carry prompt text


def test_a_broken_policy_pack_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "pack.toml"
    bad.write_text("id = [unclosed")
    rc, lines, err = _run(monkeypatch, capsys, ["safety", "screen-image", "--policy", str(bad), "x.png"])
    assert rc == 2 and lines == [] and "cannot read policy pack" in err


def test_calibrate_write_needs_a_version(monkeypatch, capsys, tmp_path):
    rc, _, err = _run(monkeypatch, capsys, ["safety", "calibrate", "--write", str(tmp_path / "p.toml")])
    assert rc == 2 and "--version" in err


def test_train_classifier_writes_weights_and_prints_the_threshold(monkeypatch, capsys, tmp_path):
    from safety.classifier import PromptClassifier

    data = tmp_path / "dev.tsv"
    rows = [f"en\tviolence\tzorblax the {w}" for w in ("village", "town", "city", "farm", "port", "camp")]
    rows += [f"en\tbenign\ta {w} in the park" for w in ("cat", "dog", "bird", "kid", "duck", "fox")]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.npz"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    rc = main(["safety", "train-classifier", "--devset", str(data), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "review threshold 0." in text and f"wrote {out}" in text and "benign" in text and "violence" in text
    assert PromptClassifier.load(out).harm(["zorblax the castle"])[1] == ["violence"]
    rc, _, err = _run(monkeypatch, capsys, ["safety", "train-classifier", "--benign-rate", "2"])
    assert rc == 2 and "--benign-rate" in err
    data.write_text("en\tbenign\t\n")
    rc, _, err = _run(monkeypatch, capsys, ["safety", "train-classifier", "--devset", str(data)])
    assert rc == 2 and "development set" in err
    data.write_text("\n".join(rows[:8]) + "\n")  # 6 harmful, 2 benign: too few to score out of fold
    rc, _, err = _run(monkeypatch, capsys, ["safety", "train-classifier", "--devset", str(data)])
    assert rc == 2 and "5+ of each label" in err
