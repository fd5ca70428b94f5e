"""The one SQL engine factory, and table creation that tolerates several processes starting on one database."""
from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import SQLModel, create_engine


def engine_for(db_url: str):
    """An engine for `db_url`; SQLite gets WAL (readers go on while the projector writes) and a busy timeout."""
    if db_url.startswith("sqlite") and not db_url.startswith("sqlite:///"):  # in memory (tests)
        return create_engine(db_url, connect_args={"check_same_thread": False})
    if not db_url.startswith("sqlite:///"):  # PostgreSQL or another server
        return create_engine(db_url, pool_pre_ping=True)
    Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa_event.listens_for(engine, "connect")
    def _wal(conn, _record) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")

    return engine


def create_tables(engine, tables: list, attempts: int = 5) -> None:
    """`create_all` for `tables`; when another process creates the same table between SQLAlchemy's existence check
    and its CREATE ("table ... already exists"), look again instead of failing the whole service."""
    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine, tables=tables)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as e:
            if "already exists" not in str(e).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
