"""PDQ fingerprints (Meta's 256-bit perceptual hash, via `pdqhash`) and a FAISS binary index to search them."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

PDQ_ALG = "pdq"  # the id that travels on `asset.published` and in our soft-binding assertions
PDQ_QUALITY_ALG = "pdq-quality"  # travels beside "pdq" on `asset.published`: the hash's quality (0–100), hex
PDQ_SOFT_ALG = "org.hallmark.pdq.1"  # C2PA soft-binding id (PDQ is not on the C2PA list: our namespace)
PDQ_BITS = 256
PDQ_MATCH_DISTANCE = 31  # Meta's default match threshold (of 256 bits); see docs/provenance.md for measurements
HASH_SIDE = 256
PDQ_MIN_QUALITY = 50  # Meta: hashes of quality below 50 (flat images) are unreliable for matching


@dataclass(frozen=True)
class Pdq:
    """A PDQ hash as 64 hex characters (Meta's canonical order) and its quality (0–100)."""

    value: str
    quality: int


def _hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, np.uint8)).tobytes().hex()


def normalise(rgb: np.ndarray) -> np.ndarray:
    """The image PDQ sees: resized to 256×256 (PDQ itself reduces any image to 64×64, aspect ignored), which makes
    hashing cost the same at any size and lets rotations and flips of this array stand for the image's own."""
    from PIL import Image

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an (h, w, 3) uint8 RGB array")
    if rgb.shape[:2] == (HASH_SIDE, HASH_SIDE):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb, "RGB").resize((HASH_SIDE, HASH_SIDE), Image.BILINEAR, reducing_gap=2.0))


def _dihedral(square: np.ndarray) -> list[np.ndarray]:
    turns = [np.rot90(square, k) for k in range(4)]
    return [np.ascontiguousarray(a) for a in turns + [t[:, ::-1] for t in turns]]


def pdq(rgb: np.ndarray) -> Pdq:
    """The PDQ hash of an (h, w, 3) uint8 RGB image."""
    import pdqhash

    bits, quality = pdqhash.compute(normalise(rgb))
    return Pdq(_hex(bits), int(quality))


def pdq_dihedral(rgb: np.ndarray) -> list[Pdq]:
    """PDQ of the 8 rotations/flips of an image, the original first. Each variant is hashed from its own pixels:
    pdqhash's `compute_dihedral` (from one DCT) lands 10–44 bits away from the hash of the turned image."""
    import pdqhash

    out = []
    for variant in _dihedral(normalise(rgb)):
        bits, quality = pdqhash.compute(variant)
        out.append(Pdq(_hex(bits), int(quality)))
    return out


def _uniform_lines(rgb: np.ndarray, tol: int) -> np.ndarray:
    """(h,) bool: whether each row is one colour, 90 % of its pixels within `tol` of the row's median (sparse specks
    or a dotted line do not make a frame row content)."""
    median = np.median(rgb, axis=1, keepdims=True).astype(np.int16)  # (h, 1, 3)
    return (np.abs(rgb.astype(np.int16) - median).max(axis=2) <= tol).mean(axis=1) >= 0.9


FRAME_SIDE = 512  # frames are found on a copy this size (long side): the cost does not grow with the image


