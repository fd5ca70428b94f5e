"""Table creation that tolerates several processes starting on one database at once."""
from __future__ import annotations

import time

from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import SQLModel


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
