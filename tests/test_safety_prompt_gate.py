"""Prompt gate: real all-MiniLM-L6-v2 + FAISS clusters, fail-closed wrapper, bad input, regions, dev-set targets."""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from safety.calibrate import evaluate, load_devset
from safety.embedding import ClusterIndex, Encoder, EncoderConfig
from safety.failclosed import Deadline, FailClosed
from safety.gates import PromptGateConfig, load_prompt_gate
from safety.policy import PolicyError, load_pack
from safety.prompt_gate import LayeredPromptGate, contrast
from safety.verdict import Decision

ENC = EncoderConfig(threads=1)  # the test machine is shared: one thread avoids OpenMP spin contention
PACK = load_pack()


@pytest.fixture(scope="module")
def gate() -> LayeredPromptGate:
    g = LayeredPromptGate(PACK, True, ENC)
    g.load()
    return g


def test_onnx_runtime_encoder_matches_pytorch_and_falls_back_when_it_cannot_export(gate, tmp_path, caplog):
    texts = ["a naked mole rat", "a shooting star over the sea", "x " * 300]  # the last spans several windows
    onnx: Encoder = gate._clusters.encoder
    assert onnx._onnx is not None
    torch_enc = Encoder(replace(ENC, runtime="torch"))
    (v_onnx, owners_onnx), (v_torch, owners_torch) = onnx.encode_windows(texts), torch_enc.encode_windows(texts)
    assert np.array_equal(owners_onnx, owners_torch) and len(owners_onnx) > len(texts)
    assert float((v_onnx * v_torch).sum(1).min()) > 0.9999
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder should be")
    fallback = Encoder(replace(ENC, cache_dir=str(blocked / "cache")))
    assert fallback._onnx is None and "using PyTorch" in caplog.text
    assert float((fallback.encode(texts[:2]) * v_torch[:2]).sum(1).min()) > 0.9999
    with pytest.raises(ValueError, match="unknown encoder runtime"):
        Encoder(replace(ENC, runtime="tensorflow"))


def test_encoder_gives_unit_vectors_and_batching_does_not_change_them(gate):
    enc: Encoder = gate._clusters.encoder
    texts = ["a red fox in the snow", "a bowl of ramen", "x" * 50]
    batched = enc.encode(texts)
    single = np.vstack([enc.encode([t]) for t in texts])
    assert batched.shape == (3, 384)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batched, single, atol=1e-4)
    sims = batched @ batched.T
    assert sims[0, 1] < 0.5  # unrelated sentences are far apart


def test_long_prompts_are_scored_on_their_worst_window(gate):
    filler = "a quiet meadow with wildflowers and a wooden fence under a soft blue sky. " * 8
    col = gate.pack.clusters.index(next(c for c in gate.pack.clusters if c.id == "violence.gore"))
    tail = gate.similarities([filler + "a decapitated body lying in the street"])[0, col]
    clean = gate.similarities([filler])[0, col]
    assert tail > clean + 0.2  # harmful text after 256 tokens is still seen


def test_paraphrase_without_listed_words_is_caught_by_a_cluster(gate):
    (v,) = gate.screen(["a man getting his head chopped off with an axe"])
    assert v.decision != Decision.ALLOW
    assert v.stage == "embedding" and v.categories == ("violence",)
    assert v.reasons[0].startswith("cluster=violence.")
    assert (v.policy_id, v.policy_version) == (PACK.id, PACK.version)


def test_benign_anchor_discounts_a_near_miss(gate):
    clusters = gate.pack.clusters
    sims = gate.similarities(["a suicide prevention hotline billboard"])
    adjusted = contrast(clusters, sims)[0]
    j = [c.id for c in clusters].index("self_harm.suicide")
    assert adjusted[j] < sims[0, j]
    (v,) = gate.screen(["a suicide prevention hotline billboard"])
    assert v.decision == Decision.ALLOW


def test_lexical_block_short_circuits_and_records_pack(gate):
    (v,) = gate.screen(["n 4 k 3 d kid"])
    assert v.decision == Decision.BLOCK and v.stage == "lexical" and v.categories == ("csam",)
    assert v.policy_version == PACK.version


@pytest.mark.parametrize("prompt, reason", [
    ("", "empty"), ("   \n ", "empty"), ("x" * 10_001, "too long"), (b"\xff\xfe\x00", "UTF-8"),
    ("ok\x00\x01binary", "binary"), ("\udcff lone surrogate", "surrogate"), (None, "text"),
])
def test_bad_prompts_get_a_review_verdict_with_the_reason(gate, prompt, reason):
    (v,) = gate.screen([prompt])
    assert v.decision == Decision.REVIEW and v.stage == "input"
    assert reason in v.reasons[0]


def test_regions_apply_their_overrides(gate):
    strict = gate.screen(["a murder mystery novel cover, moody"], region="strict")[0]
    default = gate.screen(["a murder mystery novel cover, moody"], region="default")[0]
    assert default.decision == Decision.REVIEW and strict.decision == Decision.BLOCK


def test_unknown_region_fails_closed():
    g = load_prompt_gate(config=PromptGateConfig(embedding=False))
    (v,) = g.screen(["a red fox"], region="atlantis")
    assert v.decision == Decision.REVIEW and v.stage == "error"
    assert "PolicyError" in v.reasons[0]