def trim_frame(rgb: np.ndarray, least: float = 1 / 16) -> np.ndarray | None:
    """The image without a uniform frame (padding, letterbox or pillarbox bars, a blank canvas around it: each side
    its own colour, any width that leaves `least` of a side), or None when it has none (under 1 %) or is all frame.
    A 5 % frame moves PDQ 60-110 bits; the trimmed image lands within ~20 of the unframed one through JPEG q75.
    Uniform means within 5 % of the image's own contrast (at most 12 levels), so a dimmed image keeps its rows."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if min(h, w) < 16:
        return None
    small = rgb
    if max(h, w) > FRAME_SIDE:
        im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
        im.thumbnail((FRAME_SIDE, FRAME_SIDE), Image.BOX)
        small = np.asarray(im)
    sh, sw = small.shape[:2]
    lo, hi = np.percentile(small, (1, 99))
    tol = int(np.clip(0.05 * (hi - lo), 1, 12))
    rows, cols = _uniform_lines(small, tol), _uniform_lines(small.transpose(1, 0, 2), tol)
    if rows.all() or cols.all():
        return None

    def run(flags: np.ndarray, limit: int) -> int:
        n = 0
        while n < limit and flags[n]:
            n += 1
        return n

    keep_h, keep_w = max(1, round(sh * least)), max(1, round(sw * least))
    top = run(rows, sh - keep_h)
    bottom = run(rows[::-1], sh - top - keep_h)
    left = run(cols, sw - keep_w)
    right = run(cols[::-1], sw - left - keep_w)
    if max(top / sh, bottom / sh, left / sw, right / sw) < 0.01:
        return None
    y0, y1 = round(top * h / sh), h - round(bottom * h / sh)  # back to the image's own pixels
    x0, x1 = round(left * w / sw), w - round(right * w / sw)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def _crop(im, left: float, top: float, right: float, bottom: float):
    w, h = im.size
    return im.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


# Views of a published image whose PDQ is stored beside the plain one, so that the watermark's candidate can be told
# from a copy after the common geometric edits PDQ itself does not survive (a centred 10% crop moves it ~90 bits).
VIEWS = {
    "crop10": lambda im: _crop(im, 0.05, 0.05, 0.05, 0.05),
    "crop25": lambda im: _crop(im, 0.125, 0.125, 0.125, 0.125),
    "crop10tl": lambda im: _crop(im, 0, 0, 0.1, 0.1),
    "crop10tr": lambda im: _crop(im, 0.1, 0, 0, 0.1),
    "crop10bl": lambda im: _crop(im, 0, 0.1, 0.1, 0),
    "crop10br": lambda im: _crop(im, 0.1, 0.1, 0, 0),
    "rot+5": lambda im: im.rotate(5, resample=2),  # 2 = bilinear
    "rot-5": lambda im: im.rotate(-5, resample=2),
}


def pdq_views(rgb: np.ndarray) -> dict[str, str]:
    """PDQ (hex) of each of VIEWS of an image, by view name."""
    return {name: p.value for name, p in pdq_view_hashes(rgb).items()}


def pdq_view_hashes(rgb: np.ndarray) -> dict[str, Pdq]:
    """PDQ (hash and quality) of each of VIEWS of an image, by view name."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    im.thumbnail((2 * HASH_SIDE, 2 * HASH_SIDE), Image.BILINEAR)  # keeps the aspect; views need no more pixels
    return {name: pdq(np.asarray(view(im))) for name, view in VIEWS.items()}


def crop_search(original: np.ndarray, query_hw: tuple[int, int], variants: list[str], steps: int = 7) -> int | None:
    """For a query smaller than `original` (a crop that is none of VIEWS): the smallest distance from its hashes
    (`variants`) to PDQ of query-sized windows of `original` on a steps×steps grid of offsets; None if not smaller."""
    h, w = original.shape[:2]
    qh, qw = query_hw
    if qh > h or qw > w or (qh, qw) == (h, w):
        return None
    ys = sorted({int(v) for v in np.linspace(0, h - qh, steps).round()})
    xs = sorted({int(v) for v in np.linspace(0, w - qw, steps).round()})
    return min(min_distance(variants, pdq(np.ascontiguousarray(original[y:y + qh, x:x + qw])).value)
               for y in ys for x in xs)


