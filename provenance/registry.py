"""Asset registry: a SQL read model (fed by `assets` events): asset id ↔ sha256 ↔ watermark ↔ manifest ↔ PDQ."""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from sqlmodel import Field, Session, SQLModel, select

from hallmark.db import create_tables, engine_for
from provenance.fingerprint import PDQ_ALG, PDQ_MATCH_DISTANCE, PDQ_QUALITY_ALG, PdqIndex, pdq, pdq_views
from provenance.store import BlobStore
from provenance.watermark import WatermarkReading, agreement


class AssetRecord(SQLModel, table=True):
    """One published asset. Never holds the tenant or the requester."""

    __tablename__ = "provenance_assets"

    asset_id: str = Field(primary_key=True)
    sha256: str = Field(index=True)
    watermark_payload: str = Field(default="", index=True)  # hex, "" when the image was too small to mark
    manifest_label: str | None = Field(default=None, index=True)
    model_id: str = ""
    policy_version: str = ""
    width: int = 0
    height: int = 0
    pdq: str = ""  # 256-bit PDQ of the published pixels, 64 hex
    pdq_views: str = ""  # PDQ of fingerprint.VIEWS of the published pixels: space-separated hex
    pdq_quality: int = -1  # PDQ's quality score, 0–100; -1 unknown
    created_at: dt.datetime


class AssetChange(SQLModel, table=True):
    """When each asset row was last written (wall clock, ns), so readers fetch only what changed. A table apart:
    `provenance_assets` stays a pure function of the `assets` events (a rebuild yields identical rows)."""

    __tablename__ = "provenance_asset_changes"

    asset_id: str = Field(primary_key=True)
    seq: int = Field(index=True)


_SEQ_OVERLAP_NS = 5_000_000_000  # a writer's clock may run this far behind another's


def _quality(value: str) -> int:
    """A `pdq-quality` fingerprint value (hex) as 0–100, or -1 when absent or malformed."""
    try:
        return min(100, int(value, 16)) if value else -1
    except ValueError:
        return -1


def _hex_words(hex_values: list[str]) -> np.ndarray:
    """64-bit hex strings as uint64 words (bit 0 of a payload = the word's most significant bit)."""
    return np.frombuffer(bytes.fromhex("".join(hex_values)), ">u8").astype(np.uint64)


@dataclass
class _Memory:
    """The watermark column (as words) and the PDQ index held in memory for searches, and how fresh they are."""

    ids: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    words: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    pdq: PdqIndex = field(default_factory=PdqIndex)
    seq: int = 0
    loaded_at: float = field(default_factory=time.monotonic)
    polled_at: float = float("-inf")

    def apply(self, rows: list[tuple[str, str, str, int]]) -> None:
        """Add or replace (asset id, watermark hex, PDQ hex, seq) rows."""
        if not rows:
            return
        fresh_ids, fresh_words = [], []
        words = self.words.copy() if any(i in self.position for i, *_ in rows) else self.words
        for asset_id, mark, _, _ in rows:
            if mark and len(mark) == 16:
                if asset_id in self.position:
                    words[self.position[asset_id]] = _hex_words([mark])[0]
                else:
                    self.position[asset_id] = len(self.ids) + len(fresh_ids)
                    fresh_ids.append(asset_id)
                    fresh_words.append(mark)
        self.words = np.concatenate([words, _hex_words(fresh_words)]) if fresh_words else words
        if fresh_ids:
            self.ids = self.ids + fresh_ids  # a new list: a search holding the old one stays consistent
        hashed = [(i, p) for i, _, p, _ in rows if p and len(p) == 64]
        self.pdq.add([i for i, _ in hashed], [p for _, p in hashed])
        self.seq = max([self.seq, *(q for *_, q in rows)])


@dataclass(frozen=True)
class Candidate:
    record: AssetRecord
    agreement: float  # fraction of equal watermark bits


