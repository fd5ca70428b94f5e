"""Hash banks of known-bad images: PDQ signals per bank (versioned, one category each), searched with FAISS.

Signals come from ThreatExchange / Hasher-Matcher-Actioner exports (CSV or JSON) or from image files (their PDQ
plus the PDQ of common crops, which PDQ alone does not survive). Each bank is one JSON file in a bank directory:
{"bank_id", "category", "version", "updated", "signals": [{"value", "source", "view"}]}; every change bumps the
version. The PDQ hasher and the index are the provenance ones (`provenance.fingerprint`): one implementation.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from provenance.fingerprint import (PDQ_MATCH_DISTANCE, PDQ_MIN_QUALITY, Pdq, PdqIndex, pdq, pdq_dihedral,
                                    pdq_view_hashes, trim_frame)

BANK_CATEGORIES = ("csam", "ncii", "sexual", "protected_person", "violence", "extremism", "self_harm", "hate")
_BANK_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_VALUE_KEYS = ("signal_value", "signal", "indicator", "hash", "value", "pdq")
_TYPE_KEYS = ("signal_type", "indicator_type", "type")
_SOURCE_KEYS = ("id", "signal_id", "content_id", "indicator_id", "source")


class BankError(ValueError):
    """A bank file, an import file or a bank id that cannot be used."""


@dataclass(frozen=True)
class BankConfig:
    """Where the banks live and how close a hash must be to match (Hamming distance of 256 bits)."""

    directory: Path
    max_distance: int = PDQ_MATCH_DISTANCE


@dataclass(frozen=True)
class Signal:
    value: str  # PDQ, 64 hex characters
    source: str = ""  # the exporter's id or the file name it came from (never image content)
    view: str = "original"  # "original", or the crop/rotation of VIEWS it was hashed from


@dataclass(frozen=True)
class Bank:
    bank_id: str
    category: str
    version: int
    updated: str
    signals: tuple[Signal, ...]


@dataclass(frozen=True)
class BankMatch:
    bank_id: str
    category: str
    version: int
    distance: int

    def reason(self) -> str:
        return f"bank={self.bank_id} version={self.version} category={self.category} distance={self.distance}"


def parse_signals(data: bytes, name: str = "") -> list[Signal]:
    """PDQ signals from a ThreatExchange/HMA export: CSV with a header (signal_type/indicator_type + signal/indicator
    /hash columns), headerless "pdq,<hex>" or "<hex>" lines, or JSON (a list of such objects, {"signals": [...]},
    or {"pdq": ["<hex>", ...]}). Rows of another signal type are skipped; a malformed PDQ value is an error."""
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith(("[", "{")):
        obj = json.loads(text)
        rows = obj.get("signals", obj) if isinstance(obj, dict) else obj
        if isinstance(rows, dict):  # {"pdq": [...], "md5": [...]}
            rows = [{"signal_type": k, "signal_value": v} for k, vs in rows.items() for v in vs]
    else:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        first = lines[0].lower() if lines else ""
        if any(k in first for k in _VALUE_KEYS + _TYPE_KEYS) and not re.search("[0-9a-f]{64}", first):
            rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
        else:
            rows = [dict(zip(("signal_type", "signal_value"), r)) if len(r) > 1 else {"signal_value": r[0]}
                    for r in csv.reader(lines)]
    out = []
    for n, row in enumerate(rows, 1):
        row = {str(k).strip().lower(): str(v).strip() for k, v in row.items() if k is not None}
        kind = next((row[k].lower() for k in _TYPE_KEYS if row.get(k)), "pdq")
        if kind not in ("pdq", "hash_pdq", "pdq_hash"):
            continue
        value = next((row[k].lower() for k in _VALUE_KEYS if row.get(k)), "")
        if not _HEX.match(value):
            raise BankError(f"{name or 'signals'}: row {n}: not a 64-hex-digit PDQ value")
        out.append(Signal(value, next((row[k] for k in _SOURCE_KEYS if row.get(k)), f"{name}:{n}")))
    return out


# 10% off one side: PDQ moves ~100 bits, so a bank keeps these views too (the corner and centred crops, rotations:
# `provenance.fingerprint.VIEWS`).
SIDE_CROPS = {"crop10l": (0.1, 0, 1, 1), "crop10r": (0, 0, 0.9, 1), "crop10t": (0, 0.1, 1, 1), "crop10b": (0, 0, 1, 0.9)}


def _views(rgb: np.ndarray) -> list[tuple[str, Pdq]]:
    """PDQ of an image's common crops and small rotations, by view name."""
    h, w = rgb.shape[:2]
    views = list(pdq_view_hashes(rgb).items())
    for view, (x0, y0, x1, y1) in SIDE_CROPS.items():
        part = np.ascontiguousarray(rgb[round(h * y0):round(h * y1), round(w * x0):round(w * x1)])
        views.append((view, pdq(part)))
    return views


