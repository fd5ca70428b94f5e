"""Invisible watermark: a 64-bit keyed payload (HMAC of the asset id), embedded with invisible-watermark's DWT-DCT-SVD.

The bits are readable by anyone with the public decoder; what they cannot do is make a payload that names one of our
assets without the server secret, or move a real one onto other content unnoticed (the verifier compares the image
with the named asset's PDQ fingerprint, see verdict.py).

Embedding uses the library. Detection re-implements the library's decoder with numpy (bit-identical at gain 1,
see tests) so that it can search what an edit changed without knowing the payload: `read` tries brightness gains
and keeps the one whose repeated bit votes are most unanimous; `read_cropped` finds a block grid moved by a crop.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np

PAYLOAD_BITS = 64
SOFT_ALG = "org.hallmark.watermark.dwtdctsvd-hmac.1"  # C2PA soft-binding id (not on the C2PA list: our namespace)
MIN_PIXELS = 256 * 256  # invisible-watermark refuses smaller images
# Quantisation step of the U channel's block singular values. The library's default, 36, loses bits at JPEG q75
# on flat renders; 48 keeps PSNR ≥ 33 dB on photos and ≥ 41 dB on shapes renders (bench/provenance_bench.py).
_SCALE = 48
_BLOCK = 4
_METHOD = "dwtDctSvd"
# Brightness hypotheses besides 1.0 (tried first): ±25% in 2% steps.
_GAINS = tuple(float(g) for g in 1.02 ** np.arange(-12, 13) if g != 1.0)
_SEARCH_BLOCKS = 4096  # blocks used to rank brightness hypotheses
_GAIN_MARGIN = 0.1
_MAX_BLOCKS = 16384  # 256 votes per bit


def payload_for(asset_id: str, secret: bytes) -> bytes:
    """The watermark payload of an asset: HMAC-SHA256(server secret, asset id), truncated to 64 bits."""
    if not asset_id:
        raise ValueError("asset_id is empty")
    if len(secret) < 16:
        raise ValueError("the watermark secret must be at least 16 bytes")
    mac = hmac.new(secret, b"hallmark/watermark/v2\0" + asset_id.encode(), hashlib.sha256)
    return mac.digest()[: PAYLOAD_BITS // 8]


def payload_bits(payload: bytes) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(payload, np.uint8)).astype(bool)
    if bits.size != PAYLOAD_BITS:
        raise ValueError(f"payload must be {PAYLOAD_BITS} bits, got {bits.size}")
    return bits


def can_embed(width: int, height: int) -> bool:
    return width * height >= MIN_PIXELS and min(width, height) >= 2 * _BLOCK * 2


def embed(rgb: np.ndarray, payload: bytes) -> np.ndarray:
    """Return a copy of an (h, w, 3) uint8 RGB image carrying `payload`."""
    from imwatermark import WatermarkEncoder

    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an (h, w, 3) uint8 RGB array")
    if not can_embed(w, h):
        raise ValueError(f"image {w}x{h} is too small to watermark (needs at least {MIN_PIXELS} pixels)")
    encoder = WatermarkEncoder()
    encoder.set_by_bits(payload_bits(payload).astype(int).tolist())
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return np.ascontiguousarray(encoder.encode(bgr, _METHOD, scales=[0, _SCALE, 0])[:, :, ::-1])


@dataclass(frozen=True)
class WatermarkReading:
    """What the decoder read: the payload bits, how unanimous their repeated votes were (0..1), the gain used.

    Readings from the crop search are `rotated`: the bits are the payload up to an unknown cyclic rotation, and
    only the `known` bits had blocks left to vote for them.
    """

    bits: np.ndarray
    consistency: float
    gain: float = 1.0
    rotated: bool = False
    known: np.ndarray | None = None

    @property
    def payload_hex(self) -> str:
        return np.packbits(self.bits.astype(np.uint8)).tobytes().hex()

    @property
    def known_mask(self) -> np.ndarray:
        return np.ones(PAYLOAD_BITS, bool) if self.known is None else self.known

    def agreement(self, payload: bytes) -> float:
        """Fraction of known bits equal to `payload` (at the best rotation for a rotated reading)."""
        return float(agreement(self, payload_word(payload))[0])

    def aligned_to(self, payload: bytes) -> "WatermarkReading":
        """A rotated reading turned to where it agrees best with `payload`."""
        if not self.rotated:
            return self
        want = payload_bits(payload)

        def score(r: int) -> float:
            return float(np.mean((np.roll(self.bits, r) == want)[np.roll(self.known_mask, r)]))

        r = max(range(PAYLOAD_BITS), key=score)
        return WatermarkReading(np.roll(self.bits, r), self.consistency, self.gain, False, np.roll(self.known_mask, r))


def _words(bits: np.ndarray) -> np.uint64:
    return np.frombuffer(np.packbits(bits).tobytes(), ">u8").astype(np.uint64)[0]


def agreement(reading: WatermarkReading, payloads: np.ndarray) -> np.ndarray:
    """Agreement of a reading with each of an (n,) uint64 array of payloads (bit 0 = most significant)."""
    best = np.zeros(len(payloads))
    for r in range(PAYLOAD_BITS) if reading.rotated else (0,):
        bits, known = _words(np.roll(reading.bits, r)), _words(np.roll(reading.known_mask, r))
        same = np.bitwise_count(~(payloads ^ bits) & known)
        best = np.maximum(best, same / np.bitwise_count(known))
    return best


def payload_word(payload: bytes) -> np.ndarray:
    """A payload as a one-element uint64 array, the form `agreement` takes."""
    return np.array([_words(payload_bits(payload))], np.uint64)


def _u_channel(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb[:, :, ::-1]), cv2.COLOR_BGR2YUV)[:, :, 1].astype(np.float64)


def _ll_blocks(u: np.ndarray) -> np.ndarray:
    """The Haar LL band of a channel cut into the library's 4x4 blocks: (rows, cols, 4, 4)."""
    h, w = u.shape[0] // 8 * 8, u.shape[1] // 8 * 8
    u = u[:h, :w]
    ll = (u[0::2, 0::2] + u[0::2, 1::2] + u[1::2, 0::2] + u[1::2, 1::2]) / 2  # = pywt.dwt2(u, "haar")[0]
    by, bx = ll.shape[0] // _BLOCK, ll.shape[1] // _BLOCK
    return ll.reshape(by, _BLOCK, bx, _BLOCK).transpose(0, 2, 1, 3)


