"""The audit log's pure parts: keys, prompt redaction (HMAC + AES-GCM), the hash chain and its verification."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

GENESIS = "0" * 64
PROMPT_KEYS = ("prompt", "negative_prompt")
REDACTED = "[redacted]"


@dataclass(frozen=True)
class AuditKeys:
    """`audit-hmac.key` makes prompts comparable without revealing them; `reviewer.key` lets reviewers read them.

    Deleting `reviewer.key` crypto-shreds every stored prompt; the chain still verifies (it hashes ciphertext).
    """

    hmac_key: bytes
    reviewer_key: bytes | None

    @property
    def key_id(self) -> str | None:
        return hashlib.sha256(self.reviewer_key).hexdigest()[:16] if self.reviewer_key else None

    @classmethod
    def load(cls, keys_dir: Path, create: bool = True) -> "AuditKeys":
        keys_dir = Path(keys_dir)
        return cls(hmac_key=_key_file(keys_dir / "audit-hmac.key", create),
                   reviewer_key=_key_file(keys_dir / "reviewer.key", create, required=False))


def _key_file(path: Path, create: bool, required: bool = True) -> bytes | None:
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    if not create:
        if required:
            raise FileNotFoundError(f"missing key file {path}")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key


def redact(data: Any) -> tuple[Any, dict[str, str]]:
    """A copy with every prompt field replaced, and the prompt fields that were found (first occurrence each)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in PROMPT_KEYS and isinstance(v, str):
                    found.setdefault(k, v)
                    out[k] = REDACTED if v else ""
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(data), found


def prompt_hmac(keys: AuditKeys, prompt: str) -> str:
    return hmac.new(keys.hmac_key, prompt.encode(), hashlib.sha256).hexdigest()


def encrypt_prompts(keys: AuditKeys, prompts: dict[str, str], aad: bytes) -> str | None:
    """base64(nonce || AES-256-GCM ciphertext) of the prompt fields, bound to the source event by `aad`."""
    if keys.reviewer_key is None:
        return None
    nonce = os.urandom(12)
    ct = AESGCM(keys.reviewer_key).encrypt(nonce, json.dumps(prompts).encode(), aad)
    return base64.b64encode(nonce + ct).decode()


def decrypt_prompts(keys: AuditKeys, ciphertext: str, aad: bytes) -> dict[str, str]:
    """For reviewers: raises once the reviewer key has been deleted (crypto-shredded) or replaced."""
    if keys.reviewer_key is None:
        raise PermissionError("the reviewer key is gone: this prompt has been crypto-shredded")
    raw = base64.b64decode(ciphertext)
    return json.loads(AESGCM(keys.reviewer_key).decrypt(raw[:12], raw[12:], aad))


def canonical(record: dict) -> bytes:
    """The bytes a record's hash covers: the whole audit event except `payload.hash`."""
    body = {**record, "payload": {k: v for k, v in record["payload"].items() if k != "hash"}}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def chain_hash(prev_hash: str, record: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(record)).hexdigest()


@dataclass
class Break:
    partition: int
    offset: int
    reason: str


@dataclass
class VerifyReport:
    records: int = 0
    partitions: dict[int, int] = field(default_factory=dict)  # partition → records checked
    breaks: list[Break] = field(default_factory=list)  # the first broken record of each broken partition

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify(records: Iterable[tuple[int, int, bytes]]) -> VerifyReport:
    """Recompute each partition's chain from (partition, offset, value) in offset order; name the first break."""
    report = VerifyReport()
    heads: dict[int, str] = {}
    broken: set[int] = set()
    for partition, offset, value in records:
        report.records += 1
        report.partitions[partition] = report.partitions.get(partition, 0) + 1
        if partition in broken:
            continue
        reason = _check(value, heads.get(partition, GENESIS))
        if isinstance(reason, str):
            broken.add(partition)
            report.breaks.append(Break(partition, offset, reason))
        else:
            heads[partition] = reason[0]
    return report


def _check(value: bytes, expected_prev: str) -> str | tuple[str]:
    try:
        record = json.loads(value)
        payload = record["payload"]
        stored, prev = payload["hash"], payload["prev_hash"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "not an audit record (unparseable)"
    if prev != expected_prev:
        return f"prev_hash {prev[:16]}… does not match the previous record's hash {expected_prev[:16]}…"
    actual = chain_hash(prev, record)
    if actual != stored:
        return f"content changed: hash is {actual[:16]}…, record says {stored[:16]}…"
    return (stored,)
