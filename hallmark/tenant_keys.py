"""Each tenant's prompt key pair (X25519), its private half wrapped under a master key; shredding deletes it.

`keys/tenants/<tenant>.json` (0600) holds the key id, the public key and the private key wrapped with
AES-256-GCM under `keys/master.key` (or a KMS: anything with `wrap`/`unwrap`). Deleting a tenant's file
(`hallmark tenants shred`) makes every prompt sealed to it unreadable, on every topic, table, blob and log.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Shredded(LookupError):
    """The tenant's private key is gone: its prompts are crypto-shredded."""


class KeyWrap(Protocol):
    """Wraps key material for storage at rest (a master key file, or a KMS)."""

    def wrap(self, plain: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (its folder 0700) and write `data`; never over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class FileKeyWrap:
    """AES-256-GCM under a 32-byte master key file, created on first use."""

    path: Path

    def _key(self) -> bytes:
        if not self.path.exists():
            try:
                write_private(self.path, base64.b64encode(os.urandom(32)) + b"\n")
            except FileExistsError:
                pass
        return base64.b64decode(self.path.read_bytes().strip())

    def wrap(self, plain: bytes, context: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(self._key()).encrypt(nonce, plain, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self._key()).decrypt(wrapped[:12], wrapped[12:], context)


@dataclass
class TenantKeys:
    """The tenants' prompt keys under `directory`; unwrapped private keys are cached while their file is there."""

    directory: Path
    wrapper: KeyWrap
    _cache: dict[str, tuple[float, str, object]] = field(default_factory=dict, repr=False)

    def path(self, tenant: str) -> Path:
        return Path(self.directory) / f"{tenant}.json"

    def create(self, tenant: str) -> tuple[str, str]:
        """A new key pair for `tenant` → (key id, base64 public key); an existing one is kept."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

        if self.path(tenant).exists():
            return self.public(tenant)
        private = X25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_id = hashlib.sha256(public).hexdigest()[:16]
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        record = {"tenant": tenant, "key_id": key_id, "public": base64.b64encode(public).decode(),
                  "wrapped_private": base64.b64encode(self.wrapper.wrap(raw, tenant.encode())).decode()}
        try:
            write_private(self.path(tenant), json.dumps(record).encode())
        except FileExistsError:
            pass  # created concurrently: keep that one
        return self.public(tenant)

    def public(self, tenant: str) -> tuple[str, str]:
        """(key id, base64 public key); `Shredded` when the tenant has none."""
        try:
            record = json.loads(self.path(tenant).read_text())
        except FileNotFoundError:
            raise Shredded(tenant) from None
        return record["key_id"], record["public"]

    def private(self, tenant: str, key_id: str):
        """The X25519 private key `key_id` of `tenant`; `Shredded` when it was deleted (or never existed)."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        try:
            mtime = self.path(tenant).stat().st_mtime
        except FileNotFoundError:
            self._cache.pop(tenant, None)
            raise Shredded(tenant) from None
        cached = self._cache.get(tenant)
        if cached is None or cached[0] != mtime:
            record = json.loads(self.path(tenant).read_text())
            raw = self.wrapper.unwrap(base64.b64decode(record["wrapped_private"]), tenant.encode())
            cached = (mtime, record["key_id"], X25519PrivateKey.from_private_bytes(raw))
            self._cache[tenant] = cached
        if cached[1] != key_id:
            raise Shredded(f"{tenant}: key {key_id}")
        return cached[2]

    def shred(self, tenant: str) -> bool:
        """Delete the tenant's key pair (overwritten first); True when there was one."""
        path = self.path(tenant)
        if not path.exists():
            return False
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(os.urandom(size))
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
        self._cache.pop(tenant, None)
        return True