def _u_ll_blocks(rgb: np.ndarray) -> np.ndarray:
    """LL blocks in the library's raster order: (n, 4, 4)."""
    return _ll_blocks(_u_channel(rgb)).reshape(-1, _BLOCK, _BLOCK)


def _top_singular(blocks: np.ndarray) -> np.ndarray:
    """Largest singular value of each 4x4 block (the library's DCT is orthonormal, so DCT first changes nothing)."""
    return np.linalg.svd(blocks, compute_uv=False)[..., 0]


def _norm_under_gains(blocks: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Frobenius norm of each block with each gain undone: (gains, n). A stand-in for the top singular value in
    searches: these blocks are nearly rank one (their mean dominates), so the two differ by a fraction of a step."""
    flat = blocks.reshape(len(blocks), -1)
    s1, s2 = flat.sum(axis=1), (flat * flat).sum(axis=1)
    g = gains[:, None]
    d = 256.0 * (1.0 - 1.0 / g)  # undone = blocks / g + d
    return np.sqrt(np.maximum(s2 / g**2 + 2 * d * s1 / g + flat.shape[1] * d**2, 0.0))


def _undo_gain(blocks: np.ndarray, gain) -> np.ndarray:
    # A brightness gain g scales U around 128, so the LL band scales around 2*128 (Haar LL of a constant c is 2c).
    return 256.0 + (blocks - 256.0) / gain


def _hard(s0: np.ndarray) -> np.ndarray:
    return (s0 % _SCALE) > _SCALE * 0.5


def _tally(hard: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority vote per payload bit (the library's rule), the mean unanimity of the votes, which bits got votes.

    `hard` may carry leading hypothesis axes: (..., n) against labels (n,).
    """
    onehot = np.zeros((labels.size, PAYLOAD_BITS))
    onehot[np.arange(labels.size), labels] = 1.0
    counts = onehot.sum(axis=0)
    known = counts > 0
    frac = (hard @ onehot) / np.maximum(counts, 1)
    return frac * 255 > 127, np.abs(2 * frac[..., known] - 1).mean(axis=-1), known


def _vote(blocks: np.ndarray, gain: float) -> tuple[np.ndarray, float]:
    hard = _hard(_top_singular(_undo_gain(blocks, gain) if gain != 1.0 else blocks))
    bits, consistency, _ = _tally(hard, np.arange(hard.size) % PAYLOAD_BITS)
    return bits, float(consistency)


def read(rgb: np.ndarray) -> WatermarkReading | None:
    """Decode the payload from an RGB image; None when the image is too small to carry one."""
    h, w = rgb.shape[:2]
    if not can_embed(w, h):
        return None
    rows = -(-_MAX_BLOCKS // (w // 8))  # a prefix of block rows keeps the bit labels; large images need no more
    blocks = _u_ll_blocks(rgb[: rows * 8])
    gains = np.array((1.0, *_GAINS))
    sample = blocks[:_SEARCH_BLOCKS]  # a prefix keeps the bit labels; enough votes to rank the gains
    _, consistency, _ = _tally(_hard(_norm_under_gains(sample, gains)), np.arange(len(sample)) % PAYLOAD_BITS)
    best = int(np.argmax(consistency))
    # JPEG noise lets some gain beat gain 1 by a little; a real brightness change wins by far more.
    gain = float(gains[best]) if consistency[best] >= consistency[0] + _GAIN_MARGIN else 1.0
    return WatermarkReading(*_vote(blocks, gain), gain)


def read_cropped(rgb: np.ndarray, max_crop: float = 0.2) -> WatermarkReading | None:
    """Decode an image cropped by up to `max_crop` of its width, so that the 8-pixel block grid has moved.

    Finds the grid offset where block singular values sit on the embedder's quarter marks, then the original row
    length (in blocks) whose bit groups vote most unanimously. Where the crop started stays unknown, so the result
    is the payload up to a cyclic rotation; compare it with `agreement`.
    """
    h, w = rgb.shape[:2]
    if min(h, w) < 128:
        return None
    # A window of at most 64x64 blocks; where it starts only adds to the unknown rotation.
    y0, x0 = max(0, (h - 520) // 2), max(0, (w - 520) // 2)
    window = _u_channel(rgb[y0:y0 + 520, x0:x0 + 520])
    by, bx = (window.shape[0] - 7) // 8, (window.shape[1] - 7) // 8
    grids = np.stack([_ll_blocks(window[oy:, ox:])[:by, :bx] for oy in range(8) for ox in range(8)])
    phase = np.sqrt((grids * grids).sum(axis=(-2, -1))) / _SCALE  # Frobenius norm ≈ top singular value
    off_grid = np.cos(4 * np.pi * phase).mean(axis=(1, 2))  # -1 when every block sits at 1/4 or 3/4 of a step
    hard = _hard(_top_singular(grids[int(np.argmin(off_grid))])).ravel()
    rows, cols = np.indices((by, bx))
    # Blocks per row before the crop; only its residue mod 64 changes the labels.
    periods = sorted({p % PAYLOAD_BITS for p in range(w // 8, int(w / (1 - max_crop)) // 8 + 1)})
    best = None
    for period in periods:
        bits, consistency, known = _tally(hard, ((rows * period + cols) % PAYLOAD_BITS).ravel())
        if best is None or consistency > best.consistency:
            best = WatermarkReading(bits, float(consistency), rotated=True, known=known)
    return best
