"""Content-addressed blob store on the local disk: `root/sha256/ab/cdef….png`. Writes are idempotent."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def _write_atomic(target: Path, data: bytes) -> None:
    """Write-then-rename, so readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


@dataclass(frozen=True)
class BlobStore:
    root: Path

    def path(self, sha256: str, suffix: str = ".png") -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return Path(self.root) / "sha256" / sha256[:2] / f"{sha256[2:]}{suffix}"

    def put(self, data: bytes, suffix: str = ".png") -> str:
        """Store bytes under their sha256 and return it; storing the same bytes twice is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest, suffix)
        if target.exists():
            return digest
        _write_atomic(target, data)
        return digest

    def get(self, sha256: str, suffix: str = ".png") -> bytes:
        return self.path(sha256, suffix).read_bytes()


@dataclass(frozen=True)
class ManifestArchive:
    """Each published manifest store (`application/c2pa` bytes) by its manifest label, for GET /manifests/{id}."""

    root: Path

    def path(self, label: str) -> Path:
        return Path(self.root) / "manifests" / f"{hashlib.sha256(label.encode()).hexdigest()}.c2pa"

    def put(self, label: str, store: bytes) -> None:
        _write_atomic(self.path(label), store)

    def get(self, label: str) -> bytes | None:
        target = self.path(label)
        return target.read_bytes() if target.is_file() else None
