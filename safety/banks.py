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
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from provenance.fingerprint import (PDQ_MATCH_DISTANCE, PDQ_MIN_QUALITY, Pdq, PdqIndex, pdq, pdq_dihedral,
                                    pdq_view_hashes, trim_frame)

# Most severe first: a match in several banks is reported under the first of their categories.
BANK_CATEGORIES = ("csam", "ncii", "sexual", "protected_person", "violence", "extremism", "self_harm", "hate")
_BANK_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def is_pdq(value: object) -> bool:
    """Whether `value` is a PDQ value as banks store it: 64 lower-case hex digits."""
    return isinstance(value, str) and _HEX.match(value) is not None
_VALUE_KEYS = ("signal_value", "signal", "indicator", "hash", "value", "pdq")
_TYPE_KEYS = ("signal_type", "indicator_type", "type")
_SOURCE_KEYS = ("id", "signal_id", "content_id", "indicator_id", "source")


def flat_hash(value: str) -> bool:
    """Whether a PDQ value is a flat image's: PDQ sets a bit per coefficient above their median, so an image's hash has
    128 of 256 bits set; a flat image's coefficients tie and give a fixed pattern (0-88 bits set, by shade) that
    every blank image of that shade shares."""
    return not 96 <= bin(int(value, 16)).count("1") <= 160


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
    /hash columns), headerless "pdq,<hex>", "<hex>,<id>" or "<hex>" lines, or JSON (a list of such objects or of hex
    strings, {"signals": [...]}, or {"pdq": ["<hex>", ...]}). Rows of another signal type are skipped; a malformed
    PDQ value, a file that does not parse, or one with no PDQ row at all is an error (BankError, naming the row)."""
    label = name or "signals"
    try:
        rows = _rows(data)
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError, csv.Error) as exc:
        raise BankError(f"{label}: not a signal export ({exc.__class__.__name__})") from exc
    out = []
    for n, row in enumerate(rows, 1):
        if isinstance(row, str):
            row = {"signal_value": row}
        if not isinstance(row, dict):
            raise BankError(f"{label}: row {n}: expected an object or a PDQ string")
        row = {str(k).strip().lower(): str(v).strip() for k, v in row.items() if k is not None and v is not None}
        kind = next((row[k].lower() for k in _TYPE_KEYS if row.get(k)), "pdq")
        if kind not in ("pdq", "hash_pdq", "pdq_hash"):
            continue
        value = next((row[k].lower() for k in _VALUE_KEYS if row.get(k)), "")
        if not is_pdq(value):
            raise BankError(f"{label}: row {n}: not a 64-hex-digit PDQ value")
        out.append(Signal(value, next((row[k] for k in _SOURCE_KEYS if row.get(k)), f"{name}:{n}")))
    if rows and not out:
        raise BankError(f"{label}: {len(rows)} rows and no PDQ signal among them (check the columns)")
    return out


def _rows(data: bytes) -> list:
    """The rows of an export, before checking: dicts (CSV or JSON objects) or bare strings."""
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith(("[", "{")):
        obj = json.loads(text)
        rows = obj.get("signals", obj) if isinstance(obj, dict) else obj
        if isinstance(rows, dict):  # {"pdq": [...], "md5": [...]}
            rows = [{"signal_type": k, "signal_value": v} for k, vs in rows.items()
                    for v in (vs if isinstance(vs, list) else [vs])]
        if not isinstance(rows, list):
            raise TypeError("signals is not a list")
        return rows
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    first = lines[0].lower() if lines else ""
    if any(k in first for k in _VALUE_KEYS + _TYPE_KEYS) and not re.search("[0-9a-f]{64}", first):
        return list(csv.DictReader(io.StringIO("\n".join(lines))))
    rows = []
    for r in csv.reader(lines):
        cells = [c.strip() for c in r]
        if is_pdq(cells[0].lower()):  # "<hex>" or "<hex>,<id>" (value first)
            rows.append({"signal_value": cells[0], **({"id": cells[1]} if len(cells) > 1 else {})})
        else:  # "<type>,<hex>[,...]"
            rows.append(dict(zip(("signal_type", "signal_value", "id"), cells)))
    return rows


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
    """The banks of one directory and a FAISS index over all their signals; reloads when the directory changes.

    A bank lives in `<bank_id>.json` and nowhere else. A file that will not read (bad JSON, a bank id that is not
    its name, an unknown category, a malformed PDQ value) fails every match until it is fixed: the gate then routes
    images to review (fail closed) instead of silently matching without that bank.
    """

    def __init__(self, config: BankConfig):
        self.config = config
        self._lock = threading.Lock()  # swaps of the loaded state
        self._reload = threading.Lock()  # one reload at a time; the others use what is loaded meanwhile
        self._stamp: tuple | None = None
        self._failed: BankError | None = None  # the last load's error, kept with its stamp (no re-parse per call)
        self._missing_said = False
        self._banks: dict[str, Bank] = {}
        self._index = PdqIndex()
        self._owner: dict[str, str] = {}  # index id -> bank id

    def _stamp_now(self) -> tuple:
        d = self.config.directory
        if not d.is_dir() and not self._missing_said:  # a typo or an unmounted volume: no bank is checked
            logging.getLogger(__name__).warning("hash-bank directory %s does not exist: no bank is checked", d)
            self._missing_said = True
        out = []
        for f in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                st = f.stat()
            except FileNotFoundError:  # removed since the listing
                continue
            out.append((f, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self) -> None:
        """Load the directory again if any bank file was added, changed or removed since the last load. While another
        caller reloads, a caller that has loaded banks goes on with them (a large bank takes seconds to load)."""
        if not self._reload.acquire(blocking=self._stamp is None):
            if self._failed is not None:
                raise self._failed
            return
        try:
            stamp = self._stamp_now()
            if stamp != self._stamp:
                try:
                    banks = {b.bank_id: b for b in (self._read(f) for f, _, _ in stamp)}
                except BankError as exc:
                    self._stamp, self._failed = stamp, exc
                    raise
                index, owner = PdqIndex(), {}
                for b in banks.values():
                    ids = [f"{b.bank_id}/{n}" for n in range(len(b.signals))]
                    index.add(ids, [s.value for s in b.signals])
                    owner.update(dict.fromkeys(ids, b.bank_id))
                with self._lock:
                    self._banks, self._index, self._owner, self._stamp, self._failed = banks, index, owner, stamp, None
            if self._failed is not None:
                raise self._failed
        finally:
            self._reload.release()

    @staticmethod
    def _read(path: Path) -> Bank:
        """One bank file, checked: its id is its file name, its category is known, every value is a PDQ hash."""
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            bank = Bank(d["bank_id"], d["category"], int(d["version"]), str(d.get("updated", "")),
                        tuple(Signal(s["value"], str(s.get("source", "")), str(s.get("view", "original")))
                              for s in d["signals"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BankError(f"bank file {path}: {exc.__class__.__name__}: {exc}") from exc
        if bank.bank_id != path.stem or not _BANK_ID.match(str(bank.bank_id)):
            raise BankError(f"bank file {path}: holds bank id {bank.bank_id!r}; a bank lives only in <bank_id>.json "
                            f"(a copy under another name would shadow it)")
        if bank.category not in BANK_CATEGORIES:
            raise BankError(f"bank file {path}: category {bank.category!r} is not one of {', '.join(BANK_CATEGORIES)}")
        bad = next((n for n, sig in enumerate(bank.signals) if not is_pdq(sig.value)), None)
        if bad is not None:
            raise BankError(f"bank file {path}: signal {bad}: not a 64-hex-digit PDQ value")
        return bank

    def banks(self) -> list[Bank]:
        self.refresh()
        return sorted(self._banks.values(), key=lambda b: b.bank_id)

    def add(self, bank_id: str, category: str, signals: list[Signal]) -> Bank:
        """Add signals to a bank (created if missing); the new version is written atomically, under a lock on the
        directory so that concurrent adds (other processes too) each build on the last one."""
        import fcntl

        if not _BANK_ID.match(bank_id):
            raise BankError(f"bank id {bank_id!r}: lower-case letters, digits, '.', '_', '-' (up to 64)")
        if category not in BANK_CATEGORIES:
            raise BankError(f"category {category!r}: one of {', '.join(BANK_CATEGORIES)}")
        bad = next((s.value for s in signals if not is_pdq(s.value)), None)
        if bad is not None:
            raise BankError(f"signal {bad!r}: not a 64-hex-digit PDQ value (lower case)")
        flat = [s for s in signals if flat_hash(s.value)]
        if flat:
            raise BankError(f"{len(flat)} signal(s) are flat-image hashes (e.g. {flat[0].source or flat[0].value}): "
                            f"they would match every blank image of one shade; not banked")
        self.config.directory.mkdir(parents=True, exist_ok=True)
        with open(self.config.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.config.directory / f"{bank_id}.json"
            old = self._read(path) if path.exists() else None
            if old and old.category != category:
                raise BankError(f"bank {bank_id!r} holds category {old.category!r}, not {category!r}")
            seen = {(s.value, s.view) for s in old.signals} if old else set()
            fresh = tuple(s for s in signals if (s.value, s.view) not in seen and not seen.add((s.value, s.view)))
            bank = Bank(bank_id, category, (old.version if old else 0) + 1,
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), (old.signals if old else ()) + fresh)
            fd, tmp = tempfile.mkstemp(dir=self.config.directory, prefix=f".{bank_id}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"bank_id": bank.bank_id, "category": bank.category, "version": bank.version,
                               "updated": bank.updated, "signals": [s.__dict__ for s in bank.signals]}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        self.refresh()
        return bank

    def match_hashes(self, values: list[str]) -> list[BankMatch]:
        """Every bank holding a signal within max_distance of any of `values` (one image's variants), at its nearest
        signal; the most severe category first (BANK_CATEGORIES order), then the nearest: a near-duplicate-heavy
        bank of a milder category cannot hide a csam match."""
        self.refresh()
        return self._match(values)

    def match_image(self, rgb: np.ndarray) -> list[BankMatch]:
        """Matches for an image, its rotations and its flips, and the same for its content when it has a uniform
        frame (padding or bars: an evasion that costs an attacker nothing and moves PDQ past the distance)."""
        self.refresh()
        if not len(self._index):
            return []
        framed = trim_frame(rgb)
        variants = pdq_dihedral(rgb) + (pdq_dihedral(framed) if framed is not None else [])
        return self._match([h.value for h in variants])

    def _match(self, values: list[str]) -> list[BankMatch]:
        """`match_hashes` on the loaded banks (the caller has refreshed them)."""
        with self._lock:
            index, owner, banks = self._index, self._owner, self._banks
        best: dict[str, int] = {}
        for hit_id, d in index.within(values, self.config.max_distance):
            b = owner[hit_id]
            best[b] = min(d, best.get(b, d))
        found = [BankMatch(b, banks[b].category, banks[b].version, d) for b, d in best.items()]
        return sorted(found, key=lambda m: (BANK_CATEGORIES.index(m.category), m.distance, m.bank_id))
