"""The audit log's pure parts: keys, prompt redaction (HMAC + AES-GCM), the hash chain, verification (checkpoints)."""
from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.checkpoints import Checkpoint, signature_problem

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


@dataclass(frozen=True)
class Break:
    """One piece of evidence of tampering: where, what kind, and the detail."""

    partition: int
    offset: int
    kind: str  # content changed | out of order | link broken | duplicate | records missing | unparseable | truncated
    detail: str  # | emptied | rewritten | bad checkpoint

    @property
    def reason(self) -> str:
        return f"{self.kind}: {self.detail}"

    def line(self) -> str:
        return f"audit partition {self.partition} offset {self.offset}: {self.reason}"


@dataclass
class VerifyReport:
    records: int = 0
    partitions: dict[int, int] = field(default_factory=dict)  # partition → records checked
    breaks: list[Break] = field(default_factory=list)  # every break, in (partition, offset) order
    checkpoints: int = 0  # checkpoints with a good signature, each checked against the chain
    unanchored: dict[int, int] = field(default_factory=dict)  # partition → records after its latest checkpoint

    @property
    def ok(self) -> bool:
        return not self.breaks


Row = tuple[int, dict | None, str, str]  # offset, record (None: unparseable), prev_hash, stored hash


def verify(records: Iterable[tuple[int, int, bytes]], checkpoints: Iterable[Checkpoint] = (),
           public_key: Ed25519PublicKey | None = None) -> VerifyReport:
    """Every break (not just the first) of the chains in (partition, offset, value) and against the checkpoints."""
    report = VerifyReport()
    parts: dict[int, list[tuple[int, bytes]]] = {}
    for partition, offset, value in records:
        parts.setdefault(partition, []).append((offset, value))
        report.records += 1
    report.partitions = {p: len(rows) for p, rows in sorted(parts.items())}
    valid = _signed(list(checkpoints), public_key, report)
    for p in sorted(set(parts) | {cp.partition for cp in valid}):
        rows = [_parse(offset, value) for offset, value in sorted(parts.get(p, []))]
        _chain(p, rows, report)
        _anchor(p, rows, [cp for cp in valid if cp.partition == p], report)
    report.breaks.sort(key=lambda b: (b.partition, b.offset))
    return report


def _parse(offset: int, value: bytes) -> Row:
    try:
        record = json.loads(value)
        payload = record["payload"]
        if isinstance(payload["hash"], str) and isinstance(payload["prev_hash"], str):
            return offset, record, payload["prev_hash"], payload["hash"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        pass
    return offset, None, "", ""


def _chain(p: int, rows: list[Row], report: VerifyReport) -> None:
    index = {stored: offset for offset, record, _, stored in rows if record is not None}
    expected, before, seen = GENESIS, None, {}
    for offset, record, prev, stored in rows:
        if record is None:
            report.breaks.append(Break(p, offset, "unparseable", "not an audit record"))
            continue
        if stored in seen:
            report.breaks.append(Break(p, offset, "duplicate", f"the same record as offset {seen[stored]} (a "
                                       f"retried send or a replayed record)"))
            continue
        seen[stored] = offset
        if prev != expected:
            report.breaks.append(Break(p, offset, *_link_problem(prev, expected, before, index.get(prev), offset)))
        actual = chain_hash(prev, record)
        if actual != stored:
            report.breaks.append(Break(p, offset, "content changed",
                                       f"hash is {actual[:16]}…, record says {stored[:16]}…"))
        expected, before = stored, offset


def _link_problem(prev: str, expected: str, before: int | None, follows: int | None, offset: int) -> tuple[str, str]:
    if follows is not None and follows != before:
        return "out of order", f"it follows the record at offset {follows}, not the one at {before}"
    if before is None:
        return "records missing", (f"the partition starts at offset {offset} and its first record does not follow "
                                    f"genesis: earlier records were deleted")
    return "link broken", (f"prev_hash {prev[:16]}… is not the hash of offset {before} ({expected[:16]}…): "
                           f"a record before it was removed or replaced")


def _signed(checkpoints: list[Checkpoint], public_key: Ed25519PublicKey | None, report: VerifyReport) -> list:
    valid = []
    for cp in checkpoints:
        problem = ("there is no public key to check it" if public_key is None
                   else f"it pins topic {cp.topic!r}" if cp.topic != "audit" else signature_problem(cp, public_key))
        if problem:
            report.breaks.append(Break(cp.partition, cp.offset, "bad checkpoint", f"checkpoint of {cp.at}: {problem}"))
        else:
            valid.append(cp)
    report.checkpoints = len(valid)
    return valid


def _anchor(p: int, rows: list[Row], checkpoints: list[Checkpoint], report: VerifyReport) -> None:
    """Hold the partition against its checkpoints: each must find its head hash at its offset."""
    offsets = [offset for offset, *_ in rows]
    if not checkpoints:
        report.unanchored[p] = len(rows)
        return
    latest = max(checkpoints, key=lambda cp: (cp.offset, cp.at))
    pinned = f"the checkpoint of {latest.at} pinned {latest.count} records up to offset {latest.offset}"
    if not rows:
        report.breaks.append(Break(p, latest.offset, "emptied", f"the partition holds no records; {pinned}"))
        return
    if offsets[-1] < latest.offset:
        report.breaks.append(Break(p, offsets[-1] + 1, "truncated", f"the partition ends at offset {offsets[-1]}; "
                                   f"{pinned}: {latest.offset - offsets[-1]} records cut from the tail"))
    hashes = {offset: stored for offset, _, _, stored in rows}
    matched = None
    for cp in sorted({(cp.offset, cp.head_hash): cp for cp in checkpoints}.values(), key=lambda c: c.offset):
        if cp.offset not in hashes:
            continue  # gone: the truncation or deletion is reported once, above or by the chain
        if hashes[cp.offset] != cp.head_hash:
            since = f"; the chain still matched the checkpoint at offset {matched}" if matched is not None else ""
            report.breaks.append(Break(p, cp.offset, "rewritten", f"the record's hash is {hashes[cp.offset][:16]}…, "
                                       f"the checkpoint of {cp.at} signed {cp.head_hash[:16]}…{since}"))
        else:
            matched = cp.offset
    held = bisect.bisect_right(offsets, latest.offset)
    if held < latest.count and offsets[-1] >= latest.offset:
        report.breaks.append(Break(p, offsets[0], "records missing", f"{held} records up to offset {latest.offset}; "
                                   f"{pinned}"))
    report.unanchored[p] = len(offsets) - held
