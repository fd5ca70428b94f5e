"""The prompt encoder's int8 first pass: prompts near a threshold are rescored in fp32, so verdicts are fp32's."""
from __future__ import annotations

import gc
import threading
import time
import weakref
from dataclasses import replace

import numpy as np
import pytest

from safety.calibrate import load_devset
from safety.embedding import Encoder, EncoderConfig, length_groups
from safety.failclosed import Deadline, FailClosed, _Workers
from safety.policy import PolicyError, load_pack
from safety.prompt_gate import FAST_MIN_BATCH, LayeredPromptGate, contrast, needs_exact

ENC = EncoderConfig(threads=1)
PACK = load_pack()


def _sharing(gate: LayeredPromptGate, recheck_within: float) -> LayeredPromptGate:
    """The same loaded models under another `[embedding] recheck_within`."""
    other = LayeredPromptGate(replace(PACK, embedding=replace(PACK.embedding, recheck_within=recheck_within)), True,
                              ENC)
    other._lexical, other._clusters, other._classifier = gate._lexical, gate._clusters, gate._classifier
    return other


@pytest.fixture(scope="module")
def fast() -> LayeredPromptGate:
    g = LayeredPromptGate(PACK, True, ENC)
    g.load()
    assert g._clusters.encoder.has_fast
    return g


@pytest.fixture(scope="module")
def near_and_far(fast):
    """Development prompts the encoder reads: those whose fp32 score for some cluster reaches its review threshold
    minus 0.12 (with their fp32 scores), and the others."""
    texts = [e.text for e in load_devset()[::2] if fast.reads(e.text)]
    rp, _ = fast.region("default")
    adjusted = contrast(rp.clusters, fast.similarities(texts))  # calibration's path: fp32
    near = needs_exact(rp, adjusted, 0.12)
    return [t for t, n in zip(texts, near) if n], [t for t, n in zip(texts, near) if not n], rp, adjusted[near]


def _reason(v, key: str) -> str | None:
    return next((r.split("=", 1)[1] for r in v.reasons if r.startswith(key + "=")), None)


def test_verdicts_with_the_int8_pass_are_the_fp32_verdicts(fast, near_and_far):
    near, far, _, _ = near_and_far
    assert len(near) > 100
    texts = near + far[:200]
    exact = _sharing(fast, 1.0)  # every prompt in fp32
    got = [v for k in range(0, len(texts), 64) for v in fast.screen(texts[k:k + 64])]
    want = [v for k in range(0, len(texts), 64) for v in exact.screen(texts[k:k + 64])]
    assert [(v.decision, v.stage, v.categories) for v in got] == [(v.decision, v.stage, v.categories) for v in want]
    encoders = [_reason(v, "encoder") for v in got if v.stage == "embedding"]
    assert "int8" in encoders and "fp32" in encoders  # both passes ran
    for g, w in zip(got, want):
        if _reason(g, "encoder") == "fp32":  # a rescored prompt carries the fp32 score itself
            assert g.score == pytest.approx(w.score, abs=2e-4)
        if g.stage == "embedding" and g.decision.value != "allow":  # int8 only ever clears a prompt
            assert _reason(g, "encoder") == "fp32"


def test_prompts_close_to_a_threshold_are_rescored_in_fp32(fast, near_and_far):
    near, far, rp, adjusted = near_and_far
    close = set(np.flatnonzero(needs_exact(rp, adjusted, 0.02)))
    assert close  # the development set has prompts at or above a review threshold minus 0.02
    rechecked: list[bool] = []
    for k in range(0, len(near), 64):
        _, exact = fast._similarities(rp, near[k:k + 64])
        rechecked.extend(exact.tolist())
    assert all(rechecked[i] for i in close)  # int8 never strays 0.08 from fp32 on them
    _, exact = fast._similarities(rp, far[:64])
    assert not exact.all()  # prompts far from every threshold keep their int8 score


def test_the_fast_pass_is_really_int8_and_a_single_prompt_is_fp32(fast, near_and_far):
    near, far, _, _ = near_and_far
    texts = far[:64]
    enc: Encoder = fast._clusters.encoder
    int8, _ = enc.encode_windows(texts, exact=False)
    fp32, _ = enc.encode_windows(texts)
    cos = (int8 * fp32).sum(1)
    assert cos.min() > 0.95 and cos.max() < 0.99999  # close to fp32, not fp32
    unchecked = _sharing(fast, 0.0)
    verdicts = unchecked.screen(texts)
    assert {_reason(v, "encoder") for v in verdicts if v.stage == "embedding"} == {"int8"}
    assert FAST_MIN_BATCH > 1
    (one,) = fast.screen(["a bowl of ramen on a wooden table"])  # fewer than FAST_MIN_BATCH: straight to fp32
    assert _reason(one, "encoder") == "fp32"


def test_an_encoder_without_int8_runs_fp32_for_both_passes(fast):
    exact_only = Encoder(replace(ENC, int8=False))
    assert not exact_only.has_fast
    texts = ["a red fox in the snow", "a bowl of ramen on a wooden table"] * 5
    a, _ = exact_only.encode_windows(texts, exact=False)
    b, _ = fast._clusters.encoder.encode_windows(texts)
    assert np.allclose(a, b, atol=1e-4)