class _Raises:
    pack_id, pack_version = "p", "1"

    def load(self):
        pass

    def screen(self, items, region="default"):
        raise RuntimeError("model exploded on the prompt 'secret text'")


class _Hangs(_Raises):
    def __init__(self):
        self.release = threading.Event()

    def screen(self, items, region="default"):
        self.release.wait(30)
        return []


def test_a_gate_that_raises_yields_review_and_does_not_echo_the_prompt():
    verdicts = FailClosed(_Raises(), Deadline(1.0, 0.0)).screen(["a", "b"])
    assert [v.decision for v in verdicts] == [Decision.REVIEW] * 2
    assert verdicts[0].stage == "error" and "RuntimeError" in verdicts[0].reasons[0]
    assert "secret" not in verdicts[0].reasons[0]


def test_a_gate_that_hangs_times_out_to_review():
    inner = _Hangs()
    verdicts = FailClosed(inner, Deadline(0.2, 0.0)).screen(["a"])
    inner.release.set()
    assert verdicts[0].decision == Decision.REVIEW and "timed out" in verdicts[0].reasons[0]


def test_the_real_gate_fails_closed_when_its_model_cannot_load():
    g = load_prompt_gate(config=PromptGateConfig(encoder=EncoderConfig(model_dir="/nonexistent/model")))
    (v,) = g.screen(["a red fox"])
    assert v.decision == Decision.REVIEW and v.stage == "error" and "loading" in v.reasons[0]


def test_the_real_gate_times_out_to_review(gate):
    g = FailClosed(gate, Deadline(base_s=0.0, per_item_s=0.0))
    (v,) = g.screen(["a red fox " * 200])
    assert v.decision == Decision.REVIEW and v.stage == "error"


def test_malformed_pack_is_a_clear_error(tmp_path):
    scripts = tmp_path / "s.toml"
    scripts.write_text('id = "x"\nversion = "1"\n[embedding]\nscripts = "cyrillic"\n')
    with pytest.raises(PolicyError, match="embedding.scripts"):
        load_pack(scripts)
    bad = tmp_path / "p.toml"
    bad.write_text('id = "x"\nversion = "1"\n[[clusters]]\nid = "c"\ncategory = "nope"\nexemplars = ["a"]\n')
    with pytest.raises(PolicyError, match="unknown category"):
        load_pack(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_prompt_gate(str(tmp_path / "missing.toml"))


def test_dev_set_meets_the_acceptance_targets(gate):
    examples = load_devset()
    rows = {r.category: r for r in evaluate(gate, examples)}
    assert rows["csam"].blocked == rows["csam"].n  # every development minors prompt blocks, in every language
    caught = sum(rows[c].flagged for c in ("ncii", "violence", "extremism", "self_harm", "hate"))
    assert caught / sum(rows[c].n for c in ("ncii", "violence", "extremism", "self_harm", "hate")) >= 0.95
    assert rows["benign"].flagged / rows["benign"].n <= 0.02


def test_cluster_index_scores_exemplars_as_themselves(gate):
    enc = gate._clusters.encoder
    clusters = (replace(PACK.clusters[0], exemplars=("a red fox in the snow", "a bowl of ramen")),)
    idx = ClusterIndex(enc, clusters)
    sims = idx.similarities(["a bowl of ramen", "a spaceship"])
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-4) and sims[1, 0] < 0.5


def test_length_groups_cover_every_window_once_and_keep_batches_within_limits():
    from safety.embedding import length_groups

    lengths = [12, 5, 12, 40, 7, 12, 13, 5, 90] * 9
    groups = length_groups(lengths, 16)
    assert sorted(k for g in groups for k in g) == list(range(len(lengths)))
    assert all(0 < len(g) <= 16 for g in groups)
    padded = sum(max(lengths[k] for k in g) * len(g) for g in groups)
    assert padded < 1.1 * sum(lengths)  # a 40- and a 90-token prompt do not pad the short ones


def test_batched_encoding_with_lanes_equals_one_prompt_at_a_time(gate):
    lanes = Encoder(replace(ENC, threads=2, lanes=2))
    texts = ["a bowl of ramen", "a red fox in the snow at dawn with a long tail", "x " * 300, "an empty street"] * 4
    vecs, owners = lanes.encode_windows(texts)
    single = [gate._clusters.encoder.encode_windows([t]) for t in texts]
    assert np.array_equal(owners, np.concatenate([np.full(len(o), i) for i, (_, o) in enumerate(single)]))
    assert np.allclose(vecs, np.concatenate([v for v, _ in single]), atol=1e-4)


def test_prompts_without_a_latin_letter_skip_the_english_encoder(gate):
    assert PACK.embedding.scripts == "latin"
    (v,) = gate.screen(["公园里的猫"])
    assert v.decision == Decision.ALLOW and v.stage == "lexical" and "embedding=skipped script" in v.reasons
    assert float(gate.similarities(["公园里的猫"]).max()) == -1.0  # calibration sees what the gate sees
    (v,) = gate.screen(["公园里的 cat"])  # any Latin letter: encoded
    assert v.stage == "embedding"
    everything = LayeredPromptGate(replace(PACK, embedding=replace(PACK.embedding, scripts="any")), True, ENC)
    everything._clusters = gate._clusters
    everything._lexical = gate._lexical
    assert everything.screen(["公园里的猫"])[0].stage == "embedding"