def image_signals(rgb: np.ndarray, source: str, min_quality: int = PDQ_MIN_QUALITY) -> list[Signal]:
    """An image's PDQ plus the PDQ of its common crops and small rotations, each kept only at PDQ quality
    >= `min_quality` (Meta's rule: below 50 a hash says little); an image with a uniform frame also gets its content's
    hash and views (`trimmed`, `trimmed/<view>`). An image whose own hash falls short is refused: a flat image's hash
    comes from rounding, not content, so every blank output of its shade would match it. Queries are never filtered
    by quality: a dimmed copy of a banked image keeps its hash and loses quality."""
    own = pdq(rgb)
    if own.quality < min_quality:
        raise BankError(f"{source}: PDQ quality {own.quality} is below {min_quality} (too flat: its hash would "
                        f"match unrelated blank images); not banked")
    views = _views(rgb)
    content = trim_frame(rgb)
    if content is not None:  # banked with bars: the content alone, as a copy without them (and cropped) hashes
        views += [("trimmed", pdq(content))] + [(f"trimmed/{name}", p) for name, p in _views(content)]
    return [Signal(own.value, source)] + [Signal(p.value, source, view) for view, p in views if p.quality >= min_quality]


class HashBanks:
    """The banks of one directory and a FAISS index over all their signals; reloads when the directory changes."""

    def __init__(self, config: BankConfig):
        self.config = config
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._banks: dict[str, Bank] = {}
        self._index = PdqIndex()
        self._owner: dict[str, str] = {}  # index id -> bank id

    def _files(self) -> list[Path]:
        d = self.config.directory
        return sorted(d.glob("*.json")) if d.is_dir() else []

    def refresh(self) -> None:
        """Load the directory again if any bank file was added, changed or removed since the last load."""
        files = self._files()
        stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        if stamp == self._stamp:
            return
        banks = {b.bank_id: b for b in (self._read(f) for f in files)}
        index, owner = PdqIndex(), {}
        for b in banks.values():
            ids = [f"{b.bank_id}/{n}" for n in range(len(b.signals))]
            index.add(ids, [s.value for s in b.signals])
            owner.update(dict.fromkeys(ids, b.bank_id))
        with self._lock:
            self._banks, self._index, self._owner, self._stamp = banks, index, owner, stamp

    @staticmethod
    def _read(path: Path) -> Bank:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return Bank(d["bank_id"], d["category"], int(d["version"]), d.get("updated", ""),
                        tuple(Signal(s["value"], s.get("source", ""), s.get("view", "original")) for s in d["signals"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BankError(f"bank file {path}: {exc.__class__.__name__}: {exc}") from exc

    def banks(self) -> list[Bank]:
        self.refresh()
        return sorted(self._banks.values(), key=lambda b: b.bank_id)

    def add(self, bank_id: str, category: str, signals: list[Signal]) -> Bank:
        """Add signals to a bank (created if missing); the new version is written atomically."""
        if not _BANK_ID.match(bank_id):
            raise BankError(f"bank id {bank_id!r}: lower-case letters, digits, '.', '_', '-' (up to 64)")
        if category not in BANK_CATEGORIES:
            raise BankError(f"category {category!r}: one of {', '.join(BANK_CATEGORIES)}")
        self.refresh()
        old = self._banks.get(bank_id)
        if old and old.category != category:
            raise BankError(f"bank {bank_id!r} holds category {old.category!r}, not {category!r}")
        seen = {(s.value, s.view) for s in old.signals} if old else set()
        fresh = tuple(s for s in signals if (s.value, s.view) not in seen and not seen.add((s.value, s.view)))
        bank = Bank(bank_id, category, (old.version if old else 0) + 1,
                    datetime.now(timezone.utc).isoformat(timespec="seconds"), (old.signals if old else ()) + fresh)
        self.config.directory.mkdir(parents=True, exist_ok=True)
        path = self.config.directory / f"{bank_id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"bank_id": bank.bank_id, "category": bank.category, "version": bank.version,
                                   "updated": bank.updated, "signals": [s.__dict__ for s in bank.signals]}),
                       encoding="utf-8")
        os.replace(tmp, path)
        self.refresh()
        return bank

    def match_hashes(self, values: list[str]) -> list[BankMatch]:
        """Banks holding a signal within max_distance of any of `values` (one image's variants), nearest first."""
        self.refresh()
        with self._lock:
            index, owner, banks = self._index, self._owner, self._banks
        best: dict[str, int] = {}
        for hit_id, d in index.nearest(values, k=8, max_distance=self.config.max_distance):
            b = owner[hit_id]
            best[b] = min(d, best.get(b, d))
        return [BankMatch(b, banks[b].category, banks[b].version, d) for b, d in sorted(best.items(), key=lambda x: x[1])]

    def match_image(self, rgb: np.ndarray) -> list[BankMatch]:
        """Matches for an image, its rotations and its flips, and the same for its content when it has a uniform
        frame (padding or bars: an evasion that costs an attacker nothing and moves PDQ past the distance)."""
        if not self._index_size():
            return []
        framed = trim_frame(rgb)
        variants = pdq_dihedral(rgb) + (pdq_dihedral(framed) if framed is not None else [])
        return self.match_hashes([h.value for h in variants])

    def _index_size(self) -> int:
        self.refresh()
        return len(self._index)