def test_the_fast_pass_decides_only_clear_allows(fast):
    rp, _ = fast.region("default")
    j = next(k for k, c in enumerate(rp.clusters) if c.category == "violence")
    c = rp.clusters[j]
    rows = np.full((6, len(rp.clusters)), -1.0, np.float32)  # (n, clusters): far below everything
    rows[1, j] = c.review - 0.05  # near the review threshold
    rows[2, j] = c.block + 0.3  # far above every threshold: which cluster wins still follows the scores
    rows[3, j] = c.review - 0.2  # clear
    rows[4, j] = np.nan
    anchor = next(k for k, c in enumerate(rp.clusters) if c.category == "benign")
    rows[5, anchor] = 1.0  # a benign anchor has no threshold of its own
    assert needs_exact(rp, rows, 0.1).tolist() == [False, True, True, False, True, False]
    assert needs_exact(rp, rows, 0.0).tolist() == [False, False, True, False, True, False]


@pytest.mark.parametrize("value", ['"0.1"', "true", "-0.1", "1.5"])
def test_recheck_within_must_be_a_number_in_0_1(tmp_path, value):
    pack = tmp_path / "p.toml"
    pack.write_text(f'id = "x"\nversion = "1"\n[embedding]\nrecheck_within = {value}\n')
    with pytest.raises(PolicyError, match="recheck_within"):
        load_pack(pack)
    pack.write_text('id = "x"\nversion = "1"\n[embedding]\nrecheck = 0.1\n')
    with pytest.raises(PolicyError, match="unknown keys"):
        load_pack(pack)
    pack.write_text('id = "x"\nversion = "1"\n[embedding]\nrecheck_within = 0\n')
    assert load_pack(pack).embedding.recheck_within == 0.0


def test_length_groups_give_every_lane_a_group_when_there_are_rows_enough():
    same = [12] * 40  # one length: a single group by padding cost alone
    assert len(length_groups(same, 64)) == 1
    groups = length_groups(same, 64, lanes=2)
    assert len(groups) == 2 and sorted(k for g in groups for k in g) == list(range(40))
    assert length_groups([7], 64, lanes=2) == [[0]]  # one row cannot be split


class _Slow:
    pack_id, pack_version = "p", "1"

    def __init__(self):
        self.release = threading.Event()
        self.threads: set[int] = set()

    def load(self):
        pass

    def screen(self, items, region="default"):
        self.threads.add(threading.get_ident())
        if items == ["hang"]:
            self.release.wait(30)
        return [None] * len(items)


def test_fail_closed_reuses_its_worker_threads_and_a_hung_call_does_not_hold_the_next():
    inner = _Slow()
    gate = FailClosed(inner, Deadline(2.0, 0.0))
    before = threading.active_count()
    for _ in range(30):
        assert gate.screen(["a"]) == [None]
    assert len(inner.threads) == 1 and threading.active_count() <= before + 1
    (v,) = gate.screen(["hang"])
    assert v.stage == "error" and "timed out" in v.reasons[0]
    assert gate.screen(["a"]) == [None]  # served by a second worker while the first is stuck
    assert len(inner.threads) == 2
    inner.release.set()
    _until(lambda: len(gate._workers._idle) == 2)  # the stuck worker came back once its call ended


def _until(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


def test_idle_workers_exit_and_do_not_keep_a_dropped_gate_alive():
    inner = _Slow()
    alive = weakref.ref(inner)
    gate = FailClosed(inner, Deadline(2.0, 0.0))
    gate._workers = _Workers("test", idle_s=0.2)
    workers = gate._workers
    assert gate.screen(["a"]) == [None]
    del gate, inner
    _until(lambda: gc.collect() >= 0 and alive() is None)  # the idle worker holds no reference to the gate
    _until(lambda: not workers._idle)  # and exits after idle_s


def test_a_broken_int8_copy_is_made_again_and_no_int8_leaves_fp32_onnx(fast, tmp_path, monkeypatch, caplog):
    import shutil

    import safety.onnx_encoder as onnx_encoder

    fp32 = fast._clusters.encoder._onnx.path
    shutil.copy(fp32, tmp_path / fp32.name)  # a cache holding the fp32 export and a truncated int8 copy
    enc = Encoder(replace(ENC, cache_dir=str(tmp_path)))
    int8 = enc._fast.path
    int8.write_bytes(int8.read_bytes()[:1000])
    again = Encoder(replace(ENC, cache_dir=str(tmp_path)))
    assert again.has_fast and int8.stat().st_size > 10_000_000
    a, _ = again.encode_windows(["a red fox in the snow"] * 8, exact=False)
    b, _ = fast._clusters.encoder.encode_windows(["a red fox in the snow"] * 8, exact=False)
    assert np.allclose(a, b, atol=1e-5)

    def broken(*args):
        raise OSError("read-only cache")

    monkeypatch.setattr(onnx_encoder, "int8_sessions", broken)
    fallback = Encoder(replace(ENC, cache_dir=str(tmp_path)))
    assert fallback._onnx is not None and not fallback.has_fast and "fp32 only" in caplog.text


def test_hostile_batch_mates_do_not_change_a_verdict(fast, near_and_far):
    """The int8 activation scale is set per call: an attacker who controls other prompts in a batch (very long, odd
    characters, repeated tokens) must not move anyone's verdict off the fp32 one."""
    near, _, _, _ = near_and_far
    mates = ["x " * 400, "\u2588" * 300, "sex " * 60 + "!" * 200, "0123456789" * 40, "ŻŹĆŃĄŚŁĘÓ " * 50,
             "a" * 2000, "kill " * 100, "🙂" * 200]
    exact = _sharing(fast, 1.0)
    targets = near[:20]
    want = exact.screen(targets)
    for k, target in enumerate(targets):
        got = fast.screen([target] + mates)[0]
        assert (got.decision, got.stage, got.categories) == (want[k].decision, want[k].stage, want[k].categories)
