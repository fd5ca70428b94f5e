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