def _drop_outdated_table(engine) -> None:
    """A table from before PDQ (it had a 64-bit `phash`) is dropped; `hallmark projections rebuild` refills it."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    if AssetRecord.__tablename__ in inspector.get_table_names():
        columns = {c["name"] for c in inspector.get_columns(AssetRecord.__tablename__)}
        if "pdq_quality" not in columns:
            AssetRecord.__table__.drop(engine)


class AssetRegistry:
    """Upserts and lookups over the `provenance_assets` table (SQLite or PostgreSQL)."""

    def __init__(self, db_url: str, blobs: BlobStore | None = None, cache_seconds: float = 3600.0,
                 poll_seconds: float = 1.0):
        self.engine = engine_for(db_url)
        self.blobs = blobs
        self.cache_seconds = cache_seconds  # a full re-read this often (a rebuild's removals, clock skew)
        self.poll_seconds = poll_seconds  # other processes' upserts show within this
        self._memory: _Memory | None = None
        self._lock = threading.Lock()
        _drop_outdated_table(self.engine)
        create_tables(self.engine, [AssetRecord.__table__, AssetChange.__table__])

    def upsert(self, *, asset_id: str, sha256: str, watermark_payload: str, model_id: str, policy_version: str,
               width: int, height: int, created_at: dt.datetime, manifest_label: str | None = None,
               fingerprints: list[tuple[str, str]] | None = None) -> AssetRecord:
        """Insert or replace one asset (idempotent). Without a PDQ among `fingerprints` it is computed from the blob
        store (events published before PDQ travelled on `asset.published`)."""
        given = dict(fingerprints or [])
        if PDQ_ALG not in given:
            given = self._pdq_from_blob(sha256)
        views = " ".join(v for alg, v in given.items() if alg.startswith(f"{PDQ_ALG}:"))
        quality = given.get(PDQ_QUALITY_ALG, "")
        record = AssetRecord(asset_id=asset_id, sha256=sha256, watermark_payload=watermark_payload,
                             manifest_label=manifest_label, model_id=model_id, policy_version=policy_version,
                             width=width, height=height, pdq=given[PDQ_ALG], pdq_views=views,
                             pdq_quality=_quality(quality), created_at=created_at)
        with Session(self.engine) as session:
            session.merge(record)
            session.merge(AssetChange(asset_id=asset_id, seq=time.time_ns()))
            session.commit()
        if self._memory is not None:
            self._memory.polled_at = float("-inf")  # this process's own upserts show at once
        return record

    def _pdq_from_blob(self, sha256: str) -> dict[str, str]:
        """The fingerprints of a stored blob, in the form they travel (`pdq`, `pdq:<view>`)."""
        from provenance.images import decode

        if self.blobs is None:
            raise ValueError("no PDQ fingerprint given and the registry has no blob store to compute it from")
        for suffix in (".png", ".jpg"):
            if self.blobs.path(sha256, suffix).is_file():
                rgb = decode(self.blobs.get(sha256, suffix)).rgb
                plain = pdq(rgb)
                return {PDQ_ALG: plain.value, PDQ_QUALITY_ALG: f"{plain.quality:02x}",
                        **{f"{PDQ_ALG}:{k}": v for k, v in pdq_views(rgb).items()}}
        raise ValueError(f"no PDQ fingerprint given and blob {sha256} is not in the store")

    def get(self, asset_id: str) -> AssetRecord | None:
        with Session(self.engine) as session:
            return session.get(AssetRecord, asset_id)

    def by_sha256(self, sha256: str) -> AssetRecord | None:
        with Session(self.engine) as session:
            return session.exec(select(AssetRecord).where(AssetRecord.sha256 == sha256)).first()

    def by_manifest_label(self, label: str) -> AssetRecord | None:
        with Session(self.engine) as session:
            return session.exec(select(AssetRecord).where(AssetRecord.manifest_label == label)).first()

    def by_watermark(self, payload_hex: str) -> AssetRecord | None:
        with Session(self.engine) as session:
            return session.exec(select(AssetRecord).where(AssetRecord.watermark_payload == payload_hex)).first()

    def count_watermarked(self) -> int:
        from sqlalchemy import func

        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(AssetRecord)
                                    .where(AssetRecord.watermark_payload != "")).one())

    def delete_all(self) -> None:
        """Drop every row (a projection rebuild starts here)."""
        from sqlalchemy import delete

        with Session(self.engine) as session:
            session.exec(delete(AssetRecord))
            session.exec(delete(AssetChange))
            session.commit()
        self._memory = None

    def watermarked(self) -> int:
        """How many assets carry a watermark (from memory: no SQL count per verification)."""
        return len(self._snap().ids)

    def nearest_watermark(self, reading: WatermarkReading) -> Candidate | None:
        """The asset whose watermark payload agrees best with a decoder reading."""
        mem = self._snap()
        ids, words = mem.ids, mem.words
        if not ids:
            return None
        scores = agreement(reading, words[: len(ids)])
        best = int(np.argmax(scores))
        return Candidate(self.get(ids[best]), float(scores[best]))

    def near_duplicates(self, variants: list[str], max_distance: int = PDQ_MATCH_DISTANCE,
                        limit: int = 5) -> list[tuple[AssetRecord, int]]:
        """Assets whose PDQ is within `max_distance` of any of `variants` (an image's dihedral hashes), nearest
        first."""
        hits = self._snap().pdq.nearest(variants, limit, max_distance)
        return [(record, d) for asset_id, d in hits if (record := self.get(asset_id)) is not None]

    def _snap(self) -> _Memory:
        # Searches run over memory: a full read on first use and after `cache_seconds` (a rebuild's removals show
        # then); in between, every `poll_seconds`, only the rows written since (by `seq`, an index range scan, with
        # an overlap for concurrent writers). While one thread polls, the others search the memory they have.
        mem, now = self._memory, time.monotonic()
        if mem is not None and (now - mem.polled_at < self.poll_seconds or not self._lock.acquire(blocking=False)):
            return mem
        if mem is None:
            self._lock.acquire()
        try:
            mem = self._memory
            full = mem is None or now - mem.loaded_at > self.cache_seconds
            columns = (AssetRecord.asset_id, AssetRecord.watermark_payload, AssetRecord.pdq, AssetChange.seq)
            joined = AssetChange.asset_id == AssetRecord.asset_id
            if full:  # every row, with its write time where one was recorded
                query = select(*columns).join(AssetChange, joined, isouter=True)
            else:  # an index range scan of the recent writes, then their rows
                query = (select(*columns).select_from(AssetChange).join(AssetRecord, joined)
                         .where(AssetChange.seq >= mem.seq - _SEQ_OVERLAP_NS))
            with Session(self.engine) as session:
                found = session.exec(query).all()
            fresh = _Memory(loaded_at=now) if full else mem
            fresh.apply([(i, w, p, q or 0) for i, w, p, q in found])
            fresh.polled_at = now
            self._memory = fresh
            return fresh
        finally:
            self._lock.release()
