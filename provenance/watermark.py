"""Invisible watermark: a 64-bit payload derived from the asset id, embedded with invisible-watermark's DWT-DCT-SVD.

Embedding uses the library. Detection re-implements the library's decoder with numpy (bit-identical at gain 1,
see tests) so that it can also undo a global brightness change: it tries a set of gains and keeps the one whose
repeated bit votes agree best with each other, which needs no knowledge of the payload.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PAYLOAD_BITS = 64
MIN_PIXELS = 256 * 256  # invisible-watermark refuses smaller images
_SCALE = 36.0  # the library's default quantisation step for the U channel
_BLOCK = 4
_METHOD = "dwtDctSvd"
# Brightness hypotheses: ±25% in ~2% steps, 1.0 exactly included.
_GAINS = tuple(float(g) for g in 1.02 ** np.arange(-12, 13))


def payload_for(asset_id: str) -> bytes:
    """The watermark payload of an asset: the first 64 bits of a domain-separated sha256 of its id."""
    if not asset_id:
        raise ValueError("asset_id is empty")
    return hashlib.sha256(b"hallmark/watermark/v1\0" + asset_id.encode()).digest()[: PAYLOAD_BITS // 8]


def payload_bits(payload: bytes) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(payload, np.uint8)).astype(bool)
    if bits.size != PAYLOAD_BITS:
        raise ValueError(f"payload must be {PAYLOAD_BITS} bits, got {bits.size}")
    return bits


def can_embed(width: int, height: int) -> bool:
    return width * height >= MIN_PIXELS and min(width, height) >= 2 * _BLOCK * 2


def embed(rgb: np.ndarray, payload: bytes) -> np.ndarray:
    """Return a copy of an (h, w, 3) uint8 RGB image carrying `payload`."""
    import cv2
    from imwatermark import WatermarkEncoder

    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an (h, w, 3) uint8 RGB array")
    if not can_embed(w, h):
        raise ValueError(f"image {w}x{h} is too small to watermark (needs at least {MIN_PIXELS} pixels)")
    encoder = WatermarkEncoder()
    encoder.set_by_bits(payload_bits(payload).astype(int).tolist())
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return np.ascontiguousarray(encoder.encode(bgr, _METHOD)[:, :, ::-1])


@dataclass(frozen=True)
class WatermarkReading:
    """What the decoder read: the payload bits, how unanimous their repeated votes were (0..1), the gain used."""

    bits: np.ndarray
    consistency: float
    gain: float

    @property
    def payload_hex(self) -> str:
        return np.packbits(self.bits.astype(np.uint8)).tobytes().hex()

    def agreement(self, payload: bytes) -> float:
        """Fraction of bits equal to `payload`."""
        return float(np.mean(self.bits == payload_bits(payload)))


def _u_ll_blocks(rgb: np.ndarray) -> np.ndarray:
    """The Haar LL band of the U channel cut into the library's 4x4 blocks, in raster order: (n, 4, 4)."""
    import cv2
    import pywt

    h, w = rgb.shape[0] // 4 * 4, rgb.shape[1] // 4 * 4
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb[:h, :w, ::-1]), cv2.COLOR_BGR2YUV)
    ll, _ = pywt.dwt2(yuv[:, :, 1].astype(np.float64), "haar")
    by, bx = ll.shape[0] // _BLOCK, ll.shape[1] // _BLOCK
    ll = ll[: by * _BLOCK, : bx * _BLOCK]
    return ll.reshape(by, _BLOCK, bx, _BLOCK).transpose(0, 2, 1, 3).reshape(-1, _BLOCK, _BLOCK)


def _vote(blocks: np.ndarray, gain: float) -> tuple[np.ndarray, float]:
    # A brightness gain g scales U around 128, so the LL band scales around 2*128 (Haar LL of a constant c is 2c).
    undone = 256.0 + (blocks - 256.0) / gain if gain != 1.0 else blocks
    s0 = np.linalg.svd(undone, compute_uv=False)[:, 0]  # the library's DCT is orthonormal: same singular values
    hard = (s0 % _SCALE) > _SCALE * 0.5
    index = np.arange(hard.size) % PAYLOAD_BITS
    frac = np.bincount(index, weights=hard, minlength=PAYLOAD_BITS) / np.bincount(index, minlength=PAYLOAD_BITS)
    return frac * 255 > 127, float(np.mean(np.abs(2 * frac - 1)))


def read(rgb: np.ndarray) -> WatermarkReading | None:
    """Decode the payload from an RGB image; None when the image is too small to carry one."""
    h, w = rgb.shape[:2]
    if not can_embed(w, h):
        return None
    blocks = _u_ll_blocks(rgb)
    best = max(((*_vote(blocks, g), g) for g in _GAINS), key=lambda r: (r[1], r[2] == 1.0))
    return WatermarkReading(bits=best[0], consistency=best[1], gain=best[2])
