"""Asset registry: a SQL read model (fed by `assets` events): asset id ↔ sha256 ↔ watermark ↔ manifest ↔ pHash."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from sqlmodel import Field, Session, SQLModel, create_engine, select

from hallmark.db import create_tables
from provenance.store import BlobStore
from provenance.watermark import WatermarkReading, agreement

PHASH_BITS = 64


class AssetRecord(SQLModel, table=True):
    """One published asset. Never holds the tenant or the requester."""

    __tablename__ = "provenance_assets"

    asset_id: str = Field(primary_key=True)
    sha256: str = Field(index=True)
    watermark_payload: str = Field(default="", index=True)  # hex, "" when the image was too small to mark
    manifest_label: str | None = None
    model_id: str = ""
    policy_version: str = ""
    width: int = 0
    height: int = 0
    phash: str = Field(default="", index=True)  # 64-bit pHash, hex
    created_at: dt.datetime


def perceptual_hash(rgb: np.ndarray) -> str:
    """64-bit DCT pHash (imagehash) of an RGB array, as 16 hex digits."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(rgb, "RGB")))


def _hex_words(hex_values: list[str]) -> np.ndarray:
    """64-bit hex strings as uint64 words (bit 0 of a payload = the word's most significant bit)."""
    return np.frombuffer(bytes.fromhex("".join(hex_values)), ">u8").astype(np.uint64)


@dataclass(frozen=True)
class _Column:
    """One column's 64-bit values held in memory for scans, with what it was read at."""

    ids: list[str]
    words: np.ndarray
    rows: int
    read_at: float


@dataclass(frozen=True)
class Candidate:
    record: AssetRecord
    agreement: float  # fraction of equal bits (watermark payload or pHash)


class AssetRegistry:
    """Upserts and lookups over the `provenance_assets` table (SQLite or PostgreSQL)."""

    def __init__(self, db_url: str, blobs: BlobStore | None = None, cache_seconds: float = 300.0):
        connect_args = {"check_same_thread": False} if db_url.startswith("sqlite") else {}
        if db_url.startswith("sqlite:///"):
            from pathlib import Path

            Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(db_url, connect_args=connect_args)
        self.blobs = blobs
        self.cache_seconds = cache_seconds
        self._columns: dict[str, _Column] = {}
        create_tables(self.engine, [AssetRecord.__table__])

    def upsert(self, *, asset_id: str, sha256: str, watermark_payload: str, model_id: str, policy_version: str,
               width: int, height: int, created_at: dt.datetime, manifest_label: str | None = None,
               phash: str | None = None, fingerprints: list[tuple[str, str]] | None = None) -> AssetRecord:
        """Insert or replace one asset (idempotent). Without a pHash (as `phash` or among `fingerprints`) it is
        computed from the blob store (events published before fingerprints travelled on `asset.published`)."""
        phash = phash or dict(fingerprints or []).get("phash")
        if phash is None:
            phash = self._phash_from_blob(sha256)
        record = AssetRecord(asset_id=asset_id, sha256=sha256, watermark_payload=watermark_payload,
                             manifest_label=manifest_label, model_id=model_id, policy_version=policy_version,
                             width=width, height=height, phash=phash, created_at=created_at)
        with Session(self.engine) as session:
            session.merge(record)
            session.commit()
        return record

    def _phash_from_blob(self, sha256: str) -> str:
        from provenance.images import decode

        if self.blobs is None:
            raise ValueError("no perceptual hash given and the registry has no blob store to compute it from")
        return perceptual_hash(decode(self.blobs.get(sha256)).rgb)

    def get(self, asset_id: str) -> AssetRecord | None:
        with Session(self.engine) as session:
            return session.get(AssetRecord, asset_id)

    def by_sha256(self, sha256: str) -> AssetRecord | None:
        with Session(self.engine) as session:
            return session.exec(select(AssetRecord).where(AssetRecord.sha256 == sha256)).first()

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
            session.commit()
        self._columns.clear()

    def nearest_watermark(self, reading: WatermarkReading) -> Candidate | None:
        """The asset whose watermark payload agrees best with a decoder reading."""
        column = self._column(AssetRecord.watermark_payload)
        if not column.ids:
            return None
        scores = agreement(reading, column.words)
        best = int(np.argmax(scores))
        return Candidate(self.get(column.ids[best]), float(scores[best]))

    def near_duplicates(self, phash: str, max_distance: int = 10, limit: int = 5) -> list[tuple[AssetRecord, int]]:
        """Assets whose pHash is within `max_distance` bits of `phash`, nearest first."""
        column = self._column(AssetRecord.phash)
        if not column.ids:
            return []
        distance = np.bitwise_count(column.words ^ _hex_words([phash])[0])
        order = np.argsort(distance, kind="stable")[:limit]
        return [(self.get(column.ids[i]), int(distance[i])) for i in order if distance[i] <= max_distance]

    def _column(self, column) -> _Column:
        # Scans run over an in-memory copy (~1 ms per 100k rows; reading 100k rows from SQL takes ~1 s). The copy is
        # re-read when the row count changes (new assets show at once) or after `cache_seconds` (rebuilds).
        import time

        from sqlalchemy import func

        with Session(self.engine) as session:
            rows = int(session.exec(select(func.count()).select_from(AssetRecord)).one())
            cached = self._columns.get(column.key)
            if cached and cached.rows == rows and time.monotonic() - cached.read_at < self.cache_seconds:
                return cached
            pairs = [(i, v) for i, v in session.exec(select(AssetRecord.asset_id, column)).all() if v and len(v) == 16]
        fresh = _Column([i for i, _ in pairs], _hex_words([v for _, v in pairs]), rows, time.monotonic())
        self._columns[column.key] = fresh
        return fresh
