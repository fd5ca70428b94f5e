"""Audit checkpoints' pure parts: the Ed25519 signer (file key or KMS hook), signing, checking, the JSON-lines file."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import ValidationError

from hallmark.config import HallmarkConfig
from schemas.events import AuditCheckpointPayload as Checkpoint

DOMAIN = b"hallmark-audit-checkpoint-v1\n"  # a checkpoint signature can never pass for any other signed message
KEY_NAME = "audit-checkpoint.key"


class Signer(Protocol):
    """What signs checkpoints: a key file here, or a KMS/HSM hook that never hands out the private key."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


def key_id_of(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of sha256 over the raw 32-byte public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class FileSigner:
    """An Ed25519 key in a PEM file (0600), its public half beside it (`.pub`) for verifiers on other hosts."""

    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id_of(self.private.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def public_key(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @classmethod
    def load(cls, path: Path, create: bool = True) -> "FileSigner":
        path = Path(path)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            return cls(key)
        if not create:
            raise FileNotFoundError(f"missing checkpoint key {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public_path(path).write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(key)


def key_path(config: HallmarkConfig) -> Path:
    """The checkpoint key: configured (it may live off the broker host), else its own file in the keys folder."""
    return config.audit_checkpoint_key or config.keys_dir / KEY_NAME


def checkpoint_file(config: HallmarkConfig) -> Path:
    return config.audit_checkpoint_file or config.home / "audit-checkpoints.jsonl"


def public_path(private_path: Path) -> Path:
    return Path(private_path).with_suffix(".pub")


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key."""
    data = Path(path).read_bytes()
    key = (serialization.load_pem_private_key(data, password=None).public_key() if b"PRIVATE KEY" in data
           else serialization.load_pem_public_key(data))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def signed_bytes(checkpoint: Checkpoint) -> bytes:
    """What the signature covers: every field but the signature, as canonical JSON, after a domain prefix."""
    body = checkpoint.model_dump(exclude={"signature"})
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(signer: Signer, partition: int, offset: int, count: int, head_hash: str,
         at: datetime | None = None) -> Checkpoint:
    """A checkpoint of audit `partition` whose head record (the `count`-th) sits at `offset` with `head_hash`."""
    stamp = (at or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="milliseconds")
    unsigned = Checkpoint(partition=partition, offset=offset, count=count, head_hash=head_hash, at=stamp,
                          key_id=signer.key_id, signature="-")
    signature = base64.b64encode(signer.sign(signed_bytes(unsigned))).decode()
    return unsigned.model_copy(update={"signature": signature})


def signature_problem(checkpoint: Checkpoint, public: Ed25519PublicKey) -> str | None:
    """None when `public` signed `checkpoint` as it stands; else what is wrong."""
    if checkpoint.key_id != key_id_of(public):
        return f"signed by unknown key {checkpoint.key_id} (expected {key_id_of(public)})"
    try:
        public.verify(base64.b64decode(checkpoint.signature, validate=True), signed_bytes(checkpoint))
    except (InvalidSignature, ValueError):
        return "bad signature (forged or altered)"
    return None


def to_line(checkpoint: Checkpoint) -> str:
    return json.dumps(checkpoint.model_dump(), sort_keys=True, separators=(",", ":")) + "\n"


def append(path: Path, checkpoint: Checkpoint) -> None:
    """Append one line and fsync: the file only ever grows, so it can be shipped (tail -f, rsync --append)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, to_line(checkpoint).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be trusted as a whole; names the first bad line."""

    def __init__(self, path: Path | str, line: int, problem: str):
        super().__init__(f"checkpoint file {path} line {line}: {problem}")
        self.line = line


def parse_lines(text: str, path: Path | str = "-") -> list[Checkpoint]:
    """Every checkpoint of a JSON-lines text (blank lines allowed); a line that is not one raises."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "line"
            raise CheckpointFileError(path, number, f"not a checkpoint ({where}: {first['msg']})") from None
    return out


def read_file(path: Path) -> list[Checkpoint]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise CheckpointFileError(path, line, "not UTF-8 text") from None
    return parse_lines(text, path)
