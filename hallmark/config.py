"""Settings shared by every process, from environment variables with local-first defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to find the others. Override with HALLMARK_* environment variables."""

    home: Path = field(default_factory=lambda: Path(_env("HALLMARK_HOME", str(REPO_ROOT / "var"))))
    kafka_bootstrap: str = field(default_factory=lambda: _env("HALLMARK_KAFKA", "127.0.0.1:19092"))
    database_url: str = field(default_factory=lambda: _env("HALLMARK_DATABASE_URL", ""))
    model_dir: str = field(default_factory=lambda: _env("HALLMARK_MODEL_DIR", ""))

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'hallmark.db'}"