def hex_to_bytes(values: list[str]) -> np.ndarray:
    """PDQ hex strings as an (n, 32) uint8 array, the layout FAISS binary indexes take."""
    if any(len(v) != PDQ_BITS // 4 for v in values):
        raise ValueError(f"a PDQ value is {PDQ_BITS // 4} hex characters")
    return np.frombuffer(bytes.fromhex("".join(values)), np.uint8).reshape(len(values), PDQ_BITS // 8)


def distance(a: str, b: str) -> int:
    """Hamming distance between two PDQ hex values."""
    return int(np.unpackbits(hex_to_bytes([a])[0] ^ hex_to_bytes([b])[0]).sum())


def min_distance(candidates: list[str], value: str) -> int:
    """The smallest distance from `value` to any of `candidates` (e.g. an image's dihedral variants)."""
    return min(distance(c, value) for c in candidates)


class PdqIndex:
    """Exact Hamming search over PDQ values with FAISS (`IndexBinaryFlat`); thread-safe; re-adding an id replaces it."""

    def __init__(self) -> None:
        import faiss

        self._index = faiss.IndexBinaryFlat(PDQ_BITS)
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._values: dict[str, str] = {}
        self._stale: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._position)

    def add(self, ids: list[str], values: list[str]) -> None:
        """Add (or replace) fingerprints; an id already present with the same value is left as it is."""
        if len(ids) != len(values):
            raise ValueError("ids and values differ in length")
        fresh = {i: v.lower() for i, v in zip(ids, values) if self._values.get(i) != v.lower()}
        if not fresh:
            return
        data = hex_to_bytes(list(fresh.values()))
        with self._lock:
            for asset_id, value in fresh.items():
                if asset_id in self._position:
                    self._stale.add(self._position[asset_id])
                self._position[asset_id] = len(self._ids)
                self._values[asset_id] = value
                self._ids.append(asset_id)
            self._index.add(data)

    def add_bytes(self, ids: list[str], data: np.ndarray) -> None:
        """Bulk add of new ids from an (n, 32) uint8 array (for large loads; ids must not be present yet)."""
        with self._lock:
            start = len(self._ids)
            self._ids.extend(ids)
            self._position.update((asset_id, start + n) for n, asset_id in enumerate(ids))
            self._index.add(np.ascontiguousarray(data, np.uint8))

    def search(self, values: list[str], k: int = 5,
               max_distance: int = PDQ_MATCH_DISTANCE) -> list[list[tuple[str, int]]]:
        """Per query: up to k (id, hamming distance) pairs within `max_distance`, nearest first."""
        if not values:
            return []
        with self._lock:
            if not self._ids:
                return [[] for _ in values]
            want = min(len(self._ids), k + len(self._stale))
            dist, pos = self._index.search(hex_to_bytes([v.lower() for v in values]), want)
            ids, stale = self._ids, self._stale
        out = []
        for drow, prow in zip(dist, pos):
            hits = [(ids[p], int(d)) for d, p in zip(drow, prow) if p >= 0 and p not in stale and d <= max_distance]
            out.append(hits[:k])
        return out

    def within(self, values: list[str], max_distance: int = PDQ_MATCH_DISTANCE) -> list[tuple[str, int]]:
        """Every id within `max_distance` of any of `values` (a range search: no k to fill), each once at its
        smallest distance, nearest first."""
        if not values:
            return []
        with self._lock:
            if not self._ids:
                return []
            lims, dist, pos = self._index.range_search(hex_to_bytes([v.lower() for v in values]), max_distance + 1)
            ids, stale = self._ids, set(self._stale)
        best: dict[str, int] = {}
        for p, d in zip(pos.tolist(), dist.tolist()):
            if p not in stale:
                best[ids[p]] = min(int(d), best.get(ids[p], int(d)))
        return sorted(best.items(), key=lambda item: (item[1], item[0]))

    def nearest(self, variants: list[str], k: int = 5,
                max_distance: int = PDQ_MATCH_DISTANCE) -> list[tuple[str, int]]:
        """One image given as several hashes (its dihedral variants): each id once, at its smallest distance."""
        best: dict[str, int] = {}
        for hits in self.search(variants, k, max_distance):
            for asset_id, d in hits:
                best[asset_id] = min(d, best.get(asset_id, d))
        return sorted(best.items(), key=lambda item: (item[1], item[0]))[:k]
